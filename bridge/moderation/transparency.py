"""The transparency report (DSA Art. 15 and 24): what was reported, decided and appealed in a period.

    notices   (received_at) ─┐
    decisions (created_at)  ─┼─ build_report(session, start, end) ─→ Report ─┬─ render_json
    appeals   (created_at)  ─┤                                              ├─ render_csv  (long format)
    held posts (created_at) ─┘                                              └─ render_html (inline SVG)

Each row counts in the period its own timestamp falls in (UTC, both dates inclusive): a notice when it
was received, a decision when it was made, an appeal when it was filed, a held post when it was held.
Statuses (`*_now`, `by_status`) are as they stand when the report is generated. Values the code does
not know (a new decision kind, say) are counted under their own name, never dropped.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import os
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, is_dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from bridge.store.db import create_engine, migrate, sessionmaker
from bridge.store.models import (
    Appeal,
    AppealStatus,
    Decision,
    DecisionKind,
    HeldPost,
    HeldPostStatus,
    Notice,
    NoticeStatus,
)

# The values models.py documents, listed even when none occurred, in this order.
NOTICE_SOURCES = ("command", "homeserver", "flagger")
DECISION_KINDS = (
    "take_down",
    "restrict",
    "suspend",
    "no_action",
    "reject_post",
    "approve_post",
    "ban_user",
    "ban_server",
    "reinstate",
)
GROUNDS = ("law", "terms")
DECISION_STATUSES = ("in_force", "reversed", "expired")
APPEAL_STATUSES = ("open", "upheld", "reversed")
HELD_POST_STATUSES = ("held", "approved", "rejected")
# Decisions a pre-publication hook took on its own are recorded as decided by "hook:<name>" (gate.py);
# `Decision.automated` also marks decisions a person took on what a hook detected.
AUTOMATIC_DECIDER_PREFIX = "hook:"

HOURS_DIGITS = 2
SHARE_DIGITS = 4
PUBLIC_FILE_MODE = 0o644
# SQLite keeps timestamps as text, and a row written by the server default ("2026-01-01 00:00:00")
# sorts before the same instant written by SQLAlchemy ("2026-01-01 00:00:00.000000"). The query
# therefore reads a day either side and the exact bounds are applied to parsed datetimes.
QUERY_SLACK = timedelta(days=1)
_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class Period:
    start: date
    end: date  # inclusive
    timezone: str = "UTC"


@dataclass(frozen=True)
class Durations:
    """Elapsed times in hours: how many, their median and 90th percentile (nearest rank); None if none."""

    count: int
    median_hours: float | None
    p90_hours: float | None


@dataclass(frozen=True)
class NoticeFigures:
    total: int
    by_source: dict[str, int]  # command: users via the bot, homeserver: its report button, flagger: API
    by_category: dict[str, int]
    trusted: int  # from trusted flaggers
    trusted_share: float | None  # trusted / total
    open_now: int  # not decided yet


@dataclass(frozen=True)
class DecisionFigures:
    total: int
    by_kind: dict[str, int]
    by_ground: dict[str, int]  # law: illegal content, terms: incompatible with the terms of service
    by_category: dict[str, int]
    by_status: dict[str, int]
    automated: int  # automated means detected the content or decided (Decision.automated)
    not_automated: int
    decided_automatically: int  # by a hook, no person involved
    decided_by_person: int
    notice_based: int  # made on a notice
    own_initiative: int  # no notice, marked own initiative (hooks, moderators, policy lists)
    other_basis: int  # neither, e.g. a reinstatement after an appeal
    time_to_action: Durations  # decision made − notice received, for notice-based decisions


@dataclass(frozen=True)
class AppealFigures:
    filed: int
    decided: int
    upheld: int  # the decision stands
    reversed: int  # the decision was reversed
    open: int
    by_status: dict[str, int]
    reversal_rate: float | None  # reversed / decided
    handling_time: Durations  # appeal decided − appeal filed


@dataclass(frozen=True)
class ChannelFigures:
    suspensions: int  # `suspend` decisions
    channels_suspended: int  # distinct channels among them
    restrictions: int  # `restrict` decisions
    channels_restricted: int


@dataclass(frozen=True)
class HeldPostFigures:
    held: int  # posts a pre-publication hook held for review (not those it rejected outright)
    by_status: dict[str, int]  # of the posts held
    approved: int  # `approve_post` decisions
    rejected: int  # `reject_post` decisions
    rejected_automatically: int  # of which decided by a hook


@dataclass(frozen=True)
class Report:
    generated_at: datetime
    provider: str  # the homeserver's domain, or "" when not given
    period: Period
    notices: NoticeFigures
    decisions: DecisionFigures
    appeals: AppealFigures
    channels: ChannelFigures
    held_posts: HeldPostFigures


def parse_day(text: str) -> date:
    """A date written YYYY-MM-DD; ValueError saying what was expected otherwise."""
    try:
        if _ISO_DAY.fullmatch(text.strip()):
            return date.fromisoformat(text.strip())
    except ValueError:
        pass
    raise ValueError(f"expected a date like 2026-01-31, got {text!r}")


def period_bounds(start: date, end: date) -> tuple[datetime, datetime]:
    """The half-open UTC interval [start 00:00, the day after end 00:00)."""
    if start > end:
        raise ValueError(f"the period starts ({start}) after it ends ({end})")
    return datetime.combine(start, time.min, UTC), datetime.combine(end + timedelta(days=1), time.min, UTC)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _hours(later: datetime, earlier: datetime) -> float:
    return (_utc(later) - _utc(earlier)).total_seconds() / 3600


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, SHARE_DIGITS) if whole else None


def _durations(hours: Iterable[float]) -> Durations:
    ordered = sorted(hours)
    if not ordered:
        return Durations(count=0, median_hours=None, p90_hours=None)
    p90 = ordered[math.ceil(0.9 * len(ordered)) - 1]
    return Durations(
        count=len(ordered),
        median_hours=round(statistics.median(ordered), HOURS_DIGITS),
        p90_hours=round(p90, HOURS_DIGITS),
    )


def _breakdown(values: Iterable[str], known: Sequence[str] = ()) -> dict[str, int]:
    """Counts per value: the known values first, in order, zeros included; then the others by count."""
    counts = Counter(values)
    result = {key: counts.pop(key, 0) for key in known}
    result.update(sorted(counts.items(), key=lambda item: (-item[1], item[0])))
    return result


async def _rows_in_period(
    session: AsyncSession,
    columns: Sequence[Any],
    moment: InstrumentedAttribute[datetime],
    bounds: tuple[datetime, datetime],
    *outer_joins: tuple[Any, Any],
) -> list[Any]:
    """The rows whose `moment` lies within bounds; `moment` is the last value of each row."""
    low, high = bounds
    query = select(*columns, moment).where(moment >= low - QUERY_SLACK, moment < high + QUERY_SLACK)
    for target, on in outer_joins:
        query = query.outerjoin(target, on)
    rows = (await session.execute(query)).all()
    return [row for row in rows if low <= _utc(row[-1]) < high]


def _rejected_on_arrival(status: str, decided_by: str | None) -> bool:
    """A `held_posts` row of a post that a hook rejected itself: it was never held for review."""
    return status == HeldPostStatus.REJECTED and (decided_by or "").startswith(AUTOMATIC_DECIDER_PREFIX)


async def build_report(
    session: AsyncSession, start: date, end: date, *, provider: str = "", now: datetime | None = None
) -> Report:
    """Count what the database holds for the period (dates inclusive, UTC)."""
    bounds = period_bounds(start, end)

    notices = await _rows_in_period(
        session, (Notice.source, Notice.category, Notice.trusted, Notice.status), Notice.received_at, bounds
    )
    decisions = await _rows_in_period(
        session,
        (
            Decision.kind,
            Decision.ground,
            Decision.category,
            Decision.status,
            Decision.automated,
            Decision.decided_by,
            Decision.own_initiative,
            Decision.notice_id,
            Decision.channel_id,
            Notice.received_at,
        ),
        Decision.created_at,
        bounds,
        (Notice, Notice.id == Decision.notice_id),
    )
    appeals = await _rows_in_period(session, (Appeal.status, Appeal.decided_at), Appeal.created_at, bounds)
    # `held_posts` also records the posts a hook rejected outright (status rejected, the hook's own
    # decision): those were never held, and count among the decisions (rejected automatically).
    recorded = await _rows_in_period(
        session,
        (HeldPost.status, Decision.decided_by),
        HeldPost.created_at,
        bounds,
        (Decision, Decision.id == HeldPost.decision_id),
    )
    held = [h for h in recorded if not _rejected_on_arrival(h.status, h.decided_by)]

    trusted = sum(1 for n in notices if n.trusted)
    notice_figures = NoticeFigures(
        total=len(notices),
        by_source=_breakdown((n.source for n in notices), NOTICE_SOURCES),
        by_category=_breakdown(n.category for n in notices),
        trusted=trusted,
        trusted_share=_share(trusted, len(notices)),
        open_now=sum(1 for n in notices if n.status == NoticeStatus.OPEN),
    )

    notice_based = [d for d in decisions if d.notice_id is not None]
    own_initiative = sum(1 for d in decisions if d.notice_id is None and d.own_initiative)
    automated = sum(1 for d in decisions if d.automated)
    automatic = sum(1 for d in decisions if d.decided_by.startswith(AUTOMATIC_DECIDER_PREFIX))
    decision_figures = DecisionFigures(
        total=len(decisions),
        by_kind=_breakdown((d.kind for d in decisions), DECISION_KINDS),
        by_ground=_breakdown((d.ground for d in decisions), GROUNDS),
        by_category=_breakdown(d.category for d in decisions),
        by_status=_breakdown((d.status for d in decisions), DECISION_STATUSES),
        automated=automated,
        not_automated=len(decisions) - automated,
        decided_automatically=automatic,
        decided_by_person=len(decisions) - automatic,
        notice_based=len(notice_based),
        own_initiative=own_initiative,
        other_basis=len(decisions) - len(notice_based) - own_initiative,
        time_to_action=_durations(
            _hours(d.created_at, d.received_at) for d in notice_based if d.received_at is not None
        ),
    )

    appeal_status = _breakdown((a.status for a in appeals), APPEAL_STATUSES)
    decided = [a for a in appeals if a.status != AppealStatus.OPEN]
    appeal_figures = AppealFigures(
        filed=len(appeals),
        decided=len(decided),
        upheld=appeal_status["upheld"],
        reversed=appeal_status["reversed"],
        open=appeal_status["open"],
        by_status=appeal_status,
        reversal_rate=_share(appeal_status["reversed"], len(decided)),
        handling_time=_durations(
            _hours(a.decided_at, a.created_at) for a in decided if a.decided_at is not None
        ),
    )

    def of_kind(kind: DecisionKind) -> list[Any]:
        return [d for d in decisions if d.kind == kind]

    suspensions, restrictions = of_kind(DecisionKind.SUSPEND), of_kind(DecisionKind.RESTRICT)
    channel_figures = ChannelFigures(
        suspensions=len(suspensions),
        channels_suspended=len({d.channel_id for d in suspensions if d.channel_id is not None}),
        restrictions=len(restrictions),
        channels_restricted=len({d.channel_id for d in restrictions if d.channel_id is not None}),
    )

    rejections = of_kind(DecisionKind.REJECT_POST)
    held_figures = HeldPostFigures(
        held=len(held),
        by_status=_breakdown((h.status for h in held), HELD_POST_STATUSES),
        approved=len(of_kind(DecisionKind.APPROVE_POST)),
        rejected=len(rejections),
        rejected_automatically=sum(
            1 for d in rejections if d.decided_by.startswith(AUTOMATIC_DECIDER_PREFIX)
        ),
    )

    return Report(
        generated_at=_utc(now or datetime.now(UTC)).replace(microsecond=0),
        provider=provider,
        period=Period(start=start, end=end),
        notices=notice_figures,
        decisions=decision_figures,
        appeals=appeal_figures,
        channels=channel_figures,
        held_posts=held_figures,
    )


async def report_from_database(database_url: str, start: date, end: date, *, provider: str = "") -> Report:
    """Open the database (migrating it, as every command does), build the report, close it."""
    engine = create_engine(database_url)
    try:
        await migrate(engine)
        async with sessionmaker(engine).begin() as session:
            return await build_report(session, start, end, provider=provider)
    finally:
        await engine.dispose()


# -- rendering ---------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return _utc(value).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def as_dict(report: Report) -> dict[str, Any]:
    """The report as JSON-ready values, every figure under its field's name."""
    plain: dict[str, Any] = _plain(asdict(report))
    return plain


