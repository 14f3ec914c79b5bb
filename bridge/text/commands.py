"""Parsing what people type to the bot (commands, durations) and why a request is refused: pure, no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from bridge.text.digits import ascii_digits
from bridge.text.names import fold_arabic


@dataclass(frozen=True)
class Command:
    name: str
    args: tuple[str, ...]
    """The words after the command word, Persian and Arabic-Indic digits read as ASCII (`۷d` → `7d`)."""
    rest: str
    """Everything after the command word as typed, whitespace kept (for titles and texts)."""

    def arg(self, index: int) -> str | None:
        return self.args[index] if index < len(self.args) else None

    def rest_after(self, count: int) -> str:
        """The raw text after the first `count` arguments (keeps the user's spacing in titles)."""
        text = self.rest
        for _ in range(count):
            text = text.lstrip()
            cut = len(text.split(None, 1)[0]) if text.split() else 0
            text = text[cut:]
        return text.strip()


def parse_command(body: str, *, require_bang: bool) -> Command | None:
    """`create news Daily News` → Command("create", ("news", "Daily", "News"), "news Daily News").

    In the management room the `!` is optional; in backstage it is what makes a line a command. Every
    numeric argument may be typed in Persian or Arabic-Indic digits: the arguments are read with ASCII
    digits here, once; `rest` keeps the text as typed.
    """
    if require_bang and not body.startswith("!"):
        return None
    text = body.strip()
    if text.startswith("!"):
        text = text[1:]
    match = re.match(r"(\S+)\s?(.*)", text, re.DOTALL)
    if match is None:
        return None
    word, rest = match.groups()
    return Command(word.lower(), tuple(ascii_digits(rest).split()), rest)


def command_key(word: str) -> str:
    """How a command word is compared: case folded, Persian spelt one way (`تایید` = `تأیید`,
    `پیش‌نویس` with or without its ZWNJ, Arabic `ي`/`ك` = Persian `ی`/`ک`)."""
    return fold_arabic(word.lower())


@dataclass(frozen=True)
class Refusal:
    """Why something is refused: an i18n key and the values its message needs."""

    key: str
    values: dict[str, Any] = field(default_factory=dict)


_DURATION = re.compile(r"^(\d{1,5})([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """`30m`, `12h`, `7d`, `2w` → a timedelta; ValueError with a readable message otherwise."""
    match = _DURATION.match(ascii_digits(text.strip().lower()))
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"'{text[:32]}' is not a duration like 30m, 12h, 7d or 2w")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
