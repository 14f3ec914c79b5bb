"""The transparency report: every figure against a seeded database, the three renderings, the command."""

from __future__ import annotations

import csv
import io
import json
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.moderation.transparency import (
    Durations,
    Report,
    as_dict,
    build_report,
    parse_day,
    render_csv,
    render_html,
    render_json,
)
from bridge.ops.initfiles import write_init_files
from bridge.store.db import create_engine, migrate, sessionmaker
from bridge.store.models import Appeal, Channel, Decision, HeldPost, Notice

START, END = date(2026, 1, 1), date(2026, 6, 30)
NOW = datetime(2026, 7, 3, 9, 30, tzinfo=UTC)
XSS = "<script>alert(1)</script>"


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def _notice(row_id: int, source: str, category: str, received: datetime, **extra: Any) -> Notice:
    return Notice(id=row_id, source=source, category=category, received_at=received, **extra)


def _decision(row_id: int, kind: str, made: datetime, **extra: Any) -> Decision:
    extra.setdefault("decided_by", "@mod:example.org")
    return Decision(id=row_id, kind=kind, created_at=made, **extra)


def _appeal(row_id: int, decision_id: int, filed: datetime, status: str, decided: datetime | None) -> Appeal:
    return Appeal(
        id=row_id,
        decision_id=decision_id,
        appellant="@owner:example.org",
        text="please",
        status=status,
        created_at=filed,
        decided_at=decided,
    )


def _held(row_id: int, held: datetime, status: str, decision_id: int | None) -> HeldPost:
    return HeldPost(
        id=row_id,
        channel_id=1,
        source_event_id=f"$held{row_id}",
        author="@owner:example.org",
        event={},
        status=status,
        decision_id=decision_id,
        created_at=held,
    )


async def _seed(session: AsyncSession) -> None:
    """Inside the period: 8 notices, 9 decisions, 4 appeals, 3 held posts; and rows on either side."""
    session.add_all(
        [
            Channel(
                id=1, handle="news_daily", title="News", owner="@owner:example.org", ghost_user_id="@g:x"
            ),
            Channel(
                id=2, handle="other_chan", title="Other", owner="@owner:example.org", ghost_user_id="@h:x"
            ),
        ]
    )
    session.add_all(
        [
            _notice(100, "command", "spam", at(2025, 12, 31, 22), status="decided"),  # before
            _notice(1, "command", "spam", at(2026, 1, 1), status="decided"),  # first instant
            _notice(2, "command", "spam", at(2026, 2, 10, 10), status="decided"),
            _notice(3, "homeserver", "illegal_hate_speech", at(2026, 3, 1), status="decided"),
            _notice(4, "flagger", "illegal_hate_speech", at(2026, 4, 1), trusted=True, status="decided"),
            _notice(5, "flagger", XSS, at(2026, 6, 30, 23, 59, 59), trusted=True),  # last second
            _notice(6, "flagger", "spam", at(2026, 5, 5)),
            _notice(7, "homeserver", "other", at(2026, 6, 15)),
            _notice(8, "command", "other", at(2026, 1, 15)),
            _notice(101, "flagger", "spam", at(2026, 7, 1), trusted=True, status="decided"),  # after
        ]
    )
    await session.flush()
    session.add_all(
        [
            _decision(200, "suspend", at(2025, 12, 30), channel_id=2),  # before
            # notice-based; hours to action: 2, 4, 6, 24 and 10 (notice 100 came before the period)
            _decision(1, "take_down", at(2026, 1, 1, 2), notice_id=1, ground="law", category="spam"),
            _decision(2, "no_action", at(2026, 2, 10, 14), notice_id=2, category="spam"),
            _decision(
                3,
                "take_down",
                at(2026, 3, 1, 6),
                notice_id=3,
                ground="law",
                automated=True,
                category="illegal_hate_speech",
            ),
            _decision(
                4,
                "suspend",
                at(2026, 4, 2),
                notice_id=4,
                channel_id=1,
                status="reversed",
                category="illegal_hate_speech",
            ),
            _decision(5, "restrict", at(2026, 1, 1, 8), notice_id=100, channel_id=1, category="spam"),
            _decision(6, "take_down", at(2026, 5, 1), own_initiative=True, automated=True),
            _decision(
                7, "reject_post", at(2026, 5, 2), own_initiative=True, automated=True, decided_by="hook:terms"
            ),
            # a person's verdict on what a hook held: automated detection, human decision
            _decision(8, "approve_post", at(2026, 5, 3), automated=True),
            _decision(9, "reinstate", at(2026, 5, 10), reverses_id=4, channel_id=1),
            _decision(201, "take_down", at(2026, 7, 1, 5), notice_id=101),  # after
        ]
    )
    await session.flush()
    session.add_all(
        [
            _appeal(1, 1, at(2026, 1, 2), "reversed", at(2026, 1, 3)),  # 24 h
            _appeal(2, 3, at(2026, 3, 2), "upheld", at(2026, 3, 2, 12)),  # 12 h
            _appeal(3, 4, at(2026, 4, 5), "reversed", at(2026, 4, 7)),  # 48 h
            _appeal(4, 2, at(2026, 6, 30, 12), "open", None),
            _appeal(100, 200, at(2025, 12, 31), "reversed", at(2026, 1, 1)),  # filed before
            _appeal(101, 201, at(2026, 7, 2), "upheld", at(2026, 7, 2, 1)),  # filed after
            _held(1, at(2026, 5, 2), "rejected", 7),
            _held(2, at(2026, 5, 3), "approved", 8),
            _held(3, at(2026, 6, 1), "held", None),
            _held(100, at(2026, 7, 5), "held", None),  # after
        ]
    )
    await session.flush()
    # The form SQLite's CURRENT_TIMESTAMP default writes, which sorts before the bound parameter.
    await session.execute(text("UPDATE notices SET received_at = '2026-01-01 00:00:00' WHERE id = 1"))


