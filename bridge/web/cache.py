"""In-process caches of the web face, and the rule that keeps them honest.

    request ─▶ FreshReads.get(handle) ─▶ one small query, shared by the requests waiting for it
                  │                      (channel row + post aggregates = the version stamp)
                  ▼
            PageCache.get(key, version) ── same version ─▶ 304 or the cached bytes
                  │ other version / none
                  ▼
            query the posts, render, PageCache.put(key, page)

A cached page is served only when the version it was rendered at equals a version read from the
database *after* the request arrived (FreshReads never hands a request a read that started before
it), so an edit, a takedown or a suspension shows on the very next request, in every process.
Values that come from the homeserver (subscriber counts, avatars) live in `RefreshingCache` for a
minute and are part of the version too.

Reads go through `Reader`: one connection kept in autocommit mode, so that a read costs one round
trip (no pool checkout, no transaction to open and roll back) and always sees the latest commit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Generic, TypeVar

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import Executable

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

MAX_CACHED_PAGES: Final = 4096
MAX_CACHED_PAGE_BYTES: Final = 64 * 1024 * 1024


def _retrieve(task: asyncio.Task[object]) -> None:
    """Mark a task's failure as seen: every waiter may have gone (client disconnects)."""
    if not task.cancelled():
        task.exception()


class FreshReads(Generic[K, V]):
    """Single-flight reads that never predate the request.

    A request joins a read only if that read has not started yet; while one is running, the requests
    that arrive queue for the next one, which starts as soon as it ends. Under load one query answers
    many requests; a lone request costs one query, as it would without this.
    """

    def __init__(self, load: Callable[[K], Awaitable[V]]) -> None:
        self._load = load
        self._running: dict[K, asyncio.Task[V]] = {}
        self._queued: dict[K, asyncio.Task[V]] = {}

    async def get(self, key: K) -> V:
        task = self._queued.get(key)
        if task is None:
            running = self._running.get(key)
            if running is None:
                task = self._start(key)
            else:
                task = asyncio.ensure_future(self._after(running, key))
                task.add_done_callback(_retrieve)
                self._queued[key] = task
        return await asyncio.shield(task)

    def _start(self, key: K) -> asyncio.Task[V]:
        task = asyncio.ensure_future(self._load(key))
        self._running[key] = task
        task.add_done_callback(_retrieve)
        task.add_done_callback(lambda done: self._finished(key, done))
        return task

    def _finished(self, key: K, task: asyncio.Task[V]) -> None:
        if self._running.get(key) is task:
            del self._running[key]

    async def _after(self, running: asyncio.Task[V], key: K) -> V:
        await asyncio.wait([running])
        # From here on every request that joined this read arrived before it starts.
        current = asyncio.current_task()
        assert current is not None
        if self._queued.get(key) is current:
            del self._queued[key]
        self._running[key] = current
        try:
            return await self._load(key)
        finally:
            if self._running.get(key) is current:
                del self._running[key]


@dataclass(frozen=True)
class Page:
    """A rendered response and the version of the data it was rendered from."""

    status: int
    body: bytes
    headers: Mapping[str, str]
    etag: str  # quoted, as sent
    last_modified: datetime  # whole seconds, UTC
    version: Hashable


class PageCache:
    """Rendered pages by key (what was asked for), LRU-bounded in entries and bytes."""

    def __init__(self, max_entries: int = MAX_CACHED_PAGES, max_bytes: int = MAX_CACHED_PAGE_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.enabled = True
        self._pages: OrderedDict[Hashable, Page] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._pages)

    def get(self, key: Hashable, version: Hashable) -> Page | None:
        page = self._pages.get(key)
        if page is None or page.version != version or not self.enabled:
            return None
        self._pages.move_to_end(key)
        return page

    def last_modified(self, key: Hashable, changed: datetime) -> datetime:
        """A Last-Modified for a new rendering of `key`: `changed`, when what it shows last changed
        in the database, so a restart or an eviction does not make a page look new; but always later
        than the rendering it replaces, which differs from it (HTTP dates have whole seconds, and
        values read from the homeserver, such as subscriber counts, carry no change time)."""
        stamp = changed.astimezone(UTC).replace(microsecond=0)
        previous = self._pages.get(key)
        if previous is not None and previous.last_modified >= stamp:
            return previous.last_modified + timedelta(seconds=1)
        return stamp

    def put(self, key: Hashable, page: Page) -> None:
        if not self.enabled or len(page.body) > self.max_bytes:
            return
        old = self._pages.pop(key, None)
        if old is not None:
            self._bytes -= len(old.body)
        self._pages[key] = page
        self._bytes += len(page.body)
        while len(self._pages) > self.max_entries or self._bytes > self.max_bytes:
            _, evicted = self._pages.popitem(last=False)
            self._bytes -= len(evicted.body)

    def clear(self) -> None:
        self._pages.clear()
        self._bytes = 0


