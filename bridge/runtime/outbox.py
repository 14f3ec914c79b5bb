"""The durable outbox: every write to the homeserver is recorded, then sent, then marked done.

    handler ──(same DB transaction as the decision)──▶ outbox row (pending)
    worker: claim pending rows ─▶ per queue, strictly in id order ─▶ execute with txn id `kanal-<id>`
        ├─ success ─────────────▶ done (+ result event id, + post mapping)
        ├─ transient (5xx, 429,  ▶ stays pending, next_attempt_at = now + backoff (capped); the queue
        │  unreachable)            waits so later rows never overtake it
        └─ permanent (4xx)  ────▶ failed, logged; the queue moves on

A send is retried with the same transaction id, so the homeserver answers a repeat with the event
it already has instead of posting twice.

A reply carrying a secret shown once (a token) is *sealed*: its entry holds only a stand-in (what to
say if the secret is gone), the secret itself stays in the memory of the process that queued it
(`SealedReplies`), and the send uses it when it is there. So the secret is never written to the
database, its journal or its WAL; if that process stops before sending, the stand-in goes out instead.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Integer, String, bindparam, case, event, func, insert, literal_column, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, aliased

from appservice.client import HomeserverClient
from appservice.errors import MatrixConnectionError, MatrixRequestError
from appservice.ids import UserID
from bridge.matrix.relay import replace_ref
from bridge.runtime.e2ee import Crypto, CryptoError
from bridge.store import plain, queries
from bridge.store.leases import new_holder_id
from bridge.store.models import Channel, Lease, OutboxEntry, Post, PostCopy

log = logging.getLogger(__name__)

CLAIM_BATCH = 500
QUEUE_BATCH = 50
MAX_PARALLEL_QUEUES = 16
# How long one queue sends before the drain ends its turn: a drain waits for all its queues, so one
# long queue (a burst of posts into one channel) would otherwise hold every other room's sends, the
# bot's answers included, until it is empty.
QUEUE_TURN_S = 1.0
# An entry whose executor raises something unexpected is tried this many times, then failed.
MAX_UNEXPECTED_ATTEMPTS = 5
RETRY_BASE_S = 1.0
RETRY_MAX_S = 60.0
POLL_INTERVAL_S = 1.0
TXN_MARKER = "net.kanal.txn"
PROBE_INTERVAL_S = 2.0
# Sealed replies kept at most (each is sent within moments; only a long outage keeps many waiting).
MAX_SEALED = 1000


class OutboxKind(StrEnum):
    """What an outbox entry does; stored in `outbox.kind` as these strings. The first group runs in
    the worker itself; the others are registered by the parts that own them (`executors`)."""

    SEND = "send"
    REDACT = "redact"
    STATE = "state"
    INVITE = "invite"
    KICK = "kick"
    JOIN = "join"
    LEAVE = "leave"
    PIN = "pin"
    UNPIN = "unpin"
    DISPLAYNAME = "displayname"
    AVATAR_URL = "avatar_url"  # a profile picture ("" removes it)
    # bridge.service
    JOIN_CHAT = "join_chat"  # the bot joins a new chat: answers what waits there, or greets
    # bridge.broadcast.seam
    POST_EDIT = "post_edit"
    COMMENTS_LINK = "comments_link"  # a post_edit queued before the seam existed
    OPEN_SHARD = "open_shard"  # bridge.broadcast.shards
    # bridge.channels
    CREATE_CHANNEL = "create_channel"
    DELETE_CHANNEL = "delete_channel"
    OPERATOR_ROOM = "operator_room"
    ALIAS_SET = "alias_set"
    ALIAS_DELETE = "alias_delete"
    DIRECTORY = "directory"
    HOSTING_RECONCILE = "hosting_reconcile"
    # bridge.moderation
    MODERATION_ROOM = "moderation_room"
    POLICY_BAN = "policy_ban"
    # bridge.audience.comments
    COMMENTS_ROOM = "comments_room"
    COMMENTS_ROOT = "comments_root"
    COMMENTS_THREAD = "comments_thread"
    COMMENTS_DM = "comments_dm"


class OutboxStatus(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
    RETRY = "retry"  # an attempt's outcome only, never stored


def room_queue(room_id: str) -> str:
    """The queue of a room's writes: they are sent strictly in order."""
    return f"room:{room_id}"


class SkipEntry(Exception):
    """The entry can no longer have any effect (e.g. its target was never published)."""


