"""The processor keeps a backstage room's timeline order when the homeserver delivers out of order.

Synapse's application-service recovery can let a newer transaction through before a stranded older
one, or never send the older one. These tests drive the real Bridge (real SQLite, real HTTP client)
against a scripted homeserver timeline served over loopback, deliver transactions in the bad orders
Synapse produces, and record the order in which events reach dispatch.

The same property is checked end to end against a real Synapse by the SIGKILL crash test in
tests/integration/test_reliability.py; these tests make each failure mode happen on purpose.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
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
from bridge import service as service_module
from bridge.runtime.config import parse
from bridge.runtime.context import Context
from bridge.runtime.outbox import OutboxWorker
from bridge.service import Bridge, DeliverySequence
from bridge.store.db import create_engine, migrate, sessionmaker
from bridge.store.leases import Leases
from bridge.store.models import InboundEvent, Room
from tests.support import reads_of

DOMAIN = "example.org"
BOT = f"@kanal:{DOMAIN}"
ALICE = f"@alice:{DOMAIN}"
BACKSTAGE = f"!backstage:{DOMAIN}"
# Recent: older events are past the dedupe horizon (database.inbound_retention_days) and ignored.
SENT_MS = int(time.time() * 1000) - 3_600_000


def post(n: int) -> dict[str, Any]:
    return {
        "event_id": f"$post{n}",
        "room_id": BACKSTAGE,
        "sender": ALICE,
        "type": "m.room.message",
        "origin_server_ts": SENT_MS + n,
        "content": {"msgtype": "m.text", "body": f"post {n}"},
    }


class Timeline:
    """A backstage room's timeline as the homeserver holds it, served by /context and /messages."""

    def __init__(self, count: int) -> None:
        """The room with posts 1..count in it."""
        created = {
            "event_id": "$create",
            "room_id": BACKSTAGE,
            "sender": BOT,
            "type": "m.room.create",
            "state_key": "",
            "origin_server_ts": SENT_MS,
            "content": {"creator": BOT},
        }
        self.events: list[dict[str, Any]] = [created] + [post(n) for n in range(1, count + 1)]
        self.requests: list[str] = []

    def send(self, *numbers: int) -> None:
        """Posts made in backstage: in the timeline now, delivered to Kanal whenever the test says."""
        self.events.extend(post(n) for n in numbers)

    def index(self, event_id: str) -> int:
        return next(i for i, e in enumerate(self.events) if e["event_id"] == event_id)

    async def context(self, request: web.Request) -> web.Response:
        self.requests.append("context")
        at = self.index(request.match_info["event_id"])
        half = int(request.query.get("limit", "10")) // 2  # Synapse splits the limit before/after
        return web.json_response(
            {
                "event": self.events[at],
                "events_before": list(reversed(self.events[max(0, at - half) : at])),
                "events_after": self.events[at + 1 : at + 1 + half],
            }
        )

    async def messages(self, request: web.Request) -> web.Response:
        self.requests.append("messages")
        assert request.query["dir"] == "b"
        end = int(request.query.get("from", str(len(self.events))))
        limit = int(request.query.get("limit", "10"))
        start = max(0, end - limit)
        body: dict[str, Any] = {"chunk": list(reversed(self.events[start:end])), "start": str(end)}
        if start > 0:
            body["end"] = str(start)
        return web.json_response(body)


class Harness:
    def __init__(self, bridge: Bridge, timeline: Timeline, dispatched: list[str]) -> None:
        self.bridge = bridge
        self.timeline = timeline
        self.dispatched = dispatched

    async def deliver(self, txn_id: int, *numbers: int) -> None:
        events = [parse_event(post(n)) for n in numbers]
        await self.bridge.handle_transaction(Transaction(str(txn_id), events, []))

    async def process(self) -> None:
        """Run the processor until nothing is pending (as its loop would)."""
        for _ in range(100):
            await self.bridge.process_pending()
            async with self.bridge.ctx.sessions() as session:
                left = await session.scalar(select(InboundEvent.seq).where(InboundEvent.status == "pending"))
            if left is None:
                return
        raise AssertionError("the processor did not finish")

    def bodies(self) -> list[int]:
        return [int(event_id.removeprefix("$post")) for event_id in self.dispatched]


