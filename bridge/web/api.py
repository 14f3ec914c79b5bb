"""The publishing API (issue 5): bots post to their channel with a token, through the gate and the outbox.

    Authorization: Bearer kanal_api_…  ─▶ tokens.authenticate ─▶ rate limit per token (else 429)
                                        ─▶ the token's own channel only (else 403), active (else 404/423)
    POST   /api/v1/channels/{handle}/posts       JSON, or multipart with a file (stored as the ghost)
             ├─ Idempotency-Key seen before ─▶ the stored answer again (409 when the body differs)
             ├─ restricted ─▶ 423
             ├─ hooks: hold ─▶ HeldPost, 202 │ reject ─▶ decision with its statement, 422
             └─ outbox `send` as the ghost + Post row + audit entry ─▶ 201
    PATCH  /api/v1/channels/{handle}/posts/{id}  the same checks, then an `m.replace` of the relayed copy
    DELETE /api/v1/channels/{handle}/posts/{id}  an outbox `redact` of the relayed copy ─▶ 204
    GET    /api/v1/channels/{handle}/posts[/{id}] what the channel shows, newest first
    GET    /api/v1/openapi.json                  bridge/web/publishing-api.openapi.json, as committed

As for backstage posts, the decision, the outbox entries, the Post row and the audit entry are written
in one database transaction; the outbox sends afterwards, so a new post's `event_id` is null until it
is delivered. Network calls (the media upload, webhook hooks) happen before that transaction opens.
Errors are `ApiError`s, rendered as `{"error": {"code", "message", …}}` by one middleware; anything
unexpected is logged and answered with a 500. Tokens are never logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
import unicodedata
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any, Final

import aiohttp
from aiohttp import BodyPartReader, hdrs, web
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.typedefs import Handler
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.audience.views import views_of
from bridge.broadcast import seam
from bridge.matrix.relay import with_text
from bridge.moderation import audit
from bridge.moderation.decisions import Ground, record
from bridge.moderation.gate import record_held, tell_moderators
from bridge.moderation.hooks import MediaInfo, PostInfo, Verdict, outcome
from bridge.publishing import posts
from bridge.publishing.posts import API_SOURCE_PREFIX
from bridge.runtime.context import Context, reply
from bridge.runtime.languages import language_for
from bridge.runtime.outbox import aware
from bridge.store.models import (
    ApiIdempotency,
    ApiToken,
    Channel,
    ChannelStatus,
    Decision,
    DecisionKind,
    DecisionStatus,
    HeldPost,
    Post,
    Room,
)
from bridge.text.i18n import t
from bridge.web.tokens import authenticate, bearer_token

log = logging.getLogger(__name__)

API_PREFIX: Final = "/api/v1"
OPENAPI_FILE: Final = Path(__file__).resolve().parent / "publishing-api.openapi.json"

MAX_JSON_BYTES: Final = 256 * 1024
MAX_UPLOAD_BYTES: Final = 20 * 1024 * 1024
MAX_TEXT_CHARS: Final = 4096  # Telegram's limit for a message
MAX_HTML_CHARS: Final = 8192
MAX_CAPTION_BYTES: Final = MAX_TEXT_CHARS * 4
MAX_FILENAME_CHARS: Final = 255
# Homeservers refuse events over 65,536 bytes; this leaves room for the envelope and Kanal's markers.
MAX_CONTENT_BYTES: Final = 60_000
MAX_IDEMPOTENCY_KEY_CHARS: Final = 255
IDEMPOTENCY_TTL: Final = timedelta(hours=24)
DEFAULT_PAGE_SIZE: Final = 20
MAX_PAGE_SIZE: Final = 100
MAX_ID: Final = 2**63 - 1  # BIGINT: larger numbers cannot name a row (and would overflow the driver)
UPLOAD_TIMEOUT_S: Final = 120.0
READ_CHUNK_BYTES: Final = 64 * 1024
FORMAT_HTML: Final = "org.matrix.custom.html"

_IDEMPOTENCY_KEY: Final = re.compile(rf"[\x20-\x7e]{{1,{MAX_IDEMPOTENCY_KEY_CHARS}}}")
_MEDIA_TYPE: Final = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")
_BIDI_CONTROLS: Final = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
_CHALLENGE: Final = {"WWW-Authenticate": 'Bearer realm="kanal"'}
_HTTP_CODES: Final = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}

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


# -- errors ---------------------------------------------------------------------------------------------


class ApiError(Exception):
    """An answer other than success: HTTP status, a stable `code`, a message for people, extra fields."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.extra}}

    def response(self) -> web.Response:
        return web.json_response(self.body(), status=self.status, headers=self.headers)


