"""Digits as people type them and as each language writes them: the one table Kanal uses for both.

People may type numbers in ASCII, Persian (۰–۹) or Arabic-Indic (٠–٩) digits; `ascii_digits` reads
them all as ASCII (command arguments, times, handles and titles compared). `localise_digits` writes
ASCII digits and thousands separators the way a language does (Persian: ۰–۹ and ٬), for the numbers in
replies, pages and charts.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

DIGITS_TO_ASCII: Final = str.maketrans(
    {chr(base + d): str(d) for base in (0x0660, 0x06F0) for d in range(10)}  # Arabic-Indic, Persian
)
_NATIVE_DIGITS: Final = {"fa": str.maketrans("0123456789,", "۰۱۲۳۴۵۶۷۸۹٬")}


class Numeral(str):
    """Text that writes out a number, a date or a time, made before the reader's language is known (a
    refusal's values): `bridge.text.i18n.t` writes its digits the reader's way, as it does an int's."""

    __slots__ = ()


def utc_time(moment: datetime) -> Numeral:
    """A moment as replies show it, to the minute in UTC (`2026-12-06 18:43 UTC`; a naive one is taken
    as UTC, as SQLite hands them back): a `Numeral`, which `t` writes in the reader's digits."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return Numeral(aware.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC"))


def ascii_digits(text: str) -> str:
    """`text` with Persian and Arabic-Indic digits made ASCII (`۱۲` → `12`); nothing else changes."""
    return text.translate(DIGITS_TO_ASCII)


def has_native_digits(lang: str) -> bool:
    return lang in _NATIVE_DIGITS


def localise_digits(text: str, lang: str) -> str:
    """ASCII digits and thousands separators as `lang` writes them (Persian: ۰–۹ and ٬)."""
    table = _NATIVE_DIGITS.get(lang)
    return text.translate(table) if table is not None else text
