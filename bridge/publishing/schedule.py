"""Scheduled posts: `!schedule`, `!scheduled` and `!unschedule` in backstage, and the job that publishes them.

!schedule <when> <text>    ─▶ scheduled_posts row (pending, due_at in UTC, a backstage-shaped event)
!schedule <when> (a reply) ─▶ the same, with the content of the message replied to
run_scheduler, in one process at a time (lease "scheduler"), every few seconds:
    publish_due: per due row, one DB transaction ─ claim it (FOR UPDATE SKIP LOCKED on PostgreSQL,
    then pending → sent) ─▶ relay_event: outbox entries + Post row ─▶ commit ─▶ the outbox sends it

The claim and the outbox entries commit together, so a crash publishes a post either never (it stays
pending and is published after the restart) or once; the outbox's deterministic transaction ids keep
its retries from doubling it. Posts wait through restarts because they live in the database only.
"""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import func, select, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from appservice.errors import MatrixConnectionError
from appservice.events import Event, EventParseError, parse_event
from bridge.moderation.gate import screen
from bridge.publishing import drafts, posts
from bridge.runtime.context import Context, reply
from bridge.runtime.dispatch import CommandCall, command
from bridge.runtime.outbox import aware
from bridge.store.leases import Leases
from bridge.store.models import Channel, ChannelStatus, Room, RoomKind, ScheduledPost, ScheduledStatus
from bridge.text.commands import Command, Refusal
from bridge.text.digits import Numeral, ascii_digits, utc_time
from bridge.text.i18n import t

log = logging.getLogger(__name__)

SCHEDULER_LEASE: Final = "scheduler"
SCHEDULER_INTERVAL_S: Final = 5.0
PUBLISH_BATCH: Final = 50
# A year ahead, counting a leap day, so "the same date next year" is always allowed.
MAX_SCHEDULE_AHEAD: Final = timedelta(days=366)
MAX_PENDING_PER_CHANNEL: Final = 100
MAX_LISTED: Final = 20
PREVIEW_CHARS: Final = 60
MAX_WHEN_SHOWN: Final = 40

_RELATIVE: Final = re.compile(r"\+([1-9][0-9]{0,8})([smhd])")
_CLOCK: Final = re.compile(r"([0-9]{1,2}):([0-9]{2})")
_DATE: Final = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_TODAY: Final = frozenset({"today", "امروز"})
_TOMORROW: Final = frozenset({"tomorrow", "فردا"})