def render_json(report: Report) -> str:
    return json.dumps(as_dict(report), indent=2, ensure_ascii=False) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(_plain(value))


def _figures(obj: Any, prefix: str = "") -> Iterator[tuple[str, str, str]]:
    """(metric, key, value) for each figure of a dataclass; nested dataclasses become dotted metrics."""
    for field in fields(obj):
        value, metric = getattr(obj, field.name), prefix + field.name
        if is_dataclass(value):
            yield from _figures(value, metric + ".")
        elif isinstance(value, dict):
            for key, count in value.items():
                yield metric, key, _cell(count)
        else:
            yield metric, "", _cell(value)


def csv_rows(report: Report) -> Iterator[tuple[str, str, str, str]]:
    """section, metric, key, value: one row per figure (`report` holds the top-level scalars)."""
    for field in fields(report):
        value = getattr(report, field.name)
        if is_dataclass(value):
            for metric, key, cell in _figures(value):
                yield field.name, metric, key, cell
        else:
            yield "report", field.name, "", _cell(value)


def render_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("section", "metric", "key", "value"))
    writer.writerows(csv_rows(report))
    return out.getvalue()


CHART_WIDTH = 640
CHART_LABEL_WIDTH = 220
CHART_VALUE_WIDTH = 60
CHART_ROW_HEIGHT = 26
CHART_BAR_HEIGHT = 18
CHART_LABEL_CHARS = 30
CHART_COLOUR = "#3a6ea5"