# The last_error of an entry that waits on purpose (NotYet). The age on /metrics leaves it out, with
# what queues behind it, until WAIT_OVERDUE_S past its next try (the worker has tried it again by then).
WAITING = "waiting: "
WAIT_OVERDUE_S = 60.0


class NotYet(Exception):
    """The entry waits for something outside Kanal (e.g. a person to join); tried again in `retry_in` s."""

    def __init__(self, why: str, retry_in: float) -> None:
        super().__init__(why)
        self.retry_in = retry_in


def txn_id_for(entry_id: int, suffix: str = "") -> str:
    return f"kanal-{entry_id}{'-' + suffix if suffix else ''}"


def new_entry(
    queue: str, kind: OutboxKind, as_user: str, payload: dict[str, Any], ref_source: str | None = None
) -> OutboxEntry:
    return OutboxEntry(queue=queue, kind=kind, as_user=as_user, payload=payload, ref_source=ref_source)


_HANDED = "kanal.outbox.handed"  # Session.info keys
_QUEUED = "kanal.outbox.queued"


async def insert_entries(session: AsyncSession, entries: list[OutboxEntry]) -> list[int]:
    """Queue entries with one plain INSERT (a post's sends, the hot path: the ORM's flush of each
    entry costs several times as much); their ids, in order.

    When each is the first pending entry of its queue (nothing before it waits there), they are
    handed over: once the transaction commits, the worker may send them without reading them back
    (see `committed`).
    """
    if not entries:
        return []
    rows = [
        {"queue": e.queue, "kind": e.kind, "as_user": e.as_user, "payload": e.payload, "ref_source": e.ref_source}
        for e in entries
    ]
    inserted = (await plain.run(session, _INSERT_ENTRIES, rows)).all()
    for entry, (entry_id, _waiting) in zip(entries, inserted, strict=True):
        entry.id, entry.status, entry.attempts, entry.next_attempt_at = entry_id, OutboxStatus.PENDING, 0, None
    if not any(waiting for _id, waiting in inserted):
        session.info.setdefault(_HANDED, []).extend(entries)
    return [entry_id for entry_id, _waiting in inserted]


# An entry's id, and how many entries wait before it in its queue (any other process's included:
# SQLite lets one transaction write at a time, so every earlier entry is committed and seen here).
_WAITING = literal_column(
    "(SELECT count(*) FROM outbox AS earlier WHERE earlier.queue = outbox.queue"
    " AND earlier.status = 'pending' AND earlier.id < outbox.id)",
    Integer,
)
_INSERT_ENTRIES = insert(OutboxEntry).returning(OutboxEntry.id, _WAITING, sort_by_parameter_order=True)


def committed(session: AsyncSession, worker: OutboxWorker) -> None:
    """After the session's transaction committed: tell the worker what it queued. The entries handed
    over, when they are all it queued, go to the worker as they are; anything else wakes it to read."""
    handed: list[OutboxEntry] = session.info.pop(_HANDED, [])
    if handed and not session.info.pop(_QUEUED, False):
        worker.hand(handed)
    else:
        worker.wake()


@event.listens_for(Session, "before_flush")
def _note_queued(session: Session, flush_context: Any, instances: Any) -> None:
    """Entries queued through the ORM (everything but a post's sends): `committed` wakes the worker."""
    if any(isinstance(obj, OutboxEntry) for obj in session.new):
        session.info[_QUEUED] = True


class SealedReplies:
    """The contents of sealed replies, by reference, in this process's memory only (never on disk).

    A reply is forgotten once its entry is sent (or failed for good); beyond `MAX_SEALED` the oldest
    is forgotten first, and its entry sends its stand-in.
    """

    def __init__(self, limit: int = MAX_SEALED) -> None:
        self._contents: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._limit = limit

    def seal(self, content: dict[str, Any]) -> str:
        ref = secrets.token_hex(16)
        self._contents[ref] = content
        while len(self._contents) > self._limit:
            self._contents.popitem(last=False)
        return ref

    def get(self, ref: str) -> dict[str, Any] | None:
        return self._contents.get(ref)

    def forget(self, ref: str) -> None:
        self._contents.pop(ref, None)

    def __contains__(self, ref: object) -> bool:
        return ref in self._contents


Executor = Callable[[OutboxEntry, "OutboxWorker"], Awaitable[str | None]]


@dataclass(frozen=True)
class Outcome:
    status: OutboxStatus
    result: str | None = None
    error: str | None = None
    retry_in: float | None = None  # a retry's delay when not the backoff's (NotYet)


