"""What a listener logs about its clients' doing: one short line, at most one per source and minute.

A client that drops its connection mid-request, or a transaction full of malformed events, is the
client's doing, not a fault of Kanal's: it costs one line without a traceback. A source that keeps at
it costs one line per `SOURCE_INTERVAL_S`, and that line says how many like it were held back; many
sources at once cost at most `MAX_LINES_PER_INTERVAL` lines. Kanal's own faults keep their tracebacks
(`log.exception` where they are caught). Both listeners use this: the homeserver's (`server.py`) and
the public web listener.

Lines name the route's pattern, never the URL (paths may carry tokens), and never the client's address.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

SOURCE_INTERVAL_S = 60.0
MAX_SOURCES = 10_000  # sources remembered; the one heard from least recently is forgotten first
MAX_LINES_PER_INTERVAL = 100  # across all sources: many addresses at once cannot flood the log either


@dataclass
class _Window:
    since: float
    held: int = 0


class ThrottledLog:
    """Log lines keyed by source: the first in an interval is written, the rest counted into the next."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval_s: float = SOURCE_INTERVAL_S,
        max_sources: int = MAX_SOURCES,
        max_lines: int = MAX_LINES_PER_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self._interval = interval_s
        self._max_sources = max_sources
        self._max_lines = max_lines
        self._clock = clock
        self._windows: OrderedDict[tuple[str, str], _Window] = OrderedDict()
        self._budget = _Window(float("-inf"))  # this interval, for all sources: its start, lines held back
        self._budget_used = 0

    def log(self, level: int, source: str, message: str, *args: object) -> bool:
        """Write `message % args` unless `source` had a line like it within the interval (True: written)."""
        if not self.logger.isEnabledFor(level):
            return False
        now = self._clock()
        key = (source, message)
        window = self._windows.get(key)
        if window is not None and now - window.since < self._interval:
            window.held += 1
            self._windows.move_to_end(key)
            return False
        dropped = 0
        if now - self._budget.since >= self._interval:
            dropped = self._budget.held
            self._budget, self._budget_used = _Window(now), 0
        if self._budget_used >= self._max_lines:
            self._budget.held += 1
            return False
        held = window.held if window is not None else 0
        self._windows[key] = _Window(now)
        self._windows.move_to_end(key)
        while len(self._windows) > self._max_sources:
            self._windows.popitem(last=False)
        self._budget_used += 1
        if held:
            message += " (%d more like it from the same address held back)"
            args = (*args, held)
        if dropped:
            message += " (%d lines from many addresses held back before)"
            args = (*args, dropped)
        self.logger.log(level, message, *args)
        return True


def client_went_away(request: web.Request, exc: BaseException) -> bool:
    """True when `exc` is the client's connection ending mid-request, not a fault of ours.

    A connection error with the client still connected (a database or an upstream reset) is ours.
    """
    transport = request.transport
    return isinstance(exc, ConnectionError) and (transport is None or transport.is_closing())


def route_of(request: web.Request) -> str:
    """The route's pattern (`/join/{token}`), not the URL: a path may carry a token."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "(no route)"


def disconnects(clients: ThrottledLog, level: int) -> Middleware:
    """A middleware that answers for a client gone mid-request with one throttled line, no traceback."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ConnectionError as exc:
            if not client_went_away(request, exc):
                raise
            clients.log(
                level,
                request.remote or "?",
                "%s %s: the client closed the connection before the request was done",
                request.method,
                route_of(request),
            )
            return web.Response(status=400)  # nobody reads it: the connection is closed

    return middleware
