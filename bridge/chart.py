"""The `!stats` chart: subscribers and views per day over the last 30 days, as a PNG. Pure, no I/O.

Two panels share the day axis: subscribers (a line) above, views per day (bars) below, each with its
latest number written out. White background and dark text, so it reads the same in light and dark
clients. The numbers drawn are also written into the PNG's tEXt chunks (`kanal:days`,
`kanal:subscribers`, `kanal:views`, comma-separated, same order), so a program can read exactly what
the picture shows.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Final

from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

CHART_DAYS: Final = 30
WIDTH: Final = 800
HEIGHT: Final = 460
MARGIN_LEFT: Final = 64
MARGIN_RIGHT: Final = 24
PANEL_TOP: Final = (64, 268)  # y of each panel's plot area
PANEL_HEIGHT: Final = 160
FONT_SIZE: Final = 14
BACKGROUND: Final = "#ffffff"
INK: Final = "#1f2328"
MUTED: Final = "#6e7781"
GRID: Final = "#d8dee4"
SUBSCRIBERS_COLOUR: Final = "#1f6feb"
VIEWS_COLOUR: Final = "#d4650c"
PNG_TYPE: Final = "image/png"


@dataclass(frozen=True)
class DayStats:
    """One day's numbers as the chart shows them."""

    day: date
    subscribers: int
    views: int  # views counted that day


@dataclass(frozen=True)
class ChartLabels:
    """The words on the chart (the caller picks the language; see `render_chart`)."""

    title: str
    subscribers: str
    views: str
    no_data: str


@dataclass(frozen=True)
class Chart:
    png: bytes
    width: int
    height: int


def _font(size: int = FONT_SIZE) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled scalable font (needs FreeType)
    except ImportError:
        return ImageFont.load_default()


def _axis_top(value: int) -> int:
    """A round, even number at or above `value` for the top of an axis (its middle is whole too)."""
    step = 1
    while step * 10 < value:
        step *= 10
    return next(step * factor for factor in (2, 4, 6, 8, 10, 20) if step * factor >= value)


def render_chart(days: Sequence[DayStats], *, today: date, labels: ChartLabels) -> Chart:
    """Draw the last CHART_DAYS days up to `today`; days without numbers are left empty.

    Pillow's bundled font has Latin glyphs only and no right-to-left shaping, so callers pass
    English labels; the numbers are the same in every language.
    """
    start = today - timedelta(days=CHART_DAYS - 1)
    shown = sorted((d for d in days if start <= d.day <= today), key=lambda d: d.day)
    image = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(image)
    font, big = _font(), _font(FONT_SIZE + 4)
    draw.text((MARGIN_LEFT, 10), labels.title, fill=INK, font=big)
    plot_width = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    slot = plot_width / CHART_DAYS

    def x_of(day: date) -> float:
        return MARGIN_LEFT + ((day - start).days + 0.5) * slot

    latest = shown[-1] if shown else None
    panels = (
        (labels.subscribers, [(d.day, d.subscribers) for d in shown], latest and latest.subscribers, False),
        (labels.views, [(d.day, d.views) for d in shown], latest and latest.views, True),
    )
    for top, (name, series, now, bars) in zip(PANEL_TOP, panels, strict=True):
        bottom = top + PANEL_HEIGHT
        heading = f"{name}: {now:,}" if now is not None else f"{name}: –"
        colour = VIEWS_COLOUR if bars else SUBSCRIBERS_COLOUR
        draw.text((MARGIN_LEFT, top - 8), heading, fill=colour, font=big, anchor="ld")
        ceiling = _axis_top(max((v for _, v in series), default=0))
        for fraction in (0.0, 0.5, 1.0):
            y = bottom - fraction * PANEL_HEIGHT
            draw.line([(MARGIN_LEFT, y), (WIDTH - MARGIN_RIGHT, y)], fill=GRID, width=1)
            draw.text(
                (MARGIN_LEFT - 6, y), f"{round(ceiling * fraction):,}", fill=MUTED, font=font, anchor="rm"
            )
        points = [(x_of(day), bottom - value / ceiling * PANEL_HEIGHT) for day, value in series]
        if bars:
            half = max(slot * 0.35, 1.0)
            for x, y in points:
                draw.rectangle([(x - half, min(y, bottom - 1)), (x + half, bottom)], fill=colour)
        else:
            if len(points) > 1:
                draw.line(points, fill=colour, width=3, joint="curve")
            for x, y in points:
                draw.ellipse([(x - 3, y - 3), (x + 3, y + 3)], fill=colour)
        draw.line([(MARGIN_LEFT, bottom), (WIDTH - MARGIN_RIGHT, bottom)], fill=INK, width=1)
        if not series:
            draw.text(
                (MARGIN_LEFT + plot_width / 2, top + PANEL_HEIGHT / 2),
                labels.no_data,
                fill=MUTED,
                font=font,
                anchor="mm",
            )
    axis_y = PANEL_TOP[-1] + PANEL_HEIGHT + 6
    for day, anchor in ((start, "la"), (start + (today - start) / 2, "ma"), (today, "ra")):
        x = x_of(day) if anchor == "ma" else (MARGIN_LEFT if anchor == "la" else WIDTH - MARGIN_RIGHT)
        draw.text((x, axis_y), day.isoformat(), fill=MUTED, font=font, anchor=anchor)
    info = PngInfo()
    info.add_text("Software", "Kanal")
    info.add_text("kanal:days", ",".join(d.day.isoformat() for d in shown))
    info.add_text("kanal:subscribers", ",".join(str(d.subscribers) for d in shown))
    info.add_text("kanal:views", ",".join(str(d.views) for d in shown))
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info, optimize=True)
    return Chart(out.getvalue(), WIDTH, HEIGHT)
