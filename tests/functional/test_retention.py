"""Pruning keeps what dedupe, catch-up and the verify window need, and deletes the rest.

The real Bridge and Pruner on a database of each test's own (SQLite, or PostgreSQL with
KANAL_TEST_POSTGRES: the rows here are backdated, and pruning reads a table in id order up to the
first row young enough to keep), against a scripted homeserver timeline served over loopback;
`dispatch` records what is handled.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from appservice.client import HomeserverClient
from appservice.events import Event, parse_event
from appservice.server import Transaction
from bridge.runtime.config import parse
from bridge.runtime.context import Context
from bridge.runtime.outbox import OutboxWorker
from bridge.runtime.retention import Pruner
from bridge.service import Bridge
from bridge.store.db import create_engine, migrate, sessionmaker
from bridge.store.leases import Leases
from bridge.store.models import InboundEvent, OutboxEntry, Room

DOMAIN = "example.org"
ALICE = f"@alice:{DOMAIN}"
DAY_MS = 86_400_000


def days_ago(days: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


class Homeserver:
    """Each backstage room's timeline, served by /messages and /context as Synapse would."""

    def __init__(self) -> None:
        self.timelines: dict[str, list[dict[str, Any]]] = {}

    def post(self, room_id: str, name: str, age_days: float) -> dict[str, Any]:
        event = {
            "event_id": f"${name}",
            "room_id": room_id,
            "sender": ALICE,
            "type": "m.room.message",
            "origin_server_ts": int(time.time() * 1000 - age_days * DAY_MS),
            "content": {"msgtype": "m.text", "body": name},
        }
        self.timelines.setdefault(room_id, []).append(event)
        return event

    async def context(self, request: web.Request) -> web.Response:
        events = self.timelines.get(request.match_info["room_id"], [])
        at = next(i for i, e in enumerate(events) if e["event_id"] == request.match_info["event_id"])
        half = int(request.query.get("limit", "10")) // 2
        return web.json_response(
            {
                "event": events[at],
                "events_before": list(reversed(events[max(0, at - half) : at])),
                "events_after": events[at + 1 : at + 1 + half],
            }
        )

    async def messages(self, request: web.Request) -> web.Response:
        events = self.timelines.get(request.match_info["room_id"], [])
        end = int(request.query.get("from", str(len(events))))
        start = max(0, end - int(request.query.get("limit", "10")))
        body: dict[str, Any] = {"chunk": list(reversed(events[start:end])), "start": str(end)}
        if start > 0:
            body["end"] = str(start)
        return web.json_response(body)


@dataclass
class Harness:
    bridge: Bridge
    pruner: Pruner
    homeserver: Homeserver
    dispatched: list[str]

    @property
    def sessions(self) -> Any:
        return self.bridge.ctx.sessions

    async def handled_before(self, events: list[dict[str, Any]], days: float) -> None:
        """Record `events` as delivered and handled `days` ago."""
        async with self.sessions.begin() as session:
            await session.execute(
                insert(InboundEvent),
                [
                    {
                        "event_id": e["event_id"],
                        "room_id": e["room_id"],
                        "payload": e,
                        "status": "done",
                        "received_at": days_ago(days),
                    }
                    for e in events
                ],
            )

    async def deliver(self, *events: dict[str, Any]) -> None:
        txn = Transaction(secrets.token_hex(4), [parse_event(e) for e in events], [])
        await self.bridge.handle_transaction(txn)

    async def process(self) -> None:
        for _ in range(20):
            await self.bridge.process_pending()
            async with self.sessions() as session:
                left = await session.scalar(select(InboundEvent.seq).where(InboundEvent.status == "pending"))
            if left is None:
                return
        raise AssertionError("the processor did not finish")

    async def event_ids(self, ids: list[str]) -> set[str]:
        async with self.sessions() as session:
            found = await session.scalars(select(InboundEvent.event_id).where(InboundEvent.event_id.in_(ids)))
            return set(found.all())


@pytest.fixture
async def own_database(tmp_path: Path) -> AsyncIterator[str]:
    server = os.environ.get("KANAL_TEST_POSTGRES")
    if not server:
        yield f"sqlite:///{tmp_path / 'kanal.db'}"
        return
    import asyncpg

    name = f"kanal_retention_{secrets.token_hex(4)}"
    dsn = server.replace("postgresql+asyncpg://", "postgresql://")
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield f"{dsn.rsplit('/', 1)[0]}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def harness(tmp_path: Path, own_database: str) -> AsyncIterator[Harness]:
    homeserver = Homeserver()
    app = web.Application()
    app.router.add_get("/_matrix/client/v3/rooms/{room_id}/context/{event_id}", homeserver.context)
    app.router.add_get("/_matrix/client/v3/rooms/{room_id}/messages", homeserver.messages)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    config = parse(
        {
            "homeserver": {"url": str(server.make_url("")).rstrip("/"), "domain": DOMAIN},
            "appservice": {"as_token": "as-secret-0123456789", "hs_token": "hs-secret-0123456789"},
            "database": {"url": own_database, "inbound_retention_days": 7, "outbox_retention_days": 2},
        },
        tmp_path / "config.yaml",
    )
    engine = create_engine(config.database_url)
    await migrate(engine)
    sessions = sessionmaker(engine)
    client = HomeserverClient(config.homeserver_url, config.as_token, attempts=1)
    ctx = Context(config, client, sessions, OutboxWorker(sessions, client))
    bridge = Bridge(ctx, Leases(sessions, f"test-{secrets.token_hex(3)}"))
    dispatched: list[str] = []

    async def record(session: AsyncSession, event: Event) -> None:
        dispatched.append(event.event_id.removeprefix("$"))

    bridge.dispatch = record  # type: ignore[method-assign]
    try:
        yield Harness(bridge, bridge.pruner, homeserver, dispatched)
    finally:
        await client.close()
        await engine.dispose()
        await server.close()


