"""Statistics: views per post, daily series and growth, the edit thresholds, the chart; and the
housekeeping that records a day and edits posts, on SQLite with a homeserver that only lists members."""

from __future__ import annotations

import io
import logging
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from PIL import features as pil_features
from sqlalchemy import select

from bridge.audience import chart as chart_module
from bridge.audience.chart import (
    CHART_DAYS,
    HEIGHT,
    MARGIN_LEFT,
    MARGIN_RIGHT,
    PANEL_TOP,
    WIDTH,
    ChartLabels,
    DayStats,
    chart_language,
    render_chart,
    shaping_available,
)
from bridge.audience.stats import (
    Snapshot,
    _chart_labels,
    daily_series,
    excerpt,
    growth_per_day,
    mark_views,
    record_daily_stats,
    threshold_level,
    views_by_post,
    views_edit_content,
    views_edit_due,
)
from bridge.matrix.relay import REF_PLACEHOLDER
from bridge.runtime.config import parse
from bridge.runtime.context import Context
from bridge.runtime.outbox import OutboxWorker
from bridge.store.db import create_engine, migrate, sessionmaker
from bridge.store.models import Channel, ChannelDailyStats, OutboxEntry, Post, ReaderPosition
from bridge.text.digits import localise_digits

TODAY = date(2026, 11, 28)
LABELS = ChartLabels("#news: the last 30 days", "Subscribers", "Views per day", "No numbers recorded yet")
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def test_a_reader_counts_for_their_post_and_every_earlier_one() -> None:
    # posts 1..5; two readers at 5, one at 3, one at 2 (and one at a post not listed, 4)
    views = views_by_post([1, 2, 3, 5], {5: 2, 4: 1, 3: 1, 2: 1})
    assert views == {5: 2, 3: 4, 2: 5, 1: 5}


@given(
    st.lists(st.integers(1, 50), min_size=1, unique=True),
    st.dictionaries(st.integers(1, 60), st.integers(1, 5)),
)
def test_views_by_post_matches_counting_each_reader(post_ids: list[int], readers_at: dict[int, int]) -> None:
    expected = {p: sum(n for position, n in readers_at.items() if position >= p) for p in post_ids}
    assert views_by_post(post_ids, readers_at) == expected


def test_a_days_views_are_the_growth_of_the_total_and_the_window_is_30_days() -> None:
    snapshots = [
        Snapshot(TODAY - timedelta(days=40), 1, 5),  # before the window: the baseline only
        Snapshot(TODAY - timedelta(days=29), 3, 12),
        Snapshot(TODAY - timedelta(days=28), 3, 20),
        Snapshot(TODAY - timedelta(days=2), 5, 20),  # no views that day
        Snapshot(TODAY, 8, 31),
    ]
    series = daily_series(snapshots, TODAY)
    assert series == [
        DayStats(TODAY - timedelta(days=29), 3, 7),
        DayStats(TODAY - timedelta(days=28), 3, 8),
        DayStats(TODAY - timedelta(days=2), 5, 0),
        DayStats(TODAY, 8, 11),
    ]


def test_the_first_day_ever_recorded_counts_every_view_and_a_drop_is_not_negative() -> None:
    snapshots = [Snapshot(TODAY - timedelta(days=1), 2, 9), Snapshot(TODAY, 2, 4)]  # a post was deleted
    assert daily_series(snapshots, TODAY) == [
        DayStats(TODAY - timedelta(days=1), 2, 9),
        DayStats(TODAY, 2, 0),
    ]


def test_growth_per_day_is_the_difference_from_the_previous_recorded_day() -> None:
    snapshots = [
        Snapshot(TODAY, 7, 0),
        Snapshot(TODAY - timedelta(days=2), 3, 0),
        Snapshot(TODAY - timedelta(days=1), 5, 0),
    ]
    assert growth_per_day(snapshots) == [(TODAY - timedelta(days=1), 2), (TODAY, 2)]
    assert growth_per_day(snapshots[:1]) == []


@pytest.mark.parametrize(
    ("views", "level"),
    [(0, 0), (9, 0), (10, 10), (99, 10), (100, 100), (999, 100), (1000, 1000), (12_345, 10_000)],
)
def test_threshold_levels(views: int, level: int) -> None:
    assert threshold_level(views) == level


def test_a_post_is_edited_once_per_threshold_crossed() -> None:
    assert not views_edit_due(9, None, None, NOW, 600)
    assert views_edit_due(10, None, None, NOW, 600)
    long_ago = NOW - timedelta(hours=1)
    assert not views_edit_due(99, 10, long_ago, NOW, 600)  # still the same threshold
    assert views_edit_due(100, 10, long_ago, NOW, 600)
    assert views_edit_due(150, 12, long_ago, NOW, 600)
    assert not views_edit_due(150, 100, long_ago, NOW, 600)


def test_edits_are_spaced_by_the_interval() -> None:
    recently = NOW - timedelta(seconds=599)
    assert not views_edit_due(100, 10, recently, NOW, 600)
    assert views_edit_due(100, 10, NOW - timedelta(seconds=600), NOW, 600)
    assert views_edit_due(100, 10, NOW, NOW, 0)


