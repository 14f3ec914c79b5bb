"""Term lists: thousands of literal terms found in one pass (Aho–Corasick), a few regular expressions.

Terms and posts are compared in `normalise`d form, so a term written with ي, ك or Persian digits
finds a post written with ی, ک or ASCII digits, and ZWNJ, tatweel or diacritics inserted into a word do
not hide it.

Where a literal term may match (its *edges*):

* **Whole words** by default: the characters just before and after the match must not be letters,
  digits, marks or `_`. `spam` finds "Spam!" and "buy spam now", not "spammer" or "antispam".
* **`*` at either end** opens that edge: `spam*` also finds "spammer", `*coin` finds "shitcoin".
* **Arabic script** attaches clitics to words: conjunctions and prepositions before (و ف ب ل ک س),
  the article (ال), Persian verb prefixes (می، نمی، ن), and plural, possessive, indefinite and verb
  endings after (ها، ان، ات، ی، ام، اش، مان، تر…). A term of three or more Arabic-script letters also
  matches with such a clitic attached (`کتاب` finds "کتابها", "والکتاب"), and with nothing else
  attached. Shorter terms match whole words only: a two-letter word plus a clitic is too often another
  word. Since ZWNJ is dropped, "کتاب‌ها" and "کتابها" are the same text.
* **Scripts written without spaces** (Han, Hiragana, Katakana, Thai, Lao, Khmer, Myanmar) have no
  word edges to find: a term ending in such a letter matches anywhere on that side.

Regular expressions are matched as written (`re.search`, case-insensitive) against the normalised
text; they get no implicit word edges (write `\\b`). Their letter variants and digits are folded like
the text's, so `ي` in a pattern still finds `ی`. Operators write these patterns themselves, so they
are trusted not to backtrack catastrophically. A pattern that starts with a literal (`casino\\d+`) is
searched for far faster than one that starts with `\\b` or a class.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Final

import ahocorasick_rs
import icu  # type: ignore[import-untyped]

from bridge.screening.normalise import FOLD, normalise

WILDCARD: Final = "*"
MIN_CLITIC_TERM_LETTERS: Final = 3
_UNSPACED_SCRIPTS: Final = frozenset(
    getattr(icu.UScriptCode, name)
    for name in ("HAN", "HIRAGANA", "KATAKANA", "THAI", "LAO", "KHMER", "MYANMAR")
)
_ARABIC_SCRIPT: Final = icu.UScriptCode.ARABIC
# Clitics in normalised spelling (ی, ک, ه; no ZWNJ). Prefixes: a conjunction, a preposition or the
# future particle, the article, in that order and each optional; or a Persian verb prefix.
ARABIC_PREFIXES: Final = frozenset(
    {
        conjunction + particle + article
        for conjunction in ("", "و", "ف")
        for particle in ("", "ب", "ل", "ک", "س")
        for article in ("", "ال")
    }
    | {"لل", "ولل", "فلل", "می", "نمی", "ن"}
) - {""}
# Suffixes. Persian: plural, indefinite and ezafe, possessive and verb endings, comparative, and the
# plural followed by a possessive. Arabic: pronoun suffixes, sound plurals and duals (ة is folded to ه).
_PERSIAN_POSSESSIVES: Final = "م ت ش مان تان شان یم ید ند".split()
ARABIC_SUFFIXES: Final = frozenset(
    "ها های هایی ان ات ین ی ای یی ام اش ایم اید اند تر ترین".split()
    + _PERSIAN_POSSESSIVES
    + [f"ها{p}" for p in _PERSIAN_POSSESSIVES]
    + [f"های{p}" for p in _PERSIAN_POSSESSIVES]
    + "ه هما هم هن ک کم کن نا ون وا تم تن تا".split()
)
_ESCAPE: Final = re.compile(r"\\.")
_MAX_PREFIX: Final = max(map(len, ARABIC_PREFIXES))
_MAX_SUFFIX: Final = max(map(len, ARABIC_SUFFIXES))


class _Edge(Enum):
    OPEN = "anything may be attached"
    WORD = "nothing may be attached"
    CLITIC = "an Arabic-script clitic may be attached"


@dataclass(frozen=True)
class Found:
    """What a term list found: the term or pattern as the operator wrote it."""

    term: str
    regex: bool


@dataclass(frozen=True)
class _Term:
    written: str
    left: _Edge
    right: _Edge


def term_key(written: str) -> str:
    """The normalised text a literal term is searched as; ValueError when nothing is left of it."""
    key = normalise(written.strip().strip(WILDCARD))
    if not key:
        raise ValueError(f"the term {written!r} is empty once normalised (no visible letters or signs)")
    return key


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A regular-expression term, folded like the text it is matched on; ValueError when invalid.

    The text is case-folded already, so only a pattern with capital letters (outside escapes such
    as `\\D`) needs `re.IGNORECASE`, which would keep `re` from scanning for a literal prefix fast.
    """
    folded = pattern.translate(FOLD)
    capitals = any(c.isupper() for c in _ESCAPE.sub("", folded))
    try:
        return re.compile(folded, re.IGNORECASE if capitals else 0)
    except re.error as exc:
        raise ValueError(f"the pattern {pattern!r} is not a valid regular expression: {exc}") from None