@web.middleware
async def _render_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place errors become responses (the router's 404 and 405 included)."""
    try:
        response: web.StreamResponse = await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        code = _HTTP_CODES.get(exc.status, "http_error")
        return ApiError(exc.status, code, exc.reason, headers=headers).response()
    except Exception:
        log.exception("publishing API: %s %s failed", request.method, request.path)
        return ApiError(
            500, "internal", "Something went wrong on our side; the request may be retried."
        ).response()
    return response


# -- rate limits ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RateLimit:
    """Requests per token: `per_minute` on average, up to `burst` at once."""

    per_minute: float = 30.0
    burst: float = 10.0


class TokenBuckets:
    """A token bucket per API token, kept in this process (several Kanal processes each keep their own)."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = limit.per_minute / 60.0
        self._burst = limit.burst
        self._clock = clock
        self._buckets: dict[int, tuple[float, float]] = {}  # token id -> (level, when)

    def take(self, key: int) -> float:
        """Take one request from `key`'s bucket: 0 when allowed, else the seconds until it would be."""
        now = self._clock()
        level, when = self._buckets.get(key, (self._burst, now))
        level = min(self._burst, level + (now - when) * self._rate)
        if level >= 1.0:
            self._buckets[key] = (level - 1.0, now)
            return 0.0
        self._buckets[key] = (level, now)
        return (1.0 - level) / self._rate


# -- the application --------------------------------------------------------------------------------------


@dataclass
class _Api:
    ctx: Context
    buckets: TokenBuckets
    openapi: bytes | None
    http: aiohttp.ClientSession | None = field(default=None)

    def uploads(self) -> aiohttp.ClientSession:
        if self.http is None:
            raise RuntimeError("the publishing API's HTTP session is used outside the app's lifetime")
        return self.http


STATE: Final = web.AppKey("kanal_publishing_api", _Api)


def add_api_routes(app: web.Application, ctx: Context, *, rate_limit: RateLimit | None = None) -> None:
    """Mount the publishing API at /api/v1 on the web app."""
    try:
        document: bytes | None = OPENAPI_FILE.read_bytes()
    except OSError:
        log.warning(
            "The publishing API's OpenAPI document is missing (%s); /api/v1/openapi.json answers 404",
            OPENAPI_FILE,
        )
        document = None
    api = web.Application(middlewares=[_render_errors])
    api[STATE] = _Api(ctx, TokenBuckets(rate_limit or RateLimit()), document)
    api.cleanup_ctx.append(_http_session)
    api.router.add_get("/openapi.json", _openapi)
    api.router.add_post("/channels/{handle}/posts", _create_post)
    api.router.add_get("/channels/{handle}/posts", _list_posts)
    api.router.add_get("/channels/{handle}/posts/{post_id}", _get_post)
    api.router.add_patch("/channels/{handle}/posts/{post_id}", _edit_post)
    api.router.add_delete("/channels/{handle}/posts/{post_id}", _delete_post)
    app.add_subapp(API_PREFIX, api)


async def _http_session(api: web.Application) -> AsyncIterator[None]:
    """The session media uploads go through, open for the app's lifetime."""
    state = api[STATE]
    state.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=UPLOAD_TIMEOUT_S))
    yield
    await state.http.close()
    state.http = None


async def _openapi(request: web.Request) -> web.Response:
    document = request.app[STATE].openapi
    if document is None:
        raise ApiError(404, "not_found", "This installation has no copy of the OpenAPI document.")
    return web.Response(body=document, content_type="application/json")


# -- who is asking ----------------------------------------------------------------------------------------


