"""What an API post becomes: Matrix message content from text and HTML, an edit's new content, the size check.

Formatted posts keep only the HTML the Matrix spec recommends clients render (nh3, an allow list).
"""

from __future__ import annotations

from typing import Any, Final

from bridge.matrix.relay import with_text
from bridge.text.canonical import canonical_json
from bridge.web.api_errors import ApiError

# Homeservers refuse events over 65,536 bytes; this leaves room for the envelope and Kanal's markers.
MAX_CONTENT_BYTES: Final = 60_000
FORMAT_HTML: Final = "org.matrix.custom.html"

# What formatted posts may contain: the HTML the Matrix spec recommends clients render, minus `img`
# (its `src` must be an `mxc://` URI, which a bot would have to upload first; send the image as a file).
_HTML_TAGS: Final = frozenset(
    "font del h1 h2 h3 h4 h5 h6 blockquote p a ul ol sup sub li b i u strong em s strike code hr br "
    "div table thead tbody tr th td caption pre span details summary".split()
)
_HTML_ATTRIBUTES: Final = {
    "font": {"data-mx-bg-color", "data-mx-color", "color"},
    "span": {"data-mx-bg-color", "data-mx-color", "data-mx-spoiler"},
    "a": {"href", "name", "target"},
    "ol": {"start"},
    "code": {"class"},
}
_URL_SCHEMES: Final = frozenset({"https", "http", "ftp", "mailto", "magnet", "matrix"})


def text_content(text: str, html: str | None, *, silent: bool) -> dict[str, Any]:
    content: dict[str, Any] = {"msgtype": "m.notice" if silent else "m.text", "body": text}
    if html is not None:
        formatted = _sanitise(html)
        if formatted:
            content["format"] = FORMAT_HTML
            content["formatted_body"] = formatted
    return content


def _sanitise(html: str) -> str:
    """The HTML with only what Matrix clients are meant to render (nh3, an allow list)."""
    try:
        import nh3
    except ImportError:
        raise ApiError(
            400, "html_unsupported", "This server cannot check HTML yet; send the post as plain 'text'."
        ) from None
    return nh3.clean(
        html,
        tags=set(_HTML_TAGS),
        clean_content_tags={"script", "style"},
        attributes={tag: set(names) for tag, names in _HTML_ATTRIBUTES.items()},
        url_schemes=set(_URL_SCHEMES),
        link_rel=None,
    )


def edited(current: dict[str, Any], text: str, html: str | None) -> dict[str, Any]:
    """The post's new content: new text (or caption) and formatting, media kept."""
    return with_text(current, text_content(text, html, silent=False))


def check_size(content: dict[str, Any]) -> None:
    if len(canonical_json(content).encode("utf-8")) > MAX_CONTENT_BYTES:
        raise ApiError(
            413,
            "post_too_large",
            f"The post would exceed Matrix's event size limit ({MAX_CONTENT_BYTES:,} bytes of content); "
            "shorten the text or the HTML.",
        )