@pytest.fixture
async def report(tmp_path: Path) -> AsyncIterator[Report]:
    engine = create_engine(f"sqlite:///{tmp_path / 'kanal.db'}")
    try:
        await migrate(engine)
        sessions = sessionmaker(engine)
        async with sessions.begin() as session:
            await _seed(session)
        async with sessions.begin() as session:
            yield await build_report(session, START, END, provider="example.org", now=NOW)
    finally:
        await engine.dispose()


def test_header(report: Report) -> None:
    assert report.generated_at == NOW
    assert report.provider == "example.org"
    assert (report.period.start, report.period.end, report.period.timezone) == (START, END, "UTC")


def test_notices(report: Report) -> None:
    notices = report.notices
    assert notices.total == 8
    assert notices.by_source == {"command": 3, "homeserver": 2, "flagger": 3}
    assert notices.by_category == {"spam": 3, "illegal_hate_speech": 2, "other": 2, XSS: 1}
    assert notices.trusted == 2
    assert notices.trusted_share == 0.25
    assert notices.open_now == 4


def test_decisions(report: Report) -> None:
    decisions = report.decisions
    assert decisions.total == 9
    assert decisions.by_kind == {
        "take_down": 3,
        "restrict": 1,
        "suspend": 1,
        "no_action": 1,
        "reject_post": 1,
        "approve_post": 1,
        "ban_user": 0,
        "ban_server": 0,
        "reinstate": 1,
    }
    assert decisions.by_ground == {"law": 2, "terms": 7}
    assert decisions.by_category == {"other": 4, "spam": 3, "illegal_hate_speech": 2}
    assert decisions.by_status == {"in_force": 8, "reversed": 1, "expired": 0}
    assert (decisions.automated, decisions.not_automated) == (4, 5)
    assert (decisions.decided_automatically, decisions.decided_by_person) == (1, 8)
    assert (decisions.notice_based, decisions.own_initiative, decisions.other_basis) == (5, 2, 2)
    # 2, 4, 6, 10, 24 hours: median 6, 90th percentile by nearest rank the 5th of 5
    assert decisions.time_to_action == Durations(count=5, median_hours=6.0, p90_hours=24.0)


