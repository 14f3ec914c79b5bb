"""The outbox worker against a scripted homeserver: every entry sent once, in order per room, recorded.

Several room queues send at once (their outcomes are then recorded together); a queue longer than
one read (QUEUE_BATCH) is sent whole, taking turns with the other queues; a failing send keeps the
rest of its queue waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import select, update

from appservice.client import HomeserverClient
from bridge.runtime import outbox
from bridge.runtime.outbox import OutboxKind, OutboxStatus, OutboxWorker, aware, new_entry, room_queue
from bridge.store.db import create_engine, migrate, sessionmaker
from bridge.store.models import Lease, OutboxEntry
from tests.support import reads_of

GHOST = "@kanal_news:example.org"


class Homeserver:
    def __init__(self) -> None:
        self.sent: dict[str, list[str]] = {}
        self.failing: set[str] = set()
        self.refusing: set[str] = set()
        self.slow: dict[str, float] = {}  # room → seconds each send takes
        self.order: list[str] = []  # the room of each send, in the order they were taken

    async def send(self, request: web.Request) -> web.Response:
        room = request.match_info["room_id"]
        if room in self.slow:
            await asyncio.sleep(self.slow[room])
        self.order.append(room)
        if room in self.failing:
            return web.json_response({"errcode": "M_UNKNOWN", "error": "down"}, status=502)
        if room in self.refusing:
            return web.json_response({"errcode": "M_FORBIDDEN", "error": "not in the room"}, status=403)
        body = await request.json()
        self.sent.setdefault(room, []).append(body["body"])
        return web.json_response({"event_id": f"${room}-{len(self.sent[room])}"})


@pytest.fixture
async def worker(tmp_path: Path) -> AsyncIterator[tuple[OutboxWorker, Homeserver]]:
    homeserver = Homeserver()
    app = web.Application()
    app.router.add_put("/_matrix/client/v3/rooms/{room_id}/send/{type}/{txn}", homeserver.send)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    engine = create_engine(f"sqlite:///{tmp_path / 'outbox.db'}")
    await migrate(engine)
    client = HomeserverClient(str(server.make_url("")), "token", attempts=1)
    try:
        yield OutboxWorker(sessionmaker(engine), client), homeserver
    finally:
        await client.close()
        await engine.dispose()
        await server.close()


async def _queue(worker: OutboxWorker, rooms: dict[str, int]) -> None:
    async with worker.sessions.begin() as session:
        for room, count in rooms.items():
            for i in range(count):
                payload: dict[str, Any] = {
                    "room_id": room,
                    "event_type": "m.room.message",
                    "content": {"msgtype": "m.text", "body": f"{room} {i}"},
                }
                session.add(new_entry(room_queue(room), OutboxKind.SEND, GHOST, payload))


async def test_several_rooms_at_once_each_in_order_and_recorded(
    worker: tuple[OutboxWorker, Homeserver],
) -> None:
    outbox_worker, homeserver = worker
    rooms = {"!a:example.org": 7, "!b:example.org": outbox.QUEUE_BATCH + 3, "!c:example.org": 1}
    await _queue(outbox_worker, rooms)
    while await outbox_worker.drain_once():
        pass
    for room, count in rooms.items():
        assert homeserver.sent[room] == [f"{room} {i}" for i in range(count)]
    async with outbox_worker.sessions() as session:
        entries = (await session.scalars(select(OutboxEntry).order_by(OutboxEntry.id))).all()
    assert all(e.status == OutboxStatus.DONE and e.attempts == 1 for e in entries)
    assert all(e.result_event_id is not None and e.result_event_id.startswith("$!") for e in entries)
    assert outbox_worker.sent == sum(rooms.values())


async def test_a_failing_room_waits_while_the_others_go_on(worker: tuple[OutboxWorker, Homeserver]) -> None:
    outbox_worker, homeserver = worker
    homeserver.failing.add("!down:example.org")
    await _queue(outbox_worker, {"!down:example.org": 3, "!up:example.org": 3})
    while await outbox_worker.drain_once():
        pass
    assert homeserver.sent == {
        "!up:example.org": ["!up:example.org 0", "!up:example.org 1", "!up:example.org 2"]
    }
    async with outbox_worker.sessions() as session:
        down = (
            await session.scalars(
                select(OutboxEntry)
                .where(OutboxEntry.queue == room_queue("!down:example.org"))
                .order_by(OutboxEntry.id)
            )
        ).all()
    assert [e.status for e in down] == [OutboxStatus.PENDING] * 3
    assert [e.attempts for e in down] == [1, 0, 0]  # only the head was tried; it waits for its retry
    head = down[0]
    assert head.last_error is not None and head.last_error.startswith("502")
    assert head.next_attempt_at is not None and aware(head.next_attempt_at) > datetime.now(UTC)


async def test_a_refused_send_fails_for_good_and_a_secret_is_not_kept_once_sent(
    worker: tuple[OutboxWorker, Homeserver],
) -> None:
    outbox_worker, homeserver = worker
    homeserver.refusing.add("!refusing:example.org")
    async with outbox_worker.sessions.begin() as session:
        for room in ("!refusing:example.org", "!dm:example.org"):
            payload: dict[str, Any] = {
                "room_id": room,
                "event_type": "m.room.message",
                "content": {"msgtype": "m.notice", "body": "your token: s3cr3t-t0ken"},
                "secret": True,
            }
            session.add(new_entry(room_queue(room), OutboxKind.SEND, GHOST, payload))
    while await outbox_worker.drain_once():
        pass
    async with outbox_worker.sessions() as session:
        entries = {e.queue: e for e in (await session.scalars(select(OutboxEntry))).all()}
    refused, sent = entries[room_queue("!refusing:example.org")], entries[room_queue("!dm:example.org")]
    assert (refused.status, refused.attempts, refused.result_event_id) == (OutboxStatus.FAILED, 1, None)
    assert refused.last_error is not None and "M_FORBIDDEN" in refused.last_error
    assert (sent.status, sent.result_event_id) == (OutboxStatus.DONE, "$!dm:example.org-1")
    assert homeserver.sent["!dm:example.org"] == ["your token: s3cr3t-t0ken"]
    assert sent.payload["content"] == {"msgtype": "m.notice", "body": "(secret removed)"}


def _sealed_entry(room: str, stand_in: str, ref: str, holder: str) -> OutboxEntry:
    payload: dict[str, Any] = {
        "room_id": room,
        "event_type": "m.room.message",
        "content": {"msgtype": "m.notice", "body": stand_in},
        "sealed": ref,
        "holder": holder,
    }
    return new_entry(room_queue(room), OutboxKind.SEND, GHOST, payload)


def _files_holding(folder: Path, secret: str) -> list[str]:
    return [p.name for p in folder.iterdir() if p.is_file() and secret.encode() in p.read_bytes()]


async def test_a_sealed_reply_sends_its_secret_which_the_database_never_holds(
    worker: tuple[OutboxWorker, Homeserver], tmp_path: Path
) -> None:
    outbox_worker, homeserver = worker
    ref = outbox_worker.sealed.seal({"msgtype": "m.notice", "body": "your token: s3cr3t-t0ken"})
    async with outbox_worker.sessions.begin() as session:
        session.add(_sealed_entry("!dm:example.org", "the token was lost", ref, outbox_worker.holder))
    while await outbox_worker.drain_once():
        pass
    assert homeserver.sent["!dm:example.org"] == ["your token: s3cr3t-t0ken"]
    assert ref not in outbox_worker.sealed  # forgotten once sent
    async with outbox_worker.sessions() as session:
        entry = (await session.scalars(select(OutboxEntry))).one()
    assert (entry.status, entry.payload["content"]["body"]) == (OutboxStatus.DONE, "the token was lost")
    assert _files_holding(tmp_path, "s3cr3t-t0ken") == []  # outbox.db, -wal, -shm


async def test_a_sealed_reply_of_a_process_that_stopped_sends_its_stand_in(
    worker: tuple[OutboxWorker, Homeserver],
) -> None:
    outbox_worker, homeserver = worker
    async with outbox_worker.sessions.begin() as session:
        # Queued by an earlier run of Kanal, whose memory (and the secret in it) is gone.
        session.add(_sealed_entry("!dm:example.org", "the token was lost", "f00d", "host:1:abc"))
    while await outbox_worker.drain_once():
        pass
    assert homeserver.sent["!dm:example.org"] == ["the token was lost"]


async def test_a_sealed_reply_waits_for_its_live_process_then_another_sends_the_stand_in(
    worker: tuple[OutboxWorker, Homeserver],
) -> None:
    holder, homeserver = worker
    # A second process on the same database (row locks, as on PostgreSQL) without the secret.
    other = OutboxWorker(holder.sessions, holder.client, row_locks=True, holder="other:2:def")
    ref = holder.sealed.seal({"msgtype": "m.notice", "body": "your token: s3cr3t-t0ken"})
    async with holder.sessions.begin() as session:
        alive = datetime.now(UTC) + timedelta(minutes=1)
        session.add(Lease(name="processor", holder=holder.holder, expires_at=alive))
        session.add(_sealed_entry("!dm:example.org", "the token was lost", ref, holder.holder))
    assert not await other.drain_once()  # the holder is live: its reply waits for it
    assert homeserver.sent == {}
    async with holder.sessions.begin() as session:
        await session.execute(update(Lease).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert await other.drain_once()  # the holder is gone (its lease ran out)
    assert homeserver.sent["!dm:example.org"] == ["the token was lost"]


async def _post(worker: OutboxWorker, rooms: list[str], body: str, *, reply_to: str | None = None) -> None:
    """What the processor does for a post: its sends inserted (outbox.insert_entries), perhaps a reply
    queued through the ORM, then the worker told once the transaction committed."""
    async with worker.sessions.begin() as session:
        entries = [
            new_entry(
                room_queue(room),
                OutboxKind.SEND,
                GHOST,
                {"room_id": room, "event_type": "m.room.message", "content": {"msgtype": "m.text", "body": body}},
            )
            for room in rooms
        ]
        await outbox.insert_entries(session, entries)
        if reply_to is not None:
            payload = {"room_id": reply_to, "event_type": "m.room.message", "content": {"body": f"{body}: done"}}
            session.add(new_entry(room_queue(reply_to), OutboxKind.SEND, GHOST, payload))
    outbox.committed(session, worker)


async def test_a_posts_sends_go_out_without_reading_the_outbox_back(
    worker: tuple[OutboxWorker, Homeserver],
) -> None:
    outbox_worker, homeserver = worker
    rooms = ["!a:example.org", "!b:example.org"]
    await outbox_worker.drain_once()  # a first read: nothing pending
    reads = reads_of(outbox_worker.sessions, "outbox")
    for n in range(5):
        await _post(outbox_worker, rooms, f"post {n}")
        assert await outbox_worker.drain_once()
    assert reads == []
    assert homeserver.sent == {room: [f"post {n}" for n in range(5)] for room in rooms}
    async with outbox_worker.sessions() as session:
        statuses = (await session.scalars(select(OutboxEntry.status))).all()
    assert statuses == [OutboxStatus.DONE] * 10


async def test_a_send_queued_behind_another_waits_its_turn(worker: tuple[OutboxWorker, Homeserver]) -> None:
    outbox_worker, homeserver = worker
    room = "!a:example.org"
    await outbox_worker.drain_once()
    # Another process (`kanal hosting apply`, say) queued an entry in the room, without telling us.
    await _queue(outbox_worker, {room: 1})
    await _post(outbox_worker, [room], "post")
    reads = reads_of(outbox_worker.sessions, "outbox")
    while await outbox_worker.drain_once():
        pass
    assert homeserver.sent[room] == [f"{room} 0", "post"]  # in the order they were queued
    assert reads  # not handed over: the worker read the queue


async def test_a_reply_queued_with_the_post_is_read_and_sent_at_once(
    worker: tuple[OutboxWorker, Homeserver],
) -> None:
    outbox_worker, homeserver = worker
    await outbox_worker.drain_once()
    await _post(outbox_worker, ["!a:example.org"], "post", reply_to="!dm:example.org")
    assert await outbox_worker.drain_once()
    assert homeserver.sent == {"!a:example.org": ["post"], "!dm:example.org": ["post: done"]}


async def test_a_long_queue_takes_turns_with_the_others(worker: tuple[OutboxWorker, Homeserver]) -> None:
    """A burst into one room (300 sends) does not hold a send to another room, queued after it started,
    until the burst is over: each queue sends for at most QUEUE_TURN_S before the next drain."""
    outbox_worker, homeserver = worker
    busy, other = "!busy:example.org", "!other:example.org"
    homeserver.slow[busy] = 0.01
    await _queue(outbox_worker, {busy: 300})
    running = asyncio.create_task(outbox_worker.run())
    try:
        await asyncio.sleep(0.3)
        await _queue(outbox_worker, {other: 1})
        outbox_worker.wake()
        for _ in range(200):
            if len(homeserver.sent.get(busy, [])) == 300 and other in homeserver.sent:
                break
            await asyncio.sleep(0.1)
    finally:
        outbox_worker.stop()
        await running
    assert homeserver.sent[busy] == [f"{busy} {i}" for i in range(300)]  # still in order, once each
    assert homeserver.sent[other] == [f"{other} 0"]
    assert homeserver.order.index(other) < 250, "the other room waited for the whole burst"


async def test_the_age_monitoring_alerts_on_leaves_out_what_waits_on_purpose(
    worker: tuple[OutboxWorker, Homeserver],
) -> None:
    """kanal_outbox_oldest_age_seconds (KanalOutboxStuck): a statement waiting for its reader on another
    server to join (NotYet), and what queues behind it, is no stuck send; a send failing is."""
    outbox_worker, homeserver = worker
    dm, down = "!dm:example.org", "!down:example.org"
    waits: list[str] = []

    async def wait_for_join(entry: OutboxEntry, _worker: OutboxWorker) -> str | None:
        waits.append(entry.queue)
        raise outbox.NotYet("@reader:elsewhere.example has not joined yet", 3600)

    outbox_worker.executors["test_wait_for_join"] = wait_for_join
    async with outbox_worker.sessions.begin() as session:
        statement = new_entry(room_queue(dm), "test_wait_for_join", GHOST, {"room_id": dm})  # type: ignore[arg-type]
        session.add(statement)
    await _queue(outbox_worker, {dm: 1, down: 1})
    homeserver.failing.add(down)
    ten_minutes_ago = datetime.now(UTC) - timedelta(minutes=10)
    async with outbox_worker.sessions.begin() as session:
        await session.execute(update(OutboxEntry).values(created_at=ten_minutes_ago))
    while await outbox_worker.drain_once():
        pass
    assert waits == [room_queue(dm)] and homeserver.sent == {}

    # The failing send counts: it should have gone ten minutes ago.
    count, age = await outbox_worker.depth()
    assert count == 3 and 590 < age < 700, (count, age)

    # Once it has gone (as its retry would), what is left waits on purpose: the statement and the send
    # queued behind it.
    async with outbox_worker.sessions.begin() as session:
        await session.execute(
            update(OutboxEntry).where(OutboxEntry.queue == room_queue(down)).values(status=OutboxStatus.DONE)
        )
    assert await outbox_worker.depth() == (2, 0.0)

    # A wait long past its next try (the worker has not tried it again) is a stuck send once more.
    async with outbox_worker.sessions.begin() as session:
        await session.execute(
            update(OutboxEntry)
            .where(OutboxEntry.id == statement.id)
            .values(next_attempt_at=datetime.now(UTC) - timedelta(seconds=outbox.WAIT_OVERDUE_S + 60))
        )
    count, age = await outbox_worker.depth()
    assert count == 2 and 590 < age < 700, (count, age)