class WhenError(ValueError):
    """A `when` that cannot be used; the message is in English, `refusal` lets the bot translate it."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(t("en", refusal.key, **refusal.values))
        self.refusal = refusal


# -- parsing times (pure) ----------------------------------------------------------------------------


def zone_of(tz: str) -> ZoneInfo:
    """The IANA zone `tz`, or WhenError naming it."""
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise WhenError(Refusal("schedule_bad_zone", {"zone": tz[:64]})) from None


def parse_when(text: str, now: datetime, tz: str) -> tuple[datetime, int]:
    """The UTC time `text` starts with, read in the zone `tz`, and how many words it took.

    `YYYY-MM-DD HH:MM`, `today HH:MM` and `tomorrow HH:MM` take two words; `HH:MM` (its next
    occurrence: today, or tomorrow once it has passed) and `+30s`/`+30m`/`+2h`/`+1d` (elapsed time,
    so `+1d` across a daylight-saving change is 24 hours) take one. Persian and Arabic-Indic digits
    are read as ASCII digits. A wall time that occurs twice (clocks set back) means the next of the
    two still ahead, else the first; one that does not exist (clocks set forward) is refused. Raises
    WhenError (a ValueError) for anything unreadable, in the past, or more than a year ahead.
    """
    zone = zone_of(tz)
    now = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    words = ascii_digits(text).split()
    if not words:
        raise _unreadable("", tz)
    first = words[0].lower()
    relative = _RELATIVE.fullmatch(first)
    if relative is not None:
        seconds = int(relative.group(1)) * _UNIT_SECONDS[relative.group(2)]
        if seconds > MAX_SCHEDULE_AHEAD.total_seconds():
            raise _too_far(words[0])
        due = now.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=seconds)
        return _checked(due, now, words[0], zone, tz), 1
    local_now = now.astimezone(zone)
    if first in _TODAY or first in _TOMORROW or _DATE.fullmatch(first):
        shown = " ".join(words[:2])
        clock = _clock(words[1]) if len(words) > 1 else None
        if clock is None:
            raise _unreadable(shown, tz)
        if first in _TODAY:
            day = local_now.date()
        elif first in _TOMORROW:
            day = local_now.date() + timedelta(days=1)
        else:
            day = _date(first, shown, tz)
        return _on_day(day, clock, now, shown, zone, tz), 2
    clock = _clock(first)
    if clock is None:
        raise _unreadable(words[0], tz)
    passed = clock <= local_now.time().replace(tzinfo=None)
    day = local_now.date() + timedelta(days=1 if passed else 0)
    return _on_day(day, clock, now, words[0], zone, tz), 1


def _clock(word: str) -> time | None:
    match = _CLOCK.fullmatch(word)
    if match is None:
        return None
    hour, minute = int(match.group(1)), int(match.group(2))
    if hour > 23 or minute > 59:
        return None
    return time(hour, minute)


def _date(word: str, shown: str, tz: str) -> date:
    match = _DATE.fullmatch(word)
    try:
        if match is None:
            raise ValueError(word)
        return date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
    except ValueError:
        raise _unreadable(shown, tz) from None


def _on_day(day: date, clock: time, now: datetime, shown: str, zone: ZoneInfo, tz: str) -> datetime:
    """`clock` on `day` in `zone`, as UTC: the occurrence still ahead if the clocks show it twice."""
    ahead = (day - now.astimezone(zone).date()).days
    if ahead > MAX_SCHEDULE_AHEAD.days + 1:
        raise _too_far(shown)
    if ahead < -1:
        raise _past(shown, now, zone, tz)
    occurrences = sorted(_occurrences(day, clock, zone))
    if not occurrences:
        raise WhenError(Refusal("schedule_no_such_time", {"when": shown, "zone": tz}))
    upcoming = [at for at in occurrences if at > now]
    return _checked(upcoming[0] if upcoming else occurrences[0], now, shown, zone, tz)


def _occurrences(day: date, clock: time, zone: ZoneInfo) -> set[datetime]:
    """The UTC instants at which clocks in `zone` show `clock` on `day`: none, one or two."""
    found = set()
    for fold in (0, 1):
        local = datetime.combine(day, clock.replace(fold=fold), tzinfo=zone)
        at = local.astimezone(UTC)
        if at.astimezone(zone).replace(tzinfo=None) == local.replace(tzinfo=None, fold=0):
            found.add(at)
    return found


def _checked(due: datetime, now: datetime, shown: str, zone: ZoneInfo, tz: str) -> datetime:
    if due <= now:
        raise _past(shown, now, zone, tz)
    if due - now > MAX_SCHEDULE_AHEAD:
        raise _too_far(shown)
    return due


def _unreadable(shown: str, tz: str) -> WhenError:
    return WhenError(Refusal("schedule_bad_when", {"when": shown[:MAX_WHEN_SHOWN], "zone": tz}))


def _past(shown: str, now: datetime, zone: ZoneInfo, tz: str) -> WhenError:
    return WhenError(
        Refusal("schedule_past", {"when": shown[:MAX_WHEN_SHOWN], "now": Numeral(local_time(now, zone)), "zone": tz})
    )


def _too_far(shown: str) -> WhenError:
    return WhenError(
        Refusal("schedule_too_far", {"when": shown[:MAX_WHEN_SHOWN], "days": MAX_SCHEDULE_AHEAD.days})
    )


def local_time(at: datetime, zone: ZoneInfo) -> str:
    """`2026-12-01 09:00` in `zone`; seconds only when there are some."""
    local = aware(at).astimezone(zone)
    return local.strftime("%Y-%m-%d %H:%M:%S" if local.second else "%Y-%m-%d %H:%M")


def _display_zone(tz: str) -> ZoneInfo:
    try:
        return zone_of(tz)
    except WhenError:
        return ZoneInfo("UTC")


# -- the backstage commands ----------------------------------------------------------------------------


@command(RoomKind.BACKSTAGE, "schedule", "scheduled", "unschedule", permission="schedule")
async def schedule_command(call: CommandCall) -> None:
    """`!schedule`, `!scheduled` and `!unschedule`, from the channel's owner or an admin."""
    ctx, session, room, channel, event = call.ctx, call.session, call.room, call.backstage_channel, call.event
    command, lang = call.command, call.lang
    if command.name == "scheduled":
        await _list(ctx, session, room, channel, lang)
    elif command.name == "unschedule":
        await _cancel(ctx, session, room, channel, command, lang)
    else:
        await _schedule(ctx, session, room, channel, event, command, lang)


