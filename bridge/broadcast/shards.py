"""Shards: a channel past one room.

A Matrix room's cost grows with every member on every post, so a channel spans several public rooms
("shards") with the same name, topic, avatar, power levels, ACL and retention. `channel.rooms` lists
them, oldest first; the last is the open one, where `#handle` and the directory entry point. Readers
of older shards stay and keep receiving: the seam writes every post, edit, deletion, pin and state
change to every shard (one outbox entry per room, each room's queue in order).

    membership events ─▶ count_members: rooms.joined ± 1 ─▶ the open room reached its shard size
        ─▶ outbox `open_shard` (queue `shards:<channel>`) ─▶ open_shard:
            1. the next room, created with the open room's current state (its own alias
               `#_kanal.shard.<channel>.<n>` makes a retry find it instead of creating another)
            2. recorded as the channel's open room (channels.shard_rooms, rooms row)
            3. the ghost joins and says where the earlier posts are; bans are carried over; state
               changed meanwhile is copied again
            4. #handle and the directory entry move to it; the older rooms leave the directory

The size is `channels.shard_size` (config), or the operators' size for one channel; 0 never opens a
second room. Existing channels are one shard: nothing to migrate (their first room is counted from the
homeserver when it first matters). The running count is only the trigger: a transaction the homeserver
resends, or a profile change without `prev_content`, can skew it, so the job asks the homeserver for
the exact number of joined readers before it opens a room, and stores it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from typing import Any, Final

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from appservice.client import q
from appservice.errors import MatrixConnectionError, MatrixRequestError, MNotFound
from appservice.events import Event
from appservice.ids import RoomAlias, RoomID, UserID
from bridge.runtime.context import Context, enqueue
from bridge.runtime.outbox import OutboxKind, OutboxStatus, OutboxWorker, SkipEntry, new_entry, txn_id_for
from bridge.store.models import Channel, ChannelStatus, OutboxEntry, Room, RoomKind
from bridge.text.i18n import t

log = logging.getLogger(__name__)

# Not copied into a new shard: its own creation and members; power levels go in as the override;
# the canonical alias follows once #handle points at it; pins name events of the older room.
NOT_COPIED: Final = frozenset(
    {
        "m.room.create",
        "m.room.member",
        "m.room.power_levels",
        "m.room.canonical_alias",
        "m.room.pinned_events",
        "m.room.tombstone",
        "m.room.encryption",
        "m.room.aliases",
    }
)


def shard_size(ctx: Context, channel: Channel) -> int:
    """Joined readers of the open room before the next opens (0: never)."""
    return ctx.config.shard_size if channel.shard_size is None else channel.shard_size


def shard_alias(ctx: Context, channel_id: int, ordinal: int) -> str:
    """Each shard's own alias: a retried creation finds the room it made before."""
    return f"#_kanal.shard.{channel_id}.{ordinal}:{ctx.domain}"


def _joined(membership: Any) -> bool:
    return bool(membership == "join")


def membership_changes(ctx: Context, events: Iterable[Event]) -> dict[RoomID, int]:
    """How each room's joined readers change with these member events (Kanal's own users not counted)."""
    changes: dict[RoomID, int] = defaultdict(int)
    for event in events:
        if event.type != "m.room.member" or not event.state_key or ctx.is_ours(event.state_key):
            continue
        prev = event.unsigned.get("prev_content")
        was = _joined(prev.get("membership")) if isinstance(prev, dict) else False
        now = _joined(event.content.get("membership"))
        if was != now:
            changes[event.room_id] += 1 if now else -1
    return {room: delta for room, delta in changes.items() if delta}


async def count_members(ctx: Context, events: Iterable[Event]) -> None:
    """Keep each channel room's joined count; when a channel's open room is full, queue the next."""
    changes = membership_changes(ctx, events)
    if not changes:
        return
    async with ctx.sessions.begin() as session:
        rows = (
            await session.execute(
                select(Room.room_id, Room.channel_id, Room.joined).where(
                    Room.room_id.in_(list(changes)), Room.kind == RoomKind.BROADCAST
                )
            )
        ).all()
        for room_id, channel_id, joined in rows:
            delta = changes[room_id]
            if joined is not None:
                await session.execute(
                    update(Room).where(Room.room_id == room_id).values(joined=Room.joined + delta)
                )
            if delta > 0 and channel_id is not None:
                await _open_when_full(
                    ctx, session, channel_id, room_id, None if joined is None else joined + delta
                )


