"""Channel handles and titles: what may be registered, and when two names look alike.

The rules come from the project's issue on handles and titles:

* **Handles** are ASCII, `[a-z][a-z0-9_]{4,31}` unless the operator configures another pattern, and
  case-insensitive. Two different handles are *confusable* when their `handle_skeleton`s are equal
  (`rn`/`m`, `0`/`o`, `1`/`l`, runs of `_`); a new handle confusable with a taken one is refused.
* **Titles** may use any script. `clean_title` refuses bidi controls and invisible characters that
  make two different titles look the same, and keeps ZWNJ only between Arabic-script letters, where
  Persian needs it. `title_key` is the comparison key for search and impersonation protection: a new
  title whose key equals a verified channel's is refused (`title_collides`).

Confusability is the *skeleton* of Unicode Technical Standard #39 (Security Mechanisms), section 4:
NFD, default-ignorable code points removed, each character replaced by its prototype from
confusables.txt, NFD again. ICU's SpoofChecker implements it with the Unicode data it ships.

The Arabic and Persian letter variants folded by `title_key` are those of Lucene's Arabic and Persian
search normalisers: the same word typed on an Arabic or a Persian keyboard, with or without hamza on
alef, with teh marbuta or heh, must get one key. Yeh and keheh map to their Persian forms (ی, ک).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Any, Final

import icu  # type: ignore[import-untyped]

from bridge.text.digits import DIGITS_TO_ASCII
from bridge.text.i18n import t

DEFAULT_HANDLE_PATTERN: Final = r"[a-z][a-z0-9_]{4,31}"

# What `DEFAULT_HANDLE_PATTERN` allows, spelled out for the messages it produces.
DEFAULT_HANDLE_MIN_LENGTH: Final = 5
DEFAULT_HANDLE_MAX_LENGTH: Final = 32
DEFAULT_MAX_TITLE_LENGTH: Final = 128
# How much of a refused input a message quotes back.
MAX_QUOTED_LENGTH: Final = 64

# Bidi controls: invisible, and able to reorder how the rest of the text is displayed.
BIDI_CONTROLS: Final = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
ZWNJ: Final = "\u200c"
ZWJ: Final = "\u200d"
TATWEEL: Final = "\u0640"
# Invisible characters a title may keep: variation selectors choose a glyph (emoji or text style, CJK
# variants, Mongolian forms) and do not hide anything.
_VARIATION_SELECTORS: Final = frozenset(
    [*map(chr, range(0xFE00, 0xFE10)), *map(chr, range(0xE0100, 0xE01F0)), *"\u180b\u180c\u180d\u180f"]
)
# Tag characters are allowed only where emoji use them: subdivision flags such as 🏴󠁧󠁢󠁳󠁣󠁴󠁿.
_BLACK_FLAG: Final = "\U0001f3f4"
_TAGS: Final = frozenset(map(chr, range(0xE0020, 0xE0080)))
# Controls that are line breaks or tabs: collapsed into spaces like any other whitespace.
_WHITESPACE_CONTROLS: Final = frozenset("\t\n\v\f\r\x85")

_ARABIC_LETTER_VARIANTS: Final = str.maketrans(
    {
        "\u064a": "\u06cc",  # ي ARABIC YEH → ی FARSI YEH
        "\u0649": "\u06cc",  # ى ALEF MAKSURA → ی FARSI YEH
        "\u0643": "\u06a9",  # ك ARABIC KAF → ک KEHEH
        "\u0629": "\u0647",  # ة TEH MARBUTA → ه HEH
        "\u06c0": "\u0647",  # ۀ HEH WITH YEH ABOVE → ه HEH
        "\u06c1": "\u0647",  # ہ HEH GOAL → ه HEH
        "\u0622": "\u0627",  # آ ALEF WITH MADDA ABOVE → ا ALEF
        "\u0623": "\u0627",  # أ ALEF WITH HAMZA ABOVE → ا ALEF
        "\u0625": "\u0627",  # إ ALEF WITH HAMZA BELOW → ا ALEF
        "\u0671": "\u0627",  # ٱ ALEF WASLA → ا ALEF
    }
)
# Harakat and other Arabic marks (U+064B–U+065F) and the superscript alef (U+0670), plus tatweel.
_ARABIC_MARKS_AND_TATWEEL: Final = frozenset([*map(chr, range(0x064B, 0x0660)), "\u0670", TATWEEL])
_UNDERSCORE_RUN: Final = re.compile("_+")

_SPOOF_CHECKER: Final = icu.SpoofChecker()
_NFKC_CASEFOLD: Final = icu.Normalizer2.getNFKCCasefoldInstance()


class NameRefused(ValueError):
    """A refused handle or title: a catalogue message (`key`, `values`) for the user, in any language;
    `str()` is the English text."""

    def __init__(self, key: str, **values: Any) -> None:
        self.key = key
        self.values = values
        super().__init__(t("en", key, **values))

    def text(self, lang: str) -> str:
        return t(lang, self.key, **self.values)


class InvalidHandle(NameRefused):
    """The text cannot be a channel handle."""


class InvalidTitle(NameRefused):
    """The text cannot be a channel title."""


def normalise_handle(text: str, pattern: str = DEFAULT_HANDLE_PATTERN) -> str:
    """The handle in `text` (`#News:example.org` → `news`); raise `InvalidHandle` when it breaks the rule."""
    handle = text.strip()
    if handle[:1] in ("#", "@"):
        handle = handle[1:]
    handle = handle.split(":", 1)[0]
    shown = _quote(text.strip())
    foreign = next((c for c in handle if not c.isascii()), None)
    if foreign is not None:
        if pattern == DEFAULT_HANDLE_PATTERN:
            raise InvalidHandle("name_handle_not_latin", handle=shown, char=_describe(foreign))
        raise InvalidHandle("name_handle_not_ascii", handle=shown, char=_describe(foreign), pattern=pattern)
    handle = handle.lower()
    if re.fullmatch(pattern, handle):
        return handle
    if pattern != DEFAULT_HANDLE_PATTERN:
        raise InvalidHandle("name_handle_pattern", handle=shown, pattern=pattern)
    low, high = DEFAULT_HANDLE_MIN_LENGTH, DEFAULT_HANDLE_MAX_LENGTH
    if len(handle) < DEFAULT_HANDLE_MIN_LENGTH:
        raise InvalidHandle("name_handle_short", handle=shown, min=low, max=high)
    if len(handle) > DEFAULT_HANDLE_MAX_LENGTH:
        raise InvalidHandle("name_handle_long", handle=shown, min=low, max=high)
    if not "a" <= handle[0] <= "z":
        raise InvalidHandle("name_handle_start", handle=shown, min=low, max=high)
    stray = next(c for c in handle if not (c.isalnum() or c == "_"))
    raise InvalidHandle("name_handle_character", handle=shown, char=_describe(stray), min=low, max=high)


def skeleton(text: str) -> str:
    """The UTS #39 skeleton: equal for strings that look alike (`rn`/`m`, Cyrillic `а`/Latin `a`)."""
    return str(_SPOOF_CHECKER.getSkeleton(0, text))


