"""The `!stats` chart: subscribers and views per day over the last 30 days, as a PNG. Pure, no I/O.

Two panels share the day axis: subscribers (a line) above, views per day (bars) below, each with its
latest number written out. White background and dark text, so it reads the same in light and dark
clients. The numbers drawn are also written into the PNG's tEXt chunks (`kanal:days`,
`kanal:subscribers`, `kanal:views`, comma-separated, same order), so a program can read exactly what
the picture shows (always ASCII digits, whatever the language of the labels).

Labels come in the requester's language (`chart_language` says which one can be drawn). English is
drawn with Pillow's bundled font; Persian with Vazirmatn (bridge/fonts, SIL Open Font License 1.1),
shaped and laid out right to left by Pillow's raqm layout (libraqm, FriBiDi, HarfBuzz), with Persian
digits, the title and panel names aligned right. Without raqm the letters would be drawn unjoined and
in the wrong order, so the chart is then drawn in English (logged once). The plot itself (days from
left to right, the scales on the left) is the same in every language.
"""

from __future__ import annotations

import functools
import io
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Final

from PIL import Image, ImageDraw, ImageFont, features
from PIL.PngImagePlugin import PngInfo

from bridge.text.digits import localise_digits

log = logging.getLogger(__name__)

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
SHAPED_FONT: Final = Path(__file__).parent / "fonts" / "Vazirmatn-Regular.ttf"
SHAPED_LANGUAGES: Final = frozenset({"fa"})  # drawn with SHAPED_FONT and raqm, right to left
FALLBACK_LANGUAGE: Final = "en"
# In right-to-left labels a Latin word with its `#` (a channel's handle) is isolated (U+2066 … U+2069),
# so it reads "#news" at its place instead of the `#` being carried to the other side of it.
_LATIN_RUN: Final = re.compile(r"#?\w*[A-Za-z]\w*", re.ASCII)
_fallback_logged = False


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
    lang: str = FALLBACK_LANGUAGE  # the language of the words: their script, direction and digits


@dataclass(frozen=True)
class Chart:
    png: bytes
    width: int
    height: int


def shaping_available() -> bool:
    """Whether Pillow can shape Arabic script and lay it out right to left (its raqm layout)."""
    return bool(features.check("raqm")) and SHAPED_FONT.is_file()


def chart_language(lang: str) -> str:
    """The language the chart can be drawn in for someone who reads `lang`: `lang` itself, or English
    when it needs shaping that this Pillow cannot do (said once in the log)."""
    global _fallback_logged
    if lang not in SHAPED_LANGUAGES or shaping_available():
        return lang
    if not _fallback_logged:
        _fallback_logged = True
        reason = (
            "Pillow has no raqm layout (libraqm with FriBiDi and HarfBuzz)"
            if not features.check("raqm")
            else f"the font {SHAPED_FONT} is missing"
        )
        log.info("The !stats chart is drawn in English instead of %s: %s", lang, reason)
    return FALLBACK_LANGUAGE


def _font(size: int = FONT_SIZE) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled scalable font (needs FreeType)
    except ImportError:
        return ImageFont.load_default()


@functools.cache
def _shaped_font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(SHAPED_FONT), size, layout_engine=ImageFont.Layout.RAQM)


def _axis_top(value: int) -> int:
    """A round, even number at or above `value` for the top of an axis (its middle is whole too)."""
    step = 1
    while step * 10 < value:
        step *= 10
    return next(step * factor for factor in (2, 4, 6, 8, 10, 20) if step * factor >= value)


