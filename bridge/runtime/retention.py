"""Retention: how long handled events and sent outbox entries are kept, and their pruning.

    inbound_events   handled (done/failed) rows: deleted once older than inbound_retention_days + 1 day
                     ── an event that old is ignored on arrival (`too_old`), so a redelivery or a
                     catch-up can never handle it a second time
    outbox           done/failed rows: deleted once older than outbox_retention_days (nothing reads
                     them after their outcome is recorded)
    both             pending rows are never deleted, nor a table's newest row: SQLite hands out
                     max(rowid)+1, so keeping the newest row keeps every id (and so every transaction
                     id `kanal-<id>`) from being used twice

Pruning runs in the housekeeping job (one process at a time), in small batches read by primary key,
so no statement holds a lock for long on SQLite or PostgreSQL. The tables' sizes for /metrics are
counted after each pruning round, and by a scrape only when the last count is a minute old (in a
process that does not prune): a scrape every 15 s costs no scan of a million-row table.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bridge.runtime.config import Config
from bridge.runtime.outbox import OutboxStatus, aware
from bridge.store.models import InboundEvent, InboundStatus, OutboxEntry

PRUNE_BATCH: Final = 500
# At most this many batches per table and round (a minute apart): a backlog drains over a few rounds.
MAX_BATCHES_PER_ROUND: Final = 100
# A pause between batches, so the event processor and the outbox get the database in between.
BATCH_PAUSE_S: Final = 0.01
# Handled events are kept a day longer than the age at which an arriving event is ignored: an event's
# timestamp is the sender's clock, its row's the database's; a day covers any clock that is roughly set.
CLOCK_MARGIN: Final = timedelta(days=1)
TABLES: Final = ("inbound_events", "outbox")
# How old the tables' row counts /metrics shows may be (a pruning round, a minute apart, recounts them).
ROW_COUNT_MAX_AGE_S: Final = 60.0


def too_old(origin_server_ts: int, config: Config, now: float | None = None) -> bool:
    """Whether an arriving event is past the dedupe horizon: its record may have been pruned, so it is
    ignored rather than risk handling it twice. An event without a timestamp (0) is never too old."""
    if origin_server_ts <= 0:
        return False
    now_ms = (time.time() if now is None else now) * 1000
    return origin_server_ts < now_ms - config.inbound_retention_days * 86_400_000


class RowCounts:
    """The rows in each pruned table, for /metrics: counted at most once per `max_age` seconds by
    readers (`current`), and whenever a pruning round ends (`refresh`)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        max_age: float = ROW_COUNT_MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sessions = sessions
        self.max_age = max_age
        self.clock = clock
        self._counts: dict[str, int] | None = None
        self._counted_at = 0.0
        self._lock = asyncio.Lock()

    async def current(self) -> dict[str, int]:
        """The last count, or a new one when there is none or it is older than `max_age`."""
        async with self._lock:  # scrapes at once count once
            if self._counts is not None and self.clock() - self._counted_at < self.max_age:
                return self._counts
            return await self._count()

    async def refresh(self) -> dict[str, int]:
        """Count now (after a pruning round changed the tables)."""
        async with self._lock:
            return await self._count()

    async def _count(self) -> dict[str, int]:
        counts = self._counts = await table_rows(self.sessions)
        self._counted_at = self.clock()
        return counts


class Pruner:
    """Deletes what retention no longer keeps; counts what it deleted and what is left (for /metrics)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], config: Config) -> None:
        self.sessions = sessions
        self.config = config
        self.pruned = dict.fromkeys(TABLES, 0)
        self.rows = RowCounts(sessions)

    async def prune(self, now: datetime | None = None) -> dict[str, int]:
        """One round over both tables; returns how many rows each lost."""
        now = now or datetime.now(UTC)
        inbound_cutoff = now - timedelta(days=self.config.inbound_retention_days) - CLOCK_MARGIN
        outbox_cutoff = now - timedelta(days=self.config.outbox_retention_days)
        done = {
            "inbound_events": await self._prune(
                InboundEvent.seq, InboundEvent.status, InboundStatus.PENDING, InboundEvent.received_at, inbound_cutoff
            ),
            "outbox": await self._prune(
                OutboxEntry.id, OutboxEntry.status, OutboxStatus.PENDING, OutboxEntry.created_at, outbox_cutoff
            ),
        }
        for table, count in done.items():
            self.pruned[table] += count
        await self.rows.refresh()
        return done

    async def _prune(self, key: Any, status: Any, pending: str, stamp: Any, cutoff: datetime) -> int:
        """Delete a table's settled rows older than `cutoff`, oldest first, a batch at a time.

        Rows are read in primary-key order (ids grow with time), so a batch reads the next ids after
        the last one seen and stops at the first row young enough to keep.
        """
        deleted = 0
        after = 0
        async with self.sessions() as session:
            newest = await session.scalar(select(func.max(key)))
        if newest is None:
            return 0
        for _ in range(MAX_BATCHES_PER_ROUND):
            async with self.sessions() as session:
                rows = (
                    await session.execute(
                        select(key, status, stamp).where(key > after, key < newest).order_by(key).limit(PRUNE_BATCH)
                    )
                ).all()
            if not rows:
                break
            old = [row[0] for row in rows if row[1] != pending and aware(row[2]) < cutoff]
            young = any(aware(row[2]) >= cutoff for row in rows)
            if old:
                async with self.sessions.begin() as session:
                    result = await session.execute(
                        delete(key.class_).where(key.in_(old), status != pending, key < newest),
                        execution_options={"synchronize_session": False},
                    )
                    deleted += result.rowcount  # type: ignore[attr-defined]
            if young or len(rows) < PRUNE_BATCH:
                break
            after = rows[-1][0]
            await asyncio.sleep(BATCH_PAUSE_S)
        return deleted


async def table_rows(sessions: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    """Rows in each pruned table now: a scan of each (RowCounts keeps the result)."""
    async with sessions() as session:
        inbound = await session.scalar(select(func.count()).select_from(InboundEvent))
        outbox = await session.scalar(select(func.count()).select_from(OutboxEntry))
    return {"inbound_events": int(inbound or 0), "outbox": int(outbox or 0)}
