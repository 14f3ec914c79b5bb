"""Catch-up: find backstage posts the homeserver never delivered, and slot them in, in order; and
what people wrote in a new chat before the bot joined it.

Synapse keeps events it has not yet put into an application-service transaction in memory, so a
Synapse restart can drop them for good (synapse#11637). After Kanal starts, and after the homeserver
was unreachable, the processor holds back and this reads each backstage room's recent timeline:

    newest ◀── /messages ── … ── anchor (an event we already handled)
               events after the anchor that we never recorded = missing

Missing events are inserted, and the room's still-pending events are re-sequenced with them into
timeline order, so a lost post is neither lost nor published out of order.

A new chat with the bot: the homeserver sends an application service only the events of rooms its
users are in, so a command typed between inviting the bot and its joining never arrives. Once joined,
the bot reads the chat back to its invite and records those messages the same way (`waiting_before_join`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from appservice.client import q
from appservice.errors import MatrixRequestError
from appservice.events import Event, EventParseError, parse_event
from appservice.ids import RoomID
from bridge.matrix.relay import POLL_END_TYPES, POLL_START_TYPES
from bridge.runtime.context import Context
from bridge.runtime.retention import too_old
from bridge.store.models import InboundEvent, InboundStatus, Room, RoomKind

log = logging.getLogger(__name__)

PAGE_SIZE = 50
MAX_PAGES = 20
PARALLEL_ROOMS = 8
VERIFY_CONTEXT = 20
CATCH_UP_TYPES = frozenset(
    {"m.room.message", "m.sticker", "m.room.redaction", *POLL_START_TYPES, *POLL_END_TYPES}
)
# A new chat with the bot: its commands, and what a client encrypted (answered with why not).
WAITING_TYPES = frozenset({"m.room.message", "m.room.encrypted"})
WAITING_PAGES = 2


def _is_ours(ctx: Context, sender: str) -> bool:
    local, _, server = sender[1:].partition(":")
    return server == ctx.domain and (sender == ctx.bot or local.startswith(ctx.config.ghost_prefix))


async def _timeline_since_anchor(
    ctx: Context, room_id: str, handled: set[str]
) -> list[dict[str, Any]] | None:
    """Events newer than the newest handled one, oldest first; None when no anchor was found.

    Only a handled event is an anchor: a pending one may have arrived after the gap.
    """
    bot = ctx.bot_intent()
    newer: list[dict[str, Any]] = []
    token: str | None = None
    for _ in range(MAX_PAGES):
        query = {"dir": "b", "limit": str(PAGE_SIZE)}
        if token:
            query["from"] = token
        data = await ctx.client.request(
            "GET", f"/_matrix/client/v3/rooms/{q(room_id)}/messages", query=query, user_id=bot.user_id
        )
        chunk = data.get("chunk", [])
        for raw in chunk:
            if raw.get("event_id") in handled:
                newer.reverse()
                return newer
            newer.append(raw)
        token = data.get("end")
        if not chunk or not token:
            break
    newer.reverse()
    return newer if len(newer) < PAGE_SIZE * MAX_PAGES else None


async def catch_up_room(ctx: Context, room_id: str) -> int:
    """Record what the homeserver never delivered for one backstage room; returns how many."""
    async with ctx.sessions() as session:
        recent = (
            await session.execute(
                select(InboundEvent.event_id, InboundEvent.seq, InboundEvent.status)
                .where(InboundEvent.room_id == room_id)
                .order_by(InboundEvent.seq.desc())
                .limit(PAGE_SIZE * MAX_PAGES)
            )
        ).all()
    handled = {event_id for event_id, _seq, status in recent if status != InboundStatus.PENDING}
    if not handled:
        return 0  # nothing handled here yet: no anchor to measure a gap from
    timeline = await _timeline_since_anchor(ctx, room_id, handled)
    if timeline is None:
        log.warning(
            "Catch-up: no handled event within the last %d of %s; skipping it", PAGE_SIZE * MAX_PAGES, room_id
        )
        return 0
    candidates = _actionable(ctx, timeline)
    seqs = {event_id: seq for event_id, seq, _status in recent}
    if _recorded_in_order([seqs.get(e.event_id) for e in candidates]):
        return 0
    return await record_gap(ctx, room_id, candidates)


def _recorded_in_order(seqs: list[int | None]) -> bool:
    """Whether a stretch of the timeline (their `seq`s, oldest first) is all recorded, in that order."""
    recorded = [seq for seq in seqs if seq is not None]
    return len(recorded) == len(seqs) and all(a < b for a, b in itertools.pairwise(recorded))


def _actionable(ctx: Context, raws: list[dict[str, Any]], types: frozenset[str] = CATCH_UP_TYPES) -> list[Event]:
    """The events among `raws` (oldest first) that Kanal relays or mirrors (or of `types`); none past
    the dedupe horizon (its record may be pruned: it was handled, or is too old to publish now)."""
    events: list[Event] = []
    for raw in raws:
        try:
            event = parse_event(raw)
        except EventParseError:
            continue
        if (
            event.type in types
            and not _is_ours(ctx, event.sender)
            and not too_old(event.origin_server_ts, ctx.config)
        ):
            events.append(event)
    return events


def _bot_membership(ctx: Context, raw: dict[str, Any]) -> str | None:
    if raw.get("type") != "m.room.member" or raw.get("state_key") != ctx.bot:
        return None
    content = raw.get("content")
    membership = content.get("membership") if isinstance(content, dict) else None
    return membership if isinstance(membership, str) else "?"


async def waiting_before_join(ctx: Context, room_id: RoomID) -> list[Event]:
    """What people wrote in a chat after inviting the bot and before it joined (just now), oldest
    first: commands and encrypted messages, at most the last `WAITING_PAGES` pages' worth."""
    newest_first: list[dict[str, Any]] = []
    token: str | None = None
    for _ in range(WAITING_PAGES):
        query = {"dir": "b", "limit": str(PAGE_SIZE)}
        if token:
            query["from"] = token
        data = await ctx.client.request(
            "GET", f"/_matrix/client/v3/rooms/{q(room_id)}/messages", query=query, user_id=ctx.bot
        )
        chunk = data.get("chunk", [])
        for raw in chunk:
            if _bot_membership(ctx, raw) not in (None, "join"):
                break  # the invite: nothing before it was meant for the bot
            newest_first.append(raw)
        else:
            token = data.get("end")
            if chunk and token:
                continue
        break
    before_join: list[dict[str, Any]] = []
    for raw in reversed(newest_first):
        if _bot_membership(ctx, raw) == "join":
            break  # what follows the join is delivered as usual
        before_join.append(raw)
    return _actionable(ctx, before_join, WAITING_TYPES)


