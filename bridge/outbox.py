"""The durable outbox: every write to the homeserver is recorded, then sent, then marked done.

    handler ──(same DB transaction as the decision)──▶ outbox row (pending)
    worker: claim pending rows ─▶ per queue, strictly in id order ─▶ execute with txn id `kanal-<id>`
        ├─ success ─────────────▶ done (+ result event id, + post mapping)
        ├─ transient (5xx, 429,  ▶ stays pending, next_attempt_at = now + backoff (capped); the queue
        │  unreachable)            waits so later rows never overtake it
        └─ permanent (4xx)  ────▶ failed, logged; the queue moves on

A send is retried with the same transaction id, so the homeserver answers a repeat with the event
it already has instead of posting twice.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from appservice.client import HomeserverClient
from appservice.errors import MatrixConnectionError, MatrixRequestError
from appservice.ids import UserID

from .relay import replace_ref
from .store.models import OutboxEntry, Post

log = logging.getLogger(__name__)

CLAIM_BATCH = 500
MAX_PARALLEL_QUEUES = 16
RETRY_BASE_S = 1.0
RETRY_MAX_S = 60.0
POLL_INTERVAL_S = 1.0


class SkipEntry(Exception):
    """The entry can no longer have any effect (e.g. its target was never published)."""


def txn_id_for(entry_id: int, suffix: str = "") -> str:
    return f"kanal-{entry_id}{'-' + suffix if suffix else ''}"


def new_entry(
    queue: str, kind: str, as_user: str, payload: dict[str, Any], ref_source: str | None = None
) -> OutboxEntry:
    return OutboxEntry(queue=queue, kind=kind, as_user=as_user, payload=payload, ref_source=ref_source)


Executor = Callable[[OutboxEntry, "OutboxWorker"], Awaitable[str | None]]


class OutboxWorker:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], client: HomeserverClient) -> None:
        self.sessions = sessions
        self.client = client
        self.executors: dict[str, Executor] = {
            "send": _exec_send,
            "redact": _exec_redact,
            "state": _exec_state,
            "invite": _exec_invite,
            "kick": _exec_kick,
            "join": _exec_join,
            "leave": _exec_leave,
            "pin": _exec_pin,
            "unpin": _exec_pin,
            "displayname": _exec_displayname,
        }
        self._wake = asyncio.Event()
        self._stopping = False
        self.sent = 0
        self.failed = 0

    def wake(self) -> None:
        self._wake.set()

    async def relayed_event(self, source_event_id: str) -> str:
        async with self.sessions() as session:
            relayed = await session.scalar(
                select(Post.relayed_event_id).where(Post.source_event_id == source_event_id)
            )
        if relayed is None:
            raise SkipEntry(f"{source_event_id} has no relayed copy")
        return relayed

    async def run(self) -> None:
        """Drain until `stop()`; then flush what is due once more and return."""
        while not self._stopping:
            self._wake.clear()
            worked = await self.drain_once()
            if not worked and not self._stopping:
                try:
                    await asyncio.wait_for(self._wake.wait(), POLL_INTERVAL_S)
                except TimeoutError:
                    pass
        # Shutdown: send what the homeserver will take now; the rest waits for the next start.
        while await self.drain_once():
            pass

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def pending_count(self) -> int:
        async with self.sessions() as session:
            rows = await session.scalars(select(OutboxEntry.id).where(OutboxEntry.status == "pending"))
            return len(rows.all())

    async def drain_once(self) -> bool:
        """Send what is due; True when anything was attempted."""
        now = datetime.now(UTC)
        async with self.sessions() as session:
            rows = (
                await session.scalars(
                    select(OutboxEntry)
                    .where(OutboxEntry.status == "pending")
                    .order_by(OutboxEntry.id)
                    .limit(CLAIM_BATCH)
                )
            ).all()
        if not rows:
            return False
        queues: dict[str, list[OutboxEntry]] = {}
        for row in rows:
            queues.setdefault(row.queue, []).append(row)
        due = {
            q: entries
            for q, entries in queues.items()
            if entries[0].next_attempt_at is None or _aware(entries[0].next_attempt_at) <= now
        }
        if not due:
            return False
        semaphore = asyncio.Semaphore(MAX_PARALLEL_QUEUES)

        async def run_queue(entries: list[OutboxEntry]) -> None:
            async with semaphore:
                for entry in entries:
                    if not await self._execute(entry):
                        return  # keep order: the rest of this queue waits for the retry

        await asyncio.gather(*(run_queue(entries) for entries in due.values()))
        return True

    async def _execute(self, entry: OutboxEntry) -> bool:
        """Run one entry; True when the queue may go on (done, skipped or permanently failed)."""
        executor = self.executors.get(entry.kind)
        try:
            if executor is None:
                raise SkipEntry(f"unknown outbox kind {entry.kind!r}")
            result = await executor(entry, self)
        except SkipEntry as exc:
            log.info("Outbox %d (%s) skipped: %s", entry.id, entry.kind, exc)
            await self._finish(entry, "done", error=str(exc))
            return True
        except MatrixRequestError as exc:
            if exc.retryable:
                await self._retry_later(entry, f"{exc.status} {exc.errcode}: {exc.message}")
                return False
            log.warning(
                "Outbox %d (%s) failed for good: %s %s", entry.id, entry.kind, exc.errcode, exc.message
            )
            self.failed += 1
            await self._finish(entry, "failed", error=f"{exc.status} {exc.errcode}: {exc.message}")
            await self._notify(entry, "on_failure", exc.message or exc.errcode)
            return True
        except MatrixConnectionError as exc:
            await self._retry_later(entry, str(exc))
            return False
        self.sent += 1
        await self._finish(entry, "done", result=result)
        await self._notify(entry, "on_success")
        return True

    async def _notify(self, entry: OutboxEntry, outcome: str, error: str = "") -> None:
        """Tell the person who asked: payload `on_success` / `on_failure` = {as_user, room_id, body}."""
        note = entry.payload.get(outcome)
        if not isinstance(note, dict):
            return
        try:
            await self.client.intent(UserID(note["as_user"])).send(
                note["room_id"],
                "m.room.message",
                {"msgtype": "m.notice", "body": note["body"].replace("{error}", error)},
                txn_id_for(entry.id, outcome),
            )
        except (MatrixRequestError, MatrixConnectionError) as exc:
            log.warning("Could not send the %s note of outbox %d: %s", outcome, entry.id, exc)

    async def _retry_later(self, entry: OutboxEntry, error: str) -> None:
        attempts = entry.attempts + 1
        delay = min(RETRY_BASE_S * 2 ** min(attempts - 1, 10), RETRY_MAX_S) * (0.75 + random.random() / 2)
        log.warning(
            "Outbox %d (%s) attempt %d failed (%s); retrying in %.0f s",
            entry.id,
            entry.kind,
            attempts,
            error,
            delay,
        )
        entry.attempts = attempts
        entry.next_attempt_at = datetime.now(UTC) + timedelta(seconds=delay)
        async with self.sessions.begin() as session:
            await session.execute(
                update(OutboxEntry)
                .where(OutboxEntry.id == entry.id)
                .values(attempts=attempts, next_attempt_at=entry.next_attempt_at, last_error=error[:1000])
            )

    async def _finish(
        self, entry: OutboxEntry, status: str, *, result: str | None = None, error: str | None = None
    ) -> None:
        async with self.sessions.begin() as session:
            await session.execute(
                update(OutboxEntry)
                .where(OutboxEntry.id == entry.id)
                .values(status=status, result_event_id=result, last_error=error, attempts=entry.attempts + 1)
            )
            source = entry.payload.get("post_source")
            if status == "done" and result is not None and isinstance(source, str):
                await session.execute(
                    update(Post)
                    .where(
                        Post.source_event_id == source,
                        or_(Post.relayed_event_id.is_(None), Post.relayed_event_id != result),
                    )
                    .values(relayed_event_id=result)
                )


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def _resolved(entry: OutboxEntry, worker: OutboxWorker) -> dict[str, Any]:
    if entry.ref_source is None:
        return entry.payload
    relayed = await worker.relayed_event(entry.ref_source)
    resolved: dict[str, Any] = replace_ref(entry.payload, relayed)
    return resolved


async def _exec_send(entry: OutboxEntry, worker: OutboxWorker) -> str | None:
    payload = await _resolved(entry, worker)
    intent = worker.client.intent(UserID(entry.as_user))
    return await intent.send(
        payload["room_id"], payload["event_type"], payload["content"], txn_id_for(entry.id)
    )


async def _exec_redact(entry: OutboxEntry, worker: OutboxWorker) -> str | None:
    payload = await _resolved(entry, worker)
    intent = worker.client.intent(UserID(entry.as_user))
    return await intent.redact(
        payload["room_id"], payload["event_id"], txn_id_for(entry.id), payload.get("reason")
    )


async def _exec_state(entry: OutboxEntry, worker: OutboxWorker) -> str | None:
    p = entry.payload
    intent = worker.client.intent(UserID(entry.as_user))
    return await intent.send_state(p["room_id"], p["event_type"], p["content"], p.get("state_key", ""))


async def _exec_invite(entry: OutboxEntry, worker: OutboxWorker) -> str | None:
    p = entry.payload
    intent = worker.client.intent(UserID(entry.as_user))
    try:
        await intent.invite(p["room_id"], p["user_id"], p.get("reason"))
    except MatrixRequestError as exc:
        # Already joined or invited: the goal is reached.
        if exc.status == 403 and ("already" in exc.message or "is in the room" in exc.message):
            return None
        raise
    return None


async def _exec_kick(entry: OutboxEntry, worker: OutboxWorker) -> str | None:
    p = entry.payload
    intent = worker.client.intent(UserID(entry.as_user))
    try:
        await intent.kick(p["room_id"], p["user_id"], p.get("reason"))
    except MatrixRequestError as exc:
        if exc.status == 403 and "not in the room" in exc.message.lower():
            return None
        raise
    return None


async def _exec_join(entry: OutboxEntry, worker: OutboxWorker) -> str | None:
    intent = worker.client.intent(UserID(entry.as_user))
    await intent.ensure_registered()
    await intent.join(entry.payload["room_id"])
    return None


async def _exec_leave(entry: OutboxEntry, worker: OutboxWorker) -> str | None:
    intent = worker.client.intent(UserID(entry.as_user))
    try:
        await intent.leave(entry.payload["room_id"], entry.payload.get("reason"))
    except MatrixRequestError as exc:
        if exc.status not in (403, 404):
            raise
    return None


async def _exec_displayname(entry: OutboxEntry, worker: OutboxWorker) -> str | None:
    intent = worker.client.intent(UserID(entry.as_user))
    await intent.ensure_registered()
    await intent.set_displayname(entry.payload["displayname"])
    return None


async def _exec_pin(entry: OutboxEntry, worker: OutboxWorker) -> str | None:
    """Read-modify-write of `m.room.pinned_events`; a set operation, so a repeat changes nothing."""
    p = await _resolved(entry, worker)
    intent = worker.client.intent(UserID(entry.as_user))
    try:
        current = (await intent.get_state(p["room_id"], "m.room.pinned_events")).get("pinned", [])
    except MatrixRequestError as exc:
        if exc.status != 404:
            raise
        current = []
    pinned = [e for e in current if isinstance(e, str)]
    target = p["event_id"]
    if entry.kind == "pin" and target not in pinned:
        pinned.append(target)
    elif entry.kind == "unpin" and target in pinned:
        pinned.remove(target)
    else:
        return None
    return await intent.send_state(p["room_id"], "m.room.pinned_events", {"pinned": pinned})
