"""Asking an operator's moderation service about a post, signed per the Standard Webhooks specification.

    Kanal ── POST url ──────────────────────────────────────────────▶ the operator's service
             webhook-id: msg_…          (the same for every retry of one post)
             webhook-timestamp: 1614265330
             webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>
             {"type": "kanal.post.check", "timestamp": "…Z", "data": {"channel": …, "post": …}}
          ◀── 2xx {"action": "allow|hold|reject", "category": "…", "reason": "…"} ──

The key is the base64 after `whsec_` in the operator's secret. Anything but a well-formed 2xx answer
in time is a `WebhookFailure`, whose `reason` says what went wrong in words fit for a statement of
reasons (no addresses, never the secret):

    WebhookFailure
     ├── no answer in time            (the hook's timeout_ms, for the whole exchange)
     ├── could not connect            (DNS, refused, TLS, connection reset)
     ├── answered HTTP <status>       (not 2xx; redirects are not followed)
     └── answer not understood        (not a JSON object with a valid action, or too large)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

SIGNATURE_VERSION: Final = "v1"
SECRET_PREFIX: Final = "whsec_"  # noqa: S105 (how a secret starts, not a secret)
# The specification asks for secrets of 24 to 64 random bytes.
MIN_SECRET_BYTES: Final = 24
MAX_SECRET_BYTES: Final = 64
ANSWER_ACTIONS: Final = ("allow", "hold", "reject")
MAX_ANSWER_BYTES: Final = 64 * 1024
MAX_REASON_LENGTH: Final = 1000
# What a category looks like, in the config and in answers: spam, illegal_hate_speech, other…
CATEGORY: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
USER_AGENT: Final = "Kanal compliance webhook"


class WebhookFailure(Exception):
    """The service gave no usable answer; `reason` says why, for the verdict and the log."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail
        """More for the operator's log, such as the connection error; never the secret."""


@dataclass(frozen=True)
class Answer:
    action: str
    category: str | None
    reason: str | None


def decode_secret(secret: str) -> bytes:
    """The signing key in a Standard Webhooks secret (`whsec_` + base64); ValueError when malformed.

    The error message never repeats the secret.
    """
    problem = (
        f"must be a Standard Webhooks secret: {SECRET_PREFIX} followed by the base64 of "
        f"{MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} random bytes"
    )
    try:
        key = base64.b64decode(secret.strip().removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(problem) from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ValueError(f"{problem} (it holds {len(key)} bytes)")
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value for one message."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def verify(key: bytes, msg_id: str, timestamp: str, body: bytes, header: str) -> bool:
    """Whether any `v1` signature in `header` (space-separated) signs this message with `key`.

    What a receiver does (it should also refuse timestamps far from its clock, against replays).
    """
    if not timestamp.isdigit():
        return False
    expected = sign(key, msg_id, int(timestamp), body)
    return any(hmac.compare_digest(expected, given) for given in header.split())


class WebhookSender:
    """Sends signed webhook requests over one aiohttp session, opened at first use and closed by `close`."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def send(
        self, url: str, key: bytes, msg_id: str, timestamp: int, payload: dict[str, Any], timeout_s: float
    ) -> Answer:
        """POST `payload`, signed; the service's answer, or WebhookFailure."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(key, msg_id, timestamp, body),
        }
        try:
            async with self._session.post(
                url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as response:
                if not 200 <= response.status < 300:
                    raise WebhookFailure(f"answered HTTP {response.status}")
                raw = bytearray()
                async for chunk in response.content.iter_chunked(16 * 1024):
                    raw += chunk
                    if len(raw) > MAX_ANSWER_BYTES:
                        raise WebhookFailure(f"sent an answer larger than {MAX_ANSWER_BYTES} bytes")
        except TimeoutError:
            raise WebhookFailure(f"did not answer within {round(timeout_s * 1000)} ms") from None
        except aiohttp.ClientError as exc:
            raise WebhookFailure("could not be reached", detail=f"{type(exc).__name__}: {exc}") from None
        return parse_answer(bytes(raw))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def parse_answer(raw: bytes) -> Answer:
    """The service's JSON answer; WebhookFailure when it is not one Kanal understands."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise WebhookFailure("sent an answer that is not JSON") from None
    if not isinstance(data, dict) or data.get("action") not in ANSWER_ACTIONS:
        raise WebhookFailure(f"sent an answer without an action ({', '.join(ANSWER_ACTIONS)})")
    category = data.get("category")
    if category is not None and not (isinstance(category, str) and CATEGORY.fullmatch(category)):
        raise WebhookFailure("sent a category that is not a lower-case word such as spam")
    reason = data.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise WebhookFailure("sent a reason that is not text")
    if reason is not None:
        reason = reason[:MAX_REASON_LENGTH].strip() or None
    return Answer(str(data["action"]), category, reason)
