"""Comments as an owner and readers see them in Matrix clients (real Synapse, matrix-nio).

`!comments on` links a discussion room; each post gets a thread root there, posted by the ghost, and a
💬 Comments link in the channel; readers reply in the thread; a comment the channel's hooks reject is
removed with a statement of reasons to its author; deleting the post deletes its root; `off` stops it.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import nio
import pytest

from tests.support import Env, User, create_channel, reconfigured

pytestmark = pytest.mark.integration

TIMEOUT = 30.0


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout} s")


async def fetch(user: User, room_id: str, event_id: str) -> dict[str, Any]:
    response = await user.client.room_get_event(room_id, event_id)
    assert isinstance(response, nio.RoomGetEventResponse), response
    source: dict[str, Any] = response.event.source
    return source


def body(event: dict[str, Any]) -> str:
    text = event.get("content", {}).get("body", "")
    return text if isinstance(text, str) else ""


def in_thread(root: str, text: str) -> dict[str, Any]:
    return {
        "msgtype": "m.text",
        "body": text,
        "m.relates_to": {
            "rel_type": "m.thread",
            "event_id": root,
            "is_falling_back": True,
            "m.in_reply_to": {"event_id": root},
        },
    }


async def _level(user: User, room: str, who: str) -> int | None:
    level: int | None = (await user.state(room, "m.room.power_levels"))["users"].get(who)
    return level


async def _until(read: Callable[[], Awaitable[object]], expected: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    value: object = None
    while time.monotonic() < deadline:
        value = await read()
        if value == expected:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"still {value!r}, expected {expected!r}")


async def test_the_discussion_room_is_open_when_its_alias_resolves(env: Env) -> None:
    # Synapse makes a createRoom's alias resolve before the room's join rules exist: a reader who
    # followed #<handle>_comments at once was refused ("not invited"). The alias comes once it is open.
    alice, bob = await env.user("alice"), await env.user("bob")
    handle = env.handle("open")
    channel = await create_channel(env, alice, handle, "Open Talk")
    alias = f"#{handle}_comments:{env.domain}"

    async def follow_the_alias_at_once() -> nio.Response:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            resolved = await bob.client.room_resolve_alias(alias)
            if isinstance(resolved, nio.RoomResolveAliasResponse):
                return await bob.client.join(str(resolved.room_id))
            await asyncio.sleep(0.01)
        raise AssertionError(f"{alias} never resolved")

    reader = asyncio.create_task(follow_the_alias_at_once())
    ready = await alice.ask(channel.backstage, "!comments on", "is ready:", timeout=TIMEOUT)
    joined = await reader
    assert isinstance(joined, nio.JoinResponse), joined
    assert f"({joined.room_id})" in ready

    # The order in the room's own timeline says the same whatever the timing: the alias is the room's
    # address only after the room is public and the ghost is in it.
    timeline = await bob.all_messages(joined.room_id)

    def position(match: Callable[[dict[str, Any]], bool]) -> int:
        return next(i for i, e in enumerate(timeline) if match(e))

    opened = position(lambda e: e["type"] == "m.room.join_rules" and e["content"].get("join_rule") == "public")
    ghost_in = position(
        lambda e: e["type"] == "m.room.member"
        and e.get("state_key") == f"@{env.ghost_prefix}{handle}:{env.domain}"
        and e["content"].get("membership") == "join"
    )
    named = position(lambda e: e["type"] == "m.room.canonical_alias" and e["content"].get("alias") == alias)
    assert opened < named and ghost_in < named
    assert (await bob.state(joined.room_id, "m.room.canonical_alias"))["alias"] == alias


async def test_posts_get_threads_and_comments_are_moderated(env: Env) -> None:
    handle = env.handle("talk")
    hooks = [
        {
            "type": "terms",
            "name": "banned",
            "terms": ["forbiddenword"],
            "action": "reject",
            "category": "illegal_content",
        }
    ]

    def change(data: dict[str, Any]) -> None:
        data["compliance"] = {"channel_hooks": {handle: hooks}}

    async with reconfigured(env, change):
        alice, bob, carol = await env.user("alice"), await env.user("bob"), await env.user("carol")
        ghost = f"@{env.ghost_prefix}{handle}:{env.domain}"
        channel = await create_channel(env, alice, handle, "Talk Channel")
        bs, broadcast = channel.backstage, channel.broadcast

        ready = await alice.ask(bs, "!comments on", "is ready:", timeout=TIMEOUT)
        found = re.search(r"\((![^)\s]+)\)", ready)
        assert found is not None, ready
        discussion = found.group(1)
        assert f"#{handle}_comments:{env.domain}" in ready
        assert await bob.join(f"#{handle}_comments:{env.domain}") == discussion
        assert await carol.join(discussion) == discussion

        # An ordinary group with the channel's team as moderators, and never encrypted.
        levels = await bob.state(discussion, "m.room.power_levels")
        assert levels["users"][ghost] == 100 and levels["users"][alice.user_id] == 50
        assert levels["users_default"] == 0 and levels["events_default"] == 0
        assert levels["events"]["m.room.encryption"] == 100
        encryption = await bob.client.room_get_state_event(discussion, "m.room.encryption")
        assert isinstance(encryption, nio.RoomGetStateEventError), encryption
        join_rules = await bob.state(discussion, "m.room.join_rules")
        assert join_rules["join_rule"] == "public"

        # A moderator named later moderates the discussion room too; demoted, no longer.
        await alice.ask(channel.management, f"promote {handle} {carol.user_id} moderator", "is now moderator")
        await _until(lambda: _level(bob, discussion, carol.user_id), 50)
        await alice.ask(channel.management, f"demote {handle} {carol.user_id}", "no longer")
        await _until(lambda: _level(bob, discussion, carol.user_id), None)

        source = await alice.text(bs, "first post with comments")
        root = await bob.wait_for(
            discussion, lambda e: e.get("sender") == ghost and body(e) == "first post with comments"
        )
        root_id = root["event_id"]
        link = f"💬 Comments: https://matrix.to/#/{discussion}/{root_id}?via={env.domain}"
        post = await bob.wait_for(
            broadcast, lambda e: e.get("sender") == ghost and body(e) == "first post with comments"
        )
        edit = await bob.wait_for(
            broadcast,
            lambda e: (
                e.get("content", {}).get("m.relates_to", {}).get("event_id") == post["event_id"]
                and link in e.get("content", {}).get("m.new_content", {}).get("body", "")
            ),
        )
        assert edit["sender"] == ghost
        assert 'href="https://matrix.to/#/' in edit["content"]["m.new_content"]["formatted_body"]

        # A reader comments in the thread; another reader sees it there.
        comment = await bob.send(discussion, in_thread(root_id, "nice post"))
        seen = await carol.wait_for(discussion, lambda e: e["event_id"] == comment)
        assert seen["content"]["m.relates_to"] == {
            "rel_type": "m.thread",
            "event_id": root_id,
            "is_falling_back": True,
            "m.in_reply_to": {"event_id": root_id},
        }
        assert seen["sender"] == bob.user_id

        # A comment the channel's rules reject is removed, with a statement of reasons to its author.
        bad = await bob.send(discussion, in_thread(root_id, "this has a forbiddenword in it"))

        async def removed() -> bool:
            return not (await fetch(carol, discussion, bad)).get("content")

        await eventually(removed, "the redaction of the rejected comment")
        redacted = await fetch(carol, discussion, bad)
        assert redacted["unsigned"]["redacted_because"]["sender"] == env.bot
        notice = await carol.wait_for(
            discussion, lambda e: e.get("sender") == env.bot and "your comment was removed" in body(e)
        )
        assert bob.user_id in body(notice) and "forbiddenword" not in body(notice)
        assert notice["content"]["m.relates_to"]["event_id"] == root_id
        decision = re.search(r"decision #(\d+)", body(notice))
        assert decision is not None, body(notice)
        dm = await bob.wait_invite(lambda _rid, _room: True, timeout=TIMEOUT)
        await bob.join(dm)
        statement = await bob.wait_for(dm, lambda e: "Statement of reasons" in body(e))
        text = body(statement)
        for element in ("was removed", "Automated means", f"appeal {decision.group(1)}", "forbiddenword"):
            assert element in text, text
        ack = await bob.ask(dm, f"appeal {decision.group(1)} it was a quote", "is received")
        assert f"decision #{decision.group(1)}" in ack

        # Deleting the post in backstage deletes its root.
        await alice.client.room_redact(bs, source)

        async def root_gone() -> bool:
            return not (await fetch(bob, discussion, root_id)).get("content")

        await eventually(root_gone, "the redaction of the thread root")

        # Off: new posts get neither a root nor a link; the room stays.
        off = await alice.ask(bs, "!comments off", "Comments are off")
        assert "stays" in off
        await alice.text(bs, "a post without comments")
        later = await bob.wait_for(
            broadcast, lambda e: e.get("sender") == ghost and body(e) == "a post without comments"
        )
        await alice.text(bs, "another post without comments")
        await bob.wait_for(
            broadcast, lambda e: e.get("sender") == ghost and body(e) == "another post without comments"
        )
        await asyncio.sleep(2)
        assert not [e for e in await bob.messages(discussion) if "without comments" in body(e)]
        assert not [
            e
            for e in await bob.messages(broadcast)
            if e.get("content", {}).get("m.relates_to", {}).get("event_id") == later["event_id"]
        ]

        # On again: the same room is reused.
        again = await alice.ask(bs, "!comments on", "on again")
        assert discussion in again
