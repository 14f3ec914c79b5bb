"""What the publishing API answers: a post as JSON, the receipt of a write, permalinks and timestamps."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bridge.runtime.context import Context
from bridge.runtime.outbox import aware
from bridge.store.models import Channel, HeldPost, Post
from bridge.web.api_content import FORMAT_HTML


def permalink(ctx: Context, channel: Channel, post_id: int) -> str:
    return f"{ctx.config.web_public_url}/c/{channel.handle}/{post_id}"


def receipt(
    ctx: Context, channel: Channel, post: Post | None, status: str, held: HeldPost | None = None
) -> dict[str, Any]:
    return {
        "id": post.id if post is not None else None,
        "status": status,
        "event_id": post.relayed_event_id if post is not None else None,
        "url": permalink(ctx, channel, post.id) if post is not None else None,
        "held_id": held.id if held is not None else None,
    }


def post_json(ctx: Context, channel: Channel, post: Post, views: int | None = None) -> dict[str, Any]:
    content = post.content or {}
    body = content.get("body")
    formatted = content.get("formatted_body")
    html = formatted if content.get("format") == FORMAT_HTML and isinstance(formatted, str) else None
    media = None
    if isinstance(content.get("url"), str):
        info = content.get("info")
        info = info if isinstance(info, dict) else {}
        mimetype, size, filename = info.get("mimetype"), info.get("size"), content.get("filename")
        media = {
            "url": content["url"],
            "mimetype": mimetype if isinstance(mimetype, str) else None,
            "size": size if isinstance(size, int) and not isinstance(size, bool) else None,
            "filename": filename if isinstance(filename, str) else None,
        }
    msgtype = content.get("msgtype")
    return {
        "id": post.id,
        "created_at": iso(post.created_at),
        "edited_at": iso(post.edited_at) if post.edited_at is not None else None,
        "msgtype": msgtype if isinstance(msgtype, str) else post.event_type,
        "text": body if isinstance(body, str) else None,
        "html": html,
        "media": media,
        "url": permalink(ctx, channel, post.id),
        "event_id": post.relayed_event_id,
        "views": views,
        "via": post.via,
    }


def iso(value: datetime) -> str:
    return aware(value).astimezone(UTC).isoformat().replace("+00:00", "Z")
