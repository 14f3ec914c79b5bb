"""Reading and validating publishing-API requests: ids, JSON bodies and their fields, multipart uploads.

Every body is read with a cap (413 beyond it); every string is checked before anything is stored.
A new post is read into a `Draft`, with the fingerprint its Idempotency-Key is bound to.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Final

import aiohttp
from aiohttp import BodyPartReader, hdrs, web
from aiohttp.http_exceptions import BadHttpMessage

from appservice.events import storable
from bridge.text.canonical import canonical_json
from bridge.web.api_content import text_content
from bridge.web.api_errors import ApiError

MAX_JSON_BYTES: Final = 256 * 1024
MAX_UPLOAD_BYTES: Final = 20 * 1024 * 1024
MAX_TEXT_CHARS: Final = 4096  # Telegram's limit for a message
MAX_HTML_CHARS: Final = 8192
MAX_CAPTION_BYTES: Final = MAX_TEXT_CHARS * 4
MAX_FILENAME_CHARS: Final = 255
MAX_ID: Final = 2**63 - 1  # BIGINT: larger numbers cannot name a row (and would overflow the driver)
READ_CHUNK_BYTES: Final = 64 * 1024

_MEDIA_TYPE: Final = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")
_BIDI_CONTROLS: Final = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")


@dataclass(frozen=True)
class Upload:
    data: bytes
    filename: str
    content_type: str
    caption: str | None


@dataclass(frozen=True)
class Draft:
    """A new post as asked for, before anything is stored."""

    content: dict[str, Any]
    """A text post's content; for an upload, filled in once the file is stored."""
    upload: Upload | None
    reply_to: int | None
    fingerprint: str
    """What an Idempotency-Key is bound to: the same key with another fingerprint is a conflict."""


def positive_id(raw: str, what: str) -> int:
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or not 1 <= int(raw) <= MAX_ID:
        raise ApiError(400, "invalid_parameter", f"{what} must be an integer from 1 to {MAX_ID}.")
    return int(raw)


def path_post_id(request: web.Request) -> int:
    return positive_id(request.match_info["post_id"], "The post id")


async def _read_capped(stream: aiohttp.StreamReader, limit: int, what: str) -> bytes:
    data = bytearray()
    async for chunk in stream.iter_chunked(READ_CHUNK_BYTES):
        data += chunk
        if len(data) > limit:
            raise ApiError(413, "payload_too_large", f"{what} is larger than {limit:,} bytes.")
    return bytes(data)


async def read_json(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "Send the body as application/json.")
    if request.content_length is not None and request.content_length > MAX_JSON_BYTES:
        raise ApiError(413, "payload_too_large", f"The body is larger than {MAX_JSON_BYTES:,} bytes.")
    raw = await _read_capped(request.content, MAX_JSON_BYTES, "The body")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "invalid_json", "The body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "The body must be a JSON object.")
    return data