def test_appeals(report: Report) -> None:
    appeals = report.appeals
    assert (appeals.filed, appeals.decided, appeals.upheld, appeals.reversed, appeals.open) == (4, 3, 1, 2, 1)
    assert appeals.by_status == {"open": 1, "upheld": 1, "reversed": 2}
    assert appeals.reversal_rate == 0.6667
    assert appeals.handling_time == Durations(count=3, median_hours=24.0, p90_hours=48.0)


def test_channels_and_held_posts(report: Report) -> None:
    channels = report.channels
    assert (channels.suspensions, channels.channels_suspended) == (1, 1)
    assert (channels.restrictions, channels.channels_restricted) == (1, 1)
    held = report.held_posts
    assert held.held == 2  # the third row is a post a hook rejected outright: never held
    assert held.by_status == {"held": 1, "approved": 1, "rejected": 0}
    assert (held.approved, held.rejected, held.rejected_automatically) == (1, 1, 1)


async def test_posts_a_hook_rejected_are_not_counted_as_held(tmp_path: Path) -> None:
    """Two posts held (one still waiting, one a moderator rejected) and two a hook rejected: 2 held."""
    engine = create_engine(f"sqlite:///{tmp_path / 'held.db'}")
    try:
        await migrate(engine)
        async with sessionmaker(engine).begin() as session:
            session.add(Channel(id=1, handle="news_daily", title="N", owner="@o:x", ghost_user_id="@g:x"))
            await session.flush()
            session.add_all(
                [
                    _decision(1, "reject_post", at(2026, 2, 1, 1), decided_by="hook:terms", automated=True),
                    _decision(2, "reject_post", at(2026, 2, 1, 2), decided_by="hook:links", automated=True),
                    _decision(3, "reject_post", at(2026, 2, 2), automated=True),  # a moderator's
                ]
            )
            await session.flush()
            session.add_all(
                [
                    _held(1, at(2026, 2, 1, 1), "rejected", 1),
                    _held(2, at(2026, 2, 1, 2), "rejected", 2),
                    _held(3, at(2026, 2, 1, 3), "rejected", 3),
                    _held(4, at(2026, 2, 1, 4), "held", None),
                ]
            )
            await session.flush()
            report = await build_report(session, START, END)
    finally:
        await engine.dispose()
    held = report.held_posts
    assert held.held == 2
    assert held.by_status == {"held": 1, "approved": 0, "rejected": 1}
    assert (held.rejected, held.rejected_automatically) == (3, 2)