async def record_gap(ctx: Context, room_id: str, candidates: list[Event], *, undelivered: bool = True) -> int:
    """Put a stretch of the timeline (`candidates`, oldest first) into the room's queue, in order.

    Events never delivered are recorded; pending events the homeserver delivered out of timeline
    order (a stranded transaction retried after later ones) are re-sequenced. The room's queue
    becomes: the stretch's pending events in timeline order, then its other pending events in arrival
    order. Returns how many events were recorded or moved (0: the queue was already right).
    `undelivered=False`: the homeserver was never meant to deliver them (a new chat's first messages),
    so missing ones are no fault worth a warning.
    """
    async with ctx.sessions.begin() as session:
        # Ingest must not record events of this room while we re-sequence it, or a late delivery
        # could slip between the rows we write.
        await _lock_inbound(session)
        present = set(
            (
                await session.scalars(
                    select(InboundEvent.event_id).where(
                        InboundEvent.event_id.in_([e.event_id for e in candidates])
                    )
                )
            ).all()
        )
        missing = [e for e in candidates if e.event_id not in present]
        pending = (
            await session.scalars(
                select(InboundEvent)
                .where(InboundEvent.room_id == room_id, InboundEvent.status == InboundStatus.PENDING)
                .order_by(InboundEvent.seq)
            )
        ).all()
        pending_by_id = {row.event_id: row for row in pending}
        was_pending = set(pending_by_id)
        ordered: list[dict[str, Any]] = []
        for event in candidates:
            row = pending_by_id.pop(event.event_id, None)
            if row is not None:
                ordered.append({"event_id": row.event_id, "room_id": room_id, "payload": row.payload})
            elif event.event_id not in present:
                ordered.append(
                    {"event_id": event.event_id, "room_id": room_id, "payload": event.as_dict()}
                )
        # The room's other pending events (delivered after the stretch was read, or older than it:
        # those are put right when the processor checks the new head of the queue) follow.
        ordered.extend(
            {"event_id": r.event_id, "room_id": room_id, "payload": r.payload} for r in pending_by_id.values()
        )
        now_ids = [r.event_id for r in pending]
        want_ids = [o["event_id"] for o in ordered]
        reordered = now_ids != [event_id for event_id in want_ids if event_id in was_pending]
        if not missing and not reordered:
            return 0
        # Rows already in place at the head of the queue keep their seq; the rest are written anew.
        keep = 0
        while keep < len(now_ids) and now_ids[keep] == want_ids[keep]:
            keep += 1
        await session.execute(
            delete(InboundEvent).where(InboundEvent.seq.in_([r.seq for r in pending[keep:]]))
        )
        await session.execute(insert(InboundEvent), ordered[keep:])
    if missing and undelivered:
        log.warning(
            "%d event(s) in %s were never delivered by the homeserver; recorded them in order",
            len(missing),
            room_id,
        )
    if reordered:
        log.warning("Events in %s were delivered out of timeline order; re-sequenced them", room_id)
    return len(missing) + reordered


