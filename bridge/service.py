"""The bridge's core: durable ingest of transactions, the in-order event processor, dispatch.

transaction ─▶ handle_transaction: keep only events Kanal acts on ─▶ inbound_events (INSERT, ignore
               duplicates by event_id) + echo bookkeeping, one DB transaction ─▶ 200 to the homeserver
processor:     pending inbound events in arrival order ─▶ handler decides ─▶ outbox rows + "done",
               one DB transaction per event ─▶ outbox worker sends them
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from appservice.errors import MatrixConnectionError, MatrixRequestError
from appservice.events import Event, EventParseError, parse_event
from appservice.ids import RoomAlias, RoomID, UserID, server_of
from appservice.server import Transaction
from bridge.audience.comments import DISCUSSION, discussion_encrypted, on_discussion_event
from bridge.audience.comments import register as register_comments
from bridge.audience.reactions import screen_reactions
from bridge.audience.stats import mark_views, record_daily_stats
from bridge.audience.views import count_receipts
from bridge.broadcast import seam
from bridge.broadcast.shards import count_members
from bridge.catchup import CATCH_UP_TYPES, catch_up, record_gap, verify_preceding, waiting_before_join
from bridge.channels import avatar as _avatar  # noqa: F401 (imported for its commands: !avatar)
from bridge.channels.backstage import on_backstage_event
from bridge.channels.hosting import exec_hosting_reconcile, server_welcome
from bridge.channels.lifecycle import create_channel, delete_channel
from bridge.channels.management import on_management_message
from bridge.channels.operators import (
    on_operator_message,
    schedule_operator_room,
    sync_operator_room,
)
from bridge.channels.private import is_knock, is_self_leave, on_member_event
from bridge.channels.registry import (
    backfill_keys,
    channel_for_alias,
    expire_holds,
)
from bridge.matrix.relay import POLL_END_TYPES, POLL_START_TYPES, SOURCE_KEY
from bridge.moderation.policy import KINDS as POLICY_RULE_TYPES
from bridge.moderation.policy import exec_policy_ban, on_policy_event
from bridge.moderation.policy import follow as follow_policy_rooms
from bridge.moderation.room import on_moderation_message, schedule_moderation_room, sync_moderation_room
from bridge.publishing import notify as _notify  # noqa: F401 (imported for its commands: !notify)
from bridge.publishing import polls as _polls  # noqa: F401 (imported for its commands: !poll)
from bridge.publishing import schedule as _schedule  # noqa: F401 (imported for its commands: !schedule …)
from bridge.runtime.context import Context, enqueue, send_entry
from bridge.runtime.e2ee import Undecryptable
from bridge.runtime.languages import language_for
from bridge.runtime.outbox import (
    OutboxKind,
    OutboxWorker,
    committed,
    new_entry,
    record_copy,
    room_queue,
    send_content,
)
from bridge.runtime.retention import Pruner, too_old
from bridge.store import plain
from bridge.store.leases import Leases
from bridge.store.models import Channel, InboundEvent, InboundStatus, OutboxEntry, Room, RoomKind
from bridge.text.i18n import t
from bridge.web import tokens as _tokens  # noqa: F401 (imported for its commands: !token)

log = logging.getLogger(__name__)

# Event types Kanal may act on; everything else is acknowledged and forgotten at once.
ACTIONABLE_TYPES = frozenset(
    {
        "m.room.message",
        "m.sticker",
        "m.room.redaction",
        "m.room.encrypted",
        "m.room.encryption",
        "m.room.member",
        *POLL_START_TYPES,  # polls made in backstage are relayed
        *POLL_END_TYPES,
        *POLICY_RULE_TYPES,  # followed moderation policy lists
    }
)
# The rooms the bot belongs to for its own function, where it takes part in end-to-end encryption
# when `encryption.enabled` is on (bridge/runtime/e2ee.py); readers' rooms are never decrypted.
ENCRYPTED_KINDS = frozenset({RoomKind.MANAGEMENT, RoomKind.BACKSTAGE, RoomKind.OPERATOR, RoomKind.MODERATION})
PROCESS_BATCH = 200
MAX_EVENT_ATTEMPTS = 5
PROCESSOR_RETRY_S = 2.0
PROCESSOR_LEASE = "processor"
LEASE_RENEW_S = 5.0
CATCH_UP_INTERVAL_S = 300.0
HOUSEKEEPING_LEASE = "housekeeping"
HOUSEKEEPING_INTERVAL_S = 60.0
# How long a transaction waits for the bot's encrypting device to be set up at start (then it fails, and
# the homeserver sends it again).
CRYPTO_READY_WAIT_S = 30.0
# After a start, an outage, or a delivery the homeserver counts as failed, Synapse may strand a
# transaction while it recovers and deliver it after later ones: for this long, the head of each
# backstage room's queue is checked against the events just before it (one request each). Synapse
# finishes recovering within seconds (its first retry comes after 2 s); two minutes leaves a wide margin.
VERIFY_WINDOW_S = 120.0
# With several processes, the one handling events learns of another's failed delivery through this row.
VERIFY_ORDER_MARK = "verify-order"


class DeliverySequence:
    """Notices a transaction that arrives after a later one.

    Synapse numbers the transactions of all its application services in one increasing sequence,
    so a gap only means another application service (a bridge, say) got the numbers between; it
    says nothing about ours. A number below the highest seen does: the homeserver is retrying or
    delivering a stranded transaction (or, on SQLite, restarted its numbering). Ids that are not
    numbers tell nothing.
    """

    def __init__(self) -> None:
        self._highest: int | None = None

    def is_break(self, txn_id: str) -> bool:
        try:
            number = int(txn_id)
        except ValueError:
            return False
        later = self._highest is None or number > self._highest
        self._highest = number  # after a lower one (a renumbering homeserver), count from it
        return not later


@dataclasses.dataclass(frozen=True)
class _Arrived:
    """An event this process recorded, handed to its processor in memory (one process, SQLite): its
    row as the processor would read it, and the event already parsed."""

    seq: int
    event_id: str
    room_id: str
    payload: dict[str, Any]
    event: Event
    attempts: int = 0


class _AlreadyHandled(Exception):
    """Another process handled the event first; roll back this attempt."""


class Bridge:
    def __init__(self, ctx: Context, leases: Leases, *, row_locks: bool = False) -> None:
        self.ctx = ctx
        self.leases = leases
        self.row_locks = row_locks
        self._wake = asyncio.Event()
        self._drained = False  # the last process_pending handled every pending event it read
        # One process (SQLite): what handle_transaction recorded since, in order, so the processor
        # needs no read while it knows every pending event (see _handed_over).
        self._arrived: list[_Arrived] = []
        self._last_seq: int | None = None  # the highest seq the processor took
        self._rewrites = 0  # catch-up and a new chat's read-back re-sequence pending events
        self._housekeeping_wake = asyncio.Event()
        self._stopping = False
        # With encryption on, the bot's device is set up after the listener starts: a transaction that
        # comes first waits for it (its to-device messages hold room keys, sent only once).
        self.crypto_ready = asyncio.Event()
        if not ctx.config.encryption_enabled:
            self.crypto_ready.set()
        executors = {
            OutboxKind.CREATE_CHANNEL: create_channel,
            OutboxKind.DELETE_CHANNEL: delete_channel,
            OutboxKind.OPERATOR_ROOM: sync_operator_room,
            OutboxKind.MODERATION_ROOM: sync_moderation_room,
            OutboxKind.HOSTING_RECONCILE: exec_hosting_reconcile,
            OutboxKind.POLICY_BAN: exec_policy_ban,
        }
        for kind, executor in executors.items():
            ctx.outbox.executors[kind] = functools.partial(executor, ctx)
        ctx.outbox.executors[OutboxKind.JOIN_CHAT] = self._exec_join_chat
        seam.register(ctx)
        register_comments(ctx)
        self.processed = 0
        # Hold events back until the backstage rooms were checked for posts never delivered.
        self.catch_up_pending = True
        self._last_catch_up = time.monotonic()
        self._outage_or_start = True
        self._verify_until = 0.0
        self._backstage_rooms: set[str] = set()  # known backstage rooms (a room never stops being one)
        self._sequence = DeliverySequence()
        self.pruner = Pruner(ctx.sessions, ctx.config)

    # -- the homeserver pushes ---------------------------------------------------------------------

    def _is_bot_invite(self, event: Event) -> bool:
        return (
            event.type == "m.room.member"
            and event.state_key == self.ctx.bot
            and event.content.get("membership") == "invite"
        )

    async def handle_transaction(self, txn: Transaction) -> None:
        if self._sequence.is_break(txn.txn_id):
            # Set before this transaction's events are recorded, so none is handled unchecked.
            await self.delivery_failed(f"transaction {txn.txn_id} arrived after a later one")
        if not self.crypto_ready.is_set():
            # Not answered meanwhile: a timeout fails the delivery, and the homeserver sends it again.
            await asyncio.wait_for(self.crypto_ready.wait(), CRYPTO_READY_WAIT_S)
        crypto = self.ctx.outbox.crypto
        if crypto is not None:
            if txn.keys:
                await crypto.receive(txn.keys)  # room keys first: this transaction's messages may need them
            for event in txn.events:
                if event.type == "m.room.member":
                    crypto.members_changed(event.room_id)
                elif event.type == "m.room.encryption":
                    crypto.became_encrypted(event.room_id)
        if txn.ephemeral:
            views_in_posts: set[int] = set()
            # views; receipts are never stored as such
            await count_receipts(self.ctx, txn.ephemeral, views_in_posts)
            if views_in_posts:
                await self._mark_views(views_in_posts)
        members = [e for e in txn.events if e.type == "m.room.member"]
        if members:
            # Each channel room's readers, counted as they come and go: a full room opens the next.
            await count_members(self.ctx, members)
        reactions = [e for e in txn.events if e.type == "m.reaction"]
        if reactions:
            # Best-effort allow lists: reactions are never recorded, only screened as they arrive.
            await screen_reactions(self.ctx, reactions)
        candidates = [e for e in txn.events if e.type in ACTIONABLE_TYPES]
        recorded = self.ctx.outbox.recorded_copies
        echoes = [
            (e.content[SOURCE_KEY], e.room_id, e.event_id)
            for e in txn.echoes
            if e.type in ("m.room.message", "m.sticker")
            and isinstance(e.content.get(SOURCE_KEY), str)
            and e.event_id not in recorded  # the outbox recorded this copy when it sent it
        ]
        if not candidates and not echoes:
            return
        inserted: list[Any] = []
        # Plain statements (no ORM session: nothing here loads or changes an object).
        async with self.ctx.outbox.writer.begin() as transaction:
            rows = await self._actionable(transaction, candidates)
            if rows:
                statement = _insert_ignore(plain.dialect_name(transaction))
                inserted = (await plain.run(transaction, statement, rows)).all()
            for source, room_id, relayed in echoes:
                # Our own relayed copy came back: the mapping survives a crash between send and record.
                await record_copy(transaction, source, room_id, relayed)
        if inserted:
            if not self.row_locks:
                by_id = {e.event_id: e for e in candidates}
                payloads = {row["event_id"]: row["payload"] for row in rows}
                for seq, event_id in sorted(inserted):
                    event = by_id[event_id]
                    self._arrived.append(_Arrived(seq, event_id, event.room_id, payloads[event_id], event))
            self._wake.set()

    async def delivery_failed(self, why: str) -> None:
        """The homeserver's recovery from a failed delivery may reorder what follows: check for a while.

        With several processes (PostgreSQL) the window is also written where the one handling events
        reads it before each batch.
        """
        self._open_verify_window(why)
        if self.row_locks:
            await self.leases.mark(VERIFY_ORDER_MARK, VERIFY_WINDOW_S)

    async def _actionable(self, transaction: plain.Transaction, events: list[Event]) -> list[dict[str, Any]]:
        now = time.time()
        stale = [e for e in events if too_old(e.origin_server_ts, self.ctx.config, now)]
        if stale:
            events = [e for e in events if not too_old(e.origin_server_ts, self.ctx.config, now)]
            # Its record may be pruned already: handling it now could handle it twice.
            log.warning(
                "Ignored %d event(s) sent more than %d days ago (database.inbound_retention_days), e.g. %s",
                len(stale),
                self.ctx.config.inbound_retention_days,
                stale[0].event_id,
            )
        room_ids: set[str] = {e.room_id for e in events}
        ours = await self._managed_rooms(transaction, room_ids) if room_ids else set()
        knocked: set[str] = {e.room_id for e in events if is_knock(e) or is_self_leave(e)}
        private = await self._private_broadcast_rooms(transaction, knocked) if knocked else set()
        return [
            {"event_id": e.event_id, "room_id": e.room_id, "payload": e.as_dict()}
            for e in events
            if self._is_bot_invite(e)
            or (e.room_id in ours and e.type != "m.room.member")
            or (e.room_id in private and (is_knock(e) or is_self_leave(e)))
        ]

    async def _private_broadcast_rooms(self, transaction: plain.Transaction, room_ids: set[str]) -> set[str]:
        """Which of these rooms are broadcast rooms of private channels (their knocks are join requests)."""
        found = await plain.run(transaction, _PRIVATE_BROADCAST_ROOMS, {"room_ids": sorted(room_ids)})
        return {row.room_id for row in found.all()}

    async def _managed_rooms(self, transaction: plain.Transaction, room_ids: set[str]) -> set[str]:
        """Which of these rooms are management or backstage rooms (broadcast rooms need no handling)."""
        if not self.row_locks:
            if self.ctx.known_rooms is None:
                self.ctx.known_rooms = set(
                    row.room_id for row in (await plain.run(transaction, _MANAGED_ROOMS)).all()
                )
            return room_ids & self.ctx.known_rooms
        found = await plain.run(transaction, _MANAGED_ROOMS_AMONG, {"room_ids": sorted(room_ids)})
        return {row.room_id for row in found.all()}

    async def query_user(self, user_id: UserID) -> bool:
        if user_id == self.ctx.bot:
            await self.ctx.bot_intent().ensure_registered()
            return True
        async with self.ctx.sessions() as session:
            exists = await session.scalar(
                select(Channel.id).where(Channel.ghost_user_id == user_id, Channel.handle.is_not(None))
            )
        if exists is None:
            return False
        await self.ctx.client.intent(user_id).ensure_registered()
        return True

    async def query_alias(self, alias: RoomAlias) -> bool:
        """Someone joins `#handle:domain` and the alias is missing: point it at the channel again."""
        local = alias[1:].split(":", 1)[0].lower()  # the server name may carry a port
        async with self.ctx.sessions() as session:
            channel = await channel_for_alias(session, local)
        if channel is None or channel.open_room is None or server_of(alias) != self.ctx.domain:
            return False
        await seam.point_alias(self.ctx, channel, alias)
        return True

    # -- the processor -----------------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._housekeeping_wake.set()

    async def run_processor(self) -> None:
        while not self._stopping:
            self._wake.clear()
            handled = await self.process_pending()
            # A batch read whole and handled leaves nothing pending but what arrived since, and every
            # arrival wakes us: no need to read again before the wake (or the 1 s safety net).
            if (handled == 0 or self._drained) and not self._stopping:
                try:
                    async with asyncio.timeout(1.0):  # no task of its own per wait, as wait_for makes
                        await self._wake.wait()
                except TimeoutError:
                    self._drained = False  # the safety net reads the database

    async def process_pending(self) -> int:
        """Handle pending events in arrival order; stop at a homeserver outage to keep that order.

        Only the holder of the `processor` lease handles events (several processes, one order); the
        status check on "done" makes a stale holder's late attempt roll back instead of doubling.
        """
        knew_all, self._drained = self._drained, False
        rewrites = self._rewrites
        if not await self.leases.hold(PROCESSOR_LEASE):
            return 0
        if self.ctx.outbox.homeserver_down:
            self.catch_up_pending = True  # the homeserver may have restarted and dropped events
            self._outage_or_start = True
            return 0
        if time.monotonic() - self._last_catch_up > CATCH_UP_INTERVAL_S:
            self.catch_up_pending = True  # a safety net for restarts nobody noticed
        if self.row_locks:
            # Another process may have answered a delivery with an error (see delivery_failed).
            left = await self.leases.marked(VERIFY_ORDER_MARK)
            if left > 0:
                self._verify_until = max(self._verify_until, time.monotonic() + left)
        if self.catch_up_pending:
            try:
                await catch_up(self.ctx)
            except (MatrixConnectionError, MatrixRequestError) as exc:
                log.warning("Catch-up waits for the homeserver (%s)", exc)
                await asyncio.sleep(PROCESSOR_RETRY_S)
                return 0
            self.catch_up_pending = False
            self._last_catch_up = time.monotonic()
            if self._outage_or_start:
                self._open_verify_window("start or homeserver outage")
                self._outage_or_start = False
            knew_all = False  # catch-up may have recorded and re-sequenced events
        rows: Sequence[Any] | None = self._handed_over() if knew_all else None
        if rows is None:
            async with self.ctx.sessions() as session:
                rows = (await (await session.connection()).execute(_PENDING_EVENTS)).all()
            if rows:
                self._last_seq = max(self._last_seq or 0, rows[-1].seq)
            if self._last_seq is not None:
                self._arrived = [a for a in self._arrived if a.seq > self._last_seq]
        handled = 0
        renewed = time.monotonic()
        for row in rows:
            if self._stopping:
                break
            if time.monotonic() - renewed > LEASE_RENEW_S:
                if not await self.leases.hold(PROCESSOR_LEASE):
                    break
                renewed = time.monotonic()
            try:
                event = row.event if isinstance(row, _Arrived) else parse_event(row.payload)
            except EventParseError as exc:
                log.warning("Stored event %s is unreadable (%s); dropping it", row.event_id, exc)
                await self._mark(row.seq, InboundStatus.FAILED)
                continue
            if event.type == "m.room.encrypted" and self.ctx.outbox.crypto is not None:
                # Outside any database transaction: the room key may still be on its way.
                event = await self._decrypted(event)
            if await self._verifying(row.room_id, event):
                try:
                    if await verify_preceding(self.ctx, row.room_id, event.event_id):
                        return handled  # earlier events were slotted in before this one: re-read
                except (MatrixConnectionError, MatrixRequestError) as exc:
                    if isinstance(exc, MatrixRequestError) and not exc.retryable:
                        log.warning("Could not check what precedes %s (%s); handling it", row.event_id, exc)
                    else:
                        await asyncio.sleep(PROCESSOR_RETRY_S)
                        return handled
            try:
                # Committed at the end, rolled back when the session closes without (an error): as
                # `sessions.begin()` would, without its transaction object's own close.
                async with self.ctx.sessions() as session:
                    if self.row_locks:
                        claimed = await session.scalar(
                            select(InboundEvent.seq)
                            .where(InboundEvent.seq == row.seq, InboundEvent.status == InboundStatus.PENDING)
                            .with_for_update(skip_locked=True)
                        )
                        if claimed is None:
                            continue
                    await self.dispatch(session, event)
                    done = await plain.run(session, _MARK_DONE, {"event_seq": row.seq})
                    if done.rowcount != 1:
                        raise _AlreadyHandled
                    await session.commit()
            except _AlreadyHandled:
                continue
            except (MatrixConnectionError, MatrixRequestError) as exc:
                if isinstance(exc, MatrixRequestError) and not exc.retryable:
                    log.warning(
                        "Event %s: the homeserver refused a request (%s); skipping", row.event_id, exc
                    )
                    await self._mark(row.seq, InboundStatus.FAILED)
                    continue
                log.warning("Event %s waits: the homeserver is unavailable (%s)", row.event_id, exc)
                await asyncio.sleep(PROCESSOR_RETRY_S)
                return handled
            except Exception:
                log.exception("Event %s could not be handled", row.event_id)
                attempts = row.attempts + 1
                async with self.ctx.sessions.begin() as session:
                    await session.execute(
                        update(InboundEvent)
                        .where(InboundEvent.seq == row.seq)
                        .values(
                            attempts=attempts,
                            status=InboundStatus.FAILED
                            if attempts >= MAX_EVENT_ATTEMPTS
                            else InboundStatus.PENDING,
                        )
                    )
                if attempts < MAX_EVENT_ATTEMPTS:
                    return handled
                continue
            handled += 1
            self.processed += 1
            committed(session, self.ctx.outbox)  # what the event queued goes to the outbox
        else:  # every row read was dealt with (no break), and none was re-sequenced meanwhile
            self._drained = len(rows) < PROCESS_BATCH and rewrites == self._rewrites
        return handled

    def _handed_over(self) -> list[_Arrived] | None:
        """The events recorded since the processor last read every pending one, when they are surely
        all that is pending (None: read them from the database).

        Only with one process (SQLite, which numbers rows one after another): the arrivals must
        continue exactly where the processor stopped, so one still on its way from a concurrent
        transaction, or recorded by anything but handle_transaction, sends the processor to the
        database instead.
        """
        if self.row_locks or self._last_seq is None:
            return None
        arrived = [a for a in self._arrived if a.seq > self._last_seq]
        self._arrived = []
        expected = range(self._last_seq + 1, self._last_seq + 1 + len(arrived))
        if [a.seq for a in arrived] != list(expected) or len(arrived) >= PROCESS_BATCH:
            return None
        if arrived:
            self._last_seq = arrived[-1].seq
        return arrived

    async def run_housekeeping(self) -> None:
        """Registry upkeep, in one process at a time: the operators' room at start, then every minute
        grace periods and cooldowns of handles that ended."""
        started = False
        while not self._stopping:
            try:
                if await self.leases.hold(HOUSEKEEPING_LEASE):
                    if not started:
                        filled = await backfill_keys(self.ctx)
                        if filled:
                            log.info("Computed handle skeletons and title keys of %d channel(s)", filled)
                        await schedule_operator_room(self.ctx)
                        await schedule_moderation_room(self.ctx)
                        if self.ctx.config.compliance.policy_rooms:
                            await follow_policy_rooms(self.ctx)
                        self.ctx.outbox.wake()
                        started = True
                    if await expire_holds(self.ctx):
                        self.ctx.outbox.wake()
                    await record_daily_stats(self.ctx)
                    await mark_views(self.ctx)  # edits that waited for channels.views_edit_interval
                    pruned = await self.pruner.prune()  # what retention no longer keeps
                    if any(pruned.values()):
                        log.info("Pruned %s", ", ".join(f"{n} row(s) of {t}" for t, n in pruned.items() if n))
            except Exception:
                log.exception("Housekeeping failed; trying again in %.0f s", HOUSEKEEPING_INTERVAL_S)
            try:
                await asyncio.wait_for(self._housekeeping_wake.wait(), HOUSEKEEPING_INTERVAL_S)
            except TimeoutError:
                pass

    async def _mark_views(self, channel_ids: set[int]) -> None:
        """`!views-in-posts`: readers moved in these channels; edit posts that crossed a threshold."""
        try:
            await mark_views(self.ctx, channel_ids)
        except Exception:  # the receipts are counted; housekeeping retries the edits within a minute
            log.exception("Checking view counts to show in posts failed")

    def _open_verify_window(self, why: str) -> None:
        if time.monotonic() >= self._verify_until:
            log.info("Checking each backstage post's predecessors for %.0f s (%s)", VERIFY_WINDOW_S, why)
        self._verify_until = time.monotonic() + VERIFY_WINDOW_S

    async def _verifying(self, room_id: str, event: Event) -> bool:
        """Within a while of a start, an outage or a delivery break, check each backstage post's predecessors."""
        if time.monotonic() >= self._verify_until or event.type not in CATCH_UP_TYPES:
            return False
        if room_id not in self._backstage_rooms:
            async with self.ctx.sessions() as session:
                kind = await session.scalar(select(Room.kind).where(Room.room_id == room_id))
            if kind != RoomKind.BACKSTAGE:
                return False
            self._backstage_rooms.add(room_id)
        return True

    async def _mark(self, seq: int, status: InboundStatus) -> None:
        async with self.ctx.sessions.begin() as session:
            await session.execute(update(InboundEvent).where(InboundEvent.seq == seq).values(status=status))

    async def dispatch(self, session: AsyncSession, event: Event) -> None:
        if self._is_bot_invite(event):
            await self._on_bot_invite(session, event)
            return
        # The room and its channel in one statement: the channel is then in the session's identity
        # map, so the handlers' `channel_of_room` costs no second one.
        found = (await session.execute(_ROOM_AND_CHANNEL, {"room_id": event.room_id})).first()
        if found is None:
            return
        room = found[0]
        if self.ctx.outbox.crypto is not None and room.kind in ENCRYPTED_KINDS:
            if event.type == "m.room.encrypted":  # still encrypted: the bot was not given the key
                await self._on_undecryptable(session, room, event)
                return
            if event.type == "m.room.encryption":
                return  # the bot takes part in encryption here
        if event.type in ("m.room.encrypted", "m.room.encryption"):
            await self._on_encrypted(session, room)
        elif room.kind == RoomKind.MANAGEMENT:
            await on_management_message(self.ctx, session, room, event)
        elif room.kind == RoomKind.BACKSTAGE:
            await on_backstage_event(self.ctx, session, room, event)
        elif room.kind == RoomKind.OPERATOR:
            await on_operator_message(self.ctx, session, room, event)
        elif room.kind == RoomKind.MODERATION:
            await on_moderation_message(self.ctx, session, room, event)
        elif room.kind == RoomKind.POLICY:
            await on_policy_event(self.ctx, session, room, event)
        elif room.kind == DISCUSSION:
            await on_discussion_event(self.ctx, session, room, event)
        elif room.kind == RoomKind.BROADCAST:
            await on_member_event(self.ctx, session, room, event)

    async def _on_bot_invite(self, session: AsyncSession, event: Event) -> None:
        ctx = self.ctx
        room_id = event.room_id
        # Users of other servers the hosting policy lets in may chat too (readers' commands only).
        welcome = server_of(event.sender) == ctx.domain or await server_welcome(
            ctx, session, server_of(event.sender)
        )
        if not welcome or not event.content.get("is_direct"):
            reason = (
                f"Only users of {ctx.domain} and the servers it federates with can chat with me here."
                if not welcome
                else "Invite me to a direct chat to manage channels."
            )
            enqueue(
                session,
                new_entry(
                    room_queue(room_id), OutboxKind.LEAVE, ctx.bot, {"room_id": room_id, "reason": reason}
                ),
            )
            return
        existing = await session.get(Room, room_id)
        if existing is not None and existing.kind != RoomKind.MANAGEMENT:
            return
        ctx.remember_room(room_id)
        await session.merge(
            Room(
                room_id=room_id,
                kind=RoomKind.MANAGEMENT,
                user_id=event.sender,
                language=ctx.config.default_language,
            )
        )
        # The greeting is in the language the user chose (`language fa`), if they did, in any room before.
        lang = await language_for(session, ctx, event.sender)
        greeting = {"msgtype": "m.notice", "body": t(lang, "help", domain=ctx.domain)}
        payload = {"room_id": room_id, "greeting": greeting}
        enqueue(session, new_entry(room_queue(room_id), OutboxKind.JOIN_CHAT, ctx.bot, payload))

    async def _exec_join_chat(self, entry: OutboxEntry, worker: OutboxWorker) -> str | None:
        """Join a new chat; answer what the user wrote there before the bot joined, or else greet.

        The homeserver never delivered those messages (the bot was not in the room yet): they are
        recorded as inbound events, once by event id (a retried join finds them recorded), and the
        processor answers them in order, before anything written after the join.
        """
        room_id = RoomID(entry.payload["room_id"])
        bot = worker.client.intent(UserID(entry.as_user))
        await bot.ensure_registered()
        await bot.join(room_id)
        waiting = await waiting_before_join(self.ctx, room_id)
        if waiting:
            recorded = await record_gap(self.ctx, room_id, waiting, undelivered=False)
            self._rewrites += 1  # pending events may have new numbers: the processor reads them again
            if recorded:
                log.info("%d message(s) waited in %s for the bot to join; answering them", len(waiting), room_id)
                self._wake.set()
            return None
        return await send_content(worker, entry, room_id, "m.room.message", entry.payload["greeting"])

    async def _decrypted(self, event: Event) -> Event:
        """The decrypted form of an encrypted event in a room Kanal serves; the event itself otherwise.

        Only the private rooms Kanal belongs to for its own function are decrypted (ENCRYPTED_KINDS);
        an encrypted discussion room stays unread, as before. The stored inbound event stays encrypted."""
        crypto = self.ctx.outbox.crypto
        assert crypto is not None
        async with self.ctx.sessions() as session:
            kind = await session.scalar(select(Room.kind).where(Room.room_id == event.room_id))
        if kind not in ENCRYPTED_KINDS:
            return event
        raw = {
            "event_id": event.event_id,
            "room_id": event.room_id,
            "sender": event.sender,
            "type": event.type,
            "content": event.content,
            "origin_server_ts": event.origin_server_ts,
            "unsigned": event.unsigned,
        }
        try:
            decrypted = await crypto.decrypt(raw)
        except Undecryptable as exc:
            log.warning("Event %s in %s could not be decrypted: %s", event.event_id, event.room_id, exc)
            return event
        try:
            clear = parse_event(decrypted)
        except EventParseError as exc:
            log.warning("Event %s decrypted to no valid event (%s)", event.event_id, exc)
            return event
        # The homeserver's word for who sent it where and when; the payload's for what it says.
        return dataclasses.replace(event, type=clear.type, content=clear.content)

    async def _on_undecryptable(self, session: AsyncSession, room: Room, event: Event) -> None:
        """Never silence: the sender learns their message could not be read and how to resend it."""
        if self.ctx.is_ours(event.sender):
            return
        if room.user_id is not None:
            lang = await language_for(session, self.ctx, room.user_id, "", room)
        else:
            lang = room.language or self.ctx.config.default_language
        text = t(lang, "undecryptable", bot=self.ctx.bot)
        enqueue(session, send_entry(self.ctx.bot, room.room_id, {"msgtype": "m.notice", "body": text}))

    async def _on_encrypted(self, session: AsyncSession, room: Room) -> None:
        """An encrypted event Kanal does not decrypt: it says so plainly instead of staying silent.

        A management chat or backstage gets here only while Kanal's encryption is off (with it on, `dispatch`
        decrypts them, ENCRYPTED_KINDS); the notice names the operator's two ways out. A discussion room is
        never decrypted (it is public; someone turned encryption on): comments are switched off.
        """
        if room.encrypted_warned:
            return
        if room.kind == DISCUSSION:
            await discussion_encrypted(self.ctx, session, room)
            return
        room.encrypted_warned = True
        if room.user_id is not None:  # a management room: its user's language
            lang = await language_for(session, self.ctx, room.user_id, "", room)
        else:
            lang = room.language or self.ctx.config.default_language
        if room.kind == RoomKind.MANAGEMENT:
            text = t(lang, "encrypted_management", bot=self.ctx.bot)
        elif room.kind == RoomKind.BACKSTAGE:
            channel = await session.get(Channel, room.channel_id)
            text = t(lang, "encrypted_backstage", handle=channel.handle if channel else "?")
        else:
            return
        enqueue(session, send_entry(self.ctx.bot, room.room_id, {"msgtype": "m.notice", "body": text}))


