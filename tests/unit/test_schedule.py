"""`!schedule`: times (every form, zones, DST, refusals) and drafts as pure functions; then the commands
and `publish_due` on a migrated SQLite database, read back from the outbox as its worker would find it
(nothing is sent)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from appservice.events import Event
from appservice.ids import EventID, RoomID, UserID
from bridge.publishing.drafts import draft_content
from bridge.publishing.schedule import (
    MAX_LISTED,
    MAX_PENDING_PER_CHANNEL,
    MAX_SCHEDULE_AHEAD,
    SCHEDULER_LEASE,
    WhenError,
    local_time,
    parse_when,
    publish_due,
    run_scheduler,
    schedule_command,
)
from bridge.runtime.context import Context
from bridge.runtime.dispatch import CommandCall
from bridge.runtime.outbox import aware
from bridge.store.leases import Leases
from bridge.store.models import Channel, OutboxEntry, Post, Room, ScheduledPost
from bridge.text.commands import parse_command
from bridge.text.i18n import catalogue, t

# Tuesday 2026-06-02 10:15:30 UTC: 12:15:30 in Berlin (CEST), 13:45:30 in Tehran (+03:30, no DST).
NOW = datetime(2026, 6, 2, 10, 15, 30, 123456, tzinfo=UTC)


def utc(year: int, month: int, day: int, hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def refusal(text: str, now: datetime = NOW, tz: str = "UTC") -> WhenError:
    with pytest.raises(WhenError) as caught:
        parse_when(text, now, tz)
    return caught.value


@pytest.mark.parametrize(
    ("text", "delta"),
    [
        ("+45s", timedelta(seconds=45)),
        ("+30m", timedelta(minutes=30)),
        ("+2h", timedelta(hours=2)),
        ("+1d", timedelta(days=1)),
        ("+366d", timedelta(days=366)),
        ("+2H", timedelta(hours=2)),
        ("+۲h", timedelta(hours=2)),  # Persian digits
        ("+٣m", timedelta(minutes=3)),  # Arabic-Indic digits
    ],
)
def test_relative_times_count_from_now_in_whole_seconds(text: str, delta: timedelta) -> None:
    due, used = parse_when(f"{text} hello later", NOW, "Asia/Tehran")

    assert due == NOW.replace(microsecond=0) + delta
    assert due.tzinfo == UTC
    assert used == 1


@pytest.mark.parametrize(
    ("text", "tz", "expected"),
    [
        ("2026-12-01 09:00", "UTC", utc(2026, 12, 1, 9, 0)),
        ("2026-12-01 09:00", "Asia/Tehran", utc(2026, 12, 1, 5, 30)),
        ("2026-12-01 09:00", "Europe/Berlin", utc(2026, 12, 1, 8, 0)),  # CET in winter
        ("2026-07-01 09:00", "Europe/Berlin", utc(2026, 7, 1, 7, 0)),  # CEST in summer
        ("2026-12-01 9:00", "America/New_York", utc(2026, 12, 1, 14, 0)),
        ("۲۰۲۶-۱۲-۰۱ ۰۹:۰۰", "Asia/Tehran", utc(2026, 12, 1, 5, 30)),
        ("tomorrow 8:00", "UTC", utc(2026, 6, 3, 8, 0)),
        ("Tomorrow 08:00", "Asia/Tehran", utc(2026, 6, 3, 4, 30)),
        ("فردا 8:00", "Asia/Tehran", utc(2026, 6, 3, 4, 30)),
        ("today 18:30", "UTC", utc(2026, 6, 2, 18, 30)),
        ("today 18:30", "Asia/Tehran", utc(2026, 6, 2, 15, 0)),
        ("امروز ۱۸:۳۰", "Asia/Tehran", utc(2026, 6, 2, 15, 0)),
    ],
)
def test_dates_and_named_days_take_two_words_in_the_channels_zone(
    text: str, tz: str, expected: datetime
) -> None:
    due, used = parse_when(f"{text} the post's text", NOW, tz)

    assert due == expected
    assert used == 2


@pytest.mark.parametrize(
    ("text", "tz", "expected"),
    [
        ("18:30", "UTC", utc(2026, 6, 2, 18, 30)),  # later today
        ("10:16", "UTC", utc(2026, 6, 2, 10, 16)),
        ("10:15", "UTC", utc(2026, 6, 3, 10, 15)),  # this minute has begun: tomorrow
        ("9:00", "UTC", utc(2026, 6, 3, 9, 0)),  # passed: tomorrow
        ("13:50", "Asia/Tehran", utc(2026, 6, 2, 10, 20)),  # 13:45 in Tehran now
        ("13:40", "Asia/Tehran", utc(2026, 6, 3, 10, 10)),
        ("00:00", "Asia/Tehran", utc(2026, 6, 2, 20, 30)),  # midnight, in Tehran's tomorrow
        ("23:59", "Pacific/Kiritimati", utc(2026, 6, 3, 9, 59)),  # +14:00: already June 3 there
    ],
)
def test_a_bare_time_is_its_next_occurrence(text: str, tz: str, expected: datetime) -> None:
    due, used = parse_when(f"{text} news", NOW, tz)

    assert due == expected
    assert used == 1


def test_the_words_taken_leave_the_text_alone() -> None:
    assert parse_when("+2h 9:00 is when we meet", NOW, "UTC")[1] == 1
    assert parse_when("tomorrow 9:00 tomorrow 10:00", NOW, "UTC")[1] == 2
    assert parse_when("  2026-12-01   09:00\n\nmulti-line", NOW, "UTC")[1] == 2


def test_a_naive_now_is_utc() -> None:
    naive = NOW.replace(tzinfo=None)

    assert parse_when("+1m", naive, "UTC")[0] == utc(2026, 6, 2, 10, 16, 30)


# -- daylight saving time in Europe/Berlin: 2026-03-29 02:00 CET → 03:00 CEST; 2026-10-25 03:00 CEST → 02:00 CET


def test_a_time_the_clocks_skip_is_refused() -> None:
    before = utc(2026, 3, 28, 12, 0)

    error = refusal("2026-03-29 02:30", before, "Europe/Berlin")

    assert error.refusal.key == "schedule_no_such_time"
    assert str(error) == (
        "2026-03-29 02:30 does not exist in Europe/Berlin: the clocks skip that hour for daylight "
        "saving time. Pick another time."
    )
    assert refusal("tomorrow 2:00", before, "Europe/Berlin").refusal.key == "schedule_no_such_time"


def test_the_times_around_the_spring_gap_are_read_with_their_offsets() -> None:
    before = utc(2026, 3, 28, 12, 0)

    assert parse_when("2026-03-29 01:59", before, "Europe/Berlin")[0] == utc(2026, 3, 29, 0, 59)
    assert parse_when("2026-03-29 03:00", before, "Europe/Berlin")[0] == utc(2026, 3, 29, 1, 0)
    # The day before the change at 09:00 CET: tomorrow 09:00 is CEST, 23 hours later.
    assert parse_when("tomorrow 9:00", utc(2026, 3, 28, 8, 0), "Europe/Berlin")[0] == utc(2026, 3, 29, 7, 0)


def test_a_time_the_clocks_show_twice_is_the_first_unless_it_passed() -> None:
    before = utc(2026, 10, 24, 12, 0)

    assert parse_when("2026-10-25 02:30", before, "Europe/Berlin")[0] == utc(2026, 10, 25, 0, 30)  # CEST
    # 02:15 CET, the second time round: 02:30 CEST has passed, 02:30 CET is 15 minutes ahead.
    second_pass = utc(2026, 10, 25, 1, 15)
    assert parse_when("02:30", second_pass, "Europe/Berlin")[0] == utc(2026, 10, 25, 1, 30)
    assert parse_when("today 02:30", second_pass, "Europe/Berlin")[0] == utc(2026, 10, 25, 1, 30)


def test_relative_times_are_elapsed_time_across_a_change() -> None:
    before = utc(2026, 3, 28, 12, 0)  # 13:00 CET

    due, _ = parse_when("+1d", before, "Europe/Berlin")

    assert due == utc(2026, 3, 29, 12, 0)  # 14:00 CEST: 24 hours, not the same wall time
    assert local_time(due, ZoneInfo("Europe/Berlin")) == "2026-03-29 14:00"


# -- refusals ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tz"),
    [
        ("2026-06-01 09:00", "UTC"),
        ("2020-01-01 00:00", "Asia/Tehran"),
        ("0001-01-01 00:00", "Pacific/Kiritimati"),  # far past, no overflow
        ("today 9:00", "UTC"),
        ("today 10:15", "UTC"),  # this very minute
        ("today 13:00", "Asia/Tehran"),
    ],
)
def test_past_times_are_refused(text: str, tz: str) -> None:
    error = refusal(text, tz=tz)

    assert isinstance(error, ValueError)
    assert error.refusal.key == "schedule_past"
    assert "is in the past" in str(error)
    assert str(error).startswith(text)


def test_the_past_refusal_says_what_time_it_is_in_the_zone() -> None:
    error = refusal("today 13:00", tz="Asia/Tehran")

    assert (
        str(error)
        == "today 13:00 is in the past: it is now 2026-06-02 13:45:30 in Asia/Tehran. Pick a later time."
    )


@pytest.mark.parametrize(
    "text",
    ["+367d", "+8785h", "+999999999d", "2027-06-04 00:00", "9999-12-31 23:59", "2030-01-01 09:00"],
)
def test_more_than_a_year_ahead_is_refused(text: str) -> None:
    error = refusal(text, tz="America/Los_Angeles")

    assert error.refusal.key == "schedule_too_far"
    assert f"at most {MAX_SCHEDULE_AHEAD.days} days in advance" in str(error)


def test_a_year_ahead_to_the_day_is_allowed() -> None:
    assert parse_when("2027-06-02 10:00", NOW, "UTC")[0] == utc(2027, 6, 2, 10, 0)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "soon",
        "now",
        "25:00",
        "12:60",
        "12:5",
        "1200",
        "2026-02-30 09:00",
        "2026-13-01 09:00",
        "26-12-01 09:00",
        "2026-12-01",
        "2026-12-01 noon",
        "tomorrow",
        "tomorrow noon",
        "today",
        "+0m",
        "+2w",
        "+-1h",
        "+1.5h",
        "+h",
        "2h",
        "+1h30m",
        "+1234567890s",
    ],
)
def test_garbage_is_refused_with_the_forms_that_work(text: str) -> None:
    error = refusal(f"{text}", tz="Asia/Tehran")

    assert error.refusal.key == "schedule_bad_when"
    assert "2026-12-01 09:00, 18:30, today 18:30, tomorrow 8:00, +30m, +2h or +1d" in str(error)
    assert "(times are in Asia/Tehran)" in str(error)


def test_what_is_quoted_back_is_short() -> None:
    error = refusal("x" * 500)

    assert len(error.refusal.values["when"]) <= 40


@pytest.mark.parametrize("tz", ["Mars/Olympus_Mons", "../../etc/passwd", "", "Europe/"])
def test_an_unknown_zone_is_named(tz: str) -> None:
    error = refusal("tomorrow 9:00", tz=tz)

    assert error.refusal.key == "schedule_bad_zone"
    assert error.refusal.values == {"zone": tz}


@pytest.mark.parametrize(
    "text",
    ["soon", "2026-03-29 02:30", "2020-01-01 00:00", "+400d", "12:99"],
)
@pytest.mark.parametrize("lang", ["en", "fa"])
def test_every_refusal_reads_in_both_languages(text: str, lang: str) -> None:
    error = refusal(text, utc(2026, 3, 28, 12, 0), "Europe/Berlin")

    assert error.refusal.key in catalogue().english
    message = t(lang, error.refusal.key, **error.refusal.values)
    assert "{" not in message


def test_local_time_shows_seconds_only_when_there_are_some() -> None:
    tehran = ZoneInfo("Asia/Tehran")

    assert local_time(utc(2026, 12, 1, 5, 30), tehran) == "2026-12-01 09:00"
    assert local_time(utc(2026, 12, 1, 5, 30, 5), tehran) == "2026-12-01 09:00:05"
    assert local_time(datetime(2026, 12, 1, 5, 30), tehran) == "2026-12-01 09:00"  # SQLite's naive UTC


# -- drafts: what a reply to a backstage message schedules ---------------------------------------------


def message(content: dict[str, Any], event_type: str = "m.room.message", **extra: Any) -> dict[str, Any]:
    return {
        "event_id": "$draft",
        "room_id": "!backstage:localhost",
        "sender": "@alice:localhost",
        "type": event_type,
        "content": content,
        **extra,
    }


def test_a_draft_is_scheduled_as_it_is() -> None:
    image = {"msgtype": "m.image", "body": "pic.png", "url": "mxc://localhost/abc", "info": {"size": 3}}

    assert draft_content(message(image)) == ("m.room.message", image)
    sticker = {"body": "hi", "url": "mxc://localhost/s", "info": {}}
    assert draft_content(message(sticker, "m.sticker")) == ("m.sticker", sticker)


def test_a_draft_is_scheduled_with_its_latest_edit() -> None:
    edit: dict[str, Any] = {
        "type": "m.room.message",
        "content": {
            "msgtype": "m.text",
            "body": "* fixed",
            "m.new_content": {"msgtype": "m.text", "body": "fixed"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": "$draft"},
        },
    }
    raw = message({"msgtype": "m.text", "body": "typo"}, unsigned={"m.relations": {"m.replace": edit}})

    assert draft_content(raw) == ("m.room.message", {"msgtype": "m.text", "body": "fixed"})
    assert draft_content(message(edit["content"])) == (
        "m.room.message",
        {"msgtype": "m.text", "body": "fixed"},
    )


def test_a_draft_keeps_its_reply_and_drops_a_thread() -> None:
    reply = {"msgtype": "m.text", "body": "more", "m.relates_to": {"m.in_reply_to": {"event_id": "$a"}}}
    threaded = {
        "msgtype": "m.text",
        "body": "in a thread",
        "m.relates_to": {"rel_type": "m.thread", "event_id": "$root", "m.in_reply_to": {"event_id": "$b"}},
    }

    assert draft_content(message(reply)) == ("m.room.message", reply)
    assert draft_content(message(threaded)) == (
        "m.room.message",
        {"msgtype": "m.text", "body": "in a thread", "m.relates_to": {"m.in_reply_to": {"event_id": "$b"}}},
    )


@pytest.mark.parametrize(
    "raw",
    [
        message({}),  # redacted
        message({"body": "no msgtype"}),
        message({"msgtype": "m.text", "body": 5}),
        message({"key": "👍"}, "m.reaction"),
        message({"name": "room"}, "m.room.name", state_key=""),
        message({"msgtype": "m.text", "body": "x"}, "m.room.encrypted"),
        {"type": "m.room.message", "content": "not an object"},
    ],
)
def test_what_cannot_be_published_is_no_draft(raw: dict[str, Any]) -> None:
    assert draft_content(raw) is None


# -- the commands and publish_due, on a real (SQLite) database; nothing is sent ------------------------

DOMAIN = "example.org"
OWNER = f"@alice:{DOMAIN}"


def backstage(handle: str) -> str:
    return f"!{handle}-backstage:{DOMAIN}"


def broadcast(handle: str) -> str:
    return f"!{handle}-broadcast:{DOMAIN}"


async def seed_channel(ctx: Context, handle: str, tz: str = "Asia/Tehran", **fields: Any) -> None:
    async with ctx.sessions.begin() as session:
        channel = Channel(
            handle=handle,
            title=handle.title(),
            owner=OWNER,
            ghost_user_id=f"@kanal_{handle}:{DOMAIN}",
            broadcast_room_id=broadcast(handle),
            backstage_room_id=backstage(handle),
            status="active",
            timezone=tz,
            **fields,
        )
        session.add(channel)
        await session.flush()
        session.add(Room(room_id=backstage(handle), kind="backstage", channel_id=channel.id))
        session.add(Room(room_id=broadcast(handle), kind="broadcast", channel_id=channel.id))


async def run(ctx: Context, handle: str, body: str, sent: datetime, lang: str = "en") -> list[OutboxEntry]:
    """`body` (a `!schedule`, `!scheduled` or `!unschedule` line) sent in backstage at `sent`; what it queued."""
    command = parse_command(body, require_bang=True)
    assert command is not None
    async with ctx.sessions.begin() as session:
        before = set((await session.scalars(select(OutboxEntry.id))).all())
        channel = await session.scalar(select(Channel).where(Channel.handle == handle))
        room = await session.get(Room, backstage(handle))
        assert channel is not None and room is not None
        event = Event(
            event_id=EventID(f"$cmd{len(before)}-{handle}"),
            room_id=RoomID(room.room_id),
            sender=UserID(OWNER),
            type="m.room.message",
            content={"msgtype": "m.text", "body": body},
            origin_server_ts=int(sent.timestamp() * 1000),
        )
        await schedule_command(CommandCall(ctx, session, room, event, command, lang, channel))
    return await queued_since(ctx, before)


async def queued_since(ctx: Context, before: set[int]) -> list[OutboxEntry]:
    async with ctx.sessions() as session:
        entries = (await session.scalars(select(OutboxEntry).order_by(OutboxEntry.id))).all()
    return [e for e in entries if e.id not in before]


async def outbox_ids(ctx: Context) -> set[int]:
    async with ctx.sessions() as session:
        return set((await session.scalars(select(OutboxEntry.id))).all())


def said(entries: list[OutboxEntry]) -> str:
    bodies = [e.payload["content"]["body"] for e in entries if e.kind == "send"]
    assert len(bodies) == 1, bodies
    body: str = bodies[0]
    return body


async def scheduled_rows(ctx: Context) -> list[ScheduledPost]:
    async with ctx.sessions() as session:
        return list((await session.scalars(select(ScheduledPost).order_by(ScheduledPost.id))).all())


def ago(**delta: float) -> datetime:
    return datetime.now(UTC) - timedelta(**delta)


async def test_schedule_stores_a_backstage_event_and_answers_in_the_channels_zone(ctx: Context) -> None:
    await seed_channel(ctx, "news1")

    reply = said(await run(ctx, "news1", "!schedule tomorrow 8:00 hello\n  later", NOW))

    assert reply == (
        "Scheduled: post 1 will be published in #news1 at 2026-06-03 08:00 (Asia/Tehran). "
        "!scheduled lists what is waiting; !unschedule 1 cancels it."
    )
    [row] = await scheduled_rows(ctx)
    assert (row.status, aware(row.due_at), row.author) == ("pending", utc(2026, 6, 3, 4, 30), OWNER)
    assert row.source_event_id == "$cmd0-news1"
    assert row.event == {
        "event_id": "$cmd0-news1",
        "room_id": backstage("news1"),
        "sender": OWNER,
        "type": "m.room.message",
        "origin_server_ts": int(NOW.timestamp() * 1000),
        "content": {"msgtype": "m.text", "body": "hello\n  later"},
    }


async def test_relative_times_count_from_when_the_command_was_sent(ctx: Context) -> None:
    await seed_channel(ctx, "news1", tz="UTC")

    said(await run(ctx, "news1", "!schedule +2h late news", NOW))

    [row] = await scheduled_rows(ctx)
    assert aware(row.due_at) == NOW.replace(microsecond=0) + timedelta(hours=2)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("!schedule", "Usage: !schedule <when> <text>"),
        ("!schedule +2h", "Usage: !schedule <when> <text>"),  # neither text nor a reply
        ("!schedule soon hello", "“soon” is not a time I can read"),
        ("!schedule 2026-06-01 09:00 hello", "is in the past: it is now 2026-06-02 13:45:30 in Asia/Tehran"),
        ("!schedule +400d hello", "more than a year ahead"),
        ("!unschedule", "Usage: !unschedule <number>"),
        ("!unschedule one", "Usage: !unschedule <number>"),
        ("!unschedule 7", "No post 7 is waiting to be published in #news1"),
        ("!scheduled", "Nothing is waiting to be published in #news1"),
    ],
)
async def test_refusals_say_why_and_store_nothing(ctx: Context, body: str, expected: str) -> None:
    await seed_channel(ctx, "news1")

    assert expected in said(await run(ctx, "news1", body, NOW))
    assert await scheduled_rows(ctx) == []


async def test_replies_are_in_persian_when_asked(ctx: Context) -> None:
    await seed_channel(ctx, "news1")

    reply = said(await run(ctx, "news1", "!schedule فردا ۸:۰۰ سلام", NOW, lang="fa"))

    assert reply.startswith("زمان‌بندی شد: پست ۱ در ۲۰۲۶-۰۶-۰۳ ۰۸:۰۰ (Asia/Tehran)")
    past = said(await run(ctx, "news1", "!schedule 2020-01-01 09:00 x", NOW, lang="fa"))
    assert "گذشته است" in past and "۲۰۲۶-۰۶-۰۲ ۱۳:۴۵:۳۰" in past and "2020-01-01 09:00" in past  # quoted as typed
    said(await run(ctx, "news1", "!schedule 2026-12-01 09:00 second", NOW))
    listing = said(await run(ctx, "news1", "!scheduled", NOW, lang="fa"))
    assert "• ۲ — ۲۰۲۶-۱۲-۰۱ ۰۹:۰۰ — second" in listing


async def test_scheduled_lists_the_pending_posts_of_this_channel_and_unschedule_cancels(ctx: Context) -> None:
    await seed_channel(ctx, "news1")
    await seed_channel(ctx, "other")
    said(await run(ctx, "news1", "!schedule 2026-12-01 09:00 second", NOW))
    said(await run(ctx, "news1", "!schedule tomorrow 8:00 first\nmore lines", NOW))
    said(await run(ctx, "other", "!schedule +1h elsewhere", NOW))
    said(await run(ctx, "news1", "!schedule +1d " + "x" * 100, NOW))

    listing = said(await run(ctx, "news1", "!scheduled", NOW))

    assert listing == (
        "Waiting to be published in #news1 (times in Asia/Tehran):\n"
        "• 2 — 2026-06-03 08:00 — first\n"
        f"• 4 — 2026-06-03 13:45:30 — {'x' * 59}…\n"
        "• 1 — 2026-12-01 09:00 — second\n"
        "!unschedule <number> cancels one."
    )
    assert "No post 3 is waiting" in said(await run(ctx, "news1", "!unschedule 3", NOW))  # another channel's
    assert (
        said(await run(ctx, "news1", "!unschedule ۲", NOW))
        == "Cancelled: post 2 will not be published in #news1."
    )
    assert "No post 2 is waiting" in said(await run(ctx, "news1", "!unschedule 2", NOW))
    assert [r.status for r in await scheduled_rows(ctx)] == ["pending", "cancelled", "pending", "pending"]
    assert "• 2 —" not in said(await run(ctx, "news1", "!scheduled", NOW))


async def test_a_long_list_says_how_many_more_wait(ctx: Context) -> None:
    await seed_channel(ctx, "news1")
    for n in range(MAX_LISTED + 3):
        said(await run(ctx, "news1", f"!schedule +{n + 1}h post {n}", NOW))

    listing = said(await run(ctx, "news1", "!scheduled", NOW))

    assert listing.count("\n• ") == MAX_LISTED
    assert "… and 3 more" in listing


async def test_a_channel_may_have_only_so_many_posts_waiting(ctx: Context) -> None:
    await seed_channel(ctx, "news1")
    for n in range(MAX_PENDING_PER_CHANNEL):
        said(await run(ctx, "news1", f"!schedule +{n + 1}m post {n}", NOW))

    refused = said(await run(ctx, "news1", "!schedule +1d one too many", NOW))

    assert refused.startswith(f"#news1 already has {MAX_PENDING_PER_CHANNEL} posts waiting")
    assert len(await scheduled_rows(ctx)) == MAX_PENDING_PER_CHANNEL


async def test_publish_due_publishes_each_due_post_once_in_due_order(ctx: Context) -> None:
    await seed_channel(ctx, "news1")
    said(await run(ctx, "news1", "!schedule +2h later", ago(hours=1)))  # not due for an hour
    said(await run(ctx, "news1", "!schedule +30m second", ago(hours=1)))
    said(await run(ctx, "news1", "!schedule +10m first", ago(hours=1)))
    said(await run(ctx, "news1", "!schedule +20m !silent quiet", ago(hours=1)))
    before = await outbox_ids(ctx)

    assert await publish_due(ctx) == 3
    assert await publish_due(ctx) == 0

    sent = await queued_since(ctx, before)
    assert [(e.kind, e.as_user, e.payload["room_id"]) for e in sent] == [
        ("send", f"@kanal_news1:{DOMAIN}", broadcast("news1"))
    ] * 3
    assert [e.payload["content"]["body"] for e in sent] == ["first", "quiet", "second"]
    assert sent[1].payload["content"]["msgtype"] == "m.notice"  # `!silent` works when scheduled
    assert [r.status for r in await scheduled_rows(ctx)] == ["pending", "sent", "sent", "sent"]
    async with ctx.sessions() as session:
        posts = (await session.scalars(select(Post).order_by(Post.id))).all()
    rows = await scheduled_rows(ctx)
    assert [p.source_event_id for p in posts] == [
        rows[2].source_event_id,
        rows[3].source_event_id,
        rows[1].source_event_id,
    ]


async def test_publish_due_takes_at_most_its_limit(ctx: Context) -> None:
    await seed_channel(ctx, "news1")
    for n in range(3):
        said(await run(ctx, "news1", f"!schedule +{n + 1}m post {n}", ago(hours=1)))

    assert await publish_due(ctx, limit=2) == 2
    assert await publish_due(ctx, limit=2) == 1


async def test_two_publishers_at_once_publish_each_post_once(ctx: Context) -> None:
    await seed_channel(ctx, "news1")
    for n in range(10):
        said(await run(ctx, "news1", f"!schedule +{n + 1}m post {n}", ago(hours=1)))
    before = await outbox_ids(ctx)

    counts = await asyncio.gather(publish_due(ctx), publish_due(ctx), publish_due(ctx))

    assert sum(counts) == 10
    bodies = [e.payload["content"]["body"] for e in await queued_since(ctx, before)]
    assert sorted(bodies) == sorted(f"post {n}" for n in range(10))


async def test_a_post_of_a_channel_no_longer_active_is_cancelled(ctx: Context) -> None:
    await seed_channel(ctx, "news1")
    said(await run(ctx, "news1", "!schedule +1m gone", ago(hours=1)))
    async with ctx.sessions.begin() as session:
        await session.execute(update(Channel).values(status="suspended"))
    before = await outbox_ids(ctx)

    assert await publish_due(ctx) == 0

    assert await queued_since(ctx, before) == []
    assert [r.status for r in await scheduled_rows(ctx)] == ["cancelled"]


async def test_a_post_falling_due_while_posting_is_restricted_is_cancelled_and_backstage_told(
    ctx: Context,
) -> None:
    await seed_channel(ctx, "news1")
    said(await run(ctx, "news1", "!schedule +1m held back", ago(hours=1)))
    async with ctx.sessions.begin() as session:
        await session.execute(update(Channel).values(restricted_until=utc(2099, 1, 1, 0, 0)))
    before = await outbox_ids(ctx)

    assert await publish_due(ctx) == 0

    [notice] = await queued_since(ctx, before)
    assert notice.payload["room_id"] == backstage("news1")
    assert notice.payload["content"]["body"].startswith(
        "Scheduled post 1 was not published: posting in #news1 is suspended until 2099-01-01 00:00 UTC."
    )
    assert [r.status for r in await scheduled_rows(ctx)] == ["cancelled"]


async def test_a_post_that_cannot_be_published_is_cancelled_without_holding_back_the_others(
    ctx: Context,
) -> None:
    await seed_channel(ctx, "news1")
    said(await run(ctx, "news1", "!schedule +1m broken", ago(hours=1)))
    said(await run(ctx, "news1", "!schedule +2m fine", ago(hours=1)))
    async with ctx.sessions.begin() as session:
        await session.execute(
            update(ScheduledPost).where(ScheduledPost.id == 1).values(event={"type": "m.room.message"})
        )
    before = await outbox_ids(ctx)

    assert await publish_due(ctx) == 1

    bodies = [e.payload["content"]["body"] for e in await queued_since(ctx, before)]
    assert bodies[0].startswith("Scheduled post 1 could not be published in #news1 and was cancelled")
    assert bodies[1:] == ["fine"]
    assert [r.status for r in await scheduled_rows(ctx)] == ["cancelled", "sent"]


async def test_the_scheduler_publishes_under_its_lease_until_stopped(ctx: Context) -> None:
    await seed_channel(ctx, "news1")
    said(await run(ctx, "news1", "!schedule +1m on time", ago(hours=1)))
    stopping = asyncio.Event()
    leases = Leases(ctx.sessions, "this-process")
    other = Leases(ctx.sessions, "another-process")

    task = asyncio.create_task(run_scheduler(ctx, leases, stopping, interval=0.05))
    for _ in range(100):
        if [r.status for r in await scheduled_rows(ctx)] == ["sent"]:
            break
        await asyncio.sleep(0.05)
    stopping.set()
    await asyncio.wait_for(task, 5)

    assert [r.status for r in await scheduled_rows(ctx)] == ["sent"]
    assert not await other.hold(SCHEDULER_LEASE)  # one process at a time
