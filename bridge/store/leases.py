"""Leases: one holder at a time for singleton work, handed over when a holder stops renewing (dies)."""

from __future__ import annotations

import os
import secrets
import socket
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, or_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .models import Lease

LEASE_SECONDS = 15.0


def new_holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Leases:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], holder: str, seconds: float = LEASE_SECONDS
    ) -> None:
        self.sessions = sessions
        self.holder = holder
        self.seconds = seconds

    async def hold(self, name: str) -> bool:
        """Take or renew the lease; False while another live holder has it."""
        now = datetime.now(UTC)
        expires = now + timedelta(seconds=self.seconds)
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

    async def release(self, name: str) -> None:
        async with self.sessions.begin() as session:
            await session.execute(delete(Lease).where(Lease.name == name, Lease.holder == self.holder))
