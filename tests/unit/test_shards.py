"""Shards: counting readers per room, when the next room opens, what it copies, and the seam's fan-out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from appservice.events import Event
from appservice.ids import EventID, RoomID, UserID
from bridge.broadcast import seam, shards
from bridge.runtime.config import parse
from bridge.runtime.context import Context
from bridge.runtime.outbox import OutboxKind, OutboxWorker
from bridge.store.db import create_engine, migrate, sessionmaker
from bridge.store.models import Channel, OutboxEntry, Room, RoomKind

FIRST, SECOND = RoomID("!first:x"), RoomID("!second:x")


def _member(room: str, user: str, membership: str, prev: str | None = None) -> Event:
    unsigned: dict[str, Any] = {"prev_content": {"membership": prev}} if prev else {}
    return Event(
        event_id=EventID(f"${user}{membership}"),
        room_id=RoomID(room),
        sender=UserID(user),
        type="m.room.member",
        content={"membership": membership},
        state_key=user,
        unsigned=unsigned,
    )


async def _context(tmp_path: Path, **channels: Any) -> Context:
    config = parse(
        {
            "homeserver": {"url": "http://127.0.0.1:9", "domain": "x"},
            "appservice": {"as_token": "a" * 20, "hs_token": "b" * 20},
            "database": {"url": f"sqlite:///{tmp_path / 'k.db'}"},
            "channels": channels,
        },
        tmp_path / "config.yaml",
    )
    engine = create_engine(config.database_url)
    await migrate(engine)
    sessions = sessionmaker(engine)
    return Context(config, None, sessions, OutboxWorker(sessions, None))  # type: ignore[arg-type]


async def _stored_channel(session: AsyncSession, **extra: Any) -> Channel:
    """An active channel whose first room is FIRST, stored."""
    channel = Channel(
        handle="news",
        title="N",
        owner="@o:x",
        ghost_user_id="@kanal_news:x",
        status="active",
        broadcast_room_id=FIRST,
        **extra,
    )
    session.add(channel)
    await session.flush()
    return channel


def test_joins_and_leaves_of_readers_move_the_count_and_kanal_s_users_do_not(tmp_path: Path) -> None:
    config = parse(
        {
            "homeserver": {"url": "http://127.0.0.1:9", "domain": "x"},
            "appservice": {"as_token": "a" * 20, "hs_token": "b" * 20},
        },
        tmp_path / "config.yaml",
    )
    ctx = Context(config, None, None, None)  # type: ignore[arg-type]
    events = [
        _member("!a:x", "@ann:x", "join"),
        _member("!a:x", "@bob:x", "join", prev="invite"),
        _member("!a:x", "@bob:x", "join", prev="join"),  # a new display name: no change
        _member("!a:x", "@cat:x", "leave", prev="join"),
        _member("!a:x", "@dan:x", "ban", prev="leave"),  # was not a reader
        _member("!a:x", "@kanal:x", "join"),  # the bot
        _member("!a:x", "@kanal_news:x", "join"),  # a ghost
        _member("!b:x", "@eve:x", "leave", prev="join"),
        _member("!c:x", "@fay:x", "join"),
        _member("!c:x", "@fay:x", "leave", prev="join"),  # in and out in one transaction: 0
    ]
    assert shards.membership_changes(ctx, events) == {"!a:x": 1, "!b:x": -1}


def test_a_new_room_copies_the_open_room_s_state_but_not_its_members_pins_or_alias() -> None:
    state: list[dict[str, Any]] = [
        {"type": "m.room.create", "state_key": "", "content": {"room_version": "12", "creator": "@kanal:x"}},
        {"type": "m.room.power_levels", "state_key": "", "content": {"users": {"@g:x": 100}}},
        {"type": "m.room.name", "state_key": "", "content": {"name": "News"}},
        {"type": "m.room.topic", "state_key": "", "content": {"topic": "All of it"}},
        {"type": "m.room.server_acl", "state_key": "", "content": {"allow": ["x"], "deny": []}},
        {"type": "m.room.member", "state_key": "@ann:x", "content": {"membership": "join"}},
        {"type": "m.room.pinned_events", "state_key": "", "content": {"pinned": ["$old"]}},
        {"type": "m.room.canonical_alias", "state_key": "", "content": {"alias": "#news:x"}},
        {"type": "m.room.avatar", "state_key": "", "content": {}},  # removed: nothing to copy
    ]
    request = shards.next_room_request(state, alias_localpart="_kanal.shard.1.1", ghost="@g:x")
    assert request["room_version"] == "12"
    assert request["power_level_content_override"] == {"users": {"@g:x": 100}}
    assert request["visibility"] == "private" and request["invite"] == ["@g:x"]
    assert request["room_alias_name"] == "_kanal.shard.1.1"
    assert [e["type"] for e in request["initial_state"]] == [
        "m.room.name",
        "m.room.topic",
        "m.room.server_acl",
    ]


def test_a_new_room_carries_the_channel_photo() -> None:
    photo = {"type": "m.room.avatar", "state_key": "", "content": {"url": "mxc://x/photo"}}
    request = shards.next_room_request([photo], alias_localpart="_kanal.shard.1.1", ghost="@g:x")
    assert request["initial_state"] == [photo]


def test_a_photo_changed_or_removed_while_the_new_room_was_made_follows_it() -> None:
    def avatar(content: dict[str, Any]) -> dict[str, Any]:
        return {"type": "m.room.avatar", "state_key": "", "content": content}

    name = {"type": "m.room.name", "state_key": "", "content": {"name": "News"}}
    old = avatar({"url": "mxc://x/old"})
    new = avatar({"url": "mxc://x/new"})
    assert shards.state_to_copy([name, new], [name, old]) == [("m.room.avatar", "", {"url": "mxc://x/new"})]
    assert shards.state_to_copy([name, avatar({})], [name, old]) == [("m.room.avatar", "", {})]
    assert shards.state_to_copy([name, avatar({})], [name]) == []  # nothing to remove
    assert shards.state_to_copy([name, old], [name, old]) == []
    member = {"type": "m.room.member", "state_key": "@ann:x", "content": {"membership": "join"}}
    assert shards.state_to_copy([member], []) == []


def test_a_new_room_does_not_copy_an_empty_topic() -> None:
    # Channels made before they had a default topic have an empty one; a copy reads as "removed the topic".
    state: list[dict[str, Any]] = [
        {"type": "m.room.name", "state_key": "", "content": {"name": "News"}},
        {"type": "m.room.topic", "state_key": "", "content": {"topic": ""}},
    ]
    request = shards.next_room_request(state, alias_localpart="_kanal.shard.1.1", ghost="@g:x")
    assert [e["type"] for e in request["initial_state"]] == ["m.room.name"]


async def test_every_write_goes_to_each_room_and_the_answer_comes_once(tmp_path: Path) -> None:
    ctx = await _context(tmp_path)
    note = ctx.note(RoomID("!backstage:x"), "done")
    async with ctx.sessions.begin() as session:
        channel = await _stored_channel(session, shard_rooms=[SECOND])
        post = await seam.publish(
            session, channel, {"msgtype": "m.text", "body": "hi"}, source="$s", author="@o:x"
        )
        seam.set_state(ctx, session, channel, "m.room.topic", {"topic": "t"}, on_success=note)
        seam.invite(ctx, session, channel, UserID("@ann:x"))
        seam.set_listed(ctx, session, channel, True)
        await seam.retract(session, channel, post, "gone")
    async with ctx.sessions() as session:
        entries = list(await session.scalars(select(OutboxEntry).order_by(OutboxEntry.id)))
    made = [(e.kind, e.payload["room_id"], "on_success" in e.payload) for e in entries]
    assert made == [
        (OutboxKind.SEND, FIRST, False),
        (OutboxKind.SEND, SECOND, False),
        (OutboxKind.STATE, FIRST, False),
        (OutboxKind.STATE, SECOND, True),  # one confirmation, not one per room
        (OutboxKind.INVITE, SECOND, False),  # readers are admitted into the open room
        (OutboxKind.DIRECTORY, FIRST, False),
        (OutboxKind.DIRECTORY, SECOND, False),
        (OutboxKind.REDACT, FIRST, False),
        (OutboxKind.REDACT, SECOND, False),
    ]
    assert [e.payload["visibility"] for e in entries if e.kind == OutboxKind.DIRECTORY] == [
        "private",
        "public",
    ]
    assert {e.queue for e in entries} == {f"room:{FIRST}", f"room:{SECOND}"}


def test_with_notify_off_text_goes_out_as_a_notice_and_media_as_it_is() -> None:
    channel = Channel(notify=False)
    assert (
        seam.for_readers(channel, "m.room.message", {"msgtype": "m.text", "body": "a"})["msgtype"]
        == "m.notice"
    )
    image = {"msgtype": "m.image", "body": "a.png", "url": "mxc://x/y"}
    assert seam.for_readers(channel, "m.room.message", image) == image
    edit = {
        "msgtype": "m.text",
        "body": "* b",
        "m.new_content": {"msgtype": "m.text", "body": "b"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": "$e"},
    }
    shown = seam.for_readers(channel, "m.room.message", edit)
    assert shown["msgtype"] == "m.notice" and shown["m.new_content"]["msgtype"] == "m.notice"
    assert edit["msgtype"] == "m.text"  # the caller's content is not changed
    assert seam.for_readers(Channel(notify=True), "m.room.message", edit) == edit


async def test_a_full_open_room_queues_the_next_once_and_older_rooms_never_do(tmp_path: Path) -> None:
    ctx = await _context(tmp_path, shard_size=2)
    async with ctx.sessions.begin() as session:
        channel = await _stored_channel(session, shard_rooms=[SECOND])
        session.add(Room(room_id=FIRST, kind=RoomKind.BROADCAST, channel_id=channel.id, joined=5))
        session.add(Room(room_id=SECOND, kind=RoomKind.BROADCAST, channel_id=channel.id, joined=0))
    await shards.count_members(ctx, [_member(FIRST, "@ann:x", "join")])  # an older room: no new room
    await shards.count_members(ctx, [_member(SECOND, "@bob:x", "join")])  # 1 of 2
    await shards.count_members(ctx, [_member(SECOND, "@cat:x", "join"), _member(SECOND, "@dan:x", "join")])
    await shards.count_members(ctx, [_member(SECOND, "@eve:x", "join")])  # one job is enough
    async with ctx.sessions() as session:
        jobs = list(await session.scalars(select(OutboxEntry)))
        joined = dict((await session.execute(select(Room.room_id, Room.joined))).all())
    assert joined == {FIRST: 6, SECOND: 4}
    assert [(j.kind, j.queue, j.payload) for j in jobs] == [
        (OutboxKind.OPEN_SHARD, "shards:1", {"channel_id": 1, "after": SECOND})
    ]


async def test_a_shard_size_of_zero_never_opens_a_room(tmp_path: Path) -> None:
    ctx = await _context(tmp_path, shard_size=0)
    async with ctx.sessions.begin() as session:
        channel = await _stored_channel(session)
        session.add(Room(room_id=FIRST, kind=RoomKind.BROADCAST, channel_id=channel.id, joined=10**6))
    await shards.count_members(ctx, [_member(FIRST, "@ann:x", "join")])
    async with ctx.sessions() as session:
        assert list(await session.scalars(select(OutboxEntry))) == []
    assert shards.shard_size(ctx, Channel(shard_size=3)) == 3  # an operator's size for one channel wins
