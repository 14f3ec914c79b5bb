"""Kanal's SQLite connections (bridge.store.db): statements on the event loop, waits in a thread.

The engine behaves as SQLAlchemy's own aiosqlite engine does: results of any size (fetched in chunks
past the first), streamed results, executemany, rowcount and lastrowid, transactions committed and
rolled back, and sessions that only read end without a trip. A write that finds the database locked
by another connection waits in its thread while the loop lets the other finish; the WAL is
checkpointed in the thread every CHECKPOINT_EVERY commits.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.store import db

METADATA = MetaData()
ITEMS = Table("items", METADATA, Column("id", Integer, primary_key=True), Column("name", String(32)))


async def _engine(tmp_path: Path) -> AsyncEngine:
    engine = db.create_engine(f"sqlite:///{tmp_path / 'driver.db'}")
    async with engine.begin() as connection:
        await connection.run_sync(METADATA.create_all)
    return engine


async def test_results_of_every_size_and_streams(tmp_path: Path) -> None:
    engine = await _engine(tmp_path)
    try:
        count = db.FETCH_CHUNK * 2 + 7
        async with engine.begin() as connection:
            await connection.execute(insert(ITEMS), [{"name": f"n{i}"} for i in range(count)])
        async with engine.connect() as connection:
            rows = (await connection.execute(select(ITEMS.c.id).order_by(ITEMS.c.id))).all()
            assert [r.id for r in rows] == list(range(1, count + 1))
            assert await connection.scalar(select(func.count()).select_from(ITEMS)) == count
            streamed = await connection.stream(select(ITEMS.c.name).order_by(ITEMS.c.id))
            names = [row.name async for row in streamed]
            assert names == [f"n{i}" for i in range(count)]
            one = (await connection.execute(select(ITEMS.c.name).where(ITEMS.c.id == 5))).one()
            assert one.name == "n4"
    finally:
        await engine.dispose()


async def test_rowcount_lastrowid_commit_and_rollback(tmp_path: Path) -> None:
    engine = await _engine(tmp_path)
    try:
        async with engine.begin() as connection:
            result = await connection.execute(insert(ITEMS).values(name="a"))
            assert result.inserted_primary_key == (1,)
            await connection.execute(insert(ITEMS), [{"name": "b"}, {"name": "c"}])
            changed = await connection.execute(update(ITEMS).where(ITEMS.c.id > 1).values(name="z"))
            assert changed.rowcount == 2
        async with engine.connect() as connection:
            await connection.execute(update(ITEMS).values(name="rolled back"))
            await connection.rollback()
            names = (await connection.scalars(select(ITEMS.c.name).order_by(ITEMS.c.id))).all()
            assert names == ["a", "z", "z"]
            # A session that only read ends without a trip; the next one sees committed data.
            assert await connection.scalar(text("SELECT count(*) FROM items")) == 3
            await connection.commit()
        async with engine.connect() as connection:
            raw = await connection.get_raw_connection()
            raw_connection = raw.driver_connection
            assert isinstance(raw_connection, db.OneTripConnection)
            await connection.scalar(select(ITEMS.c.id).limit(1))
            assert raw_connection._in_transaction is False  # a read opens no transaction
            await connection.execute(update(ITEMS).where(ITEMS.c.id == 1).values(name="b"))
            assert raw_connection._in_transaction is True
            await connection.commit()
            assert raw_connection._in_transaction is False
    finally:
        await engine.dispose()


async def test_errors_reach_the_caller_and_the_connection_stays_usable(tmp_path: Path) -> None:
    engine = await _engine(tmp_path)
    try:
        async with engine.connect() as connection:
            try:
                await connection.execute(text("SELECT * FROM no_such_table"))
            except Exception as exc:
                assert "no_such_table" in str(exc)
            else:
                raise AssertionError("the statement should have failed")
            await connection.rollback()
            assert await connection.scalar(text("SELECT 1")) == 1
    finally:
        await engine.dispose()


async def test_a_write_waits_for_another_connections_lock_without_holding_up_the_loop(tmp_path: Path) -> None:
    engine = await _engine(tmp_path)
    try:
        async with engine.connect() as holder, engine.connect() as waiter:
            await holder.execute(insert(ITEMS).values(name="first"))  # holds SQLite's write lock
            # The second connection's write finds the database locked: it must wait (in its thread),
            # not fail, and not block the loop, or the holder could never commit (a deadlock).
            second = asyncio.create_task(waiter.execute(insert(ITEMS).values(name="second")))
            await asyncio.sleep(0.2)
            assert not second.done()
            await holder.commit()
            await asyncio.wait_for(second, 10)
            await waiter.commit()
        async with engine.connect() as connection:
            names = (await connection.scalars(select(ITEMS.c.name).order_by(ITEMS.c.id))).all()
        assert names == ["first", "second"]
    finally:
        await engine.dispose()


async def test_the_wal_is_checkpointed_every_so_many_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "CHECKPOINT_EVERY", 4)
    engine = await _engine(tmp_path)
    monkeypatch.setattr(db.OneTripConnection, "_commits", 0)

    def in_database_file() -> int:
        """Rows in the database file itself, WAL ignored (what a checkpoint has copied there)."""
        connection = sqlite3.connect(f"file:{tmp_path / 'driver.db'}?immutable=1", uri=True)
        try:
            try:
                return int(connection.execute("SELECT count(*) FROM items").fetchone()[0])
            except sqlite3.OperationalError:  # the table itself is still only in the WAL
                return 0
        finally:
            connection.close()

    try:
        async with engine.connect() as connection:
            assert await connection.scalar(text("PRAGMA wal_autocheckpoint")) == 0
        for name in ("a", "b", "c"):  # commits 1 to 3: in the WAL only
            async with engine.begin() as connection:
                await connection.execute(insert(ITEMS).values(name=name))
        assert in_database_file() == 0
        async with engine.begin() as connection:  # commit 4: then a checkpoint
            await connection.execute(insert(ITEMS).values(name="d"))
        assert in_database_file() == 4
    finally:
        await engine.dispose()
