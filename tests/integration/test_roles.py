"""Channel roles on a real Synapse: owner, editor, moderator — what each may do, as they would do it."""

from __future__ import annotations

import nio
import pytest

from tests.support import Env, create_channel

pytestmark = pytest.mark.integration


async def test_roles_decide_who_publishes_and_who_runs_which_command(env: Env) -> None:
    alice, ed, mo, reader = (
        await env.user("alice"),
        await env.user("ed"),
        await env.user("mo"),
        await env.user("reader"),
    )
    channel = await create_channel(env, alice, env.handle(), "Roles Desk")
    await reader.join(channel.broadcast)
    room = channel.management
    await alice.ask(room, f"promote {channel.handle} {ed.user_id} editor", "is now editor of")
    await alice.ask(room, f"promote {channel.handle} {mo.user_id} moderator", "is now moderator of")
    await alice.ask(room, f"promote {channel.handle} {mo.user_id} overlord", "Usage")
    info = await alice.ask(room, f"info {channel.handle}", "Owner")
    assert f"{ed.user_id} (editor)" in info and f"{mo.user_id} (moderator)" in info
    for user in (ed, mo):
        await user.join(await user.wait_invite(lambda rid, _r: rid == channel.backstage))
    bs = channel.backstage

    # The editor publishes, edits and deletes; the moderator's words stay in backstage.
    post = await ed.text(bs, "from the editor")
    copy = await reader.wait_for(channel.broadcast, lambda e: e["content"].get("body") == "from the editor")
    await mo.ask(bs, "from the moderator", "not published")
    await ed.client.room_redact(bs, post, reason="typo")
    await reader.wait_for(
        channel.broadcast, lambda e: e["event_id"] == copy["event_id"] and not e.get("content")
    )
    assert not [
        e
        for e in await reader.messages(channel.broadcast)
        if e["content"].get("body") == "from the moderator"
    ]

    # An editor corrects and deletes a post the owner wrote (Matrix lets only its sender edit it:
    # `!edit` as a reply; deleting needs power 50 in backstage, which editors have).
    levels = await alice.state(bs, "m.room.power_levels")
    assert levels["users"].get(ed.user_id) == 50 and mo.user_id not in levels["users"]
    owners = await alice.text(bs, "teh owner's post")
    published = await reader.wait_for(
        channel.broadcast, lambda e: e["content"].get("body") == "teh owner's post"
    )
    await ed.send(
        bs,
        {
            "msgtype": "m.text",
            "body": "!edit the owner's post",
            "m.relates_to": {"m.in_reply_to": {"event_id": owners}},
        },
    )
    edit = await reader.wait_for(
        channel.broadcast,
        lambda e: e["content"].get("m.relates_to", {}).get("event_id") == published["event_id"],
    )
    assert edit["content"]["m.new_content"]["body"] == "the owner's post"
    await mo.ask(bs, "!edit hijack", "may do that: owner, editor.")
    redacted = await ed.client.room_redact(bs, owners, reason="duplicate")
    assert isinstance(redacted, nio.RoomRedactResponse), redacted
    await reader.wait_for(
        channel.broadcast, lambda e: e["event_id"] == published["event_id"] and not e.get("content")
    )

    # Commands follow the table in bridge/channels/roles.py.
    await mo.ask(bs, "!stats", "ubscribers")
    await mo.ask(bs, "!reactions only 👍", "👍")
    refusal = await mo.ask(bs, "!signatures on", "may do that: owner, editor.")
    assert alice.user_id in refusal
    await mo.ask(bs, "!schedule +1h later", "may do that: owner, editor.")
    await ed.ask(bs, "!signatures on", "Signatures are now on")
    await ed.ask(bs, "!token new bot", "Only the owner")

    # In the management room: editors set the title; only the owner hands out roles.
    ed_room, mo_room = await ed.open_management_room(), await mo.open_management_room()
    await ed.ask(ed_room, f"title {channel.handle} Roles Desk Two", "is now titled")
    await mo.ask(mo_room, f"title {channel.handle} Hijacked", "may do that: owner, editor.")
    await ed.ask(ed_room, f"promote {channel.handle} {reader.user_id} editor", "Only the owner")

    # A role can change; a demoted member's posts are no longer published.
    await alice.ask(room, f"promote {channel.handle} {mo.user_id} editor", "is now editor of")
    await mo.text(bs, "moderator turned editor")
    await reader.wait_for(
        channel.broadcast, lambda e: e["content"].get("body", "").startswith("moderator turned editor\n— ")
    )
    await alice.ask(room, f"demote {channel.handle} {ed.user_id}", "no longer")

    # Every role change is in the audit log, with who did it.
    out = env.workdir / f"audit-{channel.handle}"
    await env.run_cli("audit", "export", "--output", str(out))
    lines = [line for line in (out / "entries.jsonl").read_text().splitlines() if channel.handle in line]
    changes = [line for line in lines if '\\"action\\":\\"role\\"' in line]
    assert len(changes) == 4, changes  # ed editor, mo moderator, mo editor, ed demoted
    assert all(alice.user_id in line for line in changes)