def unique(name: str) -> str:
    return f"{name}-{secrets.token_hex(4)}"


async def test_pruning_deletes_settled_rows_past_retention_and_keeps_the_rest(harness: Harness) -> None:
    room = f"!{unique('dm')}:{DOMAIN}"
    names = {key: unique(key) for key in ("old_done", "old_failed", "old_pending", "young_done", "newest")}
    async with harness.sessions.begin() as session:
        rows = [
            ("old_done", "done", 9),  # past 7 days + the day's margin
            ("old_failed", "failed", 9),
            ("old_pending", "pending", 9),  # never handled yet: kept however old
            ("young_done", "done", 7.5),  # past 7 days, within the margin
            ("newest", "done", 9),  # the table's newest row is always kept
        ]
        for key, status, age in rows:
            await session.execute(
                insert(InboundEvent).values(
                    event_id=names[key], room_id=room, payload={}, status=status, received_at=days_ago(age)
                )
            )
        outbox: dict[str, int] = {}
        for key, status, age in [
            ("old_done", "done", 3),  # past outbox_retention_days (2)
            ("old_failed", "failed", 3),
            ("old_pending", "pending", 3),  # still to be sent
            ("young_done", "done", 1),
            ("newest", "done", 3),
        ]:
            outbox[key] = (
                await session.execute(
                    insert(OutboxEntry)
                    .values(queue=room, kind="send", as_user=ALICE, payload={}, status=status, created_at=days_ago(age))
                    .returning(OutboxEntry.id)
                )
            ).scalar_one()
    # The pending rows stay pending here: the processor and the outbox worker are not running.

    pruned = await harness.pruner.prune()

    assert await harness.event_ids(list(names.values())) == {
        names["old_pending"],
        names["young_done"],
        names["newest"],
    }
    async with harness.sessions() as session:
        left = set((await session.scalars(select(OutboxEntry.id).where(OutboxEntry.id.in_(outbox.values())))).all())
    assert left == {outbox["old_pending"], outbox["young_done"], outbox["newest"]}
    assert pruned["inbound_events"] >= 2 and pruned["outbox"] >= 2
    assert harness.pruner.pruned == pruned
    # Ids are never handed out twice (transaction ids `kanal-<id>` must stay unique): the next entry
    # comes after every entry there ever was.
    async with harness.sessions.begin() as session:
        later = (
            await session.execute(
                insert(OutboxEntry).values(queue=room, kind="send", as_user=ALICE, payload={}).returning(OutboxEntry.id)
            )
        ).scalar_one()
    assert later > max(outbox.values())


async def test_a_redelivered_event_is_not_handled_twice_before_or_after_its_record_is_pruned(
    harness: Harness,
) -> None:
    room = f"!{unique('dm')}:{DOMAIN}"
    async with harness.sessions.begin() as session:
        session.add(Room(room_id=room, kind="management", user_id=ALICE))
    harness.bridge.catch_up_pending = False  # no backstage room here: nothing to catch up
    old = harness.homeserver.post(room, unique("old"), age_days=10)
    recent = harness.homeserver.post(room, unique("recent"), age_days=6)
    await harness.handled_before([old], days=10)
    await harness.handled_before([recent], days=6)

    await harness.pruner.prune()
    assert await harness.event_ids([old["event_id"], recent["event_id"]]) == {recent["event_id"]}

    # The homeserver delivers both again (a transaction it retried): neither is handled again.
    await harness.deliver(old, recent)
    await harness.process()
    assert harness.dispatched == []
    assert await harness.event_ids([old["event_id"]]) == set()  # not recorded anew either

    new = harness.homeserver.post(room, unique("new"), age_days=0)
    await harness.deliver(new)
    await harness.process()
    assert harness.dispatched == [new["event_id"].removeprefix("$")]


async def test_checking_a_post_after_a_long_quiet_time_publishes_no_pruned_post_again(harness: Harness) -> None:
    room = f"!{unique('backstage')}:{DOMAIN}"
    async with harness.sessions.begin() as session:
        session.add(Room(room_id=room, kind="backstage"))
    # Posts made and relayed ten days ago; their records are pruned since.
    old = [harness.homeserver.post(room, unique(f"old{n}"), age_days=10) for n in range(3)]
    await harness.handled_before(old, days=10)
    await harness.pruner.prune()
    # (the last stays: a table's newest row is always kept)
    assert await harness.event_ids([e["event_id"] for e in old]) == {old[-1]["event_id"]}

    # Kanal (re)starts: catch-up, then every post's predecessors are checked for a while. A new post's
    # predecessors are the pruned ones: they are past the horizon, not missing.
    new = harness.homeserver.post(room, unique("new"), age_days=0)
    await harness.deliver(new)
    await harness.process()
    assert harness.dispatched == [new["event_id"].removeprefix("$")]
    # Catch-up again (the 5-minute safety net) from the new anchor: still nothing old comes back.
    harness.bridge.catch_up_pending = True
    await harness.process()
    assert harness.dispatched == [new["event_id"].removeprefix("$")]