async def _open_when_full(
    ctx: Context, session: AsyncSession, channel_id: int, room_id: RoomID, joined: int | None
) -> None:
    channel = await session.get(Channel, channel_id)
    if channel is None or channel.status != ChannelStatus.ACTIVE or channel.open_room != room_id:
        return
    size = shard_size(ctx, channel)
    if size <= 0 or (joined is not None and joined < size):
        return
    queue = shard_queue(channel_id)
    waiting = await session.scalar(
        select(OutboxEntry.id).where(OutboxEntry.queue == queue, OutboxEntry.status == OutboxStatus.PENDING)
    )
    if waiting is None:  # one job at a time; it checks the count itself (an uncounted room is counted)
        payload = {"channel_id": channel_id, "after": room_id}
        enqueue(session, new_entry(queue, OutboxKind.OPEN_SHARD, ctx.bot, payload))


def check(ctx: Context, session: AsyncSession, channel: Channel) -> None:
    """Queue a look at whether the channel's open room is full (after its shard size changed)."""
    if channel.open_room is not None and shard_size(ctx, channel) > 0:
        payload = {"channel_id": channel.id, "after": channel.open_room}
        enqueue(session, new_entry(shard_queue(channel.id), OutboxKind.OPEN_SHARD, ctx.bot, payload))


def shard_queue(channel_id: int) -> str:
    return f"shards:{channel_id}"


async def joined_count(ctx: Context, room_id: RoomID) -> int:
    """Ask the homeserver how many readers a room has (and remember it)."""
    members = await ctx.bot_intent().joined_members(room_id)
    count = sum(1 for user in members if not ctx.is_ours(user))
    async with ctx.sessions.begin() as session:
        await session.execute(update(Room).where(Room.room_id == room_id).values(joined=count))
    return count


async def subscriber_count(ctx: Context, channel: Channel) -> int | None:
    """Readers of the channel: the people joined to any of its rooms (None: the homeserver did not
    answer)."""
    readers: set[str] = set()
    try:
        for room in channel.rooms:
            members = await ctx.bot_intent().joined_members(room)
            readers.update(user for user in members if not ctx.is_ours(user))
    except (MatrixRequestError, MatrixConnectionError):
        return None
    return len(readers)


# -- opening the next shard -------------------------------------------------------------------------


def _empty_topic(kind: str, content: dict[str, Any]) -> bool:
    """An empty topic (a channel made before it got a default one): copied, clients would show
    "removed the topic" in the new room."""
    return kind == "m.room.topic" and not content.get("topic")


def next_room_request(state: list[dict[str, Any]], *, alias_localpart: str, ghost: str) -> dict[str, Any]:
    """The `createRoom` body of a new shard: the open room's current state, outside the directory
    (it is listed once #handle points at it)."""
    initial: list[dict[str, Any]] = []
    power: dict[str, Any] = {}
    version: str | None = None
    for event in state:
        kind, content = event.get("type"), event.get("content")
        if not isinstance(kind, str) or not isinstance(content, dict):
            continue
        if kind == "m.room.create":
            version = content.get("room_version") or "1"
        elif kind == "m.room.power_levels":
            power = content
        elif kind not in NOT_COPIED and content and not _empty_topic(kind, content):
            initial.append({"type": kind, "state_key": event.get("state_key", ""), "content": content})
    request: dict[str, Any] = {
        "preset": "public_chat",
        "visibility": "private",
        "room_alias_name": alias_localpart,
        "invite": [ghost],
        "power_level_content_override": power,
        "initial_state": initial,
    }
    if version is not None:
        request["room_version"] = version
    return request


async def open_shard(ctx: Context, entry: OutboxEntry, worker: OutboxWorker) -> str | None:
    """Open the channel's next room when its open room is full (an `open_shard` entry; resumable:
    each step checks what exists)."""
    async with ctx.sessions() as session:
        channel = await session.get(Channel, entry.payload["channel_id"])
    after = RoomID(entry.payload["after"])
    if channel is None or channel.status != ChannelStatus.ACTIVE or channel.handle is None:
        raise SkipEntry("the channel is not active")
    if after not in channel.rooms:
        raise SkipEntry(f"{after} is not a room of #{channel.handle}")
    ordinal = channel.rooms.index(after) + 1
    if ordinal < len(channel.rooms):
        new = channel.rooms[ordinal]  # recorded before a crash: finish the steps after it
    else:
        size = shard_size(ctx, channel)
        if size <= 0 or await joined_count(ctx, after) < size:
            raise SkipEntry(f"#{channel.handle}'s open room is not full")
        new = await _create(ctx, channel, after, ordinal)
        await _record(ctx, channel, new)
        channel.shard_rooms = [*(channel.shard_rooms or ()), new]
    await _settle(ctx, channel, after, new, txn_id_for(entry.id, "history"))
    log.info("#%s opened room %d (%s): the previous one is full", channel.handle, ordinal + 1, new)
    return None


