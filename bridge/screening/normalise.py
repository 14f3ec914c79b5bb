"""What the hooks look at: a post's text in one comparable form, and the hosts it links to.

`normalise` is the form term lists are matched in, for the post and the terms alike: NFKC with case
folding (which also drops ZWNJ, ZWJ and the other default-ignorable characters), the Arabic and
Persian letter variants and digits that `bridge.text.names.title_key` folds (ي/ى→ی, ك→ک, ة/ۀ→ه, أ/إ/آ→ا,
Arabic-Indic and Persian digits → ASCII), tatweel and Arabic diacritics (U+064B–U+065F, U+0670)
dropped, whitespace runs made one space. It is `title_key` without the confusables skeleton, which
would fold far more than spellings of one word.

`formatted_parts` reads `formatted_body` with `html.parser` (never a regex over HTML): its visible text
(block elements and `<br>` become spaces, a reply fallback `<mx-reply>` is skipped) and the `href` of
its links. Both the terms and the links hook need it, so the last results are cached.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from html.parser import HTMLParser
from typing import Final
from urllib.parse import urlsplit

from bridge.text.digits import DIGITS_TO_ASCII
from bridge.text.names import (
    _ARABIC_LETTER_VARIANTS,
    _ARABIC_MARKS_AND_TATWEEL,
    _NFKC_CASEFOLD,
    ZWJ,
    ZWNJ,
)

# One table: letter variants and digits replaced, marks, tatweel, ZWNJ and ZWJ removed.
FOLD: Final[dict[int, str | None]] = {
    **{k: str(v) for k, v in _ARABIC_LETTER_VARIANTS.items()},
    **{k: str(v) for k, v in DIGITS_TO_ASCII.items()},
    **{ord(c): None for c in (*_ARABIC_MARKS_AND_TATWEEL, ZWNJ, ZWJ)},
}
# `str.translate` with a dict costs a lookup, and a KeyError raised and cleared, for every character it
# keeps: 5–8 times slower on Persian text than finding the few foldable characters present and
# replacing each (`str.replace` runs at C speed).
_FOLDABLE: Final = re.compile(f"[{re.escape(''.join(map(chr, FOLD)))}]")
_FOLDED: Final = {chr(code): replacement or "" for code, replacement in FOLD.items()}
# Matrix's HTML subset: elements that start a new line of text. Inline ones (b, i, a, span…) do not,
# so `<b>sp</b>am` still reads `spam`.
_BLOCK_ELEMENTS: Final = frozenset(
    "blockquote br caption dd details div dl dt h1 h2 h3 h4 h5 h6 hr li ol p pre summary table tbody td "
    "tfoot th thead tr ul".split()
)
REPLY_FALLBACK_ELEMENT: Final = "mx-reply"
# How many parsed formatted bodies are kept: one post passes every hook before the next one comes.
_FORMATTED_CACHE_SIZE: Final = 64
# Hosts and URLs recur (a link's text and its href, a channel's own site): their keys are kept.
_HOST_CACHE_SIZE: Final = 1024

# Browsers accept the ideographic full stop between the labels of a host name (IDNA); NFKC does not
# make it ASCII (it does the fullwidth and halfwidth ones).
_IDEOGRAPHIC_FULL_STOP: Final = "\u3002"
# Where a host name may be: at a dot followed by a letter or digit (not a sentence's end), or after
# `://`. Both are searched for as literals, which `re` and `str.find` do far faster than any pattern
# that must be tried at every position of a long post.
_DOT_LABEL: Final = re.compile(r"\.[^\W_]")
_SCHEME_END: Final = "://"
_REST_OF_WORD: Final = re.compile(r"\S*")
# Links in plain text: with a scheme, or starting with `www.`, as Matrix clients linkify them.
_URL: Final = re.compile(r"\b(?:https?://|www\.)[^\s<>\"'`]+", re.IGNORECASE)
# Anything shaped like a host name (`evil.example`, `sub.bücher.example`): what a reader could type.
_BARE_HOST: Final = re.compile(r"(?<![\w.-])(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+[^\W\d_]{2,63}(?![\w-])")


def normalise(text: str) -> str:
    """`text` in the form term lists are matched in (see the module docstring)."""
    folded = str(_NFKC_CASEFOLD.normalize(text))
    for char in set(_FOLDABLE.findall(folded)):
        folded = folded.replace(char, _FOLDED[char])
    return " ".join(folded.split())


@dataclass(frozen=True)
class FormattedParts:
    text: str
    """The visible text, tags removed and character references decoded."""
    links: tuple[str, ...]
    """The `href` of every `<a>`, as written."""


class _TextAndLinks(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self.links: list[str] = []
        self._in_reply = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == REPLY_FALLBACK_ELEMENT:
            self._in_reply += 1
        elif self._in_reply:
            return
        elif tag in _BLOCK_ELEMENTS:
            self.chunks.append(" ")
        elif tag == "a":
            self.links.extend(value.strip() for name, value in attrs if name == "href" and value)

    def handle_endtag(self, tag: str) -> None:
        if tag == REPLY_FALLBACK_ELEMENT:
            self._in_reply = max(0, self._in_reply - 1)
        elif tag in _BLOCK_ELEMENTS and not self._in_reply:
            self.chunks.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._in_reply:
            self.chunks.append(data)


@lru_cache(maxsize=_FORMATTED_CACHE_SIZE)
def formatted_parts(formatted_body: str) -> FormattedParts:
    """The visible text and link targets of a Matrix `formatted_body`."""
    if "<" not in formatted_body and "&" not in formatted_body:
        return FormattedParts(formatted_body, ())
    parser = _TextAndLinks()
    parser.feed(formatted_body)
    parser.close()
    return FormattedParts("".join(parser.chunks), tuple(parser.links))


def post_text(body: str, formatted_body: str | None) -> str:
    """The normalised text of a post: its body, then its formatted body's text when that differs.

    The two parts are joined by a line break, which no normalised term contains, so a term never
    matches across them.
    """
    text = normalise(body)
    if formatted_body:
        shown = normalise(formatted_parts(formatted_body).text)
        if shown != text:
            return f"{text}\n{shown}"
    return text


@lru_cache(maxsize=_HOST_CACHE_SIZE)
def host_key(host: str) -> str:
    """A host name in one comparable form: NFKC, lower case, IDNA-encoded (`xn--…`), no final dot."""
    host = (
        unicodedata.normalize("NFKC", host).replace(_IDEOGRAPHIC_FULL_STOP, ".").lower().strip().rstrip(".")
    )
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:  # not a valid IDN (an empty or over-long label): compare as written
        return host


def link_hosts(text: str, links: tuple[str, ...] = ()) -> tuple[frozenset[str], frozenset[str]]:
    """The hosts a post points to: (hosts of links, every host-shaped name), both as `host_key`s.

    Links are URLs with a scheme or `www.` in `text`, and `links` (hrefs); only http(s) links have a
    host that counts (`mxc:`, `matrix:`, `mailto:` do not). Host-shaped names also include names
    written without a scheme (`visit evil.example`), which a reader can still type in.
    """
    text = unicodedata.normalize("NFKC", text).replace(_IDEOGRAPHIC_FULL_STOP, ".")
    words = _words_with_hosts(text)
    linked = {host for host in map(_url_host, (*_URL.findall(words), *links)) if host}
    return frozenset(linked), frozenset({host_key(name) for name in _BARE_HOST.findall(words)} | linked)


def _words_with_hosts(text: str) -> str:
    """The words of `text` that may hold a URL or host name, space-separated (URLs have no spaces)."""
    marks = [match.start() for match in _DOT_LABEL.finditer(text)]
    at = text.find(_SCHEME_END)
    while at != -1:
        marks.append(at)
        at = text.find(_SCHEME_END, at + len(_SCHEME_END))
    words: list[str] = []
    end = 0
    for mark in sorted(marks):
        if mark < end:  # in the word already taken
            continue
        start = max(text.rfind(" ", 0, mark), text.rfind("\n", 0, mark)) + 1
        rest = _REST_OF_WORD.match(text, mark)
        end = rest.end() if rest else mark + 1
        words.append(text[start:end])
    return " ".join(words)


@lru_cache(maxsize=_HOST_CACHE_SIZE)
def _url_host(url: str) -> str | None:
    url = url.strip()
    if url[:4].lower() == "www.":
        url = f"http://{url}"
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # a malformed port or IPv6 literal: no host to compare
        return None
    if parts.scheme.lower() not in ("http", "https") or not host:
        return None
    return host_key(host)