async def _caller(request: web.Request, *, write: bool) -> tuple[ApiToken, Channel]:
    """The token and its channel, once the token, the rate limit and the channel in the path allow it."""
    state = request.app[STATE]
    header = request.headers.get(hdrs.AUTHORIZATION)
    if bearer_token(header) is None:
        raise ApiError(
            401,
            "missing_token",
            "Send the channel's API token as the header Authorization: Bearer <token>.",
            headers=_CHALLENGE,
        )
    async with state.ctx.sessions() as session:
        token = await authenticate(session, header)
        channel = await session.get(Channel, token.channel_id) if token is not None else None
    if token is None:
        raise ApiError(
            401,
            "invalid_token",
            "The token is unknown or was revoked; the channel's owner makes a new one with !token new <name>.",
            headers={"WWW-Authenticate": 'Bearer realm="kanal", error="invalid_token"'},
        )
    wait = state.buckets.take(token.id)
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        raise ApiError(
            429,
            "rate_limited",
            f"Too many requests with this token; try again in {seconds} s.",
            headers={"Retry-After": str(seconds)},
            retry_after=seconds,
        )
    gone = (ChannelStatus.DELETING, ChannelStatus.DELETED)
    if channel is None or channel.handle is None or channel.status in gone:
        raise ApiError(404, "channel_not_found", "The token's channel no longer exists.")
    if request.match_info["handle"].lower() != channel.handle.lower():
        raise ApiError(403, "wrong_channel", f"This token publishes to #{channel.handle} only.")
    if write and (channel.status != ChannelStatus.ACTIVE or channel.broadcast_room_id is None):
        raise ApiError(
            423,
            "channel_unavailable",
            f"#{channel.handle} is {channel.status}: nothing can be published or changed now.",
        )
    return token, channel


async def _refuse_if_restricted(session: AsyncSession, channel: Channel) -> None:
    until = channel.restricted_until
    if until is None or aware(until) <= datetime.now(UTC):
        return
    decision = await session.scalar(
        select(Decision.id)
        .where(
            Decision.channel_id == channel.id,
            Decision.kind == DecisionKind.RESTRICT,
            Decision.status == DecisionStatus.IN_FORCE,
        )
        .order_by(Decision.id.desc())
    )
    shown = aware(until).strftime("%Y-%m-%d %H:%M UTC")
    raise ApiError(
        423,
        "restricted",
        f"Posting in #{channel.handle} is suspended until {shown}"
        + (f" by decision #{decision}." if decision else "."),
        until=_iso(until),
        decision=decision,
    )


# -- reading requests -------------------------------------------------------------------------------------


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


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        raise ApiError(
            400,
            "invalid_idempotency_key",
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII characters.",
        )
    return key


def _positive_id(raw: str, what: str) -> int:
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or not 1 <= int(raw) <= MAX_ID:
        raise ApiError(400, "invalid_parameter", f"{what} must be an integer from 1 to {MAX_ID}.")
    return int(raw)


def _post_id(request: web.Request) -> int:
    return _positive_id(request.match_info["post_id"], "The post id")


async def _read_capped(stream: aiohttp.StreamReader, limit: int, what: str) -> bytes:
    data = bytearray()
    async for chunk in stream.iter_chunked(READ_CHUNK_BYTES):
        data += chunk
        if len(data) > limit:
            raise ApiError(413, "payload_too_large", f"{what} is larger than {limit:,} bytes.")
    return bytes(data)


async def _read_json(request: web.Request) -> dict[str, Any]:
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