def only_fields(data: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ApiError(
            400, "unknown_field", f"Unknown field {unknown[0][:80]!r}; the fields are {', '.join(allowed)}."
        )


def optional_string(data: dict[str, Any], key: str, limit: int) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or not storable(value):
        raise ApiError(
            400, "invalid_field", f"{key!r} must be a non-empty string without NUL or lone surrogates."
        )
    if len(value) > limit:
        raise ApiError(400, "invalid_field", f"{key!r} is longer than {limit:,} characters.")
    return value


def required_string(data: dict[str, Any], key: str, limit: int) -> str:
    value = optional_string(data, key, limit)
    if value is None:
        raise ApiError(400, "invalid_field", f"{key!r} is required.")
    return value


def _fingerprint(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


async def read_draft(request: web.Request) -> Draft:
    if request.content_type == "multipart/form-data":
        upload = await _read_upload(request)
        digest = hashlib.sha256(upload.data).hexdigest()
        fingerprint = _fingerprint(
            {
                "file": digest,
                "filename": upload.filename,
                "content_type": upload.content_type,
                "caption": upload.caption,
            }
        )
        return Draft({}, upload, None, fingerprint)
    if request.content_type != "application/json":
        raise ApiError(
            415,
            "unsupported_media_type",
            "Send a post as application/json, or a file as multipart/form-data.",
        )
    data = await read_json(request)
    only_fields(data, ("text", "html", "silent", "reply_to"))
    text = required_string(data, "text", MAX_TEXT_CHARS)
    html = optional_string(data, "html", MAX_HTML_CHARS)
    silent = data.get("silent", False)
    if not isinstance(silent, bool):
        raise ApiError(400, "invalid_field", "'silent' must be true or false.")
    reply_to = data.get("reply_to")
    if reply_to is not None and (
        not isinstance(reply_to, int) or isinstance(reply_to, bool) or not 1 <= reply_to <= MAX_ID
    ):
        raise ApiError(400, "invalid_field", "'reply_to' must be the id of a post in this channel.")
    content = text_content(text, html, silent=silent)
    fingerprint = _fingerprint({"text": text, "html": html, "silent": silent, "reply_to": reply_to})
    return Draft(content, None, reply_to, fingerprint)


async def _read_upload(request: web.Request) -> Upload:
    """The `file` part (at most MAX_UPLOAD_BYTES) and an optional `caption` part of a multipart body."""
    data: bytes | None = None
    filename = content_type = ""
    caption: str | None = None
    try:
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                raise ApiError(400, "invalid_multipart", "Nested multipart bodies are not accepted.")
            if part.name == "file" and data is None:
                data = await _read_part(part, MAX_UPLOAD_BYTES, "The file")
                filename = _filename(part.filename)
                content_type = _content_type(part.headers.get(hdrs.CONTENT_TYPE))
            elif part.name == "caption" and caption is None:
                raw = await _read_part(part, MAX_CAPTION_BYTES, "The caption")
                try:
                    caption = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise ApiError(400, "invalid_field", "'caption' must be UTF-8 text.") from None
                if len(caption) > MAX_TEXT_CHARS or not storable(caption):
                    raise ApiError(
                        400,
                        "invalid_field",
                        f"'caption' must be at most {MAX_TEXT_CHARS:,} characters, without NUL.",
                    )
                caption = caption or None
            else:
                raise ApiError(
                    400, "invalid_multipart", "The parts are 'file' (required) and 'caption', each once."
                )
    except (ValueError, TypeError, RuntimeError, BadHttpMessage) as exc:
        raise ApiError(
            400, "invalid_multipart", "The body is not a readable multipart/form-data body."
        ) from exc
    if data is None:
        raise ApiError(400, "invalid_multipart", "The multipart body has no 'file' part.")
    if not data:
        raise ApiError(400, "invalid_field", "The file is empty.")
    return Upload(data, filename, content_type, caption)


async def _read_part(part: BodyPartReader, limit: int, what: str) -> bytes:
    data = bytearray()
    while chunk := await part.read_chunk(READ_CHUNK_BYTES):
        data += chunk
        if len(data) > limit:
            raise ApiError(413, "payload_too_large", f"{what} is larger than {limit:,} bytes.")
    return bytes(data)


def _filename(raw: str | None) -> str:
    """The last path segment, without control characters or direction overrides (no `gpj.exe` tricks)."""
    name = PurePosixPath((raw or "").replace("\\", "/")).name
    name = "".join(
        ch for ch in name if unicodedata.category(ch) not in ("Cc", "Cs") and ch not in _BIDI_CONTROLS
    )
    return name.strip()[:MAX_FILENAME_CHARS] or "file"


def _content_type(raw: str | None) -> str:
    value = (raw or "").split(";", 1)[0].strip().lower()
    return value if _MEDIA_TYPE.fullmatch(value) else "application/octet-stream"


def _msgtype_for(content_type: str) -> str:
    family = content_type.split("/", 1)[0]
    return {"image": "m.image", "video": "m.video", "audio": "m.audio"}.get(family, "m.file")


def media_content(upload: Upload, mxc: str) -> dict[str, Any]:
    """A media message; with a caption, `body` is the caption and `filename` names the file (Matrix 1.10)."""
    return {
        "msgtype": _msgtype_for(upload.content_type),
        "body": upload.caption or upload.filename,
        "filename": upload.filename,
        "url": mxc,
        "info": {"mimetype": upload.content_type, "size": len(upload.data)},
    }