async def _lock_inbound(session: AsyncSession) -> None:
    """Hold back writers of `inbound_events` until this transaction ends (readers go on)."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("LOCK TABLE inbound_events IN EXCLUSIVE MODE"))
    else:
        # SQLite has one writer at a time: the first write takes the lock, even one changing no row.
        await session.execute(update(InboundEvent).where(InboundEvent.seq < 0).values(attempts=0))


async def verify_preceding(ctx: Context, room_id: str, event_id: str) -> int:
    """Check the events just before `event_id` (the head of its room's queue) were all handled.

    Synapse can strand a transaction while it recovers from a failed delivery (e.g. right after Kanal
    restarts): later events arrive, an earlier one arrives late or not at all. An earlier event that
    is missing, or still pending behind `event_id`, is put before it (returns > 0: read the queue
    again). Checking each head this way keeps the timeline's order, however far back the gap goes.
    """
    data = await ctx.client.request(
        "GET",
        f"/_matrix/client/v3/rooms/{q(room_id)}/context/{q(event_id)}",
        query={"limit": str(VERIFY_CONTEXT)},
        user_id=ctx.bot,
    )
    before = list(reversed(data.get("events_before", [])))  # the API lists them newest first
    candidates = _actionable(ctx, before)
    if not candidates:
        return 0
    async with ctx.sessions() as session:
        handled = set(
            (
                await session.scalars(
                    select(InboundEvent.event_id).where(
                        InboundEvent.event_id.in_([e.event_id for e in candidates]),
                        InboundEvent.status != InboundStatus.PENDING,
                    )
                )
            ).all()
        )
    if all(e.event_id in handled for e in candidates):
        return 0
    return await record_gap(ctx, room_id, candidates)


async def catch_up(ctx: Context) -> int:
    """Catch up every backstage room (a few at a time); raises while the homeserver is unreachable."""
    async with ctx.sessions() as session:
        rooms = (await session.scalars(select(Room.room_id).where(Room.kind == RoomKind.BACKSTAGE))).all()
    semaphore = asyncio.Semaphore(PARALLEL_ROOMS)

    async def one(room_id: str) -> int:
        async with semaphore:
            try:
                return await catch_up_room(ctx, RoomID(room_id))
            except MatrixRequestError as exc:
                if exc.retryable:
                    raise
                log.warning("Catch-up of %s refused (%s); skipping it", room_id, exc.errcode)
                return 0

    found = sum(await asyncio.gather(*(one(room) for room in rooms)))
    log.info("Catch-up: checked %d backstage room(s); %d event(s) had not been delivered", len(rooms), found)
    return found