def handle_skeleton(handle: str) -> str:
    """The key comparing handles: different handles with equal keys are confusable.

    Case is folded after the skeleton too, since confusables.txt maps `0` to `O`; a run of `_` counts
    as one, since underscores join into a single line in most fonts.
    """
    return skeleton(_UNDERSCORE_RUN.sub("_", handle.lower())).casefold()


def clean_title(text: str, max_length: int = DEFAULT_MAX_TITLE_LENGTH) -> str:
    """A title: single-line, trimmed, without spoofing characters; raise `InvalidTitle` otherwise."""
    for char in text:
        if char in BIDI_CONTROLS:
            raise InvalidTitle("name_title_bidi", char=_describe(char))
        if unicodedata.category(char) == "Cc" and char not in _WHITESPACE_CONTROLS:
            raise InvalidTitle("name_title_control", char=_describe(char))
    title = " ".join(_drop_invisibles(text).split())
    if not title:
        raise InvalidTitle("name_title_empty")
    if len(title) > max_length:
        raise InvalidTitle("name_title_long", length=len(title), limit=max_length)
    return title


def salvage_title(text: str, max_length: int = DEFAULT_MAX_TITLE_LENGTH) -> str:
    """A title from a name given elsewhere (a Telegram channel's), which need not keep `clean_title`'s
    rules: as it is when it does, else without its invisible controls (bidi marks …) and, when too
    long, cut at a word with "…". Raises `InvalidTitle` when nothing is left."""
    try:
        return clean_title(text, max_length)
    except InvalidTitle:
        pass
    kept = "".join(
        c
        for c in text
        if c in (ZWNJ, ZWJ) or c in _WHITESPACE_CONTROLS or unicodedata.category(c) not in ("Cc", "Cf")
    )
    title = " ".join(kept.split())
    if len(title) > max_length:
        cut = title[: max_length - 1]
        at_word = cut.rsplit(" ", 1)[0]
        title = (at_word if len(at_word) > max_length // 2 else cut).rstrip() + "…"
    return clean_title(title, max_length)


def title_key(title: str) -> str:
    """The key comparing titles for search and impersonation: equal for titles that look or read alike.

    NFKC with case folding (ICU's NFKC_Casefold, which also drops ZWNJ, ZWJ and the other
    default-ignorable characters); Arabic and Persian letter variants unified; Arabic-Indic and
    Persian digits made ASCII; tatweel and Arabic marks dropped; whitespace collapsed; then the UTS #39
    skeleton, folded again because confusables.txt maps some characters to capitals (`0` → `O`).
    """
    text = str(_NFKC_CASEFOLD.normalize(title))
    text = text.translate(_ARABIC_LETTER_VARIANTS).translate(DIGITS_TO_ASCII)
    text = " ".join("".join(c for c in text if c not in _ARABIC_MARKS_AND_TATWEEL).split())
    return str(_NFKC_CASEFOLD.normalize(skeleton(text)))


def fold_arabic(text: str) -> str:
    """`text` with the Arabic and Persian letter variants unified (ي/ى→ی, ك→ک, أ→ا …) and tatweel,
    Arabic marks, ZWNJ and ZWJ dropped: the same word typed on any keyboard, spelled one way."""
    text = text.translate(_ARABIC_LETTER_VARIANTS)
    return "".join(c for c in text if c not in _ARABIC_MARKS_AND_TATWEEL and c not in (ZWNJ, ZWJ))


def title_collides(new_title: str, verified_titles: Iterable[str]) -> str | None:
    """The verified title that `new_title` would impersonate (same `title_key`), or None."""
    key = title_key(new_title)
    return next((title for title in verified_titles if title_key(title) == key), None)


def _drop_invisibles(text: str) -> str:
    """Remove ZWNJ and ZWJ where they serve no script; raise `InvalidTitle` on other invisibles."""
    kept: list[str] = []
    for index, char in enumerate(text):
        following = text[index + 1 : index + 2]
        if char == ZWNJ:
            # Persian writes ZWNJ inside words (می‌خواهم). Of a run, only the last one touches a letter.
            if _is_arabic_letter(_previous_base(kept)) and _is_arabic_letter(following):
                kept.append(char)
        elif char == ZWJ:
            # Emoji ZWJ sequences (👩‍💻, 🏳️‍🌈) join pictographs; elsewhere ZWJ only hides.
            if _is_pictographic(_previous_base(kept)) and _is_pictographic(following):
                kept.append(char)
        elif char in _TAGS:
            if not kept or (kept[-1] not in _TAGS and kept[-1] != _BLACK_FLAG):
                raise _invisible(char)
            kept.append(char)
        elif char not in _VARIATION_SELECTORS and _is_default_ignorable(char):
            raise _invisible(char)
        else:
            kept.append(char)
    return "".join(kept)


def _invisible(char: str) -> InvalidTitle:
    return InvalidTitle("name_title_invisible", char=_describe(char))


def _previous_base(kept: list[str]) -> str:
    """The last kept character that is not a combining mark, variation selector or emoji modifier."""
    for char in reversed(kept):
        if not (
            unicodedata.category(char).startswith("M")
            or char in _VARIATION_SELECTORS
            or icu.Char.hasBinaryProperty(char, icu.UProperty.EMOJI_MODIFIER)
        ):
            return char
    return ""


def _is_arabic_letter(char: str) -> bool:
    return (
        bool(char)
        and icu.Script.getScript(char).getScriptCode() == icu.UScriptCode.ARABIC
        and unicodedata.category(char).startswith("L")
    )


def _is_pictographic(char: str) -> bool:
    return bool(char) and bool(icu.Char.hasBinaryProperty(char, icu.UProperty.EXTENDED_PICTOGRAPHIC))


def _is_default_ignorable(char: str) -> bool:
    return bool(icu.Char.hasBinaryProperty(char, icu.UProperty.DEFAULT_IGNORABLE_CODE_POINT))


def _describe(char: str) -> str:
    """A character for a message: `'-' (U+002D)`, or just its code point and name when it is invisible."""
    code = f"U+{ord(char):04X}"
    name = unicodedata.name(char, "")
    if char.isprintable() and char != " " and not unicodedata.category(char).startswith("M"):
        return f"'{char}' ({code})"
    return f"{code} ({name})" if name else code


def _quote(text: str) -> str:
    """User input quoted for a message: invisible characters as U+XXXX, long input shortened."""
    shown = "".join(c if c.isprintable() else f"<U+{ord(c):04X}>" for c in text[:MAX_QUOTED_LENGTH])
    return f"'{shown}…'" if len(text) > MAX_QUOTED_LENGTH else f"'{shown}'"
