"""The publishing API's rate limits: a token bucket per API token."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


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