def test_the_views_edit_replaces_the_relayed_post_with_the_footer() -> None:
    edit = views_edit_content({"msgtype": "m.text", "body": "Hello"}, 1234, None)
    assert edit["m.relates_to"] == {"rel_type": "m.replace", "event_id": REF_PLACEHOLDER}
    assert edit["m.new_content"]["body"] == "Hello\n\n👁 1.2K"
    assert "👁 1.2K" in edit["m.new_content"]["formatted_body"]
    assert edit["body"].startswith("* Hello")
    with_link = views_edit_content({"msgtype": "m.text", "body": "Hi"}, 10, "https://matrix.to/#/!r/$e")
    assert with_link["m.new_content"]["body"] == "Hi\n\n💬 Comments: https://matrix.to/#/!r/$e · 👁 10"


def test_excerpts_are_one_short_line() -> None:
    assert excerpt("m.room.message", {"msgtype": "m.text", "body": "a\nb"}) == "a b"
    long = excerpt("m.room.message", {"msgtype": "m.text", "body": "x" * 100})
    assert len(long) == 40 and long.endswith("…")
    assert excerpt("m.room.message", {"msgtype": "m.image", "body": "cat.png"}) == "🖼 cat.png"
    poll = {"org.matrix.msc3381.poll.start": {"question": {"org.matrix.msc1767.text": "Tea?"}}}
    assert excerpt("org.matrix.msc3381.poll.start", poll) == "📊 Tea?"
    assert excerpt("m.room.message", None) == "…"


def _png(days: list[DayStats], labels: ChartLabels = LABELS) -> Image.Image:
    chart = render_chart(days, today=TODAY, labels=labels)
    assert chart.png.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(chart.png))
    image.load()
    assert image.format == "PNG"
    assert image.size == (chart.width, chart.height) == (WIDTH, HEIGHT)
    return image


def test_the_chart_is_a_png_whose_text_chunks_hold_the_numbers_it_shows() -> None:
    days = [
        DayStats(TODAY - timedelta(days=CHART_DAYS), 1, 1),  # outside the window: not shown
        DayStats(TODAY - timedelta(days=2), 3, 12),
        DayStats(TODAY - timedelta(days=1), 3, 0),
        DayStats(TODAY, 4, 1500),
    ]
    image = _png(days)
    text = image.text  # type: ignore[attr-defined]
    assert text["kanal:days"] == "2026-11-26,2026-11-27,2026-11-28"
    assert text["kanal:subscribers"] == "3,3,4"
    assert text["kanal:views"] == "12,0,1500"
    # Something is drawn in both series' colours, on a white background.
    colours = {colour for _, colour in image.convert("RGB").getcolors(maxcolors=1_000_000) or []}
    assert (255, 255, 255) in colours
    assert (0x1F, 0x6F, 0xEB) in colours  # subscribers
    assert (0xD4, 0x65, 0x0C) in colours  # views


def test_an_empty_chart_is_still_a_png() -> None:
    image = _png([])
    assert image.text["kanal:subscribers"] == ""  # type: ignore[attr-defined]


CHART_DAYS_SHOWN = [
    DayStats(TODAY - timedelta(days=2), 3, 12),
    DayStats(TODAY - timedelta(days=1), 3, 0),
    DayStats(TODAY, 4, 1500),
]


def _title_ink(image: Image.Image) -> tuple[int, int, int, int] | None:
    """The bounding box of the title's dark pixels (the band above the first panel's heading)."""
    band = image.convert("L").crop((0, 0, WIDTH, PANEL_TOP[0] - 34))
    return band.point(lambda v: 255 if v < 128 else 0).getbbox()


def test_the_english_labels_read_from_the_left() -> None:
    assert _chart_labels("news1", "en") == ChartLabels(
        "#news1: the last 30 days", "Subscribers", "Views per day", "No numbers recorded yet", "en"
    )
    box = _title_ink(_png(CHART_DAYS_SHOWN))
    assert box is not None and box[0] < MARGIN_LEFT + 4


@pytest.mark.skipif(not shaping_available(), reason="Pillow without raqm: the chart falls back to English")
def test_the_persian_chart_has_the_same_numbers_with_persian_words_from_the_right() -> None:
    labels = _chart_labels("news1", "fa")
    assert labels.lang == "fa"
    assert labels.title == "#news1: ۳۰ روز گذشته"  # Persian digits; the handle as it is
    assert labels.subscribers == "مشترکان"
    english, persian = _png(CHART_DAYS_SHOWN), _png(CHART_DAYS_SHOWN, labels)
    assert persian.text == english.text  # type: ignore[attr-defined]
    assert persian.text["kanal:views"] == "12,0,1500"  # type: ignore[attr-defined]
    assert persian.tobytes() != english.tobytes()
    # The title is drawn (dark pixels), and it ends at the right margin where Persian starts.
    box = _title_ink(persian)
    assert box is not None
    left, top, right, bottom = box
    assert right > WIDTH - MARGIN_RIGHT - 4 and left > WIDTH / 3 and bottom - top > 10
    dark = sum(1 for v in persian.convert("L").crop(box).tobytes() if v < 128)
    assert dark > 150
    # The same series in colour, and an empty chart draws too.
    colours = {colour for _, colour in persian.convert("RGB").getcolors(maxcolors=1_000_000) or []}
    assert {(0x1F, 0x6F, 0xEB), (0xD4, 0x65, 0x0C)} <= colours
    assert _png([], labels).text["kanal:days"] == ""  # type: ignore[attr-defined]


