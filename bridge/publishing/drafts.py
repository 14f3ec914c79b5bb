"""Drafts in backstage: `!draft on` keeps what an editor posts instead of publishing it.

Everything posted in backstage is published at once — that is the point of the room — so a message
meant for later needs a way to stay put. An editor turns on draft mode (`!draft on`); from then on
their messages (text, media, polls) are kept in backstage, each marked with a 📝 reaction from the
bot, until `!draft off`. A kept message is published by replying `!publish` to it, or scheduled by
replying `!schedule <when>`. `!draft <text>` keeps a single text without switching the mode. Drafts are
the messages themselves: Kanal stores only who is in draft mode.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from appservice.events import Event, EventParseError, parse_event
from bridge.runtime.context import Context, enqueue, reply, send_entry
from bridge.store.models import Channel, DraftMode, Post, Room
from bridge.text.commands import Command

DRAFT_MARK = "📝"
DRAFT_PREFIX = "!draft "


async def in_draft_mode(session: AsyncSession, channel: Channel, user_id: str) -> bool:
    return await session.get(DraftMode, (channel.id, user_id)) is not None


def mark_kept(ctx: Context, session: AsyncSession, room: Room, event: Event) -> None:
    """The bot's 📝 on a kept message: quiet, and visible to everyone in backstage."""
    content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": event.event_id, "key": DRAFT_MARK}}
    enqueue(session, send_entry(ctx.bot, room.room_id, content, event_type="m.reaction"))


def strip_draft_command(content: dict[str, Any]) -> dict[str, Any]:
    """`!draft <text>` kept a text: what it publishes is the text after the command."""
    body = content.get("body")
    if isinstance(body, str) and body.startswith(DRAFT_PREFIX):
        return {"msgtype": "m.text", "body": body[len(DRAFT_PREFIX) :].strip()}
    return content


async def draft_command(
    ctx: Context,
    session: AsyncSession,
    room: Room,
    channel: Channel,
    event: Event,
    command: Command,
    lang: str,
) -> None:
    choice = (command.arg(0) or "").lower()
    if choice in ("on", "off") and len(command.args) == 1:
        mode = await session.get(DraftMode, (channel.id, event.sender))
        if choice == "on" and mode is None:
            session.add(DraftMode(channel_id=channel.id, user_id=event.sender))
        elif choice == "off":
            await session.execute(
                delete(DraftMode).where(DraftMode.channel_id == channel.id, DraftMode.user_id == event.sender)
            )
        reply(
            session,
            ctx,
            room.room_id,
            lang,
            "draft_mode_on" if choice == "on" else "draft_mode_off",
            handle=channel.handle,
        )
        return
    if not command.rest.strip():
        state = "on" if await in_draft_mode(session, channel, event.sender) else "off"
        reply(session, ctx, room.room_id, lang, "draft_usage", state=state)
        return
    mark_kept(ctx, session, room, event)  # `!draft <text>`: this very message is the draft


async def publish_command(
    ctx: Context, session: AsyncSession, room: Room, channel: Channel, event: Event, lang: str
) -> Event | None:
    """`!publish` as a reply to a kept message: the message to publish now, or None (the bot said why)."""
    from bridge.publishing.schedule import draft_content, fetch_draft

    target = event.reply_to
    if target is None:
        reply(session, ctx, room.room_id, lang, "publish_usage")
        return None
    published = await session.scalar(select(Post.id).where(Post.source_event_id == target))
    if published is not None:
        reply(session, ctx, room.room_id, lang, "publish_already")
        return None
    raw = await fetch_draft(ctx, room, target)
    shown = draft_content(raw) if raw is not None else None
    if raw is None or shown is None:
        reply(session, ctx, room.room_id, lang, "schedule_draft_unusable")
        return None
    event_type, content = shown
    try:
        return parse_event({**raw, "type": event_type, "content": content, "room_id": room.room_id})
    except EventParseError:
        reply(session, ctx, room.room_id, lang, "schedule_draft_unusable")
        return None
