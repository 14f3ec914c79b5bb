"""Plain statements: a prebuilt Core statement run straight on SQLite's connection.

SQLAlchemy costs about 80 µs of CPU per statement run through an `AsyncConnection` (a greenlet for
the call, an execution context, a cursor result), SQLite about 3 µs: on the relay path, where every
post runs the same few statements, that was most of what the database cost Kanal. `run` takes a
Core statement (INSERT, UPDATE, DELETE or a SELECT of columns, built once at import), compiles it
once per dialect and set of parameter names, and on SQLite runs it on the sqlite3 connection under
the caller's connection or session, in the caller's transaction: what SQLAlchemy would bind is bound (its bind processors,
the values the statement carries, the columns' Python-side defaults and `onupdate`s), what it would
return is returned (its result processors). It runs on the event loop like every SQLite statement
of Kanal's (`db.OneTripConnection`: a locked database is waited for in the connection's thread). On
PostgreSQL every statement goes through SQLAlchemy as before; a statement this
cannot run plainly (not positional, a default only SQLAlchemy computes) is refused when it is first
compiled. An expanding IN is expanded for each call, as SQLAlchemy does.
SQLite's errors reach the caller as SQLAlchemy's (`IntegrityError`, …), as they would have.

Rows come back as `PlainRow`s: tuples that also answer by column name and `_mapping`, like
SQLAlchemy's rows.

`Writer` runs short transactions of plain statements on a SQLite connection of its own, without
SQLAlchemy's pool and transaction objects: the relay path's records of what arrived and what was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.sql import ClauseElement

from .db import OneTripConnection, open_sqlite, sqlite_file

Params = Mapping[str, Any]


class PlainRow(tuple[Any, ...]):
    """A row: a tuple whose values are also found by column name (`row.seq`, `row._mapping`)."""

    _keys: tuple[str, ...] = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[self._keys.index(name)]
        except ValueError:
            raise AttributeError(name) from None

    @property
    def _mapping(self) -> dict[str, Any]:
        return dict(zip(self._keys, self, strict=True))


@dataclass
class PlainResult:
    """What a statement returned (rows, in order) and how many rows it changed (-1: a SELECT)."""

    rows: list[Any]
    rowcount: int

    def all(self) -> list[Any]:
        return self.rows

    def first(self) -> Any:
        return self.rows[0] if self.rows else None

    def one(self) -> Any:
        if len(self.rows) != 1:
            raise LookupError(f"expected one row, got {len(self.rows)}")
        return self.rows[0]

    def scalar(self) -> Any:
        return self.rows[0][0] if self.rows else None


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]  # bind names in the order of the statement's `?`s
    binds: tuple[Callable[[Any], Any] | None, ...]
    defaults: tuple[tuple[str, Callable[[], Any]], ...]  # Python-side defaults and onupdates, by bind name
    construct: Callable[[Params], dict[str, Any]]
    expand: Callable[[dict[str, Any]], Any] | None  # an expanding IN: the SQL and binds of each call
    row: type[PlainRow] | None  # None: returns no rows
    results: tuple[Callable[[Any], Any] | None, ...]


_compiled: dict[tuple[int, str, frozenset[str]], tuple[ClauseElement, _Compiled]] = {}
MAX_COMPILED = 512  # statements are built once, at import: more means one is built per call


def _compile(statement: ClauseElement, dialect: Dialect, names: frozenset[str]) -> _Compiled:
    key = (id(statement), dialect.name, names)
    found = _compiled.get(key)
    if found is not None and found[0] is statement:
        return found[1]
    compiled: Any = statement.compile(dialect=dialect, column_keys=sorted(names))
    if compiled.positiontup is None:
        raise ValueError(f"not a plain statement (positional): {compiled.string}")
    expanding = any(b.expanding for b in compiled.binds.values())
    defaults: list[tuple[str, Callable[[], Any]]] = []
    for column in compiled.insert_prefetch:
        defaults.append((column.key, _python_default(column.default, column)))
    for column in compiled.update_prefetch:
        defaults.append((column.key, _python_default(column.onupdate, column)))
    processors = compiled._bind_processors
    row: type[PlainRow] | None = None
    results: tuple[Callable[[Any], Any] | None, ...] = ()
    if compiled._result_columns:
        keys = tuple(c.keyname for c in compiled._result_columns)
        row = type("Row", (PlainRow,), {"_keys": keys, "__slots__": ()})
        results = tuple(c.type._cached_result_processor(dialect, None) for c in compiled._result_columns)
    if len(_compiled) >= MAX_COMPILED:
        _compiled.clear()  # a statement built per call: compiled again each time, never kept forever
    plain = _Compiled(
        sql=compiled.string,
        names=tuple(compiled.positiontup),
        binds=tuple(processors.get(name) for name in compiled.positiontup),
        defaults=tuple(defaults),
        construct=compiled.construct_params,
        expand=compiled.construct_expanded_state if expanding else None,
        row=row,
        results=results,
    )
    _compiled[key] = (statement, plain)
    return plain


def _python_default(default: Any, column: Any) -> Callable[[], Any]:
    if default is not None and default.is_scalar:
        value = default.arg
        return lambda: value
    if default is not None and default.is_callable:
        function = default.arg
        return lambda: function(None)
    raise ValueError(f"column {column} has a default that only SQLAlchemy can compute ({default!r})")


def _bind(plain: _Compiled, params: Params) -> tuple[str, list[Any]]:
    """The SQL to run with these parameters, and its values in order, processed."""
    values = plain.construct(params)
    for name, default in plain.defaults:
        if name not in params:
            values[name] = default()
    if plain.expand is not None:
        state = plain.expand(values)
        processors = dict(zip(plain.names, plain.binds, strict=True)) | state.processors
        return state.statement, [
            value if processors.get(name) is None or value is None else processors[name](value)
            for name, value in ((name, state.parameters[name]) for name in state.positiontup)
        ]
    return plain.sql, [
        value if bind is None or value is None else bind(value)
        for value, bind in zip((values[name] for name in plain.names), plain.binds, strict=True)
    ]


def _sqlite_of(connection: AsyncConnection) -> OneTripConnection | None:
    sync = connection.sync_connection
    driver = sync.connection.driver_connection if sync is not None else None
    return driver if isinstance(driver, OneTripConnection) else None


async def run(
    connection: AsyncConnection | AsyncSession | Transaction,
    statement: ClauseElement,
    params: Params | Sequence[Params] | None = None,
) -> PlainResult:
    """Run `statement` once, or once per row of parameters (a list), in the transaction of the
    connection, the session or a `Writer`."""
    rows: Sequence[Params] = [params or {}] if params is None or isinstance(params, Mapping) else params
    if isinstance(connection, AsyncSession):
        connection = await _connection_of(connection)
    driver: OneTripConnection
    dialect: Dialect
    if isinstance(connection, Transaction):
        if connection.connection is not None:
            return await run(connection.connection, statement, params)
        assert connection.driver is not None and connection.dialect is not None
        driver, dialect = connection.driver, connection.dialect
    else:
        found = _sqlite_of(connection)
        if found is None or not rows:
            return await _through_sqlalchemy(connection, statement, params)
        if not connection.sync_connection.in_transaction():  # type: ignore[union-attr]
            await connection.begin()  # as SQLAlchemy's autobegin would: the caller's commit ends it
        driver, dialect = found, connection.dialect
    if not rows:
        return PlainResult([], -1)
    plain = _compile(statement, dialect, frozenset(rows[0]))
    bound = [_bind(plain, row) for row in rows]
    sqlite = driver._conn

    def execute() -> tuple[list[Any], int, bool]:
        # Run again whole (in the connection's thread) when the database is locked: only a
        # transaction's first write can find it locked, and then nothing here has been done.
        returned: list[Any] = []
        changed = -1  # as sqlite3 says of a SELECT
        for sql, values in bound:
            cursor = sqlite.execute(sql, values)
            try:
                if plain.row is not None:
                    make, processors = plain.row, plain.results
                    returned.extend(
                        make(v if p is None or v is None else p(v) for v, p in zip(row, processors, strict=True))
                        for row in cursor.fetchall()
                    )
                if cursor.rowcount >= 0:
                    changed = max(changed, 0) + cursor.rowcount
            finally:
                cursor.close()
        return returned, changed, sqlite.in_transaction

    try:
        returned, changed, driver._in_transaction = await driver._call(execute)
    except sqlite3.Error as exc:
        driver._in_transaction = True  # maybe: let the caller's rollback reach SQLite
        raise DBAPIError.instance(bound[0][0], [values for _sql, values in bound], exc, sqlite3.Error) from exc
    return PlainResult(returned, changed)


async def _connection_of(session: AsyncSession) -> AsyncConnection:
    """The session's connection in its current transaction (asked of SQLAlchemy once per transaction:
    each time costs a greenlet)."""
    transaction = session.sync_session.get_transaction()
    known = session.info.get(_CONNECTION)
    if transaction is not None and known is not None and known[0] is transaction:
        connection: AsyncConnection = known[1]
        return connection
    connection = await session.connection()
    session.info[_CONNECTION] = (session.sync_session.get_transaction(), connection)
    return connection


_CONNECTION = "kanal.plain.connection"


async def _through_sqlalchemy(
    connection: AsyncConnection, statement: ClauseElement, params: Params | Sequence[Params] | None
) -> PlainResult:
    if getattr(statement, "is_select", False) and params is not None and not isinstance(params, Mapping):
        # A SELECT once per row of parameters (SQLAlchemy runs only DML with a list of them).
        found = [await _through_sqlalchemy(connection, statement, row) for row in params]
        return PlainResult([row for result in found for row in result.rows], -1)
    result = await connection.execute(statement, params)  # type: ignore[call-overload]
    rows = list(result.all()) if result.returns_rows else []
    return PlainResult(rows, result.rowcount)


def dialect_name(connection: AsyncConnection | Transaction) -> str:
    """Which database the connection or transaction writes to: its dialect's name ("sqlite", "postgresql")."""
    if isinstance(connection, Transaction):
        if connection.connection is not None:
            return connection.connection.dialect.name
        assert connection.dialect is not None
        return connection.dialect.name
    return connection.dialect.name


