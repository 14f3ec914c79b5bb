"""Views: unique readers per post, counted from the read receipts the homeserver pushes to Kanal.

A public read receipt (`m.read`) on a published post moves that reader's position in the channel to
the post, if it is further than before; a receipt counts its post and every earlier one. The views of
post p are the readers whose position is p or later. Private receipts (`m.read.private`) are never
counted: the homeserver does not push them to us, and they are private.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.runtime.context import Context
from bridge.store.models import Channel, Post, PostCopy, ReaderPosition

log = logging.getLogger(__name__)


def receipts(ephemeral: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(event id, reader) for each public read receipt in a transaction's ephemeral events."""
    found: list[tuple[str, str]] = []
    for item in ephemeral:
        content = item.get("content")
        if item.get("type") != "m.receipt" or not isinstance(content, dict):
            continue
        for event_id, kinds in content.items():
            readers = kinds.get("m.read") if isinstance(kinds, dict) else None
            if isinstance(event_id, str) and isinstance(readers, dict):
                found.extend((event_id, user) for user in readers if isinstance(user, str))
    return found


async def count_receipts(
    ctx: Context, ephemeral: Iterable[Mapping[str, Any]], views_in_posts: set[int] | None = None
) -> int:
    """Move readers' positions forward; returns how many positions moved.

    `views_in_posts` collects the channels (ids) where readers moved and `!views-in-posts` is on.
    """
    pairs = receipts(ephemeral)
    if not pairs:
        return 0
    async with ctx.sessions.begin() as session:
        rows = (
            await session.execute(
                select(
                    PostCopy.event_id,
                    Post.id,
                    Post.channel_id,
                    Channel.ghost_user_id,
                    Channel.views_in_posts,
                )
                .join(Post, Post.id == PostCopy.post_id)
                .join(Channel, Channel.id == Post.channel_id)
                .where(PostCopy.event_id.in_({event_id for event_id, _ in pairs}))
            )
        ).all()
        posts = {event_id: (post_id, channel_id, ghost) for event_id, post_id, channel_id, ghost, _ in rows}
        opted = {channel_id for _, _, channel_id, _, shown in rows if shown}
        furthest: dict[tuple[int, str], int] = {}
        for event_id, reader in pairs:
            found = posts.get(event_id)
            if found is None or reader in (ctx.bot, found[2]):
                continue
            post_id, channel_id, _ghost = found
            key = (channel_id, reader)
            furthest[key] = max(furthest.get(key, 0), post_id)
        if furthest:
            values: list[dict[str, Any]] = [
                {"channel_id": channel_id, "user_id": reader, "post_id": post_id}
                for (channel_id, reader), post_id in furthest.items()
            ]
            await session.execute(_advance(session, values))  # one statement (each key once)
            if views_in_posts is not None:
                views_in_posts.update(channel_id for channel_id, _ in furthest if channel_id in opted)
    return len(furthest)


def _advance(session: AsyncSession, rows: list[dict[str, Any]]) -> Any:
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(ReaderPosition).values(rows)
    return statement.on_conflict_do_update(
        index_elements=["channel_id", "user_id"],
        set_={"post_id": statement.excluded.post_id, "updated_at": func.now()},
        where=ReaderPosition.post_id < statement.excluded.post_id,
    )


async def views_of(session: AsyncSession, channel_id: int, post_ids: Iterable[int]) -> dict[int, int]:
    """Unique readers of each post: those who have read it or a later one."""
    result: dict[int, int] = {}
    for post_id in post_ids:
        result[post_id] = (
            await session.scalar(
                select(func.count())
                .select_from(ReaderPosition)
                .where(ReaderPosition.channel_id == channel_id, ReaderPosition.post_id >= post_id)
            )
            or 0
        )
    return result