async def _schedule(
    ctx: Context,
    session: AsyncSession,
    room: Room,
    channel: Channel,
    event: Event,
    command: Command,
    lang: str,
) -> None:
    if not command.args:
        reply(session, ctx, room.room_id, lang, "schedule_usage", zone=channel.timezone)
        return
    # Relative times count from when the command was sent, not from when Kanal got to it.
    sent = datetime.fromtimestamp(event.origin_server_ts / 1000, UTC) if event.origin_server_ts > 0 else None
    try:
        due, used = parse_when(command.rest, sent or datetime.now(UTC), channel.timezone)
    except WhenError as exc:
        reply(session, ctx, room.room_id, lang, exc.refusal.key, **exc.refusal.values)
        return
    waiting = await session.scalar(
        select(func.count())
        .select_from(ScheduledPost)
        .where(ScheduledPost.channel_id == channel.id, ScheduledPost.status == ScheduledStatus.PENDING)
    )
    if (waiting or 0) >= MAX_PENDING_PER_CHANNEL:
        limit = MAX_PENDING_PER_CHANNEL
        reply(session, ctx, room.room_id, lang, "schedule_full", handle=channel.handle, limit=limit)
        return
    text = command.rest_after(used)
    content: dict[str, Any]
    if text:
        event_type, content = "m.room.message", {"msgtype": "m.text", "body": text}
        if event.reply_to is not None:
            # Published as a reply to the published copy of that post, as other backstage replies are.
            content["m.relates_to"] = {"m.in_reply_to": {"event_id": event.reply_to}}
    elif event.reply_to is not None:
        draft = await drafts.read_draft(ctx, room, event.reply_to)
        if draft is None:
            reply(session, ctx, room.room_id, lang, "schedule_draft_unusable")
            return
        event_type, content = draft
    else:
        reply(session, ctx, room.room_id, lang, "schedule_usage", zone=channel.timezone)
        return
    row = ScheduledPost(
        channel_id=channel.id,
        source_event_id=event.event_id,
        author=event.sender,
        event={
            "event_id": event.event_id,
            "room_id": room.room_id,
            "sender": event.sender,
            "type": event_type,
            "origin_server_ts": event.origin_server_ts,
            "content": content,
        },
        due_at=due,
        status=ScheduledStatus.PENDING,
    )
    session.add(row)
    await session.flush()
    reply(
        session,
        ctx,
        room.room_id,
        lang,
        "scheduled",
        id=row.id,
        due=Numeral(local_time(due, _display_zone(channel.timezone))),
        zone=channel.timezone,
        handle=channel.handle,
    )


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