@dataclass
class Transaction:
    """A `Writer`'s transaction: `run(transaction, statement, params)` runs statements in it."""

    driver: OneTripConnection | None = None  # SQLite: the writer's own connection
    dialect: Dialect | None = None
    connection: AsyncConnection | None = None  # PostgreSQL: SQLAlchemy's


class Writer:
    """Short transactions of plain statements: what the relay path records for every post (the
    events received, a send's outcome and copy).

    On SQLite they run on a connection of the writer's own (opened at first use, set up as the
    engine's are), without SQLAlchemy: its pool, transaction and close cost about 250 µs of CPU per
    transaction, SQLite's statements and commit about 10. One transaction at a time runs on it (a
    lock; none waits in practice, since nothing in such a transaction lets the loop run unless the
    database is locked by another connection, which is waited for in the connection's thread). On
    PostgreSQL, and for an in-memory SQLite database, a transaction is `engine.begin()`.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._database = sqlite_file(engine)
        self._lock = asyncio.Lock()
        self._driver: OneTripConnection | None = None

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[Transaction]:
        """A transaction, committed when the block ends, rolled back when it raises."""
        if self._database is None:
            async with self._engine.begin() as connection:
                yield Transaction(connection=connection)
            return
        async with self._lock:
            if self._driver is None:
                self._driver = await open_sqlite(self._database)
            driver = self._driver
            try:
                yield Transaction(driver=driver, dialect=self._engine.dialect)
            except BaseException:
                await driver.rollback()
                raise
            await driver.commit()

    async def close(self) -> None:
        async with self._lock:
            driver, self._driver = self._driver, None
            if driver is not None:
                await driver.close()
