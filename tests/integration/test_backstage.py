"""Backstage → channel relay, as an admin and a subscriber see it in a Matrix client (matrix-nio)."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import nio
import pytest

from bridge.text.i18n import t
from tests.support import Channel, Env, User, create_channel

pytestmark = pytest.mark.integration


def body_is(text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("content", {}).get("body") == text


async def _setup(env: Env, title: str = "Relay Desk") -> tuple[User, User, Channel]:
    alice, bob = await env.user("alice"), await env.user("bob")
    channel = await create_channel(env, alice, env.handle(), title)
    await bob.join(channel.broadcast)
    return alice, bob, channel


async def _upload(user: User, data: bytes, mime: str, name: str) -> str:
    response, _keys = await user.client.upload(
        io.BytesIO(data), content_type=mime, filename=name, filesize=len(data)
    )
    assert isinstance(response, nio.UploadResponse), response
    return str(response.content_uri)


async def test_every_kind_of_post_is_relayed_unchanged_as_the_ghost(env: Env) -> None:
    alice, bob, channel = await _setup(env)
    ghost = f"@kanal_{channel.handle}:{env.domain}"
    mxc = await _upload(alice, b"\x89PNG\r\n\x1a\n" + b"0" * 64, "image/png", "pic.png")
    posts: list[dict[str, Any]] = [
        {"msgtype": "m.text", "body": "plain text"},
        {"msgtype": "m.notice", "body": "a notice"},
        {"msgtype": "m.emote", "body": "waves"},
        {
            "msgtype": "m.text",
            "body": "**bold**",
            "format": "org.matrix.custom.html",
            "formatted_body": "<strong>bold</strong>",
        },
        {"msgtype": "m.image", "body": "pic.png", "url": mxc, "info": {"mimetype": "image/png", "size": 72}},
        {"msgtype": "m.file", "body": "report.pdf", "url": mxc, "info": {"mimetype": "application/pdf"}},
        {
            "msgtype": "m.audio",
            "body": "voice.ogg",
            "url": mxc,
            "info": {"mimetype": "audio/ogg", "duration": 1000},
        },
        {"msgtype": "m.video", "body": "clip.mp4", "url": mxc, "info": {"mimetype": "video/mp4"}},
    ]
    for content in posts:
        await alice.send(channel.backstage, content)
    for content in posts:
        relayed = await bob.wait_for(channel.broadcast, body_is(content["body"]))
        assert relayed["sender"] == ghost
        received = {k: v for k, v in relayed["content"].items() if not k.startswith("net.kanal.")}
        assert received == content
    sticker = {"body": "sticker", "url": mxc, "info": {"mimetype": "image/png"}}
    await alice.send(channel.backstage, sticker, "m.sticker")
    relayed = await bob.wait_for(channel.broadcast, lambda e: e["type"] == "m.sticker")
    assert relayed["content"]["url"] == mxc


async def test_edits_redactions_and_replies_are_mirrored(env: Env) -> None:
    alice, bob, channel = await _setup(env)
    original = await alice.text(channel.backstage, "breaking: typo")
    copy = await bob.wait_for(channel.broadcast, body_is("breaking: typo"))

    await alice.send(
        channel.backstage,
        {
            "msgtype": "m.text",
            "body": "* breaking: fixed",
            "m.new_content": {"msgtype": "m.text", "body": "breaking: fixed"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": original},
        },
    )
    edit = await bob.wait_for(channel.broadcast, body_is("* breaking: fixed"))
    assert edit["content"]["m.relates_to"] == {"rel_type": "m.replace", "event_id": copy["event_id"]}
    assert edit["content"]["m.new_content"] == {"msgtype": "m.text", "body": "breaking: fixed"}

    await alice.send(
        channel.backstage,
        {
            "msgtype": "m.text",
            "body": "> <@alice:localhost> breaking: typo\n\nmore on this",
            "format": "org.matrix.custom.html",
            "formatted_body": "<mx-reply><blockquote>quoted</blockquote></mx-reply>more on <em>this</em>",
            "m.relates_to": {"m.in_reply_to": {"event_id": original}},
        },
    )
    reply = await bob.wait_for(channel.broadcast, body_is("more on this"))
    assert reply["content"]["m.relates_to"] == {"m.in_reply_to": {"event_id": copy["event_id"]}}
    assert reply["content"]["formatted_body"] == "more on <em>this</em>"  # the admin's account stays hidden
    assert alice.user_id not in str(reply["content"])

    redaction = await alice.client.room_redact(channel.backstage, original, reason="wrong story")
    assert isinstance(redaction, nio.RoomRedactResponse)
    redacted = await bob.wait_for(
        channel.broadcast, lambda e: e["event_id"] == copy["event_id"] and not e.get("content")
    )
    assert redacted["unsigned"]["redacted_because"]["sender"] == f"@kanal_{channel.handle}:{env.domain}"


async def test_silent_signatures_pin_help_stats(env: Env) -> None:
    alice, bob, channel = await _setup(env, "Signed Desk")
    bs = channel.backstage

    help_text = await alice.ask(bs, "!help", "!silent")
    assert "!pin" in help_text and "!signatures" in help_text

    await alice.text(bs, "!silent quiet update")
    silent = await bob.wait_for(channel.broadcast, body_is("quiet update"))
    assert silent["content"]["msgtype"] == "m.notice"

    await alice.client.set_displayname("Alice Writer")
    await alice.ask(bs, "!signatures on", "Signatures are now on")
    await alice.send(
        bs,
        {
            "msgtype": "m.text",
            "body": "signed <post>",
            "format": "org.matrix.custom.html",
            "formatted_body": "signed &lt;post&gt;",
        },
    )
    signed = await bob.wait_for(channel.broadcast, body_is("signed <post>\n— Alice Writer"))
    assert signed["content"]["formatted_body"] == "signed &lt;post&gt;<br>— Alice Writer"
    await alice.ask(bs, "!signatures off", "Signatures are now off")
    await alice.ask(bs, "!signatures maybe", "Usage")

    target = await alice.text(bs, "pin me")
    copy = await bob.wait_for(channel.broadcast, body_is("pin me"))
    await alice.ask(bs, "!pin", "Send !pin as a reply")
    pin = {"msgtype": "m.text", "body": "!pin", "m.relates_to": {"m.in_reply_to": {"event_id": target}}}
    before = {e["event_id"] for e in await alice.messages(bs)}
    await alice.send(bs, pin)
    await alice.wait_for(
        bs, lambda e: e["event_id"] not in before and "Pinned" in e["content"].get("body", "")
    )
    assert (await bob.state(channel.broadcast, "m.room.pinned_events"))["pinned"] == [copy["event_id"]]
    await alice.send(bs, {**pin, "body": "!unpin"})
    await alice.wait_for(
        bs, lambda e: e["event_id"] not in before and "Unpinned" in e["content"].get("body", "")
    )
    assert (await bob.state(channel.broadcast, "m.room.pinned_events"))["pinned"] == []

    stats = await alice.ask(bs, "!stats", "Subscribers")
    assert "Subscribers: 1 " in stats and "on 3 posts" in stats  # silent, signed, pin me
    await alice.ask(bs, "!frobnicate", "don't know the command")
    assert not [
        e
        for e in await bob.messages(channel.broadcast)
        if e.get("content", {}).get("body", "").startswith("!")
    ]


async def test_only_the_team_is_published(env: Env) -> None:
    alice, bob, channel = await _setup(env)
    # Bob is invited to backstage by Alice directly (not promoted): he has no role.
    invited = await alice.client.room_invite(channel.backstage, bob.user_id)
    assert isinstance(invited, nio.RoomInviteResponse)
    await bob.join(channel.backstage)
    refused = await bob.ask(channel.backstage, "sneaky post", "no role in")
    assert refused == t("en", "no_backstage_role", handle=channel.handle, owner=alice.user_id)
    await alice.text(channel.backstage, "real post")
    await bob.wait_for(channel.broadcast, body_is("real post"))
    assert not [e for e in await bob.messages(channel.broadcast) if e["content"].get("body") == "sneaky post"]


async def test_encrypted_backstage_is_reported_not_relayed(env: Env) -> None:
    alice, _bob, channel = await _setup(env)
    await alice.client.room_put_state(
        channel.backstage, "m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"}
    )
    notice = await alice.wait_for(
        channel.backstage,
        lambda e: e.get("sender") == env.bot and "encrypted" in e["content"].get("body", ""),
    )
    assert notice["content"]["msgtype"] == "m.notice"