def _only(data: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ApiError(
            400, "unknown_field", f"Unknown field {unknown[0][:80]!r}; the fields are {', '.join(allowed)}."
        )


def _storable(value: str) -> bool:
    """No NUL and no lone surrogate: what every database and homeserver stores as sent."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _string(data: dict[str, Any], key: str, limit: int) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or not _storable(value):
        raise ApiError(
            400, "invalid_field", f"{key!r} must be a non-empty string without NUL or lone surrogates."
        )
    if len(value) > limit:
        raise ApiError(400, "invalid_field", f"{key!r} is longer than {limit:,} characters.")
    return value


def _required_string(data: dict[str, Any], key: str, limit: int) -> str:
    value = _string(data, key, limit)
    if value is None:
        raise ApiError(400, "invalid_field", f"{key!r} is required.")
    return value


def _text_content(text: str, html: str | None, *, silent: bool) -> dict[str, Any]:
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


def _fingerprint(value: Any) -> str:
    return hashlib.sha256(audit.canonical_json(value).encode("utf-8")).hexdigest()


async def _read_draft(request: web.Request) -> Draft:
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
    data = await _read_json(request)
    _only(data, ("text", "html", "silent", "reply_to"))
    text = _required_string(data, "text", MAX_TEXT_CHARS)
    html = _string(data, "html", MAX_HTML_CHARS)
    silent = data.get("silent", False)
    if not isinstance(silent, bool):
        raise ApiError(400, "invalid_field", "'silent' must be true or false.")
    reply_to = data.get("reply_to")
    if reply_to is not None and (
        not isinstance(reply_to, int) or isinstance(reply_to, bool) or not 1 <= reply_to <= MAX_ID
    ):
        raise ApiError(400, "invalid_field", "'reply_to' must be the id of a post in this channel.")
    content = _text_content(text, html, silent=silent)
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
                if len(caption) > MAX_TEXT_CHARS or not _storable(caption):
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


def _media_content(upload: Upload, mxc: str) -> dict[str, Any]:
    """A media message; with a caption, `body` is the caption and `filename` names the file (Matrix 1.10)."""
    return {
        "msgtype": _msgtype_for(upload.content_type),
        "body": upload.caption or upload.filename,
        "filename": upload.filename,
        "url": mxc,
        "info": {"mimetype": upload.content_type, "size": len(upload.data)},
    }


def _check_size(content: dict[str, Any]) -> None:
    if len(audit.canonical_json(content).encode("utf-8")) > MAX_CONTENT_BYTES:
        raise ApiError(
            413,
            "post_too_large",
            f"The post would exceed Matrix's event size limit ({MAX_CONTENT_BYTES:,} bytes of content); "
            "shorten the text or the HTML.",
        )


# -- the homeserver's media repository ----------------------------------------------------------------


async def _upload(state: _Api, channel: Channel, upload: Upload) -> str:
    """Store the file in the homeserver's media repository as the channel's ghost; its `mxc://` URI."""
    config = state.ctx.config
    url = f"{config.homeserver_url}/_matrix/media/v3/upload"
    params = {"user_id": channel.ghost_user_id, "filename": upload.filename}
    headers = {hdrs.AUTHORIZATION: f"Bearer {config.as_token}", hdrs.CONTENT_TYPE: upload.content_type}
    try:
        async with state.uploads().post(url, params=params, data=upload.data, headers=headers) as response:
            status = response.status
            try:
                answer = await response.json(content_type=None)
            except ValueError:
                answer = None
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        log.warning("publishing API: the media repository is unreachable: %r", exc)
        raise ApiError(
            502, "homeserver_unavailable", "The homeserver could not be reached to store the file; try again."
        ) from exc
    errcode = answer.get("errcode") if isinstance(answer, dict) else None
    if status == 413 or errcode == "M_TOO_LARGE":
        raise ApiError(413, "payload_too_large", "The homeserver refuses files this large.")
    content_uri = answer.get("content_uri") if isinstance(answer, dict) else None
    if status >= 400 or not isinstance(content_uri, str) or not content_uri.startswith("mxc://"):
        log.warning("publishing API: the media repository answered %s %s", status, errcode or "")
        raise ApiError(502, "upload_failed", f"The homeserver did not store the file ({status}); try again.")
    return content_uri


# -- the compliance gate ----------------------------------------------------------------------------------


async def _screen(ctx: Context, channel: Channel, info: PostInfo) -> tuple[list[Verdict], Verdict | None]:
    """The channel's hooks' verdicts and the deciding one (None: publish)."""
    pipeline = ctx.pipeline
    if pipeline is None or not pipeline.hooks_for(channel.handle or ""):
        return [], None
    verdicts: list[Verdict] = await pipeline.check(info)
    return verdicts, outcome(verdicts)


def _post_info(channel: Channel, token_name: str, source: str, content: dict[str, Any]) -> PostInfo:
    info = content.get("info")
    media = None
    if isinstance(content.get("url"), str) and isinstance(info, dict):
        media = MediaInfo(mimetype=info.get("mimetype"), size=info.get("size"), url=content["url"])
    formatted = content.get("formatted_body")
    return PostInfo(
        channel_id=channel.id,
        handle=channel.handle or "",
        title=channel.title,
        author=f"{API_SOURCE_PREFIX}{token_name}",
        event_id=source,
        msgtype=str(content.get("msgtype", "m.text")),
        body=str(content.get("body", "")),
        formatted_body=formatted if isinstance(formatted, str) else None,
        media=media,
        via="api",
    )


def _as_event(channel: Channel, token_name: str, source: str, content: dict[str, Any]) -> dict[str, Any]:
    """A held API post, shaped like the backstage event it stands in for (see `publish_held`)."""
    return {
        "event_id": source,
        "room_id": channel.backstage_room_id or "",
        "sender": f"{API_SOURCE_PREFIX}{token_name}",
        "type": "m.room.message",
        "content": content,
        "origin_server_ts": int(time.time() * 1000),
    }


async def _hold_or_reject(
    ctx: Context,
    session: AsyncSession,
    channel: Channel,
    token_name: str,
    source: str,
    event_content: dict[str, Any],
    verdicts: list[Verdict],
    deciding: Verdict,
) -> tuple[HeldPost, Decision | None]:
    """What the gate does with a backstage post a hook flagged, for an API post."""
    author = f"{API_SOURCE_PREFIX}{token_name}"
    event = _as_event(channel, token_name, source, event_content)
    held = await record_held(ctx, session, channel, source, author, event, verdicts, deciding)
    if deciding.action == "hold":
        if channel.backstage_room_id:
            backstage = await session.get(Room, channel.backstage_room_id)
            lang = await language_for(session, ctx, channel.owner, room=backstage)
            reply(
                session,
                ctx,
                channel.backstage_room_id,
                lang,
                "mod_api_post_held",
                token=token_name,
                held=held.id,
                handle=channel.handle,
            )
        body = str(event_content.get("body", ""))
        text = t(
            ctx.config.default_language,
            "mod_held_api_post",
            held=held.id,
            handle=channel.handle,
            token=token_name,
            hook=deciding.hook,
            category=deciding.category,
            reason=deciding.reason,
            preview=body if len(body) <= 300 else body[:300] + "…",
        )
        await tell_moderators(ctx, session, text)
        return held, None
    decision = await record(
        ctx,
        session,
        kind=DecisionKind.REJECT_POST,
        decided_by=f"hook:{deciding.hook}",
        channel=channel,
        ground=Ground("terms", f"publication rules ({deciding.hook})"),
        explanation=deciding.reason,
        category=deciding.category,
        target=source,
        automated=True,
    )
    held.decision_id = decision.id
    return held, decision


def _rejection(deciding: Verdict, decision: Decision) -> ApiError:
    return ApiError(
        422,
        "rejected",
        f"Not published: the post {deciding.reason}.",
        hook=deciding.hook,
        category=deciding.category,
        decision=decision.id,
        statement=decision.statement.get("text", ""),
    )


# -- publishing -------------------------------------------------------------------------------------------


def _edited(current: dict[str, Any], text: str, html: str | None) -> dict[str, Any]:
    """The post's new content: new text (or caption) and formatting, media kept."""
    return with_text(current, _text_content(text, html, silent=False))


# -- idempotency ------------------------------------------------------------------------------------------


async def _replay(session: AsyncSession, token_id: int, key: str, fingerprint: str) -> web.Response | None:
    """The stored answer to an earlier request with this key, or None when there is none (or it expired)."""
    row = await session.get(ApiIdempotency, (token_id, key))
    if row is None or aware(row.created_at) < datetime.now(UTC) - IDEMPOTENCY_TTL:
        return None
    if row.request_hash != fingerprint:
        raise ApiError(
            409,
            "idempotency_key_reused",
            "This Idempotency-Key was used for a different request; use a new key for a new post.",
        )
    return web.json_response(row.response, status=row.status, headers={"Idempotent-Replayed": "true"})


async def _remember(
    session: AsyncSession, token_id: int, key: str, fingerprint: str, status: int, body: dict[str, Any]
) -> None:
    now = datetime.now(UTC)
    await session.execute(
        delete(ApiIdempotency).where(
            ApiIdempotency.token_id == token_id, ApiIdempotency.created_at < now - IDEMPOTENCY_TTL
        )
    )
    session.add(
        ApiIdempotency(
            token_id=token_id, key=key, request_hash=fingerprint, status=status, response=body, created_at=now
        )
    )
    await session.flush()  # a concurrent request with the same key fails here (primary key)


# -- the handlers -----------------------------------------------------------------------------------------


def _permalink(ctx: Context, channel: Channel, post_id: int) -> str:
    return f"{ctx.config.web_public_url}/c/{channel.handle}/{post_id}"


def _receipt(
    ctx: Context, channel: Channel, post: Post | None, status: str, held: HeldPost | None = None
) -> dict[str, Any]:
    return {
        "id": post.id if post is not None else None,
        "status": status,
        "event_id": post.relayed_event_id if post is not None else None,
        "url": _permalink(ctx, channel, post.id) if post is not None else None,
        "held_id": held.id if held is not None else None,
    }


async def _create_post(request: web.Request) -> web.Response:
    state = request.app[STATE]
    ctx = state.ctx
    token, channel = await _caller(request, write=True)
    key = _idempotency_key(request)
    draft = await _read_draft(request)
    if key is not None:
        async with ctx.sessions() as session:
            replayed = await _replay(session, token.id, key, draft.fingerprint)
        if replayed is not None:
            return replayed
    async with ctx.sessions() as session:
        await _refuse_if_restricted(session, channel)
        reply_source = None
        if draft.reply_to is not None:
            target = await session.get(Post, draft.reply_to)
            if target is None or target.channel_id != channel.id or target.redacted:
                raise ApiError(400, "unknown_reply_target", f"There is no post {draft.reply_to} to reply to.")
            reply_source = target.source_event_id
    content = draft.content
    if draft.upload is not None:
        content = _media_content(draft.upload, await _upload(state, channel, draft.upload))
    _check_size(content)
    source = f"{API_SOURCE_PREFIX}{uuid.uuid4()}"
    verdicts, deciding = await _screen(ctx, channel, _post_info(channel, token.name, source, content))
    try:
        async with ctx.sessions.begin() as session:
            current = await session.get(Channel, channel.id)
            assert current is not None
            status, body = await _store_new(
                ctx, session, current, token.name, source, content, reply_source, verdicts, deciding
            )
            if key is not None:
                await _remember(session, token.id, key, draft.fingerprint, status, body)
    except IntegrityError:
        if key is None:
            raise
        async with ctx.sessions() as session:  # the same key, sent twice at once: the first one won
            replayed = await _replay(session, token.id, key, draft.fingerprint)
        if replayed is None:
            raise
        return replayed
    ctx.outbox.wake()
    return web.json_response(body, status=status)


async def _store_new(
    ctx: Context,
    session: AsyncSession,
    channel: Channel,
    token_name: str,
    source: str,
    content: dict[str, Any],
    reply_source: str | None,
    verdicts: list[Verdict],
    deciding: Verdict | None,
) -> tuple[int, dict[str, Any]]:
    """Publish, hold or reject a new post; the status and body of the answer."""
    if deciding is None:
        post = await posts.publish_api_post(session, channel, token_name, source, content, reply_source)
        await posts.audit_api_post(ctx, session, channel, token_name, post.id, "create", "queued")
        return 201, _receipt(ctx, channel, post, "queued")
    event_content = dict(content)
    if reply_source is not None:
        event_content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_source}}
    held, decision = await _hold_or_reject(
        ctx, session, channel, token_name, source, event_content, verdicts, deciding
    )
    if decision is None:
        await posts.audit_api_post(ctx, session, channel, token_name, None, "create", "held", held=held.id)
        return 202, _receipt(ctx, channel, None, "held", held)
    await posts.audit_api_post(ctx, session, channel, token_name, None, "create", "rejected", decision=decision.id)
    return 422, _rejection(deciding, decision).body()


