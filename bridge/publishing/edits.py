"""Editing a published post on someone's behalf: the publishing API's PATCH and backstage `!edit`.

The relayed copy is replaced (`m.replace`, as the ghost) with the new content, keeping the footer the
post shows (the comments link, the view count); the post's stored content follows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bridge.audience.comments import thread_edit
from bridge.channels.backstage import shown_content
from bridge.matrix.decorations import decorate
from bridge.matrix.relay import REF_PLACEHOLDER
from bridge.runtime.context import enqueue, send_entry
from bridge.store.models import Channel, Post


def edit_event_content(new_content: dict[str, Any], target: str) -> dict[str, Any]:
    """An `m.replace` of `target` (REF_PLACEHOLDER: the relayed copy, filled in by the outbox)."""
    fallback: dict[str, Any] = {
        "msgtype": new_content.get("msgtype", "m.text"),
        "body": f"* {new_content.get('body', '')}",
    }
    return {
        **fallback,
        "m.new_content": new_content,
        "m.relates_to": {"rel_type": "m.replace", "event_id": target},
    }


async def publish_edit(
    session: AsyncSession, channel: Channel, post: Post, new_content: dict[str, Any]
) -> None:
    """The edit of the relayed copy, keeping its footer (the comments link and the view count shown)."""
    post.content = shown_content(new_content)
    post.edited_at = datetime.now(UTC)
    entry = await thread_edit(session, channel, post)
    if entry is None:
        views = post.views_shown if channel.views_in_posts else None
        shown = decorate(new_content, views=views) if views is not None else new_content
        entry = send_entry(
            channel.ghost_user_id,
            channel.broadcast_room_id or "",
            edit_event_content(shown, REF_PLACEHOLDER),
            ref_source=post.source_event_id,
        )
    enqueue(session, entry)