async def _harness(tmp_path: Path, timeline: Timeline, *, handled: int) -> AsyncIterator[Harness]:
    app = web.Application()
    app.router.add_get("/_matrix/client/v3/rooms/{room_id}/context/{event_id}", timeline.context)
    app.router.add_get("/_matrix/client/v3/rooms/{room_id}/messages", timeline.messages)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    config = parse(
        {
            "homeserver": {"url": str(server.make_url("")).rstrip("/"), "domain": DOMAIN},
            "appservice": {"as_token": "as-secret-0123456789", "hs_token": "hs-secret-0123456789"},
            "database": {"url": f"sqlite:///{tmp_path / 'kanal.db'}"},
        },
        tmp_path / "config.yaml",
    )
    engine = create_engine(config.database_url)
    await migrate(engine)
    sessions = sessionmaker(engine)
    client = HomeserverClient(config.homeserver_url, config.as_token, attempts=1)
    ctx = Context(config, client, sessions, OutboxWorker(sessions, client))
    async with sessions.begin() as session:
        session.add(Room(room_id=BACKSTAGE, kind="backstage"))
        # Posts 1..handled were delivered and relayed before this process started.
        if handled:
            await session.execute(
                insert(InboundEvent),
                [
                    {"event_id": f"$post{n}", "room_id": BACKSTAGE, "payload": post(n), "status": "done"}
                    for n in range(1, handled + 1)
                ],
            )
    bridge = Bridge(ctx, Leases(sessions, "test-holder"))
    dispatched: list[str] = []

    async def record(session: AsyncSession, event: Event) -> None:
        dispatched.append(event.event_id)

    bridge.dispatch = record  # type: ignore[method-assign]
    try:
        yield Harness(bridge, timeline, dispatched)
    finally:
        await client.close()
        await engine.dispose()
        await server.close()


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async for h in _harness(tmp_path, Timeline(1), handled=1):
        yield h


async def test_a_stranded_post_that_never_arrives_is_fetched_and_relayed_in_its_place(
    harness: Harness,
) -> None:
    await harness.process()  # the start: catch-up finds nothing newer than post 1 yet
    harness.timeline.send(2, 3, 4)
    # Transaction 2 (post 2) is stranded; 3 and 4 come through.
    await harness.deliver(3, 3)
    await harness.deliver(4, 4)
    await harness.process()
    assert harness.bodies() == [2, 3, 4]
    # Synapse's recoverer finally sends the stranded transaction: nothing is handled twice.
    await harness.deliver(2, 2)
    await harness.process()
    assert harness.bodies() == [2, 3, 4]


async def test_a_stranded_post_delivered_after_later_ones_is_handled_before_them(harness: Harness) -> None:
    await harness.process()
    harness.bridge._verify_until = 0.0  # the start-up window is over: only the late number reopens it
    harness.timeline.send(2, 3, 4, 5)
    await harness.deliver(1_000, 2)
    await harness.deliver(1_002, 4, 5)  # 1_001 (post 3) was stranded
    await harness.deliver(1_001, 3)  # …and arrives, below the highest number, before 4 and 5 were handled
    await harness.process()
    assert harness.bodies() == [2, 3, 4, 5]


async def test_after_a_delivery_we_answered_with_an_error_a_stranded_post_is_fetched(harness: Harness) -> None:
    await harness.process()
    harness.bridge._verify_until = 0.0
    harness.timeline.send(2, 3, 4)
    await harness.deliver(20, 2)
    await harness.process()
    # Transaction 21 (post 3) was answered with a 500 (the server tells the bridge); Synapse's recovery
    # then lets 22 through first and strands 21.
    await harness.bridge.delivery_failed("transaction 21 failed")
    await harness.deliver(22, 4)
    await harness.process()
    assert harness.bodies() == [2, 3, 4]
    assert "context" in harness.timeline.requests


async def test_gaps_in_the_numbers_are_other_appservices_and_cost_no_requests(harness: Harness) -> None:
    await harness.process()
    harness.bridge._verify_until = 0.0
    before = len(harness.timeline.requests)
    harness.timeline.send(2, 3, 4)
    # Synapse numbers every application service's transactions in one sequence: a bridge on the same
    # homeserver takes the numbers between ours.
    await harness.deliver(40, 2)
    await harness.deliver(47, 3)
    await harness.deliver(95, 4)
    await harness.process()
    assert harness.bodies() == [2, 3, 4]
    assert len(harness.timeline.requests) == before