class RefreshingCache(Generic[K, V]):
    """Values fetched from elsewhere, fresh for `ttl` seconds and served stale while a refresh runs.

    A missing value is waited for at most `wait` seconds (then `fallback` is used). A failed fetch keeps
    the previous value, or stores `fallback`, and is retried after `retry` seconds. `generation` grows
    whenever a stored value changes, so pages built from many values can tell that one changed.
    """

    def __init__(
        self,
        fetch: Callable[[K], Awaitable[V]],
        *,
        fallback: V,
        ttl: float,
        wait: float,
        retry: float,
        fetch_timeout: float,
    ) -> None:
        self._fetch = fetch
        self.fallback = fallback
        self.ttl = ttl
        self.wait = wait
        self.retry = retry
        self.fetch_timeout = fetch_timeout
        self.generation = 0
        self._entries: dict[K, tuple[float, V]] = {}  # key -> (expires at, value)
        self._inflight: dict[K, asyncio.Task[V]] = {}

    async def get(self, key: K) -> V:
        entry = self._entries.get(key)
        if entry is not None:
            if time.monotonic() >= entry[0]:
                self._refresh(key)
            return entry[1]
        try:
            return await asyncio.wait_for(asyncio.shield(self._refresh(key)), self.wait)
        except TimeoutError:
            return self.fallback

    async def get_many(self, keys: Iterable[K]) -> dict[K, V]:
        unique = list(dict.fromkeys(keys))
        values = await asyncio.gather(*(self.get(key) for key in unique))
        return dict(zip(unique, values, strict=True))

    def peek(self, key: K) -> V | None:
        entry = self._entries.get(key)
        return entry[1] if entry is not None else None

    def refresh_stale(self, keys: Iterable[K]) -> None:
        """Start refreshing the values that are missing or past their time (without waiting)."""
        now = time.monotonic()
        for key in keys:
            entry = self._entries.get(key)
            if entry is None or now >= entry[0]:
                self._refresh(key)

    def items(self) -> list[tuple[K, V]]:
        return [(key, value) for key, (_, value) in self._entries.items()]

    def clear(self) -> None:
        self._entries.clear()

    async def close(self) -> None:
        """Stop the refreshes under way (at shutdown)."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _refresh(self, key: K) -> asyncio.Task[V]:
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._fetch_and_store(key))
            self._inflight[key] = task
            task.add_done_callback(_retrieve)
            task.add_done_callback(lambda _: self._inflight.pop(key, None))
        return task

    async def _fetch_and_store(self, key: K) -> V:
        expires = time.monotonic() + self.ttl
        try:
            value = await asyncio.wait_for(self._fetch(key), self.fetch_timeout)
        except Exception as exc:
            log.warning("cannot refresh %r: %r", key, exc)
            previous = self._entries.get(key)
            value = previous[1] if previous is not None else self.fallback
            expires = time.monotonic() + self.retry
        previous = self._entries.get(key)
        if previous is None or previous[1] != value:
            self.generation += 1
        self._entries[key] = (expires, value)
        return value


class Reader:
    """Runs the web face's reads on one dedicated autocommit connection, one read at a time.

    Each statement is its own transaction, so nothing pins an old snapshot between reads. A broken
    connection (database restarted) is dropped and reopened on the next read.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._connection: AsyncConnection | None = None
        self._lock = asyncio.Lock()

    async def rows(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> list[Row[Any]]:
        async with self._lock:
            if self._connection is None:
                connection = await self._engine.connect()
                self._connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
            try:
                result = await self._connection.execute(statement, dict(parameters or {}))
                return list(result.all())
            except BaseException:
                # A broken connection, or a read cancelled half-way: start again with a new one.
                await self._drop()
                raise

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                await connection.close()
            except Exception as exc:
                log.debug("closing a broken read connection: %r", exc)

    async def close(self) -> None:
        async with self._lock:
            await self._drop()
