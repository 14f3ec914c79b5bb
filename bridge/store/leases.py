"""Leases: one holder at a time for singleton work, handed over when a holder stops renewing (dies).

Marks share the table: a name with an expiry and no holder, which every process can extend and read
(e.g. "check the delivery order until …", set by whichever process saw a failed delivery).
"""

from __future__ import annotations

import os
import secrets
import socket
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bridge.store.models import Lease

LEASE_SECONDS = 15.0
MARK = "(mark)"  # the holder of a mark's row: no process, so `hold` never matches it


def new_holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Leases:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], holder: str, seconds: float = LEASE_SECONDS
    ) -> None:
        self.sessions = sessions
        self.holder = holder
        self.seconds = seconds
        self._held_until: dict[str, datetime] = {}

    async def hold(self, name: str) -> bool:
        """Take or renew the lease; False while another live holder has it.

        A lease held with more than half its time left is not written again (the hot path).
        """
        now = datetime.now(UTC)
        held = self._held_until.get(name)
        if held is not None and (held - now).total_seconds() > self.seconds / 2:
            return True
        expires = now + timedelta(seconds=self.seconds)
        taken = await self._take(name, now, expires)
        if taken:
            self._held_until[name] = expires
        else:
            self._held_until.pop(name, None)
        return taken

    async def _take(self, name: str, now: datetime, expires: datetime) -> bool:
        async with self.sessions.begin() as session:
            result = await session.execute(
                update(Lease)
                .where(Lease.name == name, or_(Lease.holder == self.holder, Lease.expires_at < now))
                .values(holder=self.holder, expires_at=expires)
            )
            if result.rowcount == 1:  # type: ignore[attr-defined]
                return True
            if await session.get(Lease, name) is not None:
                return False
        try:
            async with self.sessions.begin() as session:
                session.add(Lease(name=name, holder=self.holder, expires_at=expires))
        except IntegrityError:
            return False  # another process created it first
        return True

    async def mark(self, name: str, seconds: float) -> None:
        """Note until when something holds for every process (a row no holder takes: it only expires)."""
        until = datetime.now(UTC) + timedelta(seconds=seconds)
        async with self.sessions.begin() as session:
            result = await session.execute(
                update(Lease).where(Lease.name == name, Lease.holder == MARK).values(expires_at=until)
            )
            if result.rowcount == 1:  # type: ignore[attr-defined]
                return
        try:
            async with self.sessions.begin() as session:
                session.add(Lease(name=name, holder=MARK, expires_at=until))
        except IntegrityError:
            await self.mark(name, seconds)  # another process created it first: extend theirs

    async def marked(self, name: str) -> float:
        """Seconds left of a mark (0 when there is none or it expired)."""
        async with self.sessions() as session:
            until = await session.scalar(select(Lease.expires_at).where(Lease.name == name, Lease.holder == MARK))
        if until is None:
            return 0.0
        if until.tzinfo is None:  # SQLite keeps no zone
            until = until.replace(tzinfo=UTC)
        return max(0.0, (until - datetime.now(UTC)).total_seconds())

    async def release(self, name: str) -> None:
        self._held_until.pop(name, None)
        async with self.sessions.begin() as session:
            await session.execute(delete(Lease).where(Lease.name == name, Lease.holder == self.holder))