async def test_an_empty_period_has_zeros_and_no_averages(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        await migrate(engine)
        async with sessionmaker(engine).begin() as session:
            empty = await build_report(session, START, START)
    finally:
        await engine.dispose()
    assert empty.notices.total == 0
    assert empty.notices.trusted_share is None
    assert empty.notices.by_source == {"command": 0, "homeserver": 0, "flagger": 0}
    assert empty.decisions.time_to_action == Durations(count=0, median_hours=None, p90_hours=None)
    assert empty.appeals.reversal_rate is None
    assert render_html(empty).count("<svg") == 4


async def test_a_period_that_ends_before_it_starts_is_refused(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        async with sessionmaker(engine).begin() as session:
            with pytest.raises(ValueError, match="after it ends"):
                await build_report(session, END, START)
    finally:
        await engine.dispose()


@pytest.mark.parametrize("bad", ["", "2026-13-01", "2026-02-30", "1.1.2026", "20260101", "2026-01-01T00:00"])
def test_parse_day_refuses_anything_but_a_calendar_date(bad: str) -> None:
    with pytest.raises(ValueError, match="expected a date like 2026-01-31"):
        parse_day(bad)


def test_parse_day() -> None:
    assert parse_day("2026-02-28") == date(2026, 2, 28)


def test_json_names_every_figure(report: Report) -> None:
    data = json.loads(render_json(report))
    assert data == as_dict(report)
    assert data["generated_at"] == "2026-07-03T09:30:00+00:00"
    assert data["period"] == {"start": "2026-01-01", "end": "2026-06-30", "timezone": "UTC"}
    assert data["notices"]["by_category"][XSS] == 1
    assert data["decisions"]["time_to_action"] == {"count": 5, "median_hours": 6.0, "p90_hours": 24.0}
    assert data["appeals"]["reversal_rate"] == 0.6667
    assert set(data) == {
        "generated_at",
        "provider",
        "period",
        "notices",
        "decisions",
        "appeals",
        "channels",
        "held_posts",
    }


def _number(cell: str) -> Any:
    if cell == "":
        return None
    for kind in (int, float):
        try:
            return kind(cell)
        except ValueError:
            pass
    return cell


def test_csv_round_trips_the_figures(report: Report) -> None:
    rows = list(csv.reader(io.StringIO(render_csv(report))))
    assert rows[0] == ["section", "metric", "key", "value"]
    rebuilt: dict[str, Any] = {}
    for section, metric, key, value in rows[1:]:
        if section == "report":
            rebuilt[metric] = _number(value)
            continue
        node = rebuilt.setdefault(section, {})
        *parents, leaf = metric.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        if key:
            node.setdefault(leaf, {})[key] = _number(value)
        else:
            node[leaf] = _number(value)
    assert rebuilt == as_dict(report)
    assert ["notices", "by_category", XSS, "1"] in rows
    assert ["decisions", "time_to_action.median_hours", "", "6.0"] in rows


class _StrictParser(HTMLParser):
    """Fails on a closing tag that does not close the innermost open element; records what it saw."""

    VOID = frozenset({"meta", "br", "hr", "img", "input", "link", "wbr", "col", "source"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.starts: list[str] = []
        self.attributes: list[tuple[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.starts.append(tag)
        self.attributes.extend(attrs)
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open[-1:]}"
        self.open.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_is_self_contained_and_escaped(report: Report) -> None:
    page = render_html(report)
    assert page.startswith("<!DOCTYPE html>\n")
    assert '<html lang="en" dir="ltr">' in page
    parser = _StrictParser()
    parser.feed(page)
    parser.close()
    assert parser.open == []
    assert "script" not in parser.starts
    assert "<script" not in page.lower()
    assert page.count("<svg") == 4  # notices by category and source, decisions by kind and ground
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert XSS in "".join(parser.text)  # shown as text, in the chart and the table
    names = {name for name, _ in parser.attributes}
    assert not names & {"src", "href", "action", "srcset"}
    assert not any(name.startswith("on") for name in names)
    assert "http://" not in page and "https://" not in page
    assert "Transparency report — example.org" in page
    assert "6.0 h" in page and "66.7 %" in page


# -- the command, as an operator runs it ------------------------------------------------------------

KANAL = [sys.executable, "-m", "bridge.cli"]


def kanal(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KANAL, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    config_path, _ = write_init_files(tmp_path, domain="example.org", homeserver_url="http://127.0.0.1:8008")
    return config_path


def test_cli_prints_json(config: Path) -> None:
    result = kanal("transparency", "-c", str(config), "--from", "2026-01-01", "--to", "2026-06-30")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["period"] == {"start": "2026-01-01", "end": "2026-06-30", "timezone": "UTC"}
    assert data["provider"] == "example.org"
    assert data["notices"]["total"] == 0
    assert (config.parent / "kanal.db").exists()


def test_cli_writes_a_public_html_file(config: Path) -> None:
    out = config.parent / "report.html"
    result = kanal(
        "transparency",
        "-c",
        str(config),
        "--from",
        "2026-01-01",
        "--to",
        "2026-01-31",
        "--format",
        "html",
        "--output",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert out.read_text(encoding="utf-8").count("<svg") == 4


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("2026-02-30", "2026-06-30", "expected a date like 2026-01-31, got '2026-02-30'"),
        ("2026-01-01", "June", "expected a date like 2026-01-31, got 'June'"),
        ("2026-07-01", "2026-06-30", "--from 2026-07-01 is after --to 2026-06-30"),
    ],
)
def test_cli_refuses_bad_dates(config: Path, start: str, end: str, message: str) -> None:
    result = kanal("transparency", "-c", str(config), "--from", start, "--to", end, "--format", "csv")
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""
    assert not (config.parent / "kanal.db").exists()