async def _own_post(session: AsyncSession, channel: Channel, post_id: int, *, change: bool) -> Post:
    post = await session.get(Post, post_id)
    if post is None or post.channel_id != channel.id or post.redacted:
        raise ApiError(404, "post_not_found", f"There is no post {post_id} in this channel.")
    if change and not post.via.startswith(API_SOURCE_PREFIX):
        raise ApiError(403, "not_an_api_post", "Only posts made through the API can be changed through it.")
    return post


async def _edit_post(request: web.Request) -> web.Response:
    ctx = request.app[STATE].ctx
    token, channel = await _caller(request, write=True)
    post_id = _post_id(request)
    data = await _read_json(request)
    _only(data, ("text", "html"))
    text = _required_string(data, "text", MAX_TEXT_CHARS)
    html = _string(data, "html", MAX_HTML_CHARS)
    async with ctx.sessions() as session:
        await _refuse_if_restricted(session, channel)
        post = await _own_post(session, channel, post_id, change=True)
    new_content = _edited(post.content or {}, text, html)
    _check_size(seam.edit_event_content(new_content, post.source_event_id))
    source = f"{API_SOURCE_PREFIX}{uuid.uuid4()}"
    verdicts, deciding = await _screen(ctx, channel, _post_info(channel, token.name, source, new_content))
    async with ctx.sessions.begin() as session:
        current = await session.get(Channel, channel.id)
        assert current is not None
        post = await _own_post(session, current, post_id, change=True)
        if deciding is None:
            await seam.edit(session, current, post, new_content)
            await posts.audit_api_post(ctx, session, current, token.name, post.id, "edit", "queued")
            status, body = 200, _receipt(ctx, current, post, "queued")
        else:
            held, decision = await _hold_or_reject(
                ctx,
                session,
                current,
                token.name,
                source,
                seam.edit_event_content(new_content, post.source_event_id),
                verdicts,
                deciding,
            )
            if decision is None:
                await posts.audit_api_post(ctx, session, current, token.name, post.id, "edit", "held", held=held.id)
                status, body = 202, _receipt(ctx, current, post, "held", held)
            else:
                await posts.audit_api_post(
                    ctx, session, current, token.name, post.id, "edit", "rejected", decision=decision.id
                )
                status, body = 422, _rejection(deciding, decision).body()
    ctx.outbox.wake()
    return web.json_response(body, status=status)


