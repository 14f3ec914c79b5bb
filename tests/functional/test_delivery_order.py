"""The processor keeps a backstage room's timeline order when the homeserver delivers out of order.

Synapse's application-service recovery can let a newer transaction through before a stranded older
one, or never send the older one. These tests drive the real Bridge (real SQLite, real HTTP client)
against a scripted homeserver timeline served over loopback, deliver transactions in the bad orders
Synapse produces, and record the order in which events reach dispatch.

The same property is checked end to end against a real Synapse by the SIGKILL crash test in
tests/integration/test_reliability.py; these tests make each failure mode happen on purpose.
"""

from __future__ import annotations

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

DOMAIN = "example.org"
BOT = f"@kanal:{DOMAIN}"
ALICE = f"@alice:{DOMAIN}"
BACKSTAGE = f"!backstage:{DOMAIN}"


def post(n: int) -> dict[str, Any]:
    return {
        "event_id": f"$post{n}",
        "room_id": BACKSTAGE,
        "sender": ALICE,
        "type": "m.room.message",
        "origin_server_ts": 1_700_000_000_000 + n,
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
            "origin_server_ts": 1_700_000_000_000,
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
    harness.bridge._verify_until = 0.0  # the start-up window is over: only the break reopens it
    harness.timeline.send(2, 3, 4, 5)
    await harness.deliver(1_000, 2)  # numbering restarts after the start; this one is in order
    await harness.deliver(1_002, 4, 5)  # 1_001 (post 3) was stranded: a break
    await harness.deliver(1_001, 3)  # …and it arrives before the processor got to 4 and 5
    await harness.process()
    assert harness.bodies() == [2, 3, 4, 5]


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


def test_delivery_sequence_breaks() -> None:
    sequence = DeliverySequence()
    assert not sequence.is_break("7")  # the first one seen says nothing
    assert not sequence.is_break("8")
    assert sequence.is_break("10")  # 9 skipped
    assert sequence.is_break("9")  # 9 late
    assert sequence.is_break("3")  # numbering restarted (a homeserver restart)
    assert not sequence.is_break("4")
    assert not sequence.is_break("txn-abc")  # not a number: nothing to tell
    assert not sequence.is_break("5")
