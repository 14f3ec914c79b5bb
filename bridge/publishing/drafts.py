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

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from appservice.errors import MatrixRequestError
from appservice.events import Event, EventParseError, parse_event
from appservice.ids import EventID, RoomID
from bridge.matrix.relay import RELAYED_EVENT_TYPES
from bridge.publishing import posts
from bridge.runtime.context import Context, enqueue, send_entry
from bridge.runtime.dispatch import CommandCall, command
from bridge.store import queries
from bridge.store.models import Channel, DraftMode, Room, RoomKind

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


async def fetch_draft(ctx: Context, room: Room, draft_id: EventID) -> dict[str, Any] | None:
    """The backstage message replied to, as the homeserver serves it; None if it cannot be read."""
    try:
        raw: dict[str, Any] = await ctx.bot_intent().get_event(RoomID(room.room_id), draft_id)
    except MatrixRequestError as exc:
        if exc.retryable:
            raise  # the processor tries the command again
        return None
    return raw


async def read_draft(ctx: Context, room: Room, draft_id: EventID) -> tuple[str, dict[str, Any]] | None:
    """The backstage message replied to, as `draft_content` reads it; None if it cannot be read."""
    raw = await fetch_draft(ctx, room, draft_id)
    return draft_content(raw) if raw is not None else None


def draft_content(raw: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """What a backstage message (as the homeserver serves it) publishes: its type and its latest content.

    An edit's new content replaces the original; a reply stays a reply (to the published copy, if
    any, when it is relayed); other relations (threads) are dropped. None for what cannot be shown.
    """
    event_type, content = raw.get("type"), _object(raw.get("content"))
    if event_type not in RELAYED_EVENT_TYPES or "state_key" in raw:
        return None
    relates = _object(content.get("m.relates_to"))
    if relates.get("rel_type") == "m.replace":
        latest, relates = _object(content.get("m.new_content")), {}  # the reply went to an edit itself
    else:
        edit = _object(_object(_object(raw.get("unsigned")).get("m.relations")).get("m.replace"))
        latest = _object(_object(edit.get("content")).get("m.new_content")) or content
    shown = {k: v for k, v in latest.items() if k not in ("m.relates_to", "m.new_content")}
    if "m.in_reply_to" in relates:
        shown["m.relates_to"] = {"m.in_reply_to": relates["m.in_reply_to"]}  # threads are not kept
    shown = strip_draft_command(shown)  # `!draft <text>` keeps the text after the command
    if not isinstance(shown.get("body"), str) or (
        event_type == "m.room.message" and not isinstance(shown.get("msgtype"), str)
    ):
        return None  # redacted, or not a message a client can show
    return str(event_type), shown


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


@command(RoomKind.BACKSTAGE, "draft", permission="publish")
async def draft_command(call: CommandCall) -> None:
    """`!draft on|off` (draft mode for the sender), or `!draft <text>`: this message is a draft."""
    channel, session, sender = call.backstage_channel, call.session, call.sender
    choice = (call.command.arg(0) or "").lower()
    if choice in ("on", "off") and len(call.command.args) == 1:
        mode = await session.get(DraftMode, (channel.id, sender))
        if choice == "on" and mode is None:
            session.add(DraftMode(channel_id=channel.id, user_id=sender))
        elif choice == "off":
            await session.execute(
                delete(DraftMode).where(DraftMode.channel_id == channel.id, DraftMode.user_id == sender)
            )
        call.reply("draft_mode_on" if choice == "on" else "draft_mode_off", handle=channel.handle)
        return
    if not call.command.rest.strip():
        state = "on" if await in_draft_mode(session, channel, sender) else "off"
        call.reply("draft_usage", state=state)
        return
    mark_kept(call.ctx, session, call.room, call.event)  # `!draft <text>`: this very message is the draft


@command(RoomKind.BACKSTAGE, "publish", permission="publish")
async def publish_command(call: CommandCall) -> None:
    """`!publish` as a reply to a kept message: publish it now, through the compliance hooks."""
    kept = await _kept_message(call)
    if kept is not None and await posts.may_publish(
        call.ctx, call.session, call.room, call.backstage_channel, kept, call.lang
    ):
        await posts.relay(call.ctx, call.session, call.backstage_channel, kept)
        call.reply("publish_done", handle=call.backstage_channel.handle)


async def _kept_message(call: CommandCall) -> Event | None:
    """The kept message `!publish` replies to, or None (the bot said why)."""
    target = call.event.reply_to
    if target is None:
        call.reply("publish_usage")
        return None
    if await queries.post_by_source(call.session, target) is not None:
        call.reply("publish_already")
        return None
    raw = await fetch_draft(call.ctx, call.room, target)
    shown = draft_content(raw) if raw is not None else None
    if raw is None or shown is None:
        call.reply("schedule_draft_unusable")
        return None
    event_type, content = shown
    try:
        return parse_event({**raw, "type": event_type, "content": content, "room_id": call.room.room_id})
    except EventParseError:
        call.reply("schedule_draft_unusable")
        return None
