"""Sending from a shell command (`kanal hosting apply`, `kanal import`): who drains the outbox.

With PostgreSQL this process runs an outbox worker beside any running Kanal (entries are claimed with
row locks, so each is sent once). With SQLite the claims are in memory and only one process may
send: while a running Kanal renews its lease, it sends and we wait; otherwise this process sends
(everything due, as `kanal run` would at start), and stops when a Kanal starts.

    async with sending(ctx, "import"):      a watcher starts or stops this process's worker
        queue entries …, wait for them …    as a running Kanal comes and goes (SQLite)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Final

from sqlalchemy import select

from bridge.runtime.context import Context
from bridge.runtime.outbox import OutboxWorker
from bridge.store.models import Lease

log = logging.getLogger(__name__)

WATCH_INTERVAL_S: Final = 0.25


async def live_lease_holder(ctx: Context) -> str | None:
    """Another Kanal process that is running (it renews its leases), if any."""
    async with ctx.sessions() as session:
        holder: str | None = await session.scalar(
            select(Lease.holder).where(Lease.expires_at > datetime.now(UTC)).limit(1)
        )
    return holder


def sibling(worker: OutboxWorker) -> OutboxWorker:
    """A fresh worker sending exactly what `worker` sends (same executors, same claims)."""
    other = OutboxWorker(worker.sessions, worker.client, row_locks=worker.row_locks)
    other.executors = dict(worker.executors)
    return other


class _Sender:
    def __init__(self, ctx: Context, name: str) -> None:
        self.ctx = ctx
        self.name = name
        self.running: tuple[OutboxWorker, asyncio.Task[None]] | None = None
        self.announced = False

    async def check(self) -> None:
        others = None if self.ctx.outbox.row_locks else await live_lease_holder(self.ctx)
        if others is None and self.running is None:
            worker = sibling(self.ctx.outbox)
            self.running = worker, asyncio.create_task(worker.run(), name=f"{self.name}-outbox")
        elif others is not None and (self.running is not None or not self.announced):
            log.info("Kanal is running (%s) on this SQLite database; it sends what %s queues", others, self.name)
            self.announced = True
            await self.stop()

    def wake(self) -> None:
        if self.running is not None:
            self.running[0].wake()

    async def stop(self) -> None:
        if self.running is not None:
            worker, task = self.running
            self.running = None
            worker.stop()
            await task

    async def watch(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(WATCH_INTERVAL_S)


@contextlib.asynccontextmanager
async def sending(ctx: Context, name: str) -> AsyncIterator[_Sender]:
    """While inside, what is queued is sent: by this process, or by a running Kanal (SQLite)."""
    sender = _Sender(ctx, name)
    await sender.check()
    watcher = asyncio.create_task(sender.watch(), name=f"{name}-sender")
    try:
        yield sender
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await sender.stop()