def render_chart(days: Sequence[DayStats], *, today: date, labels: ChartLabels) -> Chart:
    """Draw the last CHART_DAYS days up to `today`; days without numbers are left empty.

    The labels are drawn in `labels.lang`; one that needs shaping must have come from
    `chart_language` (ValueError if this Pillow cannot shape it). The numbers are the same in every
    language, written with its digits.
    """
    lang = labels.lang
    shaped = lang in SHAPED_LANGUAGES
    if shaped and not shaping_available():
        raise ValueError(f"the chart cannot be drawn in {lang!r} here; ask chart_language() first")
    start = today - timedelta(days=CHART_DAYS - 1)
    shown = sorted((d for d in days if start <= d.day <= today), key=lambda d: d.day)
    image = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(image)
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont
    big: ImageFont.FreeTypeFont | ImageFont.ImageFont
    font, big = (
        (_shaped_font(FONT_SIZE), _shaped_font(FONT_SIZE + 4)) if shaped else (_font(), _font(FONT_SIZE + 4))
    )
    words: dict[str, Any] = {"direction": "rtl", "language": lang} if shaped else {}
    # Words start on the reading side: the left in English, the right in Persian.
    words_x, words_anchor = (WIDTH - MARGIN_RIGHT, "r") if shaped else (MARGIN_LEFT, "l")
    # A panel's name stands on the same baseline in both fonts (Vazirmatn's descenders are deeper).
    heading_rise, heading_anchor = (13, "s") if shaped else (8, "d")

    def said(text: str) -> str:
        return _LATIN_RUN.sub(lambda m: f"\u2066{m.group()}\u2069", text) if shaped else text

    def number(value: int) -> str:
        return localise_digits(f"{value:,}", lang)

    draw.text((words_x, 10), said(labels.title), fill=INK, font=big, anchor=words_anchor + "a", **words)
    plot_width = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    slot = plot_width / CHART_DAYS

    def x_of(day: date) -> float:
        return MARGIN_LEFT + ((day - start).days + 0.5) * slot

    latest = shown[-1] if shown else None
    panels = (
        (
            labels.subscribers,
            [(d.day, d.subscribers) for d in shown],
            latest.subscribers if latest else None,
            False,
        ),
        (labels.views, [(d.day, d.views) for d in shown], latest.views if latest else None, True),
    )
    for top, (name, series, now, bars) in zip(PANEL_TOP, panels, strict=True):
        bottom = top + PANEL_HEIGHT
        heading = f"{name}: {number(now)}" if now is not None else f"{name}: –"
        colour = VIEWS_COLOUR if bars else SUBSCRIBERS_COLOUR
        draw.text(
            (words_x, top - heading_rise),
            said(heading),
            fill=colour,
            font=big,
            anchor=words_anchor + heading_anchor,
            **words,
        )
        ceiling = _axis_top(max((v for _, v in series), default=0))
        for fraction in (0.0, 0.5, 1.0):
            y = bottom - fraction * PANEL_HEIGHT
            draw.line([(MARGIN_LEFT, y), (WIDTH - MARGIN_RIGHT, y)], fill=GRID, width=1)
            draw.text(
                (MARGIN_LEFT - 6, y), number(round(ceiling * fraction)), fill=MUTED, font=font, anchor="rm"
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
                said(labels.no_data),
                fill=MUTED,
                font=font,
                anchor="mm",
                **words,
            )
    axis_y = PANEL_TOP[-1] + PANEL_HEIGHT + 6
    for day, anchor in ((start, "la"), (start + (today - start) / 2, "ma"), (today, "ra")):
        x = x_of(day) if anchor == "ma" else (MARGIN_LEFT if anchor == "la" else WIDTH - MARGIN_RIGHT)
        draw.text((x, axis_y), localise_digits(day.isoformat(), lang), fill=MUTED, font=font, anchor=anchor)
    info = PngInfo()
    info.add_text("Software", "Kanal")
    info.add_text("kanal:days", ",".join(d.day.isoformat() for d in shown))
    info.add_text("kanal:subscribers", ",".join(str(d.subscribers) for d in shown))
    info.add_text("kanal:views", ",".join(str(d.views) for d in shown))
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info, optimize=True)
    return Chart(out.getvalue(), WIDTH, HEIGHT)