async def _list(ctx: Context, session: AsyncSession, room: Room, channel: Channel, lang: str) -> None:
    pending = ScheduledPost.channel_id == channel.id, ScheduledPost.status == ScheduledStatus.PENDING
    rows = (
        await session.scalars(
            select(ScheduledPost)
            .where(*pending)
            .order_by(ScheduledPost.due_at, ScheduledPost.id)
            .limit(MAX_LISTED)
        )
    ).all()
    if not rows:
        reply(session, ctx, room.room_id, lang, "scheduled_none", handle=channel.handle)
        return
    zone = _display_zone(channel.timezone)
    lines = [
        t(
            lang,
            "scheduled_line",
            id=row.id,
            when=Numeral(local_time(row.due_at, zone)),
            preview=_preview(row.event),
        )
        for row in rows
    ]
    total = await session.scalar(select(func.count()).select_from(ScheduledPost).where(*pending)) or 0
    if total > len(rows):
        lines.append(t(lang, "scheduled_more", count=total - len(rows)))
    reply(
        session,
        ctx,
        room.room_id,
        lang,
        "scheduled_list",
        handle=channel.handle,
        zone=zone.key,
        items="\n".join(lines),
    )


def _preview(event: dict[str, Any]) -> str:
    content = _object(event.get("content"))
    body = content.get("body")
    line = body.strip().split("\n", 1)[0] if isinstance(body, str) else ""
    if len(line) > PREVIEW_CHARS:
        line = line[: PREVIEW_CHARS - 1] + "…"
    msgtype = content.get("msgtype")
    if event.get("type") == "m.sticker":
        return f"[sticker] {line}"
    if isinstance(msgtype, str) and msgtype not in ("m.text", "m.notice", "m.emote"):
        return f"[{msgtype.removeprefix('m.')}] {line}"
    return line


async def _cancel(
    ctx: Context, session: AsyncSession, room: Room, channel: Channel, command: Command, lang: str
) -> None:
    raw = (command.arg(0) or "").lstrip("#")
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        reply(session, ctx, room.room_id, lang, "unschedule_usage")
        return
    number = int(raw)
    cancelled = await session.execute(
        update(ScheduledPost)
        .where(
            ScheduledPost.id == number,
            ScheduledPost.channel_id == channel.id,
            ScheduledPost.status == ScheduledStatus.PENDING,
        )
        .values(status=ScheduledStatus.CANCELLED)
    )
    if cancelled.rowcount != 1:  # type: ignore[attr-defined]
        reply(session, ctx, room.room_id, lang, "unschedule_unknown", id=number, handle=channel.handle)
        return
    reply(session, ctx, room.room_id, lang, "unscheduled", id=number, handle=channel.handle)


# -- publishing ----------------------------------------------------------------------------------------


async def run_scheduler(
    ctx: Context, leases: Leases, stopping: asyncio.Event, interval: float = SCHEDULER_INTERVAL_S
) -> None:
    """Publish due posts every `interval` seconds, in one process at a time, until `stopping` is set."""
    while not stopping.is_set():
        try:
            if await leases.hold(SCHEDULER_LEASE) and await publish_due(ctx):
                ctx.outbox.wake()
        except Exception:
            log.exception("Publishing scheduled posts failed; trying again in %.0f s", interval)
        try:
            await asyncio.wait_for(stopping.wait(), interval)
        except TimeoutError:
            pass


async def publish_due(ctx: Context, limit: int = PUBLISH_BATCH) -> int:
    """Publish up to `limit` posts that are due, oldest first; how many were published.

    Each post is claimed and relayed in its own transaction, so one that cannot be published is
    cancelled (and logged) without holding back the others.
    """
    published = 0
    for _ in range(limit):
        try:
            outcome = await _publish_next(ctx)
        except MatrixConnectionError as exc:  # looking up a signature's display name
            log.warning("Scheduled posts wait for the homeserver (%s)", exc)
            break
        if outcome is None:
            break
        published += outcome
    return published