class TermList:
    """Literal terms and regular expressions, compiled once; `find` searches normalised text."""

    def __init__(self, literals: Iterable[str], patterns: Iterable[str] = ()) -> None:
        variants: dict[str, list[_Term]] = {}
        for written in literals:
            key = term_key(written)
            stripped = written.strip()
            letters = sum(c.isalpha() for c in key)
            left = _edge(key[0], stripped.startswith(WILDCARD), letters)
            right = _edge(key[-1], stripped.endswith(WILDCARD), letters)
            variants.setdefault(key, []).append(_Term(written, left, right))
        self._terms = tuple(tuple(terms) for terms in variants.values())
        # Standard match semantics, so that every overlapping match is reported: a match that
        # breaks a word edge must not hide a shorter or later one that keeps it.
        self._automaton = ahocorasick_rs.AhoCorasick(variants) if variants else None
        self._patterns = tuple((p, compile_pattern(p)) for p in patterns)

    def find(self, text: str) -> Found | None:
        """The first literal term (by where it ends), else the first pattern, found in `text`."""
        if self._automaton is not None:
            for index, start, end in self._automaton.find_matches_as_indexes(text, overlapping=True):
                for term in self._terms[index]:
                    if _left_fits(text, start, term.left) and _right_fits(text, end, term.right):
                        return Found(term.written, regex=False)
        for written, compiled in self._patterns:
            if compiled.search(text):
                return Found(written, regex=True)
        return None


def _edge(char: str, wildcard: bool, letters: int) -> _Edge:
    if wildcard or not _is_word_char(char):
        return _Edge.OPEN
    script = icu.Script.getScript(char).getScriptCode()
    if script in _UNSPACED_SCRIPTS:
        return _Edge.OPEN
    if script == _ARABIC_SCRIPT and letters >= MIN_CLITIC_TERM_LETTERS:
        return _Edge.CLITIC
    return _Edge.WORD


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_" or unicodedata.category(char)[0] == "M"


def _left_fits(text: str, start: int, edge: _Edge) -> bool:
    if edge is _Edge.OPEN or start == 0 or not _is_word_char(text[start - 1]):
        return True
    if edge is _Edge.WORD:
        return False
    first = start - 1
    while first > 0 and start - first <= _MAX_PREFIX and _is_word_char(text[first - 1]):
        first -= 1
    return text[first:start] in ARABIC_PREFIXES and (first == 0 or not _is_word_char(text[first - 1]))


def _right_fits(text: str, after: int, edge: _Edge) -> bool:
    if edge is _Edge.OPEN or after == len(text) or not _is_word_char(text[after]):
        return True
    if edge is _Edge.WORD:
        return False
    stop = after + 1
    while stop < len(text) and stop - after <= _MAX_SUFFIX and _is_word_char(text[stop]):
        stop += 1
    return text[after:stop] in ARABIC_SUFFIXES and (stop == len(text) or not _is_word_char(text[stop]))
