"""`kanal migrate-db`: copy a deployment's data from its database (SQLite) into a new PostgreSQL one."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import TextIO

from sqlalchemy import Table, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.store.db import create_engine, migrate
from bridge.store.models import Base, Lease

BATCH_ROWS = 1000
# Parents before children (foreign keys); leases are per running process and are not copied.
SKIPPED_TABLES = {"leases", "alembic_version"}


class MigrationError(Exception):
    """The copy cannot start or finish; the message says why."""


class Progress:
    """A one-line progress bar on a terminal, plain lines elsewhere."""

    def __init__(self, stream: TextIO = sys.stderr, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.tty = stream.isatty()

    def update(self, table: str, done: int, total: int) -> None:
        if not self.tty and done not in (0, total):
            return
        filled = self.width if total == 0 else self.width * done // total
        bar = "#" * filled + "." * (self.width - filled)
        end = "\r" if self.tty and done < total else "\n"
        self.stream.write(f"{table:<16} [{bar}] {done}/{total}{end}")
        self.stream.flush()


def _tables() -> list[Table]:
    return [t for t in Base.metadata.sorted_tables if t.name not in SKIPPED_TABLES]


async def _refuse_if_running(source: AsyncEngine) -> None:
    async with source.connect() as connection:
        holder = (
            await connection.execute(select(Lease.holder).where(Lease.expires_at > datetime.now(UTC)))
        ).first()
    if holder is not None:
        raise MigrationError(f"Kanal is still running ({holder[0]} holds a lease); stop it before copying")


async def _refuse_if_not_empty(target: AsyncEngine) -> None:
    async with target.connect() as connection:
        for table in _tables():
            count = (await connection.execute(select(func.count()).select_from(table))).scalar_one()
            if count:
                raise MigrationError(
                    f"the target database already has data (table {table.name}: {count} rows)"
                )


async def copy_database(source_url: str, target_url: str, progress: Progress | None = None) -> dict[str, int]:
    """Copy every table in batches; returns rows copied per table."""
    progress = progress or Progress()
    source, target = create_engine(source_url), create_engine(target_url)
    copied: dict[str, int] = {}
    try:
        await migrate(source)
        await _refuse_if_running(source)
        await migrate(target)
        await _refuse_if_not_empty(target)
        async with source.connect() as src, target.begin() as dst:
            for table in _tables():
                total = (await src.execute(select(func.count()).select_from(table))).scalar_one()
                progress.update(table.name, 0, total)
                done = 0
                key = list(table.primary_key.columns)
                result = await src.stream(select(table).order_by(*key))
                async for batch in result.partitions(BATCH_ROWS):
                    rows = [dict(row._mapping) for row in batch]
                    await dst.execute(insert(table), rows)
                    done += len(rows)
                    progress.update(table.name, done, total)
                copied[table.name] = done
            if target.dialect.name == "postgresql":
                for table in _tables():
                    for column in table.primary_key.columns:
                        if column.autoincrement is True:
                            # New rows must not reuse the ids just copied.
                            await dst.execute(
                                text(
                                    f"SELECT setval(pg_get_serial_sequence('{table.name}', '{column.name}'), "  # noqa: S608 (names from our own metadata)
                                    f"COALESCE(MAX({column.name}), 1), MAX({column.name}) IS NOT NULL) FROM {table.name}"
                                )
                            )
    finally:
        await source.dispose()
        await target.dispose()
    return copied
