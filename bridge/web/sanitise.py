"""Post text to safe HTML: Matrix's HTML subset through ammonia (nh3), plain bodies escaped.

The allow-list is the client-server spec's list of HTML a client should render in
`formatted_body` (`m.room.message` msgtypes, "HTML"), narrowed where the page's security needs it:

* `<a href>` keeps only http, https and mailto links, and gets `rel="noopener nofollow ugc"`;
* `<img src>` keeps only `mxc://` URIs, rewritten to Kanal's media proxy (`/media/<server>/<id>`);
  any other image source is dropped, so a post can never make a reader's browser call a third party;
* colours only as `#rrggbb`; `<code class>` only as `language-…`;
* `<mx-reply>` (the reply fallback) is removed with its content, like `<script>` and `<style>`.

Everything else (event handlers, `style`, `data:` and `javascript:` URIs, SVG, forms) is dropped by
ammonia, which parses the fragment the way a browser does before it serialises the allowed part.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import quote

import nh3
from markupsafe import Markup, escape

from bridge.matrix.media import parse_mxc

ALLOWED_TAGS: Final = frozenset(
    {
        "font", "del", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "p", "a", "ul", "ol", "sup",
        "sub", "li", "b", "i", "u", "strong", "em", "strike", "code", "hr", "br", "div", "table",
        "thead", "tbody", "tr", "th", "td", "caption", "pre", "span", "img", "details", "summary",
    }
)  # fmt: skip
ALLOWED_ATTRIBUTES: Final = {
    "font": {"color", "data-mx-bg-color", "data-mx-color"},
    "span": {"data-mx-bg-color", "data-mx-color", "data-mx-spoiler"},
    "a": {"href"},
    "img": {"src", "alt", "title", "width", "height"},
    "ol": {"start"},
    "code": {"class"},
}
# Removed together with everything inside them.
DROPPED_WITH_CONTENT: Final = frozenset({"mx-reply", "script", "style"})
LINK_SCHEMES: Final = ("http:", "https:", "mailto:")
LINK_REL: Final = "noopener nofollow ugc"

_COLOUR: Final = re.compile(r"#[0-9A-Fa-f]{6}")
_LANGUAGE_CLASS: Final = re.compile(r"language-[A-Za-z0-9+#_\-]{1,32}")
_DIMENSION: Final = re.compile(r"[0-9]{1,4}")
# Links in plain bodies, as clients show them: http(s) up to whitespace, less trailing punctuation.
_WEB_LINK: Final = re.compile(r"\bhttps?://[^\s<>\"']+", re.IGNORECASE)
_TRAILING_PUNCTUATION: Final = ".,;:!?)]}»،؛؟"


def media_path(uri: object) -> str | None:
    """The proxy path that serves an `mxc://` URI (`/media/<server>/<id>`), or None when it is not one."""
    parts = parse_mxc(uri)
    if parts is None:
        return None
    server, media_id = parts
    return f"/media/{quote(server, safe=':')}/{media_id}"


def plain_html(text: str) -> Markup:
    """A plain body as HTML: escaped, line breaks kept, web links made clickable."""
    return Markup("<br>\n").join(_linkify(line) for line in text.split("\n"))


def _linkify(line: str) -> Markup:
    parts: list[Markup] = []
    position = 0
    for match in _WEB_LINK.finditer(line):
        url = match.group(0).rstrip(_TRAILING_PUNCTUATION)
        parts.append(escape(line[position : match.start()]))
        parts.append(Markup('<a href="{0}" rel="{1}">{0}</a>').format(url, LINK_REL))
        position = match.start() + len(url)
    parts.append(escape(line[position:]))
    return Markup("").join(parts)


class Sanitiser:
    """Cleans `formatted_body` HTML; one instance per way of linking (pages, embeds, feeds)."""

    def __init__(self, *, media_base: str = "", new_tab: bool = False) -> None:
        """`media_base` prefixes proxied image paths (feeds need absolute URLs); `new_tab` opens
        links in a new browsing context (embeds, which live in someone else's page)."""
        self._media_base = media_base
        self._cleaner = nh3.Cleaner(
            tags=set(ALLOWED_TAGS),
            clean_content_tags=set(DROPPED_WITH_CONTENT),
            attributes={tag: set(names) for tag, names in ALLOWED_ATTRIBUTES.items()},
            attribute_filter=self._filter,
            strip_comments=True,
            link_rel=LINK_REL,
            # ammonia checks schemes before `_filter` runs: mxc must pass that check to be rewritten.
            url_schemes={"http", "https", "mailto", "mxc"},
            set_tag_attribute_values={"a": {"target": "_blank"}} if new_tab else None,
        )

    def clean(self, html: str) -> Markup:
        return Markup(self._cleaner.clean(html))  # noqa: S704 (the output of the sanitiser)

    def _filter(self, tag: str, attribute: str, value: str) -> str | None:
        if tag == "img" and attribute == "src":
            path = media_path(value.strip())
            return self._media_base + path if path is not None else None
        if attribute == "href":
            return value if value.strip().lower().startswith(LINK_SCHEMES) else None
        if attribute in ("color", "data-mx-color", "data-mx-bg-color"):
            return value if _COLOUR.fullmatch(value) else None
        if tag == "code" and attribute == "class":
            return value if _LANGUAGE_CLASS.fullmatch(value) else None
        if attribute in ("width", "height", "start"):
            return value if _DIMENSION.fullmatch(value) else None
        return value
