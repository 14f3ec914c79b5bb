"""Statistics: a daily history per channel, `!stats`, and view counts kept in posts (`!views-in-posts`).

    housekeeping, every minute, one process ─▶ record_daily_stats: channels whose row of today is
        missing or an hour old ─▶ subscribers (homeserver) + all views so far ─▶ channel_daily_stats
    !stats ─▶ today's numbers (recorded too), the last 30 days, recent posts' views and reactions
        ─▶ a notice, then the chart (PNG, uploaded as the bot) as an m.image
    receipts counted (views.py), in channels with views-in-posts ─▶ mark_views: a recent text post
        whose views reached a new threshold (10, 100, 1K …) and was not edited for
        `channels.views_edit_interval` ─▶ outbox: m.replace with decorate(content, views=n)
    housekeeping ─▶ mark_views in every such channel (edits that had to wait for the interval)

Views are unique readers (views.py); a day's views are the growth of all posts' views that day.
Reactions per post are counted from the homeserver's `m.annotation` relations when `!stats` asks:
Kanal never stores reactions, and ten requests per `!stats` cost less than recording every reaction
and its redaction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from typing import Any, Final

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from appservice.errors import MatrixConnectionError, MatrixRequestError
from appservice.ids import RoomID
from bridge.audience.chart import (
    CHART_DAYS,
    PNG_TYPE,
    ChartLabels,
    DayStats,
    chart_language,
    render_chart,
)
from bridge.broadcast import seam
from bridge.broadcast.shards import subscriber_count
from bridge.channels import roles
from bridge.matrix.decorations import decorate
from bridge.matrix.relations import related_events_in
from bridge.matrix.relay import POLL_START_TYPES, REF_PLACEHOLDER, TEXT_MSGTYPES
from bridge.runtime.context import Context, enqueue, reply, send_entry
from bridge.runtime.dispatch import CommandCall, command
from bridge.runtime.outbox import aware
from bridge.store import queries
from bridge.store.models import Channel, ChannelDailyStats, ChannelStatus, Post, ReaderPosition, RoomKind
from bridge.text.digits import localise_digits
from bridge.text.i18n import t

log = logging.getLogger(__name__)

SNAPSHOT_REFRESH_S: Final = 3600.0  # today's row is refreshed hourly: a day keeps its last numbers
SNAPSHOTS_PER_PASS: Final = 20  # channels asked per housekeeping pass (one homeserver request each)
RECENT_POSTS: Final = 10  # posts listed by !stats, newest first
GROWTH_DAYS: Final = 7  # days of subscriber growth listed by !stats
REACTION_PAGES: Final = 5  # reactions counted per post: at most 500 (then shown as "500+")
EXCERPT_LENGTH: Final = 40
FIRST_VIEW_THRESHOLD: Final = 10  # then 100, 1K, 10K …
VIEWS_EDIT_RECENT_POSTS: Final = 20  # only a channel's newest posts are edited to show their views

# -- pure ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """A channel's numbers as recorded on one day."""

    day: date
    subscribers: int
    views: int  # all views of all posts so far


def views_by_post(post_ids: Collection[int], readers_at: Mapping[int, int]) -> dict[int, int]:
    """Unique readers of each post, from how many readers stand at each position (post id).

    A reader at position p has read every post up to p, so the views of post q are the readers at
    positions q or later.
    """
    positions = sorted(readers_at.items(), reverse=True)
    result: dict[int, int] = {}
    running = index = 0
    for post_id in sorted(set(post_ids), reverse=True):
        while index < len(positions) and positions[index][0] >= post_id:
            running += positions[index][1]
            index += 1
        result[post_id] = running
    return result


def daily_series(snapshots: Sequence[Snapshot], today: date, days: int = CHART_DAYS) -> list[DayStats]:
    """The last `days` days' subscribers and views per day; a day's views are its growth over the
    previous recorded day's total (all of them for the first day ever recorded; never below 0)."""
    start = today - timedelta(days=days - 1)
    series: list[DayStats] = []
    previous: Snapshot | None = None
    for snapshot in sorted(snapshots, key=lambda s: s.day):
        if start <= snapshot.day <= today:
            views = snapshot.views - (previous.views if previous is not None else 0)
            series.append(DayStats(snapshot.day, snapshot.subscribers, max(views, 0)))
        previous = snapshot
    return series


def growth_per_day(snapshots: Sequence[Snapshot]) -> list[tuple[date, int]]:
    """Each recorded day's change in subscribers since the previous recorded day, oldest first."""
    ordered = sorted(snapshots, key=lambda s: s.day)
    return [(b.day, b.subscribers - a.subscribers) for a, b in pairwise(ordered)]