async def _publish_next(ctx: Context) -> int | None:
    """Claim and publish the next due post: 1 if published, 0 if cancelled, None if none is due."""
    now = datetime.now(UTC)
    claimed: int | None = None
    try:
        async with ctx.sessions.begin() as session:
            query = (
                select(ScheduledPost)
                .where(ScheduledPost.status == ScheduledStatus.PENDING, ScheduledPost.due_at <= now)
                .order_by(ScheduledPost.due_at, ScheduledPost.id)
                .limit(1)
            )
            if _row_locks(session):
                query = query.with_for_update(skip_locked=True)
            row = await session.scalar(query)
            if row is None:
                return None
            claim = await session.execute(
                update(ScheduledPost)
                .where(ScheduledPost.id == row.id, ScheduledPost.status == ScheduledStatus.PENDING)
                .values(status=ScheduledStatus.SENT)
                .execution_options(synchronize_session=False)
            )
            if claim.rowcount != 1:  # type: ignore[attr-defined]
                return 0  # another process published it first
            claimed = row.id
            channel = await session.get(Channel, row.channel_id)
            if channel is None or channel.status != ChannelStatus.ACTIVE or channel.broadcast_room_id is None:
                log.info(
                    "Scheduled post %d cancelled: its channel is %s",
                    row.id,
                    channel.status if channel else "gone",
                )
                await _set_status(session, row.id, ScheduledStatus.CANCELLED)
                return 0
            if channel.restricted_until is not None and aware(channel.restricted_until) > now:
                # A `restrict` decision suspends posting: the post is not kept for later.
                log.info("Scheduled post %d cancelled: #%s is restricted", row.id, channel.handle)
                await _set_status(session, row.id, ScheduledStatus.CANCELLED)
                if channel.backstage_room_id is not None:
                    reply(
                        session,
                        ctx,
                        channel.backstage_room_id,
                        ctx.config.default_language,
                        "schedule_restricted",
                        id=row.id,
                        handle=channel.handle,
                        until=utc_time(channel.restricted_until),
                    )
                return 0
            await _relay(ctx, session, channel, row)
            return 1
    except (MatrixConnectionError, OperationalError, InterfaceError):
        raise  # the homeserver or the database is away: the post stays pending for the next pass
    except Exception:
        if claimed is None:
            raise
        log.exception("Scheduled post %d could not be published; cancelling it", claimed)
        await _give_up(ctx, claimed)
        return 0


async def _relay(ctx: Context, session: AsyncSession, channel: Channel, row: ScheduledPost) -> None:
    try:
        event = parse_event(row.event)
    except EventParseError as exc:
        raise ValueError(f"stored event is unreadable: {exc}") from exc
    # The compliance hooks judge a scheduled post when it is due (with the rules then in force), as
    # they judge any other post: held posts wait for a moderator, rejected ones get a statement.
    room = await session.get(Room, channel.backstage_room_id) if channel.backstage_room_id else None
    if room is not None and not await screen(ctx, session, room, channel, event, ctx.config.default_language):
        log.info(
            "Scheduled post %d in #%s was held or refused by the compliance hooks", row.id, channel.handle
        )
        return
    await posts.relay_event(ctx, session, channel, event)
    log.info("Scheduled post %d published in #%s", row.id, channel.handle)


async def _give_up(ctx: Context, post_id: int) -> None:
    async with ctx.sessions.begin() as session:
        row = await session.get(ScheduledPost, post_id)
        if row is None or row.status != ScheduledStatus.PENDING:
            return
        row.status = ScheduledStatus.CANCELLED
        channel = await session.get(Channel, row.channel_id)
        if channel is not None and channel.backstage_room_id is not None:
            lang = ctx.config.default_language
            reply(
                session,
                ctx,
                channel.backstage_room_id,
                lang,
                "schedule_failed",
                id=post_id,
                handle=channel.handle,
            )


async def _set_status(session: AsyncSession, post_id: int, status: ScheduledStatus) -> None:
    await session.execute(
        update(ScheduledPost)
        .where(ScheduledPost.id == post_id)
        .values(status=status)
        .execution_options(synchronize_session=False)
    )


def _row_locks(session: AsyncSession) -> bool:
    return session.bind is not None and session.bind.dialect.name == "postgresql"
