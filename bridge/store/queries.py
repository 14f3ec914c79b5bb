"""Named queries: the lookups every part makes, written once (handlers call these instead of inline SQL)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from appservice.ids import EventID, RoomID
from bridge.store.models import Channel, Post, PostCopy, Room, RoomKind


def handle_of(text: str) -> str:
    """What someone typed for a channel (`#news:example.org`, `@news`, `News`) as a handle."""
    return text.strip().lstrip("#@").split(":", 1)[0].lower()


async def channel_by_handle(session: AsyncSession, text: str) -> Channel | None:
    """The channel a person named (see `handle_of`); None when there is none."""
    handle = handle_of(text)
    if not handle:
        return None
    channel: Channel | None = await session.scalar(select(Channel).where(Channel.handle == handle))
    return channel


async def channel_by_id(session: AsyncSession, channel_id: int | None) -> Channel | None:
    """The channel a row refers to (a room, a notice, a decision); None when it refers to none."""
    return await session.get(Channel, channel_id) if channel_id is not None else None


async def channel_of_room(session: AsyncSession, room: Room) -> Channel | None:
    """The channel a room (backstage, broadcast, discussion) belongs to."""
    return await channel_by_id(session, room.channel_id)


async def post_by_source(
    session: AsyncSession, source_event_id: str, *, channel_id: int | None = None
) -> Post | None:
    """The post published from a backstage event (or an API post's id), optionally in one channel."""
    query = select(Post).where(Post.source_event_id == source_event_id)
    if channel_id is not None:
        query = query.where(Post.channel_id == channel_id)
    post: Post | None = await session.scalar(query)
    return post


async def post_by_relayed(session: AsyncSession, event_id: EventID) -> Post | None:
    """The post whose published copy in one of a channel's rooms (any shard) is `event_id`."""
    post: Post | None = await session.scalar(
        select(Post).join(PostCopy, PostCopy.post_id == Post.id).where(PostCopy.event_id == event_id)
    )
    return post


async def copy_in(session: AsyncSession, post_id: int, room_id: str) -> str | None:
    """The published event of a post in one room of its channel (None: it never reached that room)."""
    event_id: str | None = await session.scalar(
        select(PostCopy.event_id).where(PostCopy.post_id == post_id, PostCopy.room_id == room_id)
    )
    return event_id


async def copies_of(session: AsyncSession, post_id: int) -> dict[RoomID, str]:
    """A post's published events, room by room (every shard it reached)."""
    rows = await session.execute(
        select(PostCopy.room_id, PostCopy.event_id).where(PostCopy.post_id == post_id)
    )
    return {RoomID(room): event for room, event in rows.all()}


async def source_copy_in(session: AsyncSession, source_event_id: str, room_id: str) -> str | None:
    """The published event, in one room, of the post published from `source_event_id`."""
    event_id: str | None = await session.scalar(
        select(PostCopy.event_id)
        .join(Post, Post.id == PostCopy.post_id)
        .where(Post.source_event_id == source_event_id, PostCopy.room_id == room_id)
    )
    return event_id


async def published_sources(
    session: AsyncSession, channel_id: int, source_event_ids: Iterable[str]
) -> set[str]:
    """Which of these backstage events are published (and not deleted) posts of the channel."""
    wanted = list(source_event_ids)
    if not wanted:
        return set()
    rows = await session.scalars(
        select(Post.source_event_id).where(
            Post.channel_id == channel_id, Post.source_event_id.in_(wanted), Post.redacted.is_(False)
        )
    )
    return set(rows.all())


async def management_room_of(session: AsyncSession, user_id: str) -> RoomID | None:
    """A person's direct chat with the bot (the oldest, when there are several)."""
    room_id: RoomID | None = await session.scalar(
        select(Room.room_id)
        .where(Room.kind == RoomKind.MANAGEMENT, Room.user_id == user_id)
        .order_by(Room.room_id)
        .limit(1)
    )
    return room_id


async def room_of_kind(session: AsyncSession, kind: RoomKind) -> RoomID | None:
    """The room of a kind Kanal keeps one of (the operators' room, the moderation room)."""
    room_id: RoomID | None = await session.scalar(select(Room.room_id).where(Room.kind == kind).limit(1))
    return room_id