def threshold_level(views: int) -> int:
    """The highest threshold (10, 100, 1000 …) that `views` has reached; 0 below the first."""
    if views < FIRST_VIEW_THRESHOLD:
        return 0
    level = FIRST_VIEW_THRESHOLD
    while level * 10 <= views:
        level *= 10
    return level


def views_edit_due(
    views: int, shown: int | None, shown_at: datetime | None, now: datetime, interval_s: float
) -> bool:
    """Whether a post showing `shown` views (edited at `shown_at`) should now be edited to show `views`:
    once per threshold crossed, and never sooner than `interval_s` after the previous edit."""
    if threshold_level(views) <= threshold_level(shown or 0):
        return False
    return shown_at is None or (now - shown_at).total_seconds() >= interval_s


def views_edit_content(content: Mapping[str, Any], views: int, comments_url: str | None) -> dict[str, Any]:
    """The m.replace of a relayed post (target: REF_PLACEHOLDER) that shows `views` in its footer."""
    new = decorate(dict(content), views=views, comments_url=comments_url)
    edit = dict(new)
    edit["body"] = f"* {new['body']}"
    if isinstance(new.get("formatted_body"), str):
        edit["formatted_body"] = f"* {new['formatted_body']}"
    edit["m.new_content"] = new
    edit["m.relates_to"] = {"rel_type": "m.replace", "event_id": REF_PLACEHOLDER}
    return edit


def excerpt(event_type: str, content: Mapping[str, Any] | None, length: int = EXCERPT_LENGTH) -> str:
    """One short line naming a post: its text, or an icon and the caption, file name or question."""
    content = content or {}
    if event_type in POLL_START_TYPES:
        poll = content.get("m.poll") or content.get("org.matrix.msc3381.poll.start") or {}
        question = poll.get("question") if isinstance(poll, dict) else None
        if isinstance(question, dict):
            question = (
                question.get("m.text") or question.get("org.matrix.msc1767.text") or question.get("body")
            )
        text, icon = (question if isinstance(question, str) else ""), "📊 "
    else:
        body = content.get("body")
        text = body if isinstance(body, str) else ""
        msgtype = content.get("msgtype")
        icon = {"m.image": "🖼 ", "m.video": "🎞 ", "m.audio": "🎵 ", "m.file": "📎 "}.get(
            msgtype if isinstance(msgtype, str) else "", ""
        )
        if event_type == "m.sticker":
            icon = "🏷 "
    line = " ".join(text.split())
    if len(line) > length:
        line = line[: length - 1].rstrip() + "…"
    return icon + (line or "…")


# -- the database --------------------------------------------------------------------------------------


async def readers_at(session: AsyncSession, channel_id: int, from_post: int = 0) -> dict[int, int]:
    """How many readers stand at each position (post id) from `from_post` on (one indexed query)."""
    rows = await session.execute(
        select(ReaderPosition.post_id, func.count())
        .where(ReaderPosition.channel_id == channel_id, ReaderPosition.post_id >= from_post)
        .group_by(ReaderPosition.post_id)
    )
    return {int(post_id): int(count) for post_id, count in rows.all()}


def _published(channel_id: int) -> Any:
    return and_(Post.channel_id == channel_id, Post.relayed_event_id.is_not(None), Post.redacted.is_(False))


async def views_total(session: AsyncSession, channel_id: int) -> tuple[int, int]:
    """All views of all published posts, and how many posts that is."""
    post_ids = (await session.scalars(select(Post.id).where(_published(channel_id)))).all()
    views = views_by_post(post_ids, await readers_at(session, channel_id))
    return sum(views.values()), len(post_ids)


def _upsert_snapshot(session: AsyncSession, channel_id: int, snapshot: Snapshot, now: datetime) -> Any:
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(ChannelDailyStats).values(
        channel_id=channel_id,
        day=snapshot.day,
        subscribers=snapshot.subscribers,
        views=snapshot.views,
        updated_at=now,
    )
    return statement.on_conflict_do_update(
        index_elements=["channel_id", "day"],
        set_={
            "subscribers": statement.excluded.subscribers,
            "views": statement.excluded.views,
            "updated_at": statement.excluded.updated_at,
        },
    )


