"""The bot's replies in English and Persian, read from gettext catalogues that translators edit.

    bridge/locale/<domain>.pot        English: msgctxt = the key the code uses, msgid = the text
    bridge/locale/<lang>/<domain>.po  a translation of the same entries (msgstr)

Every `*.pot` and `<lang>/*.po` is loaded once, on first use, and the domains are merged; a key in two
domains is an error. A missing, empty or fuzzy translation, or one made for an older English text,
falls back to English. Placeholders are Python brace fields (`{handle}`), filled by `str.format`, so
values (titles, posts, right-to-left text included) are inserted once and never formatted again.
Numbers (int and float values, and `Numeral` text: a date or time formatted before the language was known)
are written in the language's digits (Persian: ۰–۹), here and only here; text values are inserted as they are.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polib

from bridge.text.digits import Numeral, has_native_digits, localise_digits

LOCALE_DIR = Path(__file__).parent / "locale"
SOURCE_LANGUAGE = "en"

# Arabic-script letters and marks; not its digits (U+0660–0669, U+06F0–06F9): `d۴` copied from a
# Persian reply says nothing about the language of whoever pastes it.
_ARABIC_SCRIPT = re.compile(r"[\u0600-\u065F\u066A-\u06EF\u06FA-\u06FF\u0750-\u077F\uFB50-\uFDFF\uFE70-\uFEFF]")


class CatalogueError(Exception):
    """A catalogue cannot be used as it is; the message names the file and the entry."""


@dataclass(frozen=True)
class Catalogue:
    """The English text of every key, and per language the translations that are usable."""

    english: Mapping[str, str]
    translations: Mapping[str, Mapping[str, str]]

    @property
    def languages(self) -> tuple[str, ...]:
        return (SOURCE_LANGUAGE, *sorted(self.translations))

    def template(self, lang: str, key: str) -> str:
        try:
            english = self.english[key]
        except KeyError:
            raise KeyError(f"no message {key!r} in {LOCALE_DIR}/*.pot") from None
        return self.translations.get(lang, {}).get(key) or english


def _entries(path: Path) -> list[polib.POEntry]:
    try:
        return [entry for entry in polib.pofile(str(path), encoding="utf-8") if not entry.obsolete]
    except (OSError, ValueError) as exc:
        raise CatalogueError(f"{path}: {exc}") from exc


def load_catalogue(directory: Path = LOCALE_DIR) -> Catalogue:
    """Read and merge every domain under `directory`; raise `CatalogueError` on a broken or clashing entry."""
    english: dict[str, str] = {}
    origin: dict[str, Path] = {}
    for pot in sorted(directory.glob("*.pot")):
        for entry in _entries(pot):
            key = entry.msgctxt
            if not key:
                raise CatalogueError(f"{pot}:{entry.linenum}: entry without msgctxt (the message key)")
            if key in origin:
                raise CatalogueError(f"message key {key!r} is in both {origin[key].name} and {pot.name}")
            english[key] = entry.msgid
            origin[key] = pot
    translations: dict[str, dict[str, str]] = {}
    for po in sorted(directory.glob("*/*.po")):
        texts = translations.setdefault(po.parent.name, {})
        for entry in _entries(po):
            key = entry.msgctxt
            if key in texts:
                raise CatalogueError(
                    f"{po}: message key {key!r} is translated in two {po.parent.name} domains"
                )
            if key and entry.msgstr and not entry.fuzzy and english.get(key) == entry.msgid:
                texts[key] = entry.msgstr
    return Catalogue(english, translations)


@functools.cache
def catalogue() -> Catalogue:
    """The catalogues shipped with Kanal, loaded on first use."""
    return load_catalogue()


def detect_language(text: str, default: str) -> str:
    return "fa" if _ARABIC_SCRIPT.search(text) else default


class _NumberFormatter(string.Formatter):
    """`str.format`, with numbers written in `lang`'s digits."""

    def __init__(self, lang: str) -> None:
        self.lang = lang

    def format_field(self, value: Any, format_spec: str) -> str:
        text: str = super().format_field(value, format_spec)
        if isinstance(value, int | float | Numeral) and not isinstance(value, bool):
            return localise_digits(text, self.lang)
        return text


def t(lang: str, key: str, **values: Any) -> str:
    """The message `key` in `lang`, its placeholders filled with `values` (numbers in `lang`'s digits)."""
    template = catalogue().template(lang, key)
    if has_native_digits(lang):
        return _NumberFormatter(lang).format(template, **values)
    return template.format(**values)