async def test_a_long_stranded_stretch_is_put_back_in_order_however_far_it_goes(harness: Harness) -> None:
    await harness.process()
    harness.timeline.send(*range(2, 21))
    # Posts 2..16 (more than one /context reaches back) arrive after 17..20.
    await harness.deliver(11, 17, 18, 19, 20)
    await harness.deliver(10, *range(2, 17))
    await harness.process()
    assert harness.bodies() == list(range(2, 21))


async def test_catch_up_re_sequences_out_of_order_pending_posts(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "VERIFY_WINDOW_S", 0.0)  # catch-up alone must do it
    harness.timeline.send(2, 3, 4)
    await harness.deliver(3, 3, 4)
    await harness.deliver(2, 2)
    await harness.process()  # the first run catches up (as after a start) before handling anything
    assert harness.bodies() == [2, 3, 4]
    assert "messages" in harness.timeline.requests
    assert "context" not in harness.timeline.requests


async def test_in_order_deliveries_after_the_window_cost_no_extra_requests(harness: Harness) -> None:
    await harness.process()
    harness.bridge._verify_until = 0.0
    before = len(harness.timeline.requests)
    harness.timeline.send(2, 3, 4, 5)
    await harness.deliver(1, 2)
    await harness.deliver(2, 3, 4)
    await harness.deliver(3, 5)
    await harness.process()
    assert harness.bodies() == [2, 3, 4, 5]
    assert len(harness.timeline.requests) == before


async def test_what_this_process_recorded_is_handled_in_order_without_reading_it_back(harness: Harness) -> None:
    await harness.process()
    harness.bridge._verify_until = 0.0
    harness.timeline.send(*range(2, 8))
    await harness.deliver(1, 2)
    await harness.bridge.process_pending()  # read from the database: the processor knows nothing yet
    reads = reads_of(harness.bridge.ctx.sessions, "inbound_events")
    for number in range(3, 8):
        await harness.deliver(number, number)
        await harness.bridge.process_pending()
    await harness.deliver(8, *[])  # an empty transaction changes nothing
    assert harness.bodies() == [2, 3, 4, 5, 6, 7]
    assert reads == []  # each post was handed over in memory
    await harness.process()
    assert harness.bodies() == [2, 3, 4, 5, 6, 7]


async def test_an_event_recorded_elsewhere_sends_the_processor_back_to_the_database(harness: Harness) -> None:
    await harness.process()
    harness.bridge._verify_until = 0.0
    harness.timeline.send(2, 3, 4)
    await harness.deliver(1, 2)
    await harness.bridge.process_pending()
    # Post 3 is recorded by a transaction this processor was not told of (a concurrent one still on
    # its way, or catch-up); post 4 then arrives as usual.
    async with harness.bridge.ctx.sessions.begin() as session:
        await session.execute(
            insert(InboundEvent), [{"event_id": "$post3", "room_id": BACKSTAGE, "payload": post(3)}]
        )
    reads = reads_of(harness.bridge.ctx.sessions, "inbound_events")
    await harness.deliver(3, 4)
    await harness.bridge.process_pending()
    assert harness.bodies() == [2, 3, 4]  # not 4 before 3
    assert reads  # the numbers did not follow on: it read the database


def test_delivery_sequence_breaks() -> None:
    sequence = DeliverySequence()
    assert not sequence.is_break("7")  # the first one seen says nothing
    assert not sequence.is_break("8")
    assert not sequence.is_break("10")  # 9 went to another application service (one sequence for all)
    assert sequence.is_break("9")  # …or was ours and arrives late
    assert not sequence.is_break("11")
    assert sequence.is_break("11")  # sent again: the homeserver counted it as failed
    assert sequence.is_break("3")  # numbering restarted (a homeserver on SQLite restarted)
    assert not sequence.is_break("4")
    assert not sequence.is_break("txn-abc")  # not a number: nothing to tell
    assert not sequence.is_break("5")


async def test_with_several_processes_a_failure_one_answered_opens_the_window_of_the_one_handling(
    harness: Harness,
) -> None:
    # Several processes (PostgreSQL) split the transactions; one holds the processor lease.
    harness.bridge.row_locks = True
    await harness.process()
    harness.bridge._verify_until = 0.0
    ctx = harness.bridge.ctx
    other = Bridge(ctx, Leases(ctx.sessions, "the-other-process"), row_locks=True)
    harness.timeline.send(2, 3, 4)
    await harness.deliver(20, 2)
    await harness.process()
    await other.delivery_failed("transaction 21 failed")  # the other process answered 21 with a 500
    await harness.deliver(22, 4)
    await harness.process()
    assert harness.bodies() == [2, 3, 4]