async def record_daily_stats(ctx: Context, limit: int = SNAPSHOTS_PER_PASS) -> int:
    """Record today's numbers of channels whose row of today is missing or stale; how many were.

    Runs in the housekeeping loop (one process at a time); a repeat only overwrites today's row.
    """
    now = datetime.now(UTC)
    today = now.date()
    async with ctx.sessions() as session:
        due = (
            await session.scalars(
                select(Channel)
                .outerjoin(
                    ChannelDailyStats,
                    and_(ChannelDailyStats.channel_id == Channel.id, ChannelDailyStats.day == today),
                )
                .where(
                    Channel.status == ChannelStatus.ACTIVE,
                    Channel.broadcast_room_id.is_not(None),
                    or_(
                        ChannelDailyStats.channel_id.is_(None),
                        ChannelDailyStats.updated_at < now - timedelta(seconds=SNAPSHOT_REFRESH_S),
                    ),
                )
                .order_by(Channel.id)
                .limit(limit)
            )
        ).all()
    recorded = 0
    for channel in due:
        subscribers = await subscriber_count(ctx, channel)
        if subscribers is None:
            break  # the homeserver does not answer: the next pass tries again
        async with ctx.sessions.begin() as session:
            total, _ = await views_total(session, channel.id)
            await session.execute(
                _upsert_snapshot(session, channel.id, Snapshot(today, subscribers, total), datetime.now(UTC))
            )
        recorded += 1
    return recorded


async def _history(session: AsyncSession, channel_id: int, today: date) -> list[Snapshot]:
    """The recorded days of the chart's window, and the one before it (the first day's baseline)."""
    start = today - timedelta(days=CHART_DAYS - 1)
    baseline = await session.scalar(
        select(func.max(ChannelDailyStats.day)).where(
            ChannelDailyStats.channel_id == channel_id, ChannelDailyStats.day < start
        )
    )
    rows = await session.scalars(
        select(ChannelDailyStats)
        .where(ChannelDailyStats.channel_id == channel_id, ChannelDailyStats.day >= (baseline or start))
        .order_by(ChannelDailyStats.day)
    )
    return [Snapshot(r.day, r.subscribers, r.views) for r in rows.all()]


# -- !stats --------------------------------------------------------------------------------------------


async def _reactions(ctx: Context, copies: Mapping[RoomID, str]) -> str:
    """The number of reactions on a post, in all the channel's rooms ("500+" beyond what is counted in
    a room; "?" unknown)."""
    if not copies:
        return "0"
    try:
        events, complete = await related_events_in(
            ctx.client, ctx.bot, copies, "m.annotation", event_type="m.reaction", pages=REACTION_PAGES
        )
    except (MatrixRequestError, MatrixConnectionError):
        return "?"
    return str(len(events)) if complete else f"{len(events)}+"


def _chart_labels(handle: str, lang: str) -> ChartLabels:
    """The chart's words in `lang`, or in English where it cannot be drawn (chart.chart_language)."""
    lang = chart_language(lang)
    return ChartLabels(
        title=t(lang, "stats_chart_title", handle=handle, days=localise_digits(str(CHART_DAYS), lang)),
        subscribers=t(lang, "stats_chart_subscribers"),
        views=t(lang, "stats_chart_views"),
        no_data=t(lang, "stats_chart_no_data"),
        lang=lang,
    )


@command(RoomKind.BACKSTAGE, "stats", permission="stats")
async def stats_command(call: CommandCall) -> None:
    """`!stats`: subscribers and their growth, views, recent posts, then the 30-day chart as an image.

    Every homeserver request (subscribers, reactions, the upload) is made before anything is written,
    so the event's database transaction holds no write lock while waiting for the network.
    """
    ctx, session, room, channel, event = call.ctx, call.session, call.room, call.backstage_channel, call.event
    lang = call.lang
    if not await roles.require(ctx, session, room.room_id, channel, event.sender, "stats", lang):
        return
    now = datetime.now(UTC)
    today = now.date()
    subscribers = await subscriber_count(ctx, channel)
    post_ids = (await session.scalars(select(Post.id).where(_published(channel.id)))).all()
    views = views_by_post(post_ids, await readers_at(session, channel.id))
    total = sum(views.values())
    recent = (
        await session.scalars(
            select(Post).where(_published(channel.id)).order_by(Post.id.desc()).limit(RECENT_POSTS)
        )
    ).all()
    copies = [await queries.copies_of(session, post.id) for post in recent]
    reactions = await asyncio.gather(*(_reactions(ctx, post_copies) for post_copies in copies))
    history = [s for s in await _history(session, channel.id, today) if s.day != today or subscribers is None]
    if subscribers is not None:
        history.append(Snapshot(today, subscribers, total))
    series = daily_series(history, today)
    growth = growth_per_day(history)
    chart = await asyncio.to_thread(
        render_chart, series, today=today, labels=_chart_labels(channel.handle or "", lang)
    )
    filename = f"kanal-stats-{channel.handle}-{today.isoformat()}.png"
    try:
        mxc: str | None = await ctx.bot_intent().upload(chart.png, PNG_TYPE, filename)
    except (MatrixRequestError, MatrixConnectionError) as exc:
        log.warning("The stats chart of #%s could not be uploaded: %s", channel.handle, exc)
        mxc = None

    if subscribers is not None:
        await session.execute(_upsert_snapshot(session, channel.id, Snapshot(today, subscribers, total), now))
    lines = [
        t(
            lang,
            "stats_recent_post",
            excerpt=excerpt(post.event_type, post.content),
            views=views.get(post.id, 0),
            reactions=localise_digits(count, lang),  # a count as text ("500+", "?")
        )
        for post, count in zip(recent, reactions, strict=True)
    ]
    today_series = series[-1] if series and series[-1].day == today else None
    reply(
        session,
        ctx,
        room.room_id,
        lang,
        "stats_answer",
        handle=channel.handle,
        subscribers="?" if subscribers is None else subscribers,
        growth_today=f"{growth[-1][1]:+d}" if growth and growth[-1][0] == today else "–",
        growth=" ".join(f"{change:+d}" for _, change in growth[-GROWTH_DAYS:]) or "–",
        views_today=today_series.views if today_series is not None else 0,
        views_total=total,
        posts=len(post_ids),
        recent="\n".join(lines) or t(lang, "stats_no_posts"),
    )
    if mxc is None:
        reply(session, ctx, room.room_id, lang, "stats_chart_failed")
        return
    content = {
        "msgtype": "m.image",
        "body": t(lang, "stats_chart_alt", handle=channel.handle, days=CHART_DAYS),
        "filename": filename,
        "url": mxc,
        "info": {"w": chart.width, "h": chart.height, "mimetype": PNG_TYPE, "size": len(chart.png)},
    }
    enqueue(session, send_entry(ctx.bot, room.room_id, content))


