"""A channel past one room (shards), as readers and the owner see it (real Synapse, matrix-nio).

With `channels.shard_size: 3`, seven readers who join `#handle` one after another land in three rooms;
every post, edit, pin, poll and deletion reaches each room exactly once; views, reactions and votes
from readers in different rooms add up; and a SIGKILL in the middle of a fan-out doubles nothing.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import nio
import pytest
import yaml

from tests.support import Channel, Env, User, create_channel, reconfigured

pytestmark = pytest.mark.integration

TIMEOUT = 30.0
POLL_START = "org.matrix.msc3381.poll.start"
POLL = {
    POLL_START: {
        "question": {"org.matrix.msc1767.text": "Rooms or one room?"},
        "kind": "org.matrix.msc3381.poll.disclosed",
        "max_selections": 1,
        "answers": [
            {"id": "many", "org.matrix.msc1767.text": "Many"},
            {"id": "one", "org.matrix.msc1767.text": "One"},
        ],
    },
    "org.matrix.msc1767.text": "Rooms or one room?\n1. Many\n2. One",
}


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"{what} did not happen within {timeout} s")


async def resolve(user: User, alias: str) -> str:
    response = await user.client.room_resolve_alias(alias)
    assert isinstance(response, nio.RoomResolveAliasResponse), response
    return str(response.room_id)


async def public_rooms(env: Env, user: User) -> set[str]:
    headers = {"Authorization": f"Bearer {user.client.access_token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{env.homeserver}/_matrix/client/v3/publicRooms?limit=500", headers=headers) as response,
    ):
        assert response.status == 200, await response.text()
        return {room["room_id"] for room in (await response.json())["chunk"]}


def web_base(env: Env) -> str:
    config = yaml.safe_load(env.kanal.config_path.read_text())
    return f"http://{config['web']['listen']}"


def ghost_of(env: Env, channel: Channel) -> str:
    return f"@{env.ghost_prefix}{channel.handle}:{env.domain}"


def copies(events: list[dict[str, Any]], ghost: str, predicate: Callable[[dict[str, Any]], bool]) -> int:
    return sum(1 for e in events if e.get("sender") == ghost and predicate(e))


def body_is(text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["type"] == "m.room.message" and e.get("content", {}).get("body") == text


@pytest.fixture
async def small_shards(env: Env) -> AsyncIterator[None]:
    def three(config: dict[str, Any]) -> None:
        config.setdefault("channels", {})["shard_size"] = 3

    async with reconfigured(env, three):
        yield


async def readers_in_shards(
    env: Env, channel: Channel, count: int
) -> tuple[list[str], list[tuple[User, str]]]:
    """`count` readers join `#handle` one after another; after each third the alias must move."""
    alias = f"#{channel.handle}:{env.domain}"
    rooms: list[str] = [channel.broadcast]
    readers: list[tuple[User, str]] = []
    for n in range(count):
        reader = await env.user(f"reader{n}")
        if n and n % 3 == 0:
            previous = rooms[-1]

            async def moved(reader: User = reader, previous: str = previous) -> bool:
                return await resolve(reader, alias) != previous

            await eventually(moved, f"#{channel.handle} moving on after {n} readers")
            rooms.append(await resolve(reader, alias))
        joined = await reader.join(alias)
        assert joined == rooms[-1], f"reader {n} joined {joined}, not the open room {rooms[-1]}"
        readers.append((reader, joined))
    return rooms, readers


async def test_seven_readers_fill_three_rooms_and_every_write_reaches_each_once(
    env: Env, small_shards: None
) -> None:
    alice = await env.user("alice")
    channel = await create_channel(env, alice, env.handle("shards"), "Many Rooms")
    bs, ghost = channel.backstage, ghost_of(env, channel)
    rooms, readers = await readers_in_shards(env, channel, 7)
    assert len(set(rooms)) == 3
    assert Counter(room for _, room in readers) == {rooms[0]: 3, rooms[1]: 3, rooms[2]: 1}
    first, second, third = readers[0][0], readers[3][0], readers[6][0]
    by_room = {rooms[0]: first, rooms[1]: second, rooms[2]: third}

    # The new rooms look like the first: name, topic, power levels, join rule; only the open one is listed.
    for room in rooms[1:]:
        assert (await first.state(rooms[0], "m.room.name")) == (await third.state(room, "m.room.name"))
        assert (await first.state(rooms[0], "m.room.topic")) == (await third.state(room, "m.room.topic"))
        levels = await third.state(room, "m.room.power_levels")
        assert levels["users"] == (await first.state(rooms[0], "m.room.power_levels"))["users"]
        assert levels["events"]["m.room.message"] == 50 and levels.get("users_default", 0) == 0
    assert (await third.state(rooms[2], "m.room.canonical_alias"))[
        "alias"
    ] == f"#{channel.handle}:{env.domain}"

    async def only_open_listed() -> bool:
        listed = await public_rooms(env, first)
        return rooms[2] in listed and not {rooms[0], rooms[1]} & listed

    await eventually(only_open_listed, "the directory listing only the open room")
    # A new room says where the earlier posts are (a room's history starts when it opened).
    for room, reader in ((rooms[1], readers[3][0]), (rooms[2], readers[6][0])):
        history = await reader.wait_for(
            room,
            lambda e: e.get("sender") == ghost and "continues here" in e.get("content", {}).get("body", ""),
        )
        assert f"/c/{channel.handle}" in history["content"]["body"]
        assert rooms[0] in history["content"]["body"]

    # A post reaches every room once: the reader of the first room still receives after the third opened.
    await alice.text(bs, "to every room")
    for room, reader in by_room.items():
        await reader.wait_for(room, lambda e: e.get("sender") == ghost and body_is("to every room")(e))

    # An edit, a pin and a deletion, each in every room, exactly once.
    post = await alice.text(bs, "before the edit")
    for room, reader in by_room.items():
        await reader.wait_for(room, lambda e: e.get("sender") == ghost and body_is("before the edit")(e))
    edit = {
        "msgtype": "m.text",
        "body": "* after the edit",
        "m.new_content": {"msgtype": "m.text", "body": "after the edit"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": post},
    }
    await alice.send(bs, edit)
    pin = {"msgtype": "m.text", "body": "!pin", "m.relates_to": {"m.in_reply_to": {"event_id": post}}}
    await alice.send(bs, pin)
    for room, reader in by_room.items():
        original = await reader.wait_for(room, body_is("before the edit"))

        async def pinned(reader: User = reader, room: str = room, target: str = original["event_id"]) -> bool:
            response = await reader.client.room_get_state_event(room, "m.room.pinned_events")
            return isinstance(response, nio.RoomGetStateEventResponse) and response.content.get("pinned") == [
                target
            ]

        await eventually(pinned, f"the post pinned in {room}")
        await reader.wait_for(room, lambda e: e.get("content", {}).get("body") == "* after the edit")

    # A poll in every room; votes from readers of different rooms add up in `!poll results`.
    await alice.send(bs, POLL, event_type=POLL_START)
    for room, reader, answer in (
        (rooms[0], first, "many"),
        (rooms[1], second, "many"),
        (rooms[2], third, "one"),
    ):
        poll = await reader.wait_for(room, lambda e: e.get("sender") == ghost and e["type"] == POLL_START)
        vote = {
            "m.relates_to": {"rel_type": "m.reference", "event_id": poll["event_id"]},
            "org.matrix.msc3381.poll.response": {"answers": [answer]},
        }
        await reader.send(room, vote, event_type="org.matrix.msc3381.poll.response")
    results = await alice.ask(bs, "!poll results", "Rooms or one room?")
    assert "• Many: 2 (67%)" in results and "• One: 1 (33%)" in results and "3 voters" in results, results

    # Views (read receipts) and reactions from readers in different rooms add up in !stats and the API.
    await alice.text(bs, "!token new counter")
    notice = await alice.wait_for(bs, lambda e: "kanal_api_" in e.get("content", {}).get("body", ""))
    token = re.search(r"kanal_api_\S+", notice["content"]["body"]).group(0)  # type: ignore[union-attr]
    await alice.text(bs, "count me")
    for room, reader in by_room.items():
        copy = await reader.wait_for(room, lambda e: e.get("sender") == ghost and body_is("count me")(e))
        await reader.client.room_read_markers(room, copy["event_id"], copy["event_id"])
        if reader is not second:
            reaction = {
                "m.relates_to": {"rel_type": "m.annotation", "event_id": copy["event_id"], "key": "👍"}
            }
            await reader.send(room, reaction, "m.reaction")
    url = f"{web_base(env)}/api/v1/channels/{channel.handle}/posts"

    async def three_views() -> bool:
        async with (
            aiohttp.ClientSession() as http,
            http.get(url, headers={"Authorization": f"Bearer {token}"}) as response,
        ):
            listed = (await response.json())["posts"]
        views: int = next(p["views"] for p in listed if p["text"] == "count me")
        return views == 3

    await eventually(three_views, "three views of one post in three rooms, in the API")
    stats = await alice.ask(bs, "!stats", "Subscribers")
    assert "Subscribers: 7" in stats, stats
    assert "• count me — 👁 3 · 2 reactions" in stats, stats

    # A deletion in backstage deletes the copy in every room.
    await alice.client.room_redact(bs, post, "gone")
    for room, reader in by_room.items():

        async def redacted(reader: User = reader, room: str = room) -> bool:
            events = await reader.messages(room)
            return any(
                e.get("sender") == ghost and e["type"] == "m.room.message" and not e.get("content")
                for e in events
            )

        await eventually(redacted, f"the deleted post redacted in {room}")

    # Nothing was sent twice anywhere.
    for room, reader in by_room.items():
        events = await reader.all_messages(room)
        assert copies(events, ghost, body_is("to every room")) == 1
        assert copies(events, ghost, body_is("count me")) == 1
        assert copies(events, ghost, lambda e: e["type"] == POLL_START) == 1
        assert copies(events, ghost, lambda e: e.get("content", {}).get("body") == "* after the edit") == 1


async def test_sigkill_during_a_fan_out_leaves_each_room_each_post_once(env: Env, small_shards: None) -> None:
    alice = await env.user("alice")
    channel = await create_channel(env, alice, env.handle("fanout"), "Fan Out")
    ghost = ghost_of(env, channel)
    rooms, readers = await readers_in_shards(env, channel, 7)
    watcher = readers[0][0]
    bodies = [f"fan-out {i:02d}" for i in range(30)]

    async def post_all() -> None:
        for body in bodies:
            await alice.text(channel.backstage, body)

    # Kill Kanal as soon as the first copy appears, while the posts are still being written: most of
    # the 90 copies are still to be sent (those posted meanwhile reach Kanal after its restart).
    posting = asyncio.create_task(post_all())
    await watcher.wait_for(rooms[0], body_is(bodies[0]), timeout=TIMEOUT)
    env.kanal.kill()
    await posting
    before_restart = 0
    for room in rooms:
        reader = next(r for r, joined in readers if joined == room)
        events = await reader.all_messages(room)
        before_restart += sum(copies(events, ghost, body_is(body)) for body in bodies)
    assert 0 < before_restart < len(bodies) * len(rooms), "the kill came in the middle of the fan-out"
    await env.kanal.start()
    for room in rooms:
        reader = next(r for r, joined in readers if joined == room)

        async def all_there(reader: User = reader, room: str = room) -> bool:
            events = await reader.all_messages(room)
            return all(copies(events, ghost, body_is(body)) >= 1 for body in bodies)

        await eventually(all_there, f"every post in {room}", timeout=120)
    await asyncio.sleep(2)  # anything doubled would arrive now, in every room
    for room in rooms:
        reader = next(r for r, joined in readers if joined == room)
        events = await reader.all_messages(room)
        counts = {body: copies(events, ghost, body_is(body)) for body in bodies}
        assert set(counts.values()) == {1}, f"{room}: {counts}"


async def notifications(reader: User, room: str) -> int:
    """What the reader's client shows as the room's notification count (a fresh /sync)."""
    response = await reader.client.sync(timeout=0, full_state=True)
    assert isinstance(response, nio.SyncResponse), response
    return int(response.rooms.join[room].unread_notifications.notification_count or 0)


async def test_notify_off_sends_posts_that_notify_nobody(env: Env) -> None:
    alice, bob = await env.user("alice"), await env.user("bob")
    channel = await create_channel(env, alice, env.handle("quiet"), "Quiet Desk")
    bs, room, ghost = channel.backstage, channel.broadcast, ghost_of(env, channel)
    await bob.join(room)
    assert "Now: on" in await alice.ask(bs, "!notify", "Usage: !notify")

    await alice.ask(bs, "!notify off", "now go out as notices")
    await alice.text(bs, "a quiet post")
    quiet = await bob.wait_for(room, lambda e: e.get("sender") == ghost and body_is("a quiet post")(e))
    assert quiet["content"]["msgtype"] == "m.notice"
    assert await notifications(bob, room) == 0

    await alice.ask(bs, "!notify on", "notify their readers again")
    await alice.text(bs, "a loud post")
    loud = await bob.wait_for(room, lambda e: e.get("sender") == ghost and body_is("a loud post")(e))
    assert loud["content"]["msgtype"] == "m.text"
    assert await notifications(bob, room) == 1


async def test_operators_set_a_channel_s_shard_size_and_a_renamed_channel_keeps_its_rooms(env: Env) -> None:
    operator, alice = await env.user("ops"), await env.user("alice")

    def with_operator(data: dict[str, Any]) -> None:
        data["operators"] = {"users": [operator.user_id]}

    async with reconfigured(env, with_operator):
        ops_room = await operator.wait_invite(
            lambda _rid, room: (room.name or "") == "Kanal operators", timeout=30
        )
        await operator.join(ops_room)
        channel = await create_channel(env, alice, env.handle("sized"), "Sized Desk")
        alias = f"#{channel.handle}:{env.domain}"
        ann, bob, cat = await env.user("ann"), await env.user("bob"), await env.user("cat")
        await ann.join(alias)
        await bob.join(alias)
        listing = await operator.ask(ops_room, f"shard-size {channel.handle}", "joined readers before")
        assert "10000" in listing and "channels.shard_size in the config" in listing, listing

        # Two readers already: a size of 2 opens the next room at once, and #handle moves there.
        answer = await operator.ask(ops_room, f"shard-size {channel.handle} 2", "set for this channel")
        assert f"1. {channel.broadcast} — 2" in answer, answer

        async def moved() -> bool:
            return await resolve(cat, alias) != channel.broadcast

        await eventually(moved, "#handle moving to the second room")
        second = await cat.join(alias)
        assert second != channel.broadcast
        listing = await operator.ask(ops_room, f"shard-size {channel.handle}", f"2. {second}")
        assert f"1. {channel.broadcast} — 2" in listing and f"2. {second} — 1" in listing, listing
        # A reader who leaves is no longer counted.
        left = await bob.client.room_leave(channel.broadcast)
        assert isinstance(left, nio.RoomLeaveResponse), left

        async def counted_out() -> bool:
            listing = await operator.ask(ops_room, f"shard-size {channel.handle}", f"2. {second}")
            return f"1. {channel.broadcast} — 1" in listing

        await eventually(counted_out, "the leave counted")

        # A rename points the new #handle at the open room; readers of both rooms still get posts.
        new = env.handle("renamed")
        await alice.ask(channel.management, f"rename {channel.handle} {new}", f"is now #{new}")

        async def renamed() -> bool:
            response = await cat.client.room_resolve_alias(f"#{new}:{env.domain}")
            return isinstance(response, nio.RoomResolveAliasResponse) and response.room_id == second

        await eventually(renamed, "the new #handle leading to the open room")
        ghost = f"@{env.ghost_prefix}{channel.handle}:{env.domain}"
        await alice.text(channel.backstage, "after the rename")
        await ann.wait_for(
            channel.broadcast, lambda e: e.get("sender") == ghost and body_is("after the rename")(e)
        )
        await cat.wait_for(second, lambda e: e.get("sender") == ghost and body_is("after the rename")(e))
        assert "Subscribers: 2" in await alice.ask(channel.backstage, "!stats", "Subscribers")