async def _delete_post(request: web.Request) -> web.Response:
    ctx = request.app[STATE].ctx
    token, channel = await _caller(request, write=True)
    post_id = _post_id(request)
    async with ctx.sessions.begin() as session:
        post = await _own_post(session, channel, post_id, change=True)
        await seam.retract(session, channel, post, None)
        await posts.audit_api_post(ctx, session, channel, token.name, post.id, "delete", "queued")
    ctx.outbox.wake()
    return web.Response(status=204)


def _post_json(ctx: Context, channel: Channel, post: Post, views: int | None = None) -> dict[str, Any]:
    content = post.content or {}
    body = content.get("body")
    formatted = content.get("formatted_body")
    html = formatted if content.get("format") == FORMAT_HTML and isinstance(formatted, str) else None
    media = None
    if isinstance(content.get("url"), str):
        info = content.get("info")
        info = info if isinstance(info, dict) else {}
        mimetype, size, filename = info.get("mimetype"), info.get("size"), content.get("filename")
        media = {
            "url": content["url"],
            "mimetype": mimetype if isinstance(mimetype, str) else None,
            "size": size if isinstance(size, int) and not isinstance(size, bool) else None,
            "filename": filename if isinstance(filename, str) else None,
        }
    msgtype = content.get("msgtype")
    return {
        "id": post.id,
        "created_at": _iso(post.created_at),
        "edited_at": _iso(post.edited_at) if post.edited_at is not None else None,
        "msgtype": msgtype if isinstance(msgtype, str) else post.event_type,
        "text": body if isinstance(body, str) else None,
        "html": html,
        "media": media,
        "url": _permalink(ctx, channel, post.id),
        "event_id": post.relayed_event_id,
        "views": views,
        "via": post.via,
    }