_CSS = """
body { font: 16px/1.5 system-ui, sans-serif; color: #1b1b1b; background: #fff; margin: 0; }
main { max-width: 60rem; margin: 0 auto; padding: 1rem 1.5rem 3rem; }
h1 { margin-bottom: 0.2rem; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2rem; margin-top: 2.5rem; }
.meta, .note, figcaption { color: #555; }
table { border-collapse: collapse; margin: 0.8rem 0 1.2rem; min-width: 24rem; }
caption { text-align: start; font-weight: 600; padding-bottom: 0.3rem; }
th, td { border-bottom: 1px solid #e3e3e3; padding: 0.25rem 0.8rem 0.25rem 0; text-align: start; }
td.n { text-align: end; font-variant-numeric: tabular-nums; }
figure { margin: 1rem 0; }
svg { max-width: 100%; height: auto; }
svg text { font: 13px system-ui, sans-serif; fill: #1b1b1b; }
""".strip()

# Nothing in the page may load or run anything: it is published, and it shows text users wrote.
_CSP = "default-src 'none'; style-src 'unsafe-inline'"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _shown(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    if unit == "%":
        return f"{value * 100:.1f} %"
    return f"{value}{unit}"


def _bar_chart(title: str, counts: Mapping[str, int]) -> str:
    """A horizontal bar chart as inline SVG, one bar per key."""
    items = list(counts.items())
    height = CHART_ROW_HEIGHT * max(len(items), 1) + 8
    bar_room = CHART_WIDTH - CHART_LABEL_WIDTH - CHART_VALUE_WIDTH
    peak = max((count for _, count in items), default=0)
    parts = [
        f'<svg role="img" aria-label="{_e(title)}" width="{CHART_WIDTH}" height="{height}" '
        f'viewBox="0 0 {CHART_WIDTH} {height}">',
        f"<title>{_e(title)}</title>",
    ]
    if not items:
        parts.append(f'<text x="0" y="{CHART_ROW_HEIGHT - 8}">none in this period</text>')
    for row, (label, count) in enumerate(items):
        top = row * CHART_ROW_HEIGHT + 4
        middle = top + CHART_BAR_HEIGHT / 2
        width = round(bar_room * count / peak) if peak else 0
        short = label if len(label) <= CHART_LABEL_CHARS else label[: CHART_LABEL_CHARS - 1] + "…"
        parts.append(
            f'<text x="{CHART_LABEL_WIDTH - 8}" y="{middle}" text-anchor="end" '
            f'dominant-baseline="middle">{_e(short)}</text>'
        )
        parts.append(
            f'<rect x="{CHART_LABEL_WIDTH}" y="{top}" width="{width}" height="{CHART_BAR_HEIGHT}" '
            f'fill="{CHART_COLOUR}"><title>{_e(label)}: {count}</title></rect>'
        )
        parts.append(
            f'<text x="{CHART_LABEL_WIDTH + width + 6}" y="{middle}" dominant-baseline="middle">{count}</text>'
        )
    parts.append("</svg>")
    return f"<figure>{''.join(parts)}<figcaption>{_e(title)}</figcaption></figure>"


def _table(caption: str, rows: Iterable[tuple[str, str]], head: tuple[str, str] = ("", "")) -> str:
    body = "".join(
        f'<tr><th scope="row"><bdi>{_e(k)}</bdi></th><td class="n">{_e(v)}</td></tr>' for k, v in rows
    )
    thead = f'<thead><tr><th scope="col">{_e(head[0])}</th><th scope="col">{_e(head[1])}</th></tr></thead>'
    return f"<table><caption>{_e(caption)}</caption>{thead if any(head) else ''}<tbody>{body}</tbody></table>"


def _counts_table(caption: str, counts: Mapping[str, int], what: str) -> str:
    rows = [(key, str(count)) for key, count in counts.items()] or [("none in this period", "0")]
    return _table(caption, rows, (what, "count"))


def _section(anchor: str, heading: str, note: str, *blocks: str) -> str:
    return f'<section id="{anchor}"><h2>{_e(heading)}</h2><p class="note">{_e(note)}</p>{"".join(blocks)}</section>'


def render_html(report: Report) -> str:
    """A self-contained page: inline CSS and SVG, no script, nothing fetched from anywhere."""
    n, d, a, c, h = report.notices, report.decisions, report.appeals, report.channels, report.held_posts
    period = f"{report.period.start.isoformat()} – {report.period.end.isoformat()}"
    who = f" — {report.provider}" if report.provider else ""
    sections = [
        _section(
            "notices",
            "Notices",
            "Reports about public channel content, counted when received (DSA Art. 15(1)(b), 16). "
            "Sources: command = users via the bot, homeserver = the homeserver's report button, "
            "flagger = the trusted-flagger API.",
            _table(
                "Summary",
                [
                    ("Notices received", str(n.total)),
                    ("From trusted flaggers", str(n.trusted)),
                    ("Trusted-flagger share", _shown(n.trusted_share, "%")),
                    ("Not decided yet", str(n.open_now)),
                ],
            ),
            _bar_chart("Notices by category", n.by_category),
            _counts_table("Notices by category", n.by_category, "category"),
            _bar_chart("Notices by source", n.by_source),
            _counts_table("Notices by source", n.by_source, "source"),
        ),
        _section(
            "decisions",
            "Decisions",
            "Moderation decisions, counted when made (DSA Art. 15(1)(b)–(c), 17). Time to action runs "
            "from the notice's receipt to the decision; p90 is the 90th percentile (nearest rank).",
            _table(
                "Summary",
                [
                    ("Decisions", str(d.total)),
                    ("Automated means used (detection or decision)", str(d.automated)),
                    ("No automated means", str(d.not_automated)),
                    ("Decided automatically", str(d.decided_automatically)),
                    ("Decided by a person", str(d.decided_by_person)),
                    ("On a notice", str(d.notice_based)),
                    ("On the provider's own initiative", str(d.own_initiative)),
                    ("Other (e.g. reinstatements)", str(d.other_basis)),
                    ("Decisions timed", str(d.time_to_action.count)),
                    ("Median time to action", _shown(d.time_to_action.median_hours, " h")),
                    ("90th percentile time to action", _shown(d.time_to_action.p90_hours, " h")),
                ],
            ),
            _bar_chart("Decisions by kind", d.by_kind),
            _counts_table("Decisions by kind", d.by_kind, "kind"),
            _bar_chart("Decisions by ground", d.by_ground),
            _counts_table(
                "Decisions by ground (law: illegal content; terms: terms of service)", d.by_ground, "ground"
            ),
            _counts_table("Decisions by category", d.by_category, "category"),
            _counts_table("Decisions by current status", d.by_status, "status"),
        ),
        _section(
            "appeals",
            "Appeals",
            "Complaints against decisions, counted when filed, decided by a person (DSA Art. 20, 24(1)(a)).",
            _table(
                "Summary",
                [
                    ("Appeals filed", str(a.filed)),
                    ("Decided", str(a.decided)),
                    ("Decision upheld", str(a.upheld)),
                    ("Decision reversed", str(a.reversed)),
                    ("Still open", str(a.open)),
                    ("Reversal rate (of decided)", _shown(a.reversal_rate, "%")),
                    ("Median handling time", _shown(a.handling_time.median_hours, " h")),
                    ("90th percentile handling time", _shown(a.handling_time.p90_hours, " h")),
                ],
            ),
            _counts_table("Appeals by status", a.by_status, "status"),
        ),
        _section(
            "channels",
            "Channel suspensions and restrictions",
            "Decisions against whole channels made in the period.",
            _table(
                "Summary",
                [
                    ("Suspensions", str(c.suspensions)),
                    ("Channels suspended", str(c.channels_suspended)),
                    ("Restrictions", str(c.restrictions)),
                    ("Channels restricted", str(c.channels_restricted)),
                ],
            ),
        ),
        _section(
            "held-posts",
            "Held posts",
            "Posts that pre-publication checks held for review, counted when held (posts a check "
            "rejected outright are not held: they count as rejected automatically); outcomes are the "
            "approve and reject decisions made in the period.",
            _table(
                "Summary",
                [
                    ("Posts held", str(h.held)),
                    ("Approved", str(h.approved)),
                    ("Rejected", str(h.rejected)),
                    ("Rejected automatically", str(h.rejected_automatically)),
                ],
            ),
            _counts_table("Held posts by current status", h.by_status, "status"),
        ),
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en" dir="ltr"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(_CSP)}">'
        f"<title>Transparency report {_e(period)}{_e(who)}</title><style>{_CSS}</style></head>"
        f"<body><main><h1>Transparency report{_e(who)}</h1>"
        f'<p class="meta">Period {_e(period)} ({_e(report.period.timezone)}, both days included). '
        f"Generated {_e(_plain(report.generated_at))}.</p>"
        f"{''.join(sections)}</main></body></html>\n"
    )


RENDERERS = {"json": render_json, "csv": render_csv, "html": render_html}


def write_public_file(path: Path, text: str) -> None:
    """Write the report world-readable (0644, whatever the umask): it is meant to be published."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PUBLIC_FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.chmod(path, PUBLIC_FILE_MODE)