async def _create(ctx: Context, channel: Channel, after: RoomID, ordinal: int) -> RoomID:
    bot = ctx.bot_intent()
    alias = shard_alias(ctx, channel.id, ordinal)
    localpart = alias[1:].split(":", 1)[0]  # the server name may carry a port
    state = await bot.room_state(after)
    request = next_room_request(state, alias_localpart=localpart, ghost=channel.ghost_user_id)
    # The alias stays the new room's own (and its canonical alias until #handle moves to it); a retry
    # after a lost answer or a crash finds the room it names.
    return await bot.create_room_once(request, localpart, canonical=True)


async def _record(ctx: Context, channel: Channel, room_id: RoomID) -> None:
    async with ctx.sessions.begin() as session:
        current = await session.get(Channel, channel.id, with_for_update=True)
        if current is None:
            raise SkipEntry("the channel is gone")
        if room_id not in current.rooms:
            current.shard_rooms = [*(current.shard_rooms or ()), room_id]
        await session.merge(Room(room_id=room_id, kind=RoomKind.BROADCAST, channel_id=channel.id, joined=0))


def state_to_copy(
    theirs: list[dict[str, Any]], ours: list[dict[str, Any]]
) -> list[tuple[str, str, dict[str, Any]]]:
    """The state events (type, state key, content) that make a new shard match the older room: what
    differs, a removal included (the channel photo taken away meanwhile: empty content), never what
    NOT_COPIED names."""
    have = {(e.get("type"), e.get("state_key", "")): e.get("content") for e in ours}
    copy: list[tuple[str, str, dict[str, Any]]] = []
    for event in theirs:
        kind, key, content = event.get("type"), event.get("state_key", ""), event.get("content")
        if not isinstance(kind, str) or kind in NOT_COPIED or not isinstance(key, str):
            continue
        if not isinstance(content, dict) or have.get((kind, key)) == content:
            continue
        if content or have.get((kind, key)):  # nothing to remove where there is nothing
            copy.append((kind, key, content))
    return copy


def _is_ban(content: Any) -> bool:
    return isinstance(content, dict) and content.get("membership") == "ban"


def history_notice(ctx: Context, channel: Channel) -> str:
    """The new room's first post: where the channel's earlier posts are."""
    first = f"https://matrix.to/#/{channel.broadcast_room_id}?via={ctx.domain}"
    lang = ctx.config.default_language
    if ctx.config.web_enabled and not channel.private:
        page = f"{ctx.config.web_public_url.rstrip('/')}/c/{channel.handle}"
        return t(lang, "shard_history_web", title=channel.title, page=page, first=first)
    return t(lang, "shard_history", title=channel.title, first=first)


async def _settle(ctx: Context, channel: Channel, after: RoomID, new: RoomID, txn_id: str) -> None:
    """The steps after recording the new room; each is idempotent."""
    bot = ctx.bot_intent()
    ghost = ctx.client.intent(UserID(channel.ghost_user_id))
    await ghost.join(new)
    # The same transaction id on a retry: the homeserver answers with the notice it already has.
    notice = {"msgtype": "m.notice", "body": history_notice(ctx, channel)}
    await ghost.send(new, "m.room.message", notice, txn_id)
    # State changed in the older room while the new one was being made reached only the older one.
    ours_state = await bot.room_state(new)
    for kind, key, content in state_to_copy(await bot.room_state(after), ours_state):
        await bot.send_state(new, kind, content, key)
    ours = {(e.get("type"), e.get("state_key", "")): e.get("content") for e in ours_state}
    banned = {key for (kind, key), content in ours.items() if kind == "m.room.member" and _is_ban(content)}
    for member in await bot.members(after, "ban"):
        user = member.get("state_key")
        if isinstance(user, str) and user not in banned:
            reason = (member.get("content") or {}).get("reason") or "banned in the channel"
            await ctx.client.request(
                "POST",
                f"/_matrix/client/v3/rooms/{q(new)}/ban",
                body={"user_id": user, "reason": reason},
                user_id=ctx.bot,
            )
    alias = RoomAlias(ctx.alias_for(channel.handle or ""))
    try:
        if await bot.resolve_alias(alias) != new:
            await bot.delete_alias(alias)
            await bot.set_alias(alias, new)
    except MNotFound:
        await bot.set_alias(alias, new)
    await bot.send_state(new, "m.room.canonical_alias", {"alias": alias})
    for room in channel.rooms:
        listed = room == new and not channel.private
        await bot.set_directory_visibility(room, "public" if listed else "private")