@functools.cache
def _insert_ignore(dialect: str) -> Any:
    """INSERT of inbound events that skips event ids already recorded (executed with a list of rows)."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        insert(InboundEvent)
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(InboundEvent.seq, InboundEvent.event_id)
    )


# The statements of every event, built once.
_MANAGED_ROOMS = select(Room.room_id).where(Room.kind != RoomKind.BROADCAST)
# Several processes (PostgreSQL) know no set of rooms: which of a transaction's rooms are managed.
_MANAGED_ROOMS_AMONG = _MANAGED_ROOMS.where(Room.room_id.in_(bindparam("room_ids", expanding=True)))
_PRIVATE_BROADCAST_ROOMS = (
    select(Room.room_id)
    .join(Channel, Channel.id == Room.channel_id)
    .where(
        Room.room_id.in_(bindparam("room_ids", expanding=True)),
        Room.kind == RoomKind.BROADCAST,
        Channel.private.is_(True),
    )
)
_PENDING_EVENTS = (
    select(
        InboundEvent.seq, InboundEvent.event_id, InboundEvent.room_id, InboundEvent.payload, InboundEvent.attempts
    )
    .where(InboundEvent.status == InboundStatus.PENDING)
    .order_by(InboundEvent.seq)
    .limit(PROCESS_BATCH)
)
_ROOM_AND_CHANNEL = (
    select(Room, Channel).outerjoin(Channel, Channel.id == Room.channel_id).where(Room.room_id == bindparam("room_id"))
)
_MARK_DONE = (
    update(InboundEvent)
    .where(InboundEvent.seq == bindparam("event_seq"), InboundEvent.status == InboundStatus.PENDING)
    .values(status=InboundStatus.DONE)
)