class OutboxWorker:
    """Drains the outbox; safe to run in several processes sharing one PostgreSQL.

    With PostgreSQL (`row_locks=True`) a queue's head entry is locked with `FOR UPDATE SKIP LOCKED`
    for the whole send, so two processes never send the same entry and a queue's entries never
    overtake each other. With SQLite (one process) the claim is in memory: each queue has one
    coroutine, and no database transaction stays open across a network call.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        client: HomeserverClient,
        *,
        row_locks: bool = False,
        holder: str | None = None,
    ) -> None:
        self.sessions = sessions
        # Outcomes (and the events handle_transaction records) are written without an ORM session.
        self.writer = plain.Writer(sessions.kw["bind"])
        self.client = client
        self.row_locks = row_locks
        # This process, as its leases name it: a sealed reply's entry names the process that has it.
        self.holder = holder or new_holder_id()
        self.sealed = SealedReplies()
        self.executors: dict[str, Executor] = {
            OutboxKind.SEND: _exec_send,
            OutboxKind.REDACT: _exec_redact,
            OutboxKind.STATE: _exec_state,
            OutboxKind.INVITE: _exec_invite,
            OutboxKind.KICK: _exec_kick,
            OutboxKind.JOIN: _exec_join,
            OutboxKind.LEAVE: _exec_leave,
            OutboxKind.PIN: _exec_pin,
            OutboxKind.UNPIN: _exec_pin,
            OutboxKind.DISPLAYNAME: _exec_displayname,
            OutboxKind.AVATAR_URL: _exec_avatar_url,
        }
        self._wake = asyncio.Event()
        self._stopping = False
        self._more = False  # the last drain may have left due work behind
        # One process: entries heading their queues, handed over by the transaction that queued them
        # (see hand_over); sent without reading them back until something else wakes us.
        self._handed: list[OutboxEntry] = []
        self._read_next = True
        self._last_read = 0.0
        self._queues_running = 0
        # Event ids of post copies this process recorded: their echoes need no database work.
        self.recorded_copies = RecentIds()
        # Outcomes waiting for the recorder (one transaction for those that arrive together).
        self._unrecorded: list[tuple[OutboxEntry, Outcome, asyncio.Future[None]]] = []
        self._recorder: asyncio.Task[None] | None = None
        self.sent = 0
        self.failed = 0
        self.retried = 0
        self.homeserver_down = False
        # The bot's encrypting device (bridge/runtime/e2ee.Crypto) when encryption is on: what the bot
        # sends into an encrypted room is encrypted in `_exec_send`, the one place every send passes.
        self.crypto: Crypto | None = None

    def wake(self) -> None:
        """Something may have queued entries: the next drain reads what is pending."""
        self._read_next = True
        self._wake.set()

    def hand(self, entries: list[OutboxEntry]) -> None:
        """Entries a committed transaction queued, each the first pending one of its queue (see
        `hand_over`): send them without reading them back (one process; otherwise a plain wake)."""
        if self.row_locks:
            self.wake()
            return
        self._handed.extend(entries)
        self._wake.set()

    async def relayed_event(self, source_event_id: str, room_id: str) -> str:
        """The published copy, in `room_id`, of the post published from `source_event_id`."""
        async with self.sessions() as session:
            relayed = await queries.source_copy_in(session, source_event_id, room_id)
        if relayed is None:
            raise SkipEntry(f"{source_event_id} has no relayed copy in {room_id}")
        return relayed

    def homeserver_unreachable(self, exc: MatrixConnectionError) -> None:
        """A request found the homeserver unreachable: hold the sends, and probe until it answers."""
        if not self.homeserver_down:
            log.warning(
                "The homeserver is unreachable (%s); checking every %.0f s and resuming when it answers",
                exc,
                PROBE_INTERVAL_S,
            )
        self.homeserver_down = True

    async def _probe(self) -> None:
        """While the homeserver is down, ask it cheaply; when it answers, retry everything at once."""
        try:
            await self.client.versions()
        except (MatrixConnectionError, MatrixRequestError):
            return
        log.info("The homeserver answers again; resuming the outbox now")
        self.homeserver_down = False
        async with self.sessions.begin() as session:
            await session.execute(
                update(OutboxEntry)
                .where(OutboxEntry.status == OutboxStatus.PENDING)
                .values(next_attempt_at=None)
            )

    async def run(self) -> None:
        """Drain until `stop()`; then flush what is due once more and return."""
        while not self._stopping:
            self._wake.clear()
            if self.homeserver_down:
                await self._probe()
            worked = await self.drain_once()
            # Drain again at once only when the last drain may have left due work behind (entries its
            # sends queued); new work from elsewhere wakes us, and the poll interval catches the rest.
            if (not worked or not self._more) and not self._stopping:
                try:
                    # No task of its own per wait, as wait_for makes: the worker waits once per send.
                    async with asyncio.timeout(PROBE_INTERVAL_S if self.homeserver_down else POLL_INTERVAL_S):
                        await self._wake.wait()
                except TimeoutError:
                    self._read_next = True
        # Shutdown: send what the homeserver will take now; the rest waits for the next start.
        while await self.drain_once():
            pass

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def depth(self) -> tuple[int, float]:
        """Pending entries, and the age in seconds of the oldest one that should have gone by now: not
        one that waits on purpose (NotYet, say a statement until its reader on another server has
        joined, up to 10 minutes) nor what queues behind it. Entries retrying after a failure count."""
        held = aliased(OutboxEntry)
        on_purpose = (
            select(held.id)
            .where(
                held.queue == OutboxEntry.queue,
                held.status == OutboxStatus.PENDING,
                held.id <= OutboxEntry.id,
                held.last_error.startswith(WAITING),
                held.next_attempt_at > datetime.now(UTC) - timedelta(seconds=WAIT_OVERDUE_S),
            )
            .exists()
        )
        async with self.sessions() as session:
            count, oldest = (
                await session.execute(
                    select(func.count(), func.min(case((~on_purpose, OutboxEntry.created_at)))).where(
                        OutboxEntry.status == OutboxStatus.PENDING
                    )
                )
            ).one()
        age = (datetime.now(UTC) - aware(oldest)).total_seconds() if oldest is not None else 0.0
        return int(count), max(age, 0.0)

    async def drain_once(self) -> bool:
        """Send what is due in every queue; True when anything was attempted."""
        self._more = self.row_locks  # other processes queue without waking us: keep polling there
        if self.homeserver_down:
            return False  # only the probe talks to a homeserver that is down; it resumes us
        batches: dict[str, list[OutboxEntry]] = {}
        handed = self._take_handed()
        if handed:
            for entry in handed:
                batches.setdefault(entry.queue, []).append(entry)
            return await self._run_queues(list(batches), batches)
        self._read_next, self._last_read = False, time.monotonic()
        async with self.sessions() as session:
            if self.row_locks:
                queues = list((await session.scalars(_PENDING_QUEUES)).all())
            else:
                # One process: each queue's next entries, read in the same session. Usually all that
                # is pending is a few entries (a post's sends): then one statement reads them all.
                pending = (await session.scalars(_FIRST_PENDING)).all()
                if len(pending) < QUEUE_BATCH:
                    for entry in pending:
                        batches.setdefault(entry.queue, []).append(entry)
                    queues = list(batches)
                    # Entries handed over are committed, so the read has them, except those committed
                    # after it began (numbered after every entry it read: SQLite has one writer at a time).
                    read_up_to = pending[-1].id if pending else 0
                    self._handed = [e for e in self._handed if e.id > read_up_to]
                else:
                    queues = list((await session.scalars(_PENDING_QUEUES)).all())
                    for queue in queues:
                        batches[queue] = await self._next(session, queue)
                    self._handed = []  # read (or left for the next read: `_more`)
                    self._more = True
        if not queues:
            return False
        if len(queues) == CLAIM_BATCH:
            self._more = True
        return await self._run_queues(queues, batches)

    def _take_handed(self) -> list[OutboxEntry]:
        """The entries handed over, in order, when they are all that needs sending (else none: read).

        Each headed its queue when it was queued, so sending it now keeps every queue's order; a wake
        from anything else, a retry, or a second since the last read sends the drain to the database,
        for what was queued without a hand-over (another process's entries, a reply, a retry).
        """
        if self.row_locks or not self._handed or self._read_next:
            return []
        if time.monotonic() - self._last_read > POLL_INTERVAL_S:
            return []
        handed, self._handed = self._handed, []
        return sorted(handed, key=lambda entry: entry.id)

    async def _run_queues(self, queues: list[str], batches: dict[str, list[OutboxEntry]]) -> bool:
        semaphore = asyncio.Semaphore(MAX_PARALLEL_QUEUES)

        async def run_queue(queue: str) -> int:
            async with semaphore:
                self._queues_running += 1
                try:
                    return await self._run_queue(queue, batches.get(queue))
                finally:
                    self._queues_running -= 1

        if len(queues) == 1:  # the usual case (a post in a channel of one room): no task to gather
            attempted = [await run_queue(queues[0])]
        else:
            attempted = await asyncio.gather(*(run_queue(queue) for queue in queues))
        if self._more:
            self._read_next = True  # what the sends queued is in the database only
        return sum(attempted) > 0

    async def _record_committed(self, entry: OutboxEntry, outcome: Outcome) -> None:
        """Record an attempt's outcome and return once it is committed (one process, SQLite).

        With several queues sending at once (a post reaching many rooms), the outcomes that arrive
        together share one transaction: the same rows written, in fewer commits. Each queue still
        waits for its entry's record before it sends the next one.
        """
        if self._queues_running <= 1 and self._recorder is None:
            async with self.writer.begin() as transaction:
                await self._record(transaction, entry, outcome)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._unrecorded.append((entry, outcome, waiter))
        if self._recorder is None:
            self._recorder = asyncio.create_task(self._record_arrived())
        await waiter

    async def _record_arrived(self) -> None:
        batch: list[tuple[OutboxEntry, Outcome, asyncio.Future[None]]] = []
        try:
            await asyncio.sleep(0)  # let the outcomes arriving in this turn of the loop join
            while self._unrecorded:
                batch, self._unrecorded = self._unrecorded, []
                try:
                    async with self.writer.begin() as transaction:
                        for entry, outcome, _waiter in batch:
                            await self._record(transaction, entry, outcome)
                except Exception as exc:
                    for *_, waiter in batch:
                        if not waiter.done():
                            waiter.set_exception(exc)
                else:
                    for *_, waiter in batch:
                        if not waiter.done():
                            waiter.set_result(None)
                batch = []
        finally:
            self._recorder = None
            for *_, waiter in [*batch, *self._unrecorded]:
                if not waiter.done():
                    waiter.cancel()
            self._unrecorded = []

    async def _head(self, session: AsyncSession, queue: str) -> OutboxEntry | None:
        head = await session.scalar(
            select(OutboxEntry)
            .where(OutboxEntry.queue == queue, OutboxEntry.status == OutboxStatus.PENDING)
            .order_by(OutboxEntry.id)
            .limit(1)
        )
        if head is None or not _due(head):
            return None
        return head

    async def _next(self, session: AsyncSession, queue: str) -> list[OutboxEntry]:
        """The queue's first pending entries, in order (at most QUEUE_BATCH)."""
        entries = await session.scalars(_QUEUE_HEADS, {"queue": queue})
        return list(entries.all())

    async def _run_queue(self, queue: str, entries: list[OutboxEntry] | None = None) -> int:
        """Send a queue's due entries in order until it is empty, its head must wait, or it has had
        its turn (`entries`: its next entries, already read)."""
        attempted = 0
        started = time.monotonic()
        while True:
            if self.row_locks:
                async with self.sessions.begin() as session:
                    head = await self._head(session, queue)
                    if head is None or await self._sealed_elsewhere(session, head):
                        return attempted
                    # Lock exactly the head: SKIP LOCKED on the whole queue would hand us the next
                    # entry while another process still sends the head, breaking the order.
                    locked = await session.scalar(
                        select(OutboxEntry)
                        .where(OutboxEntry.id == head.id, OutboxEntry.status == OutboxStatus.PENDING)
                        .with_for_update(skip_locked=True)
                    )
                    if locked is None:
                        return attempted
                    outcome = await self._attempt(locked)
                    await self._record(await session.connection(), locked, outcome)
            else:
                # One process (the claim is this coroutine): the queue's next entries, read at once,
                # sent in order; only the worker changes a pending entry, so they stay valid. Entries
                # queued meanwhile are read by the next drain (their wake, or `_more`, starts it).
                if entries is None:
                    async with self.sessions() as session:
                        entries = await self._next(session, queue)
                for entry in entries:
                    if not _due(entry):
                        return attempted
                    outcome = await self._attempt(entry)
                    await self._record_committed(entry, outcome)
                    if entry.kind not in _QUEUES_NOTHING or _has_note(entry):
                        self._more = True  # its executor or its note may have queued more
                    attempted += 1
                    if outcome.status == OutboxStatus.RETRY:
                        self._read_next = True  # the entry waits in the database, with those after it
                        return attempted  # keep order: the rest of this queue waits for the retry
                    if time.monotonic() - started > QUEUE_TURN_S:
                        return self._turn_over(attempted)
                if len(entries) < QUEUE_BATCH:
                    return attempted
                entries = None
                continue
            attempted += 1
            if outcome.status == OutboxStatus.RETRY:
                return attempted  # keep order: the rest of this queue waits for the retry
            if time.monotonic() - started > QUEUE_TURN_S:
                return self._turn_over(attempted)

    def _turn_over(self, attempted: int) -> int:
        """A queue has had its turn (QUEUE_TURN_S): the rest of it waits for the next drain, which
        starts at once and reads it from the database with whatever other queues have waiting."""
        self._more = True
        self._read_next = True
        return attempted

    async def _sealed_elsewhere(self, session: AsyncSession, entry: OutboxEntry) -> bool:
        """A sealed reply whose secret another live process has: that process sends it (the queue
        waits). A process is live while it holds a lease (the one that handles events always does);
        once it is gone, any process sends the stand-in."""
        ref, holder = entry.payload.get("sealed"), entry.payload.get("holder")
        if ref is None or ref in self.sealed or holder == self.holder:
            return False
        live = await session.scalar(
            select(Lease.name).where(Lease.holder == holder, Lease.expires_at > datetime.now(UTC)).limit(1)
        )
        return live is not None

    async def _attempt(self, entry: OutboxEntry) -> Outcome:
        executor = self.executors.get(entry.kind)
        try:
            if executor is None:
                raise SkipEntry(f"unknown outbox kind {entry.kind!r}")
            result = await executor(entry, self)
        except SkipEntry as exc:
            log.info("Outbox %d (%s) skipped: %s", entry.id, entry.kind, exc)
            return Outcome(OutboxStatus.DONE, None, f"skipped: {exc}")
        except NotYet as exc:
            log.info("Outbox %d (%s) waits %.0f s: %s", entry.id, entry.kind, exc.retry_in, exc)
            return Outcome(OutboxStatus.RETRY, None, f"{WAITING}{exc}", retry_in=exc.retry_in)
        except MatrixRequestError as exc:
            error = f"{exc.status} {exc.errcode}: {exc.message}"
            if exc.retryable:
                return Outcome(OutboxStatus.RETRY, None, error)
            log.warning("Outbox %d (%s) failed for good: %s", entry.id, entry.kind, error)
            return Outcome(OutboxStatus.FAILED, None, error)
        except MatrixConnectionError as exc:
            self.homeserver_unreachable(exc)
            return Outcome(OutboxStatus.RETRY, None, str(exc))
        except CryptoError as exc:
            log.warning("Outbox %d (%s) could not be encrypted yet: %s", entry.id, entry.kind, exc)
            return Outcome(OutboxStatus.RETRY, None, f"encryption: {exc}")
        except Exception as exc:
            # A fault of Kanal's own, in one entry: it must not stop every other send. Tried again a few
            # times (with backoff), then failed for good; its queue goes on.
            log.exception("Outbox %d (%s) failed unexpectedly (attempt %d)", entry.id, entry.kind, entry.attempts + 1)
            status = OutboxStatus.FAILED if entry.attempts + 1 >= MAX_UNEXPECTED_ATTEMPTS else OutboxStatus.RETRY
            return Outcome(status, None, f"unexpected: {type(exc).__name__}: {exc}")
        return Outcome(OutboxStatus.DONE, result)

    async def _record(
        self, connection: AsyncConnection | plain.Transaction, entry: OutboxEntry, outcome: Outcome
    ) -> None:
        """Write an attempt's outcome: plain statements (no ORM session: none of it loads or changes
        an object), in the caller's transaction."""
        attempts = entry.attempts + 1
        values: dict[str, Any] = {
            "attempts": attempts,
            "last_error": (outcome.error or None) and outcome.error[:1000],
        }
        if outcome.status == OutboxStatus.RETRY and outcome.retry_in is not None:
            values["next_attempt_at"] = datetime.now(UTC) + timedelta(seconds=outcome.retry_in)
        elif outcome.status == OutboxStatus.RETRY:
            delay = min(RETRY_BASE_S * 2.0 ** min(attempts - 1, 10), RETRY_MAX_S) * (
                0.75 + random.random() / 2
            )
            values["next_attempt_at"] = datetime.now(UTC) + timedelta(seconds=delay)
            self.retried += 1
            log.warning(
                "Outbox %d (%s) attempt %d failed (%s); next try in %.0f s",
                entry.id,
                entry.kind,
                attempts,
                outcome.error,
                delay,
            )
        else:
            values["status"] = outcome.status
            values["result_event_id"] = outcome.result
            if outcome.status == OutboxStatus.DONE:
                self.sent += 1
            else:
                self.failed += 1
            sealed = entry.payload.get("sealed")
            if isinstance(sealed, str):
                self.sealed.forget(sealed)
            if entry.payload.get("secret"):
                # An entry queued with its secret in clear, before sealed replies: scrubbed once sent.
                values["payload"] = {
                    **entry.payload,
                    "content": {"msgtype": "m.notice", "body": "(secret removed)"},
                }
        await plain.run(connection, _record_statement(frozenset(values)), {**values, "entry_id": entry.id})
        # The person who asked learns the outcome through a new entry, recorded in this same transaction.
        note = entry.payload.get("on_success" if outcome.status == OutboxStatus.DONE else "on_failure")
        if outcome.status != OutboxStatus.RETRY and isinstance(note, dict):
            body = str(note["body"]).replace("{error}", outcome.error or "")
            await plain.run(
                connection,
                _INSERT_NOTE,
                {
                    "queue": room_queue(note["room_id"]),
                    "kind": OutboxKind.SEND,
                    "as_user": note["as_user"],
                    "payload": {
                        "room_id": note["room_id"],
                        "event_type": "m.room.message",
                        "content": {"msgtype": "m.notice", "body": body},
                    },
                },
            )
        source = entry.payload.get("post_source")
        if outcome.status == OutboxStatus.DONE and outcome.result is not None and isinstance(source, str):
            await record_copy(connection, source, entry.payload["room_id"], outcome.result)
            self.recorded_copies.add(outcome.result)


async def record_copy(
    connection: AsyncConnection | plain.Transaction, source: str, room_id: str, event_id: str
) -> None:
    """A post's published event in one room of its channel (after its send, or when its echo shows a
    send whose answer was lost). The copy in the channel's first room is also the post's
    `relayed_event_id`, which links and pages use. One statement when the copy is known already (an
    echo of a send the outbox recorded)."""
    values = {"copy_event": event_id, "copy_room": room_id, "source": source}
    added = await plain.run(connection, _copy_insert(plain.dialect_name(connection)), values)
    if added.rowcount:
        await plain.run(connection, _FIRST_COPY, values)


@functools.cache  # built once per dialect: a statement built per call costs more than running it
def _copy_insert(dialect: str) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    found = select(
        bindparam("copy_event", type_=String), Post.id, bindparam("copy_room", type_=String)
    ).where(Post.source_event_id == bindparam("source"))
    return insert(PostCopy).from_select(["event_id", "post_id", "room_id"], found).on_conflict_do_nothing()


_INSERT_NOTE = insert(OutboxEntry)  # the person who asked learns an entry's outcome
_FIRST_COPY = (
    update(Post)
    .where(
        Post.source_event_id == bindparam("source"),
        Post.relayed_event_id.is_(None),
        Post.channel_id
        == select(Channel.id).where(Channel.broadcast_room_id == bindparam("copy_room")).scalar_subquery(),
    )
    .values(relayed_event_id=bindparam("copy_event"))
)


class RecentIds:
    """The last `limit` ids added (a bounded set, oldest forgotten first)."""

    def __init__(self, limit: int = 10_000) -> None:
        self._ids: dict[str, None] = {}
        self._limit = limit

    def add(self, item: str) -> None:
        self._ids[item] = None
        if len(self._ids) > self._limit:
            del self._ids[next(iter(self._ids))]

    def __contains__(self, item: object) -> bool:
        return item in self._ids


@functools.cache  # an attempt's record, built once for each set of columns it writes
def _record_statement(columns: frozenset[str]) -> Any:
    table = OutboxEntry.__table__
    return (
        update(OutboxEntry)
        .where(OutboxEntry.id == bindparam("entry_id"))
        .values({column: bindparam(column, type_=table.c[column].type) for column in sorted(columns)})
    )


# Kinds whose executors (this module's own) queue nothing themselves.
_QUEUES_NOTHING = frozenset(
    {
        OutboxKind.SEND,
        OutboxKind.REDACT,
        OutboxKind.STATE,
        OutboxKind.INVITE,
        OutboxKind.KICK,
        OutboxKind.JOIN,
        OutboxKind.LEAVE,
        OutboxKind.PIN,
        OutboxKind.UNPIN,
        OutboxKind.DISPLAYNAME,
    }
)
# Built once: the drain runs them for every wake.
_PENDING_QUEUES = (
    select(OutboxEntry.queue).where(OutboxEntry.status == OutboxStatus.PENDING).distinct().limit(CLAIM_BATCH)
)
_FIRST_PENDING = (
    select(OutboxEntry).where(OutboxEntry.status == OutboxStatus.PENDING).order_by(OutboxEntry.id).limit(QUEUE_BATCH)
)
_QUEUE_HEADS = (
    select(OutboxEntry)
    .where(OutboxEntry.queue == bindparam("queue"), OutboxEntry.status == OutboxStatus.PENDING)
    .order_by(OutboxEntry.id)
    .limit(QUEUE_BATCH)
)


def _has_note(entry: OutboxEntry) -> bool:
    return "on_success" in entry.payload or "on_failure" in entry.payload


def _due(entry: OutboxEntry) -> bool:
    return entry.next_attempt_at is None or aware(entry.next_attempt_at) <= datetime.now(UTC)


def aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything Kanal stores is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def _resolved(entry: OutboxEntry, worker: OutboxWorker) -> dict[str, Any]:
    if entry.ref_source is None:
        return entry.payload
    relayed = await worker.relayed_event(entry.ref_source, entry.payload["room_id"])
    resolved: dict[str, Any] = replace_ref(entry.payload, relayed)
    return resolved


async def _exec_send(entry: OutboxEntry, worker: OutboxWorker) -> str | None:
    """Send with `kanal-<id>` as transaction id and as a marker in the content.

    The transaction id makes a retry return the first event while the homeserver remembers it (Synapse
    keeps it in memory). The marker covers a homeserver that restarted after storing an event whose
    answer we never got: before retrying such an entry we look for the marker among our recent sends.
    """
    payload = await _resolved(entry, worker)
    intent = worker.client.intent(UserID(entry.as_user))
    txn_id = txn_id_for(entry.id)
    if entry.attempts > 0:
        existing = await intent.find_recent_event(payload["room_id"], TXN_MARKER, txn_id)
        if existing is not None:
            log.info("Outbox %d was already delivered as %s; not sending it again", entry.id, existing)
            return existing
    sealed = worker.sealed.get(payload["sealed"]) if "sealed" in payload else None
    content = {**(sealed or payload["content"]), TXN_MARKER: txn_id}
    event_type = payload["event_type"]
    crypto = worker.crypto
    # Only the bot's own words in the private rooms it belongs to; a channel's ghost writes public rooms.
    if crypto is not None and entry.as_user == crypto.user_id and await crypto.encrypted_room(payload["room_id"]):
        event_type, content = await crypto.encrypt(payload["room_id"], event_type, content)
    ts = payload.get("ts")  # an imported post's original time (milliseconds)
    return await intent.send(
        payload["room_id"], event_type, content, txn_id, ts=ts if isinstance(ts, int) else None
    )


async def send_content(
    worker: OutboxWorker, entry: OutboxEntry, room_id: str, event_type: str, content: dict[str, Any]
) -> str | None:
    """Send for another kind of entry through the worker's own `send` (its transaction id and
    delivery marker make it once-only), with content computed at send time."""
    send = OutboxEntry(
        id=entry.id,
        queue=entry.queue,
        kind=OutboxKind.SEND,
        as_user=entry.as_user,
        attempts=entry.attempts,
        payload={"room_id": room_id, "event_type": event_type, "content": content},
    )
    return await worker.executors[OutboxKind.SEND](send, worker)


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


async def _exec_avatar_url(entry: OutboxEntry, worker: OutboxWorker) -> str | None:
    intent = worker.client.intent(UserID(entry.as_user))
    await intent.ensure_registered()
    await intent.set_avatar_url(entry.payload["avatar_url"])
    return None


async def _exec_pin(entry: OutboxEntry, worker: OutboxWorker) -> str | None:
    """Read-modify-write of `m.room.pinned_events`; a set operation, so a repeat changes nothing."""
    p = await _resolved(entry, worker)
    intent = worker.client.intent(UserID(entry.as_user))
    current = ((await intent.find_state(p["room_id"], "m.room.pinned_events")) or {}).get("pinned", [])
    pinned = [e for e in current if isinstance(e, str)]
    target = p["event_id"]
    if entry.kind == OutboxKind.PIN and target not in pinned:
        pinned.append(target)
    elif entry.kind == OutboxKind.UNPIN and target in pinned:
        pinned.remove(target)
    else:
        return None
    return await intent.send_state(p["room_id"], "m.room.pinned_events", {"pinned": pinned})
