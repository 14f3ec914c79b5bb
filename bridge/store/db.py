"""The database engine: SQLite (embedded default) or PostgreSQL, migrated to the newest schema at start.

SQLite runs through aiosqlite: one thread per connection, each call a trip from the event loop to
that thread and back. SQLAlchemy's adapter makes three or four trips per statement (open a cursor,
execute, fetch, close) and one for every commit and rollback, even of a connection that wrote nothing;
those trips, not SQLite, were most of Kanal's CPU per relayed post. `_OneTripConnection` makes it one
trip per statement (execute and fetch together; results of more than a chunk are still fetched chunk
by chunk) and none for ending a transaction that never began. The same statements run in the same
thread on the same connection, in the same transactions.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import aiosqlite
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_TIMEOUT_S = 30.0
FETCH_CHUNK = 1000


class _OneTripCursor:
    """What SQLAlchemy's aiosqlite adapter needs of a cursor, one trip to the thread per statement."""

    def __init__(self, connection: _OneTripConnection) -> None:
        self._connection = connection
        self._open: sqlite3.Cursor | None = None  # rows left to fetch (a result larger than a chunk)
        self._rows: list[Any] = []
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.arraysize = 1

    async def __aenter__(self) -> _OneTripCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def execute(self, sql: str, parameters: Any = ()) -> _OneTripCursor:
        await self._run(sql, parameters, many=False)
        return self

    async def executemany(self, sql: str, parameters: Any) -> _OneTripCursor:
        await self._run(sql, parameters, many=True)
        return self

    async def _run(self, sql: str, parameters: Any, *, many: bool) -> None:
        await self.close()
        conn = self._connection

        def run() -> tuple[Any, int, int | None, list[Any], sqlite3.Cursor | None, bool]:
            cursor = conn._conn.cursor()
            try:
                if many:
                    cursor.executemany(sql, parameters)
                else:
                    cursor.execute(sql, parameters)
                rows: list[Any] = cursor.fetchmany(FETCH_CHUNK) if cursor.description else []
                more = len(rows) == FETCH_CHUNK
            except BaseException:
                cursor.close()
                raise
            if not more:
                cursor.close()
            return (
                cursor.description,
                cursor.rowcount,
                cursor.lastrowid,
                rows,
                cursor if more else None,
                conn._conn.in_transaction,
            )

        self.description, self.rowcount, self.lastrowid, self._rows, self._open, in_txn = await conn._call(
            run
        )
        conn._in_transaction = in_txn

    async def _fetch_more(self, size: int | None) -> None:
        cursor = self._open
        if cursor is None:
            return

        def fetch() -> list[Any]:
            rows = cursor.fetchall() if size is None else cursor.fetchmany(size)
            if size is None or len(rows) < size:
                cursor.close()
            return rows

        rows = await self._connection._call(fetch)
        if size is None or len(rows) < size:
            self._open = None
        self._rows.extend(rows)

    async def fetchall(self) -> list[Any]:
        await self._fetch_more(None)
        rows, self._rows = self._rows, []
        return rows

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        size = size or self.arraysize
        if len(self._rows) < size:
            await self._fetch_more(max(size - len(self._rows), FETCH_CHUNK))
        rows, self._rows = self._rows[:size], self._rows[size:]
        return rows

    async def fetchone(self) -> Any:
        rows = await self.fetchmany(1)
        return rows[0] if rows else None

    async def close(self) -> None:
        self._rows = []
        cursor, self._open = self._open, None
        if cursor is not None:
            await self._connection._call(cursor.close)


class _OneTripConnection(aiosqlite.Connection):
    """An aiosqlite connection whose cursors make one trip per statement, and which skips the trip
    for a commit or rollback when SQLite has no transaction open (sqlite3 would do nothing then)."""

    def __init__(self, database: str) -> None:
        super().__init__(lambda: sqlite3.connect(database, timeout=SQLITE_TIMEOUT_S), iter_chunk_size=64)
        # As SQLAlchemy makes aiosqlite's own threads: a connection never closed must not keep the
        # process from exiting.
        self._thread.daemon = True
        # Whether SQLite may have a transaction open: known after each of our own calls; any other
        # call through aiosqlite (isolation level, functions, …) makes it "maybe" again.
        self._in_transaction = True

    async def _execute(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self._in_transaction = True
        return await super()._execute(fn, *args, **kwargs)  # type: ignore[no-untyped-call]

    async def _call(self, fn: Any) -> Any:
        return await super()._execute(fn)  # type: ignore[no-untyped-call]

    def cursor(self) -> _OneTripCursor:  # type: ignore[override]
        return _OneTripCursor(self)

    async def commit(self) -> None:
        await self._end(sqlite3.Connection.commit)

    async def rollback(self) -> None:
        await self._end(sqlite3.Connection.rollback)

    async def _end(self, how: Any) -> None:
        if not self._in_transaction:
            return
        conn = self._conn

        def end() -> bool:
            how(conn)
            return conn.in_transaction

        self._in_transaction = await self._call(end)


def _sqlite_database(url: str) -> str:
    """The file SQLAlchemy's SQLite dialects would open for the URL (absolute), or ":memory:"."""
    database = make_url(url).database or ":memory:"
    return database if database == ":memory:" else os.path.abspath(database)


def _one_trip_creator(database: str) -> Any:
    def connect() -> _OneTripConnection:
        return _OneTripConnection(database)

    return connect


def async_driver_url(url: str) -> str:
    """`sqlite:///…` and `postgresql://…` as operators write them, with the async drivers Kanal uses."""
    for plain, driver in (
        ("sqlite://", "sqlite+aiosqlite://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    return url


def create_engine(url: str) -> AsyncEngine:
    url = async_driver_url(url)
    if url.startswith("sqlite"):
        engine = create_async_engine(url, async_creator=_one_trip_creator(_sqlite_database(url)))

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            # WAL lets readers run beside the writer; NORMAL is durable across process crashes in WAL mode.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(connection: Connection | None = None) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)