async def _list_posts(request: web.Request) -> web.Response:
    ctx = request.app[STATE].ctx
    _token, channel = await _caller(request, write=False)
    limit = DEFAULT_PAGE_SIZE
    if "limit" in request.query:
        limit = _positive_id(request.query["limit"], "'limit'")
        if limit > MAX_PAGE_SIZE:
            raise ApiError(400, "invalid_parameter", f"'limit' is at most {MAX_PAGE_SIZE}.")
    before = _positive_id(request.query["before"], "'before'") if "before" in request.query else None
    query = select(Post).where(Post.channel_id == channel.id, Post.redacted.is_(False))
    if before is not None:
        query = query.where(Post.id < before)
    async with ctx.sessions() as session:
        posts = (await session.scalars(query.order_by(Post.id.desc()).limit(limit))).all()
        views = await views_of(session, channel.id, [post.id for post in posts])
    return web.json_response(
        {
            "posts": [_post_json(ctx, channel, post, views[post.id]) for post in posts],
            "next_before": posts[-1].id if len(posts) == limit else None,
        }
    )


async def _get_post(request: web.Request) -> web.Response:
    ctx = request.app[STATE].ctx
    _token, channel = await _caller(request, write=False)
    post_id = _post_id(request)
    async with ctx.sessions() as session:
        post = await _own_post(session, channel, post_id, change=False)
        views = await views_of(session, channel.id, [post.id])
    return web.json_response(_post_json(ctx, channel, post, views[post.id]))


def _iso(value: datetime) -> str:
    return aware(value).astimezone(UTC).isoformat().replace("+00:00", "Z")