def test_persian_digits_in_persian_only() -> None:
    assert localise_digits("1,500 2026-11-28", "fa") == "۱٬۵۰۰ ۲۰۲۶-۱۱-۲۸"
    assert localise_digits("1,500", "en") == "1,500"


def test_without_raqm_the_chart_falls_back_to_english_and_says_so_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # bridge.audience.chart reads PIL.features.check (the very module object patched here).
    monkeypatch.setattr(pil_features, "check", lambda feature: False)
    monkeypatch.setattr(chart_module, "_fallback_logged", False)
    caplog.set_level(logging.INFO, logger="bridge.audience.chart")
    assert not shaping_available()
    assert chart_language("fa") == "en"
    assert chart_language("en") == "en"
    labels = _chart_labels("news1", "fa")
    assert labels == _chart_labels("news1", "en")
    assert labels.title == "#news1: the last 30 days" and labels.lang == "en"
    fallbacks = [r for r in caplog.records if r.name == "bridge.audience.chart"]
    assert len(fallbacks) == 1 and fallbacks[0].levelno == logging.INFO
    assert "raqm" in fallbacks[0].getMessage()
    english = replace(LABELS, title="#news1: the last 30 days")
    assert _png(CHART_DAYS_SHOWN, labels).tobytes() == _png(CHART_DAYS_SHOWN, english).tobytes()
    # Persian words are never drawn without shaping.
    persian = ChartLabels("#news1: ۳۰ روز گذشته", "مشترکان", "بازدید روزانه", "هنوز عددی ثبت نشده است", "fa")
    with pytest.raises(ValueError, match="chart_language"):
        render_chart(CHART_DAYS_SHOWN, today=TODAY, labels=persian)


class _Members:
    """A homeserver that knows one room's joined members (all `record_daily_stats` asks)."""

    def __init__(self, members: dict[str, object]) -> None:
        self.members = members

    def intent(self, _user_id: str) -> _Members:
        return self

    async def joined_members(self, _room_id: str) -> dict[str, object]:
        return self.members


async def test_housekeeping_records_a_day_once_and_edits_posts_once_per_threshold(tmp_path: Path) -> None:
    config = parse(
        {
            "homeserver": {"url": "http://127.0.0.1:9", "domain": "x"},
            "appservice": {"as_token": "a" * 20, "hs_token": "b" * 20},
            "database": {"url": f"sqlite:///{tmp_path / 'k.db'}"},
        },
        tmp_path / "config.yaml",
    )
    engine = create_engine(config.database_url)
    await migrate(engine)
    sessions = sessionmaker(engine)
    client = _Members({"@kanal:x": {}, "@kanal_news1:x": {}, "@bob:x": {}, "@eve:x": {}})
    ctx = Context(config, client, sessions, OutboxWorker(sessions, None))  # type: ignore[arg-type]
    async with sessions.begin() as session:
        channel = Channel(
            handle="news1",
            title="N",
            owner="@o:x",
            ghost_user_id="@kanal_news1:x",
            status="active",
            broadcast_room_id="!b:x",
            views_in_posts=True,
        )
        session.add(channel)
        await session.flush()
        contents = [{"msgtype": "m.text", "body": "one"}, {"msgtype": "m.image", "body": "i.png"}]
        for n, content in enumerate(contents, start=1):
            session.add(
                Post(
                    channel_id=channel.id,
                    source_event_id=f"$s{n}",
                    relayed_event_id=f"$p{n}",
                    author="@o:x",
                    content=content,
                )
            )
        await session.flush()
        for reader in range(10):
            session.add(ReaderPosition(channel_id=channel.id, user_id=f"@r{reader}:x", post_id=2))

    assert await record_daily_stats(ctx) == 1
    assert await record_daily_stats(ctx) == 0  # fresh for an hour
    async with sessions() as session:
        [row] = (await session.scalars(select(ChannelDailyStats))).all()
        assert (row.day, row.subscribers, row.views) == (datetime.now(UTC).date(), 2, 20)

    assert await mark_views(ctx) == 1  # the text post; the image gets no footer
    assert await mark_views(ctx) == 0  # once per threshold
    async with sessions() as session:
        [entry] = (await session.scalars(select(OutboxEntry))).all()
        post = await session.scalar(select(Post).where(Post.source_event_id == "$s1"))
    assert entry.ref_source == "$s1"
    assert entry.payload["content"]["m.new_content"]["body"] == "one\n\n👁 10"
    assert post is not None and post.views_shown == 10 and post.content == contents[0]
    await engine.dispose()
