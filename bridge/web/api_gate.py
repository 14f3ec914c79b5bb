"""The compliance gate for API posts: the channel's hooks, and what the gate does with a post they flag.

hold ─▶ HeldPost, the backstage and the moderation room told, 202 │ reject ─▶ decision with its
statement, 422. The same helpers as for backstage posts (`bridge.moderation.gate`), with the API's
own messages.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bridge.moderation.gate import record_held, reject_held, tell_moderators_held
from bridge.moderation.hooks import MediaInfo, PostInfo, Verdict, outcome
from bridge.publishing.posts import API_SOURCE_PREFIX
from bridge.runtime.context import Context, reply
from bridge.runtime.languages import language_for
from bridge.store.models import Channel, Decision, HeldPost, Room
from bridge.web.api_errors import ApiError


async def screen(ctx: Context, channel: Channel, info: PostInfo) -> tuple[list[Verdict], Verdict | None]:
    """The channel's hooks' verdicts and the deciding one (None: publish)."""
    pipeline = ctx.pipeline
    if pipeline is None or not pipeline.hooks_for(channel.handle or ""):
        return [], None
    verdicts: list[Verdict] = await pipeline.check(info)
    return verdicts, outcome(verdicts)


def post_info(channel: Channel, token_name: str, source: str, content: dict[str, Any]) -> PostInfo:
    info = content.get("info")
    media = None
    if isinstance(content.get("url"), str) and isinstance(info, dict):
        media = MediaInfo(mimetype=info.get("mimetype"), size=info.get("size"), url=content["url"])
    formatted = content.get("formatted_body")
    return PostInfo(
        channel_id=channel.id,
        handle=channel.handle or "",
        title=channel.title,
        author=f"{API_SOURCE_PREFIX}{token_name}",
        event_id=source,
        msgtype=str(content.get("msgtype", "m.text")),
        body=str(content.get("body", "")),
        formatted_body=formatted if isinstance(formatted, str) else None,
        media=media,
        via="api",
    )


def _as_event(channel: Channel, token_name: str, source: str, content: dict[str, Any]) -> dict[str, Any]:
    """A held API post, shaped like the backstage event it stands in for (see `publish_held`)."""
    return {
        "event_id": source,
        "room_id": channel.backstage_room_id or "",
        "sender": f"{API_SOURCE_PREFIX}{token_name}",
        "type": "m.room.message",
        "content": content,
        "origin_server_ts": int(time.time() * 1000),
    }


async def hold_or_reject(
    ctx: Context,
    session: AsyncSession,
    channel: Channel,
    token_name: str,
    source: str,
    event_content: dict[str, Any],
    verdicts: list[Verdict],
    deciding: Verdict,
) -> tuple[HeldPost, Decision | None]:
    """What the gate does with a backstage post a hook flagged, for an API post."""
    author = f"{API_SOURCE_PREFIX}{token_name}"
    event = _as_event(channel, token_name, source, event_content)
    held = await record_held(ctx, session, channel, source, author, event, verdicts, deciding)
    if deciding.action == "hold":
        if channel.backstage_room_id:
            backstage = await session.get(Room, channel.backstage_room_id)
            lang = await language_for(session, ctx, channel.owner, room=backstage)
            reply(
                session,
                ctx,
                channel.backstage_room_id,
                lang,
                "mod_api_post_held",
                token=token_name,
                held=held.id,
                handle=channel.handle,
            )
        preview = str(event_content.get("body", ""))
        await tell_moderators_held(ctx, session, channel, held, deciding, preview, token=token_name)
        return held, None
    return held, await reject_held(ctx, session, channel, held, deciding)


def rejection(deciding: Verdict, decision: Decision) -> ApiError:
    return ApiError(
        422,
        "rejected",
        f"Not published: the post {deciding.reason}.",
        hook=deciding.hook,
        category=deciding.category,
        decision=decision.id,
        statement=decision.statement.get("text", ""),
    )
