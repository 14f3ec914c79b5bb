"""Private channels and invite links, the pure parts: tokens, `!link new` options, link state, the
room state that makes a channel private, and rate limits. No I/O (see private.py and web/join.py).

A link is `<web.public_url>/join/<token>` with a token `kanal_inv_` + 18 random bytes (URL-safe
base64). Only its SHA-256 is stored (registry.hash_token); the clear token is shown once. The same
token written in a knock's reason counts as the link: a reader with a Matrix client and no browser
can knock on `#handle:domain` and paste the link (or the token) as the reason.
"""

from __future__ import annotations

import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from bridge.runtime.outbox import aware
from bridge.text.commands import parse_duration

LINK_TOKEN_PREFIX: Final = "kanal_inv_"  # noqa: S105 (a prefix, not a secret)
LINK_TOKEN_BYTES: Final = 18
# The token in a URL path or a knock's reason: the prefix and 24 URL-safe base64 characters.
LINK_TOKEN: Final = re.compile(r"kanal_inv_[A-Za-z0-9_-]{24}(?![A-Za-z0-9_-])")
MAX_LINK_USES: Final = 1_000_000
MAX_LINK_LIFETIME: Final = timedelta(days=3650)
MAX_ACTIVE_LINKS_PER_CHANNEL: Final = 50
MAX_PENDING_REQUESTS_PER_CHANNEL: Final = 500
MAX_REASON_LENGTH: Final = 300
MAX_USER_ID_LENGTH: Final = 255


def new_link_token() -> str:
    return LINK_TOKEN_PREFIX + secrets.token_urlsafe(LINK_TOKEN_BYTES)


def is_link_token(text: str) -> bool:
    return LINK_TOKEN.fullmatch(text) is not None


def tokens_in(text: str) -> list[str]:
    """Every invite-link token written in `text` (a knock's reason: the token or the whole link)."""
    return LINK_TOKEN.findall(text)


def without_tokens(text: str) -> str:
    """A knock's reason as backstage may see it: the tokens (and links carrying them) cut out."""
    cleaned = re.sub(r"\S*kanal_inv_[A-Za-z0-9_-]+\S*", "…", text)
    return " ".join(cleaned.split())[:MAX_REASON_LENGTH]


@dataclass(frozen=True)
class LinkOptions:
    """What `!link new [--expires 7d] [--uses 100] [--approve]` asks for."""

    expires_in: timedelta | None = None
    uses: int | None = None
    approval: bool = False


class LinkOptionError(ValueError):
    """`!link new` options that cannot be used; the message says which and why."""


def parse_link_options(args: tuple[str, ...]) -> LinkOptions:
    """`("--expires", "7d", "--uses", "100", "--approve")` → LinkOptions; `--expires=7d` works too."""
    expires: timedelta | None = None
    uses: int | None = None
    approval = False
    words = list(args)
    while words:
        word = words.pop(0)
        name, _, inline = word.partition("=")
        name = name.lower()
        if name == "--approve" and not inline:
            approval = True
            continue
        if name not in ("--expires", "--uses"):
            raise LinkOptionError(f"unknown option {word[:32]!r}")
        value = inline or (words.pop(0) if words else "")
        if not value:
            raise LinkOptionError(f"{name} needs a value")
        if name == "--expires":
            try:
                expires = parse_duration(value)
            except ValueError as exc:
                raise LinkOptionError(str(exc)) from None
            if expires > MAX_LINK_LIFETIME:
                raise LinkOptionError("--expires is at most 3650d")
        else:
            if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= MAX_LINK_USES:
                raise LinkOptionError(f"--uses takes a number from 1 to {MAX_LINK_USES}")
            uses = int(value)
    return LinkOptions(expires, uses, approval)


def link_state(link: Any, now: datetime) -> str:
    """`active`, `revoked`, `expired` or `used_up` (revocation first: it is the owner's word)."""
    if link.revoked:
        return "revoked"
    if link.expires_at is not None and aware(link.expires_at) <= now:
        return "expired"
    if link.uses_allowed is not None and link.uses >= link.uses_allowed:
        return "used_up"
    return "active"


def join_url(public_url: str, token: str) -> str:
    return f"{public_url.rstrip('/')}/join/{token}"


@dataclass(frozen=True)
class Rate:
    """`per_minute` on average, up to `burst` at once."""

    per_minute: float
    burst: float


class RateLimiter:
    """Token buckets by key (an IP address, a link), in memory, at most `max_keys` remembered.

    The least recently used keys are forgotten first; a forgotten key starts with a full bucket,
    which only ever errs on the side of letting a reader in.
    """

    def __init__(self, rate: Rate, *, max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self._per_second = rate.per_minute / 60.0
        self._burst = rate.burst
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float:
        """Take one from `key`'s bucket: 0 when allowed, else the seconds until it would be."""
        now = self._clock()
        level, when = self._buckets.pop(key, (self._burst, now))
        level = min(self._burst, level + (now - when) * self._per_second)
        wait = 0.0
        if level >= 1.0:
            level -= 1.0
        else:
            wait = (1.0 - level) / self._per_second
        self._buckets[key] = (level, now)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._buckets)
