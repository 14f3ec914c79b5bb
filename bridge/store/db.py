"""The database engine: SQLite (embedded default) or PostgreSQL, migrated to the newest schema at start.

SQLite runs through aiosqlite: one thread per connection, each call a trip from the event loop to
that thread and back. SQLAlchemy's adapter makes three or four trips per statement (open a cursor,
execute, fetch, close) and one for every commit and rollback, even of a connection that wrote nothing;
those trips, not SQLite, were most of Kanal's CPU per relayed post. `OneTripConnection` runs each
statement (execute and its first rows together), fetch and commit on the event loop's thread instead:
SQLite answers from its page cache in microseconds, and in WAL mode with `synchronous=NORMAL` a commit
appends to the WAL without an fsync. What could wait goes to the connection's thread: a statement that
finds the database locked by another connection (waited for there, up to SQLITE_TIMEOUT_S), and the
WAL checkpoint (with its fsync), run after every CHECKPOINT_EVERY commits instead of inside a commit.
Ending a transaction that never began costs nothing.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_TIMEOUT_S = 30.0
FETCH_CHUNK = 1000
CHECKPOINT_EVERY = 500  # commits (of all connections) between checkpoints of the WAL


class _OneTripCursor:
    """What SQLAlchemy's aiosqlite adapter needs of a cursor: a statement and its first rows in one call."""

    def __init__(self, connection: OneTripConnection) -> None:
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


class OneTripConnection(aiosqlite.Connection):
    """An aiosqlite connection whose statements, fetches and commits run on the event loop (see
    `_call`; a locked database and the WAL checkpoint go to its thread), and which skips ending a
    transaction when SQLite has none open (sqlite3 would do nothing then)."""

    def __init__(self, database: str) -> None:
        super().__init__(
            # No busy wait on the event loop: a statement that finds the database locked by another
            # connection is run again in the thread, which waits up to SQLITE_TIMEOUT_S (see _call).
            lambda: sqlite3.connect(database, timeout=0, check_same_thread=False),
            iter_chunk_size=64,
        )
        # As SQLAlchemy makes aiosqlite's own threads: a connection never closed must not keep the
        # process from exiting.
        self._thread.daemon = True
        # Whether SQLite may have a transaction open: known after each of our own calls; any other
        # call through aiosqlite (isolation level, functions, …) makes it "maybe" again.
        self._in_transaction = True

    _commits = 0  # of every connection in this process, to checkpoint the WAL every CHECKPOINT_EVERY

    async def _execute(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self._in_transaction = True
        return await super()._execute(fn, *args, **kwargs)  # type: ignore[no-untyped-call]

    async def _call(self, fn: Any) -> Any:
        """Run `fn` (a statement and its first rows, a fetch, a commit) on the event loop's thread:
        SQLite answers from its page cache in microseconds, far less than a trip to the thread and
        back costs. Only when another connection holds the write lock does it wait, in the thread."""
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if not _locked(exc):
                raise
        return await super()._execute(functools.partial(_waiting, self._conn, fn))  # type: ignore[no-untyped-call]

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

        OneTripConnection._commits += 1
        if OneTripConnection._commits % CHECKPOINT_EVERY:
            self._in_transaction = await self._call(end)
            return

        def end_and_checkpoint() -> bool:
            in_transaction = end()
            if not in_transaction:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            return in_transaction

        # Now and then, in the thread: copy the WAL into the database file (with an fsync), which
        # must not hold up the event loop. (Kanal's connections never checkpoint on their own.)
        self._in_transaction = await super()._execute(end_and_checkpoint)  # type: ignore[no-untyped-call]


def _utf8_or_bytes(data: bytes) -> str | bytes:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


@contextlib.asynccontextmanager
async def undecodable_text_as_bytes(session: AsyncSession) -> AsyncIterator[None]:
    """Within the block, text that SQLite holds but is not UTF-8 is read as bytes on the session's
    connection, where Python's sqlite3 would fail the whole statement. PostgreSQL checks the encoding
    of text as it is written: there this does nothing."""
    connection = await (await session.connection()).get_raw_connection()
    driver = connection.driver_connection
    if not isinstance(driver, OneTripConnection):
        yield
        return
    sqlite = driver._conn
    text_factory = sqlite.text_factory
    sqlite.text_factory = _utf8_or_bytes
    try:
        yield
    finally:
        sqlite.text_factory = text_factory


def _locked(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED: the statement did nothing and may be run again."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc)


def _waiting(conn: sqlite3.Connection, fn: Any) -> Any:
    """Run `fn` in the connection's thread, letting SQLite wait for a lock up to SQLITE_TIMEOUT_S."""
    conn.execute(f"PRAGMA busy_timeout = {int(SQLITE_TIMEOUT_S * 1000)}")
    try:
        return fn()
    finally:
        conn.execute("PRAGMA busy_timeout = 0")


def _sqlite_database(url: str) -> str:
    """The file SQLAlchemy's SQLite dialects would open for the URL (absolute), or ":memory:"."""
    database = make_url(url).database or ":memory:"
    return database if database == ":memory:" else os.path.abspath(database)


# Every connection Kanal opens to SQLite: WAL lets readers run beside the writer; NORMAL is durable
# across process crashes in WAL mode; no checkpoint inside a commit (commits run on the event loop:
# OneTripConnection checkpoints in its thread every CHECKPOINT_EVERY commits instead).
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA wal_autocheckpoint=0",
    "PRAGMA foreign_keys=ON",
)


_sqlite_files: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()


def sqlite_file(engine: AsyncEngine) -> str | None:
    """The database file of a SQLite engine made by `create_engine` (absolute); None for PostgreSQL
    and in-memory SQLite."""
    database = _sqlite_files.get(engine.sync_engine)
    return None if database == ":memory:" else database


async def open_sqlite(database: str) -> OneTripConnection:
    """A connection of Kanal's own to the SQLite file, outside SQLAlchemy's pool, set up as the
    engine's are."""
    connection = OneTripConnection(database)
    await connection

    def setup() -> None:
        for pragma in SQLITE_PRAGMAS:
            connection._conn.execute(pragma)

    await connection._call(setup)
    return connection


def _one_trip_creator(database: str) -> Any:
    def connect() -> OneTripConnection:
        return OneTripConnection(database)

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
        database = _sqlite_database(url)
        engine = create_async_engine(url, async_creator=_one_trip_creator(database))
        _sqlite_files[engine.sync_engine] = database

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            for pragma in SQLITE_PRAGMAS:
                cursor.execute(pragma)
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
