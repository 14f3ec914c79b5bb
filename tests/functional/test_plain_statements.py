"""Plain statements (bridge.store.plain): the relay path's statements straight on SQLite's connection.

Each statement the relay path runs plainly is run twice, on two fresh databases of Kanal's schema:
through SQLAlchemy and through `plain.run`. Both must leave the same rows and return the same values
(bind and result processing, the statement's own values, Python-side defaults and `onupdate`s). What
a plain statement writes is committed with its transaction (SQLite's transaction is known to be
open), rolled back with it, waits for another connection's lock without holding up the loop, and
fails as SQLAlchemy would (its IntegrityError).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import bindparam, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bridge import service
from bridge.broadcast import seam
from bridge.channels import backstage
from bridge.runtime import outbox
from bridge.store import db, plain
from bridge.store.models import Channel, ChannelMember, InboundEvent, OutboxEntry, Post, PostCopy, Room

Run = Callable[[AsyncConnection, Any, Any], Any]


async def _sqlalchemy(connection: AsyncConnection, statement: Any, params: Any) -> plain.PlainResult:
    result = await connection.execute(statement, params)
    return plain.PlainResult(list(result.all()) if result.returns_rows else [], result.rowcount)


async def _plain(connection: AsyncConnection, statement: Any, params: Any) -> plain.PlainResult:
    return await plain.run(connection, statement, params)


@pytest.fixture
async def engines(tmp_path: Path) -> AsyncIterator[list[AsyncEngine]]:
    made = []
    for name in ("through-sqlalchemy", "plain"):
        engine = db.create_engine(f"sqlite:///{tmp_path / name}.db")
        await db.migrate(engine)
        async with engine.begin() as connection:
            await connection.execute(
                insert(Channel).values(
                    id=1,
                    handle="news",
                    title="News",
                    owner="@o:localhost",
                    ghost_user_id="@_kanal_news:localhost",
                    broadcast_room_id="!b:localhost",
                )
            )
            await connection.execute(
                insert(ChannelMember).values(channel_id=1, user_id="@o:localhost", role="owner")
            )
        made.append(engine)
    yield made
    for engine in made:
        await engine.dispose()


def _comparable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items()}
    if isinstance(value, list | tuple) or hasattr(value, "_mapping"):
        return [_comparable(v) for v in value]
    if isinstance(value, datetime):
        return "a time"  # written with now(): compared by type, and checked apart below
    return value


async def _both(engines: list[AsyncEngine], steps: Callable[[AsyncConnection, Run], Any]) -> list[Any]:
    """Run `steps` on each database (through SQLAlchemy, then plainly); both outcomes, and the rows."""
    outcomes = []
    for engine, run in zip(engines, (_sqlalchemy, _plain), strict=True):
        async with engine.begin() as connection:
            returned = await steps(connection, run)
        async with engine.connect() as connection:
            tables = {}
            for table in (InboundEvent, OutboxEntry, Post, PostCopy):
                rows = (await connection.execute(select(table.__table__).order_by(*table.__table__.primary_key))).all()
                tables[table.__tablename__] = [tuple(row) for row in rows]
        outcomes.append((returned, tables))
    return outcomes


async def test_the_relay_paths_statements_write_and_return_what_sqlalchemy_does(
    engines: list[AsyncEngine],
) -> None:
    async def steps(connection: AsyncConnection, run: Run) -> list[Any]:
        events = [
            {"event_id": f"$e{i}", "room_id": "!back:localhost", "payload": {"type": "m.room.message", "n": i}}
            for i in range(3)
        ]
        first = await run(connection, service._insert_ignore("sqlite"), events)
        again = await run(connection, service._insert_ignore("sqlite"), [*events[1:], {**events[0], "event_id": "$e9"}])
        done = await run(connection, service._MARK_DONE, {"event_seq": 2})
        not_pending = await run(connection, service._MARK_DONE, {"event_seq": 2})
        role = await run(connection, backstage._ROLE_AND_DRAFTING, {"channel_id": 1, "user_id": "@o:localhost"})
        entries = await run(
            connection,
            outbox._INSERT_ENTRIES,
            [
                {"queue": q, "kind": "send", "as_user": "@g:localhost", "payload": {"content": {"body": q}}, "ref_source": None}
                for q in ("room:!a", "room:!b", "room:!a")
            ],
        )
        post = await run(
            connection,
            seam._INSERT_POST,
            {
                "channel_id": 1,
                "source_event_id": "$e0",
                "author": "@o:localhost",
                "outbox_id": 1,
                "event_type": "m.room.message",
                "content": {"body": "hello", "msgtype": "m.text"},
                "via": "backstage",
                "created_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
            },
        )
        values = {
            "attempts": 1,
            "last_error": None,
            "status": "done",
            "result_event_id": "$copy",
            "payload": {"content": {"body": "(secret removed)"}},
        }
        recorded = await run(connection, outbox._record_statement(frozenset(values)), {**values, "entry_id": 1})
        retry = {"attempts": 1, "last_error": "502", "next_attempt_at": datetime(2026, 1, 2, tzinfo=UTC)}
        await run(connection, outbox._record_statement(frozenset(retry)), {**retry, "entry_id": 2})
        copy = {"copy_event": "$copy", "copy_room": "!b:localhost", "source": "$e0"}
        added = await run(connection, outbox._copy_insert("sqlite"), copy)
        first_copy = await run(connection, outbox._FIRST_COPY, copy)
        added_again = await run(connection, outbox._copy_insert("sqlite"), copy)
        return [
            (r.rows, r.rowcount)
            for r in (first, again, done, not_pending, role, entries, post, recorded, added, first_copy, added_again)
        ]

    (through, through_tables), (plainly, plain_tables) = await _both(engines, steps)
    # SQLAlchemy batches a many-row INSERT … RETURNING into one statement and counts it as one row
    # changed; plainly it is one statement per row, each counted. Nothing reads that count.
    plainly[5], through[5] = plainly[5][0], through[5][0]
    assert _comparable(plainly) == _comparable(through)
    assert _comparable(plain_tables) == _comparable(through_tables)
    # What the comparison cannot see: the values themselves.
    rows = dict(zip(["first", "again", "done", "not_pending", "role", "entries", "post"], plainly, strict=False))
    assert [tuple(r) for r in rows["first"][0]] == [(1, "$e0"), (2, "$e1"), (3, "$e2")]
    assert [tuple(r) for r in rows["again"][0]] == [(4, "$e9")]  # the known ones are skipped
    assert rows["done"][1] == 1 and rows["not_pending"][1] == 0
    assert rows["role"][0][0].role == "owner" and rows["role"][0][0].drafting is None
    assert [tuple(r) for r in rows["entries"]] == [(1, 0), (2, 0), (3, 1)]  # one waits in room:!a
    post = rows["post"][0][0]
    assert post.content == {"body": "hello", "msgtype": "m.text"} and post.redacted is False
    assert post.created_at.replace(tzinfo=UTC) == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert abs(post.changed_at.replace(tzinfo=UTC) - datetime.now(UTC)) < timedelta(minutes=1)
    assert Post(**post._mapping).source_event_id == "$e0"
    posts = plain_tables["posts"]
    assert posts[0][Post.__table__.c.keys().index("relayed_event_id")] == "$copy"  # the first copy
    assert plain_tables["post_copies"] == [("$copy", 1, "!b:localhost")]
    outbox_rows = {row[0]: row for row in plain_tables["outbox"]}
    columns = OutboxEntry.__table__.c.keys()
    assert outbox_rows[1][columns.index("payload")] == {"content": {"body": "(secret removed)"}}
    assert outbox_rows[2][columns.index("next_attempt_at")] == datetime(2026, 1, 2)


async def test_what_a_plain_statement_writes_is_committed_or_rolled_back_with_its_transaction(
    engines: list[AsyncEngine],
) -> None:
    engine = engines[1]
    event = {"event_id": "$kept", "room_id": "!r", "payload": {}}
    async with engine.begin() as connection:
        await plain.run(connection, service._insert_ignore("sqlite"), [event])
    with pytest.raises(RuntimeError):
        async with engine.begin() as connection:
            await plain.run(connection, service._insert_ignore("sqlite"), [{**event, "event_id": "$undone"}])
            raise RuntimeError("rolled back")
    async with engine.connect() as connection:
        ids = (await connection.scalars(select(InboundEvent.event_id))).all()
    assert ids == ["$kept"]


async def test_a_plain_statement_fails_as_sqlalchemy_would_and_the_connection_goes_on(
    engines: list[AsyncEngine],
) -> None:
    engine = engines[1]
    post = {
        "channel_id": 1,
        "source_event_id": "$same",
        "author": "@o:localhost",
        "outbox_id": None,
        "event_type": "m.room.message",
        "content": None,
        "via": "backstage",
        "created_at": datetime.now(UTC),
    }
    async with engine.connect() as connection:
        await plain.run(connection, seam._INSERT_POST, post)
        with pytest.raises(IntegrityError):
            await plain.run(connection, seam._INSERT_POST, post)
        await connection.rollback()
        assert (await plain.run(connection, select(Post.id).where(Post.source_event_id == bindparam("s")), {"s": "$same"})).rows == []


async def test_a_plain_write_waits_for_another_connections_lock_without_holding_up_the_loop(
    engines: list[AsyncEngine],
) -> None:
    engine = engines[1]
    async with engine.connect() as holder, engine.connect() as waiter:
        await holder.execute(text("INSERT INTO inbound_events (event_id, room_id, payload, status, attempts) VALUES ('$h', '!r', '{}', 'pending', 0)"))
        second = asyncio.create_task(
            plain.run(waiter, service._insert_ignore("sqlite"), [{"event_id": "$w", "room_id": "!r", "payload": {}}])
        )
        await asyncio.sleep(0.2)
        assert not second.done()  # waiting in the connection's thread; the loop goes on
        await holder.commit()
        assert [tuple(r) for r in (await asyncio.wait_for(second, 10)).rows] == [(2, "$w")]
        await waiter.commit()
    async with engine.connect() as connection:
        assert (await connection.scalars(select(InboundEvent.event_id).order_by(InboundEvent.seq))).all() == ["$h", "$w"]


async def test_an_expanding_in_is_expanded_for_each_call(engines: list[AsyncEngine]) -> None:
    async def steps(connection: AsyncConnection, run: Run) -> list[Any]:
        found = []
        for room_ids in (["!back:localhost", "!b:localhost", "!gone"], ["!gone"], ["!b:localhost"]):
            rows = await run(connection, service._PRIVATE_BROADCAST_ROOMS, {"room_ids": room_ids})
            managed = await run(connection, service._MANAGED_ROOMS_AMONG, {"room_ids": room_ids})
            found.append(([tuple(r) for r in rows.rows], sorted(tuple(r) for r in managed.rows)))
        return found

    for engine in engines:
        async with engine.begin() as connection:
            await connection.execute(
                insert(Room),
                [
                    {"room_id": "!back:localhost", "kind": "backstage", "channel_id": 1},
                    {"room_id": "!b:localhost", "kind": "broadcast", "channel_id": 1},
                ],
            )
            await connection.execute(text("UPDATE channels SET private = 1"))
    (through, _), (plainly, _) = await _both(engines, steps)
    assert plainly == through
    assert plainly == [
        ([("!b:localhost",)], [("!back:localhost",)]),
        ([], []),
        ([("!b:localhost",)], []),
    ]


async def test_a_writers_transactions_commit_roll_back_and_take_turns_on_its_own_connection(
    engines: list[AsyncEngine],
) -> None:
    engine = engines[1]
    writer = plain.Writer(engine)
    statement = service._insert_ignore("sqlite")
    try:
        async with writer.begin() as transaction:
            assert transaction.connection is None  # SQLite: the writer's own connection, no SQLAlchemy
            await plain.run(transaction, statement, [{"event_id": "$one", "room_id": "!r", "payload": {}}])
        with pytest.raises(RuntimeError):
            async with writer.begin() as transaction:
                await plain.run(transaction, statement, [{"event_id": "$undone", "room_id": "!r", "payload": {}}])
                raise RuntimeError("rolled back")

        order: list[str] = []

        async def write(event_id: str) -> None:
            async with writer.begin() as transaction:
                order.append(f"begin {event_id}")
                await plain.run(transaction, statement, [{"event_id": event_id, "room_id": "!r", "payload": {}}])
                await asyncio.sleep(0.05)  # lets the loop run mid-transaction: the other must wait
                order.append(f"end {event_id}")

        await asyncio.gather(write("$a"), write("$b"))
        assert order == ["begin $a", "end $a", "begin $b", "end $b"]
        # Seen by every other connection: committed.
        async with engine.connect() as connection:
            ids = (await connection.scalars(select(InboundEvent.event_id).order_by(InboundEvent.seq))).all()
        assert ids == ["$one", "$a", "$b"]
    finally:
        await writer.close()


async def test_a_writer_waits_for_another_connections_lock(engines: list[AsyncEngine]) -> None:
    engine = engines[1]
    writer = plain.Writer(engine)
    try:
        async with engine.connect() as holder:
            await holder.execute(
                text("INSERT INTO inbound_events (event_id, room_id, payload, status, attempts) VALUES ('$h', '!r', '{}', 'pending', 0)")
            )

            async def write() -> None:
                async with writer.begin() as transaction:
                    await plain.run(
                        transaction, service._insert_ignore("sqlite"), [{"event_id": "$w", "room_id": "!r", "payload": {}}]
                    )

            second = asyncio.create_task(write())
            await asyncio.sleep(0.2)
            assert not second.done()
            await holder.commit()
            await asyncio.wait_for(second, 10)
        async with engine.connect() as connection:
            ids = (await connection.scalars(select(InboundEvent.event_id).order_by(InboundEvent.seq))).all()
        assert ids == ["$h", "$w"]
    finally:
        await writer.close()


async def test_without_a_file_of_its_own_a_writer_uses_sqlalchemys_transactions() -> None:
    engine = db.create_engine("sqlite://")  # in memory: another connection would see another database
    await db.migrate(engine)
    writer = plain.Writer(engine)
    try:
        async with writer.begin() as transaction:
            assert transaction.connection is not None
            await plain.run(
                transaction, service._insert_ignore("sqlite"), [{"event_id": "$m", "room_id": "!r", "payload": {}}]
            )
        async with engine.connect() as connection:
            assert (await connection.scalars(select(InboundEvent.event_id))).all() == ["$m"]
    finally:
        await writer.close()
        await engine.dispose()


async def test_through_a_session_each_transaction_runs_on_its_own_connection(engines: list[AsyncEngine]) -> None:
    engine = engines[1]
    statement = service._insert_ignore("sqlite")
    async with db.sessionmaker(engine)() as session:
        await plain.run(session, statement, [{"event_id": "$first", "room_id": "!r", "payload": {}}])
        await plain.run(session, statement, [{"event_id": "$same", "room_id": "!r", "payload": {}}])
        await session.commit()
        await plain.run(session, statement, [{"event_id": "$undone", "room_id": "!r", "payload": {}}])
        await session.rollback()
        await plain.run(session, statement, [{"event_id": "$second", "room_id": "!r", "payload": {}}])
        await session.commit()
    async with engine.connect() as connection:
        ids = (await connection.scalars(select(InboundEvent.event_id).order_by(InboundEvent.seq))).all()
    assert ids == ["$first", "$same", "$second"]