# -- !views-in-posts -----------------------------------------------------------------------------------


@command(RoomKind.BACKSTAGE, "views-in-posts", permission="views_in_posts")
async def views_in_posts_command(call: CommandCall) -> None:
    """`!views-in-posts on|off` (owner)."""
    ctx, session, room, channel = call.ctx, call.session, call.room, call.backstage_channel
    command, lang = call.command, call.lang
    choice = (command.arg(0) or "").lower()
    minutes = max(1, round(ctx.config.views_edit_interval_s / 60))
    if choice not in ("on", "off"):
        state = t(lang, "on" if channel.views_in_posts else "off")
        reply(session, ctx, room.room_id, lang, "views_in_posts_usage", state=state, minutes=minutes)
        return
    channel.views_in_posts = choice == "on"
    reply(
        session,
        ctx,
        room.room_id,
        lang,
        "views_in_posts_on" if channel.views_in_posts else "views_in_posts_off",
        handle=channel.handle,
        minutes=minutes,
        recent=VIEWS_EDIT_RECENT_POSTS,
    )


async def mark_views(ctx: Context, channel_ids: Collection[int] | None = None) -> int:
    """Edit the recent posts whose views crossed a threshold (see `views_edit_due`); how many.

    `channel_ids`: only these channels (readers just moved there); None: every channel with
    views-in-posts. The post row is updated on condition that it still shows what was read, so two
    processes never edit a post twice for one threshold.
    """
    now = datetime.now(UTC)
    interval = ctx.config.views_edit_interval_s
    edits = 0
    async with ctx.sessions.begin() as session:
        query = select(Channel).where(
            Channel.views_in_posts.is_(True),
            Channel.status == ChannelStatus.ACTIVE,
            Channel.broadcast_room_id.is_not(None),
        )
        if channel_ids is not None:
            query = query.where(Channel.id.in_(channel_ids))
        for channel in (await session.scalars(query)).all():
            posts = (
                await session.scalars(
                    select(Post)
                    .where(_published(channel.id))
                    .order_by(Post.id.desc())
                    .limit(VIEWS_EDIT_RECENT_POSTS)
                )
            ).all()
            if not posts:
                continue
            views = views_by_post([p.id for p in posts], await readers_at(session, channel.id, posts[-1].id))
            for post in posts:
                count = views[post.id]
                content = post.content or {}
                if post.event_type != "m.room.message" or content.get("msgtype") not in TEXT_MSGTYPES:
                    continue
                shown_at = aware(post.views_shown_at) if post.views_shown_at is not None else None
                if not views_edit_due(count, post.views_shown, shown_at, now, interval):
                    continue
                unchanged = (
                    Post.views_shown.is_(None)
                    if post.views_shown is None
                    else Post.views_shown == post.views_shown
                )
                claimed = await session.execute(
                    update(Post)
                    .where(Post.id == post.id, unchanged)
                    # No page shows the count: the post's change time (Last-Modified) stays.
                    .values(views_shown=count, views_shown_at=now, changed_at=Post.changed_at)
                    .execution_options(synchronize_session=False)
                )
                if claimed.rowcount != 1:  # type: ignore[attr-defined]
                    continue
                comments_url = await seam.footer_url(session, post, ctx.domain)
                seam.replace(session, channel, post, views_edit_content(content, count, comments_url))
                edits += 1
    if edits:
        ctx.outbox.wake()
    return edits
