"""`mxc://` URIs and the images events carry: pure functions, no I/O."""

from __future__ import annotations

import re
from typing import Any, Final

# A server name as the spec allows it (DNS name, IPv4 or [IPv6], optional port) and a media id.
SERVER_NAME: Final = r"(?:[A-Za-z0-9\-.]{1,255}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?"
MEDIA_ID: Final = r"[A-Za-z0-9_\-]{1,255}"
_MXC: Final = re.compile(rf"mxc://({SERVER_NAME})/({MEDIA_ID})")
MAX_MXC_LENGTH: Final = 255  # what `channels.avatar_url` holds


def parse_mxc(uri: object) -> tuple[str, str] | None:
    """(server, media id) of a well-formed `mxc://` URI, else None."""
    if not isinstance(uri, str):
        return None
    match = _MXC.fullmatch(uri)
    return (match.group(1), match.group(2)) if match else None


def image_of(event_type: str, content: dict[str, Any]) -> str | None:
    """The `mxc://` URI of the image an event shows (an `m.image` message or a sticker), None for
    anything else (text, video, a file, an encrypted image, a malformed or overlong URI)."""
    if event_type == "m.room.message" and content.get("msgtype") != "m.image":
        return None
    if event_type not in ("m.room.message", "m.sticker"):
        return None
    url = content.get("url")
    if not isinstance(url, str) or len(url) > MAX_MXC_LENGTH or parse_mxc(url) is None:
        return None
    return url
