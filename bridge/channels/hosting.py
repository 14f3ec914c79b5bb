"""Hosting policy on channel rooms: who may federate (`m.room.server_acl`) and how long history lives.

    config (hosting.federation, hosting.allowed_servers, hosting.retention_days, channel.retention_days)
      │  pure: server_acl_content, retention_content, creation_content
      ├─▶ new rooms: `creation_content` + `initial_state` in their createRoom body (channels.py)
      └─▶ existing rooms: reconcile ─ GET each room's state as the bot ─ differs? ─▶ outbox "state" entry
            at every start (one process at a time, under the `hosting` lease) and on `kanal hosting
            apply`; paced: each batch of rooms sent before the next is read, so people's answers never
            wait behind every room's change

A room created with `m.federate: true` can never become non-federating (`m.room.create` is immutable):
for `closed`, rooms made earlier are closed by their server ACL, which allows only Kanal's own server.

The same pass gives a public room without a topic (made before channels got a default one: clients
show "removed the topic") the channel's topic line (`registry.topic_for`); a room with a topic keeps it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from appservice.errors import MatrixConnectionError, MatrixRequestError
from appservice.ids import RoomID
from bridge.broadcast import seam
from bridge.channels.registry import topic_for
from bridge.runtime.config import Config
from bridge.runtime.context import Context, enqueue, state_entry
from bridge.runtime.outbox import OutboxKind, OutboxStatus, OutboxWorker
from bridge.runtime.sending import sending
from bridge.store.leases import Leases
from bridge.store.models import Channel, ChannelStatus, Lease, OutboxEntry, Room, RoomKind

log = logging.getLogger(__name__)

SERVER_ACL_TYPE = "m.room.server_acl"
RETENTION_TYPE = "m.room.retention"
HOSTING_TYPES = (SERVER_ACL_TYPE, RETENTION_TYPE)
TOPIC_TYPE = "m.room.topic"
DAY_MS = 86_400_000
HOSTING_LEASE = "hosting"
# Rooms whose state is read at the same time while reconciling.
RECONCILE_PARALLEL_ROOMS = 8
LEASE_WAIT_S = 1.0
APPLY_POLL_S = 0.25
# At a start, each batch's changes are sent before the next batch is read (see _sent), for at most:
PACE_WAIT_S = 60.0


# -- pure decisions ------------------------------------------------------------------------------------


def _host(server_name: str) -> str:
    """The server name without its port: ACLs are matched against the host only."""
    if server_name.startswith("["):
        return server_name[: server_name.find("]") + 1] if "]" in server_name else server_name
    host, sep, port = server_name.rpartition(":")
    return host if sep and port.isdigit() else server_name


def _is_ip_literal(name: str) -> bool:
    if name.startswith("["):
        return True
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return False
    return True


def _glob(pattern: str) -> re.Pattern[str]:
    """An ACL glob (`*` any run of characters, `?` one character) as a whole-name, case-blind regex."""
    return re.compile("".join({"*": ".*", "?": "."}.get(c, re.escape(c)) for c in pattern), re.IGNORECASE)


def server_allowed(acl: dict[str, Any], server_name: str) -> bool:
    """Whether `acl` (an `m.room.server_acl` content) lets `server_name` in, evaluated as Synapse does:
    against the name's host, without its port (`partner.example:8448` is `partner.example`)."""
    host = _host(server_name)
    if not acl.get("allow_ip_literals", True) and _is_ip_literal(host):
        return False
    if any(_glob(p).fullmatch(host) for p in acl.get("deny", []) if isinstance(p, str)):
        return False
    return any(_glob(p).fullmatch(host) for p in acl.get("allow", []) if isinstance(p, str))


def _unique(names: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    kept = []
    for name in names:
        if name.lower() not in seen:
            seen.add(name.lower())
            kept.append(name)
    return kept


def server_acl_content(config: Config, banned: Iterable[str] = ()) -> dict[str, Any]:
    """The `m.room.server_acl` every channel room carries; it never denies Kanal's own server.

    open: everyone; allowlist: Kanal's server and `hosting.allowed_servers` (server names, used as
    given; a port is dropped since ACLs ignore ports); closed: Kanal's server only. IP literals are
    refused, except when Kanal's own server is named by one (it must stay allowed).
    """
    # Federation matches the host; Synapse checks a new ACL against its full server_name: allow both.
    own = _unique([_host(config.domain), config.domain])
    if config.federation == "open":
        allow = ["*"]
    elif config.federation == "allowlist":
        allow = _unique([*own, *(_host(server) for server in config.allowed_servers)])
    elif config.federation == "closed":
        allow = own
    else:
        raise ValueError(f"unknown federation policy {config.federation!r}")
    # Servers banned by followed moderation policy lists (never one that matches our own server).
    deny = [name for name in _unique(banned) if not any(_glob(name).fullmatch(o) for o in own)]
    content = {"allow": allow, "deny": deny, "allow_ip_literals": _is_ip_literal(_host(config.domain))}
    for name in own:
        if not server_allowed(content, name):
            raise ValueError(f"the server ACL {content} would deny Kanal's own server {name}")
    return content


async def server_welcome(ctx: Context, session: AsyncSession, server_name: str) -> bool:
    """Whether users of `server_name` may take part, as every channel room's server ACL says now
    (the hosting policy and the servers banned by followed policy lists)."""
    from bridge.moderation.policy import banned_servers

    return server_allowed(server_acl_content(ctx.config, await banned_servers(session, ctx.domain)), server_name)


def effective_retention_days(deployment_days: int | None, channel_days: int | None) -> int | None:
    """The channel's value wins; None on the channel means the deployment's; 0 means keep everything."""
    days = channel_days if channel_days is not None else deployment_days
    return days if days else None


def retention_content(days: int | None) -> dict[str, Any] | None:
    """The `m.room.retention` content (MSC1763, as Synapse reads it), or None when nothing expires."""
    if days is None or days <= 0:
        return None
    return {"max_lifetime": days * DAY_MS}


def creation_content(config: Config) -> dict[str, Any]:
    """Extra `m.room.create` content: a closed deployment's new rooms never federate."""
    return {"m.federate": False} if config.federation == "closed" else {}


def wanted_state(
    config: Config, channel_retention_days: int | None, banned: Iterable[str] = ()
) -> dict[str, dict[str, Any] | None]:
    """The hosting state a channel room should have; None: absent (or empty content)."""
    return {
        SERVER_ACL_TYPE: server_acl_content(config, banned),
        RETENTION_TYPE: retention_content(
            effective_retention_days(config.retention_days, channel_retention_days)
        ),
    }


def with_hosting_policy(
    request: dict[str, Any], config: Config, channel_retention_days: int | None, banned: Iterable[str] = ()
) -> dict[str, Any]:
    """A `createRoom` body with the deployment's federation and retention policy added."""
    extra_state = [
        {"type": event_type, "state_key": "", "content": content}
        for event_type, content in wanted_state(config, channel_retention_days, banned).items()
        if content is not None
    ]
    result = {**request, "initial_state": [*request.get("initial_state", []), *extra_state]}
    creation = {**request.get("creation_content", {}), **creation_content(config)}
    if creation:
        result["creation_content"] = creation
    return result


def _normal(content: dict[str, Any] | None) -> dict[str, Any] | None:
    """Empty state content means the same as no state event."""
    return content or None


# -- reconciling existing rooms ------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One state event queued for one room."""

    handle: str
    role: str  # broadcast | backstage
    room_id: str
    event_type: str
    entry_id: int


async def _current(ctx: Context, room_id: str, event_type: str) -> dict[str, Any] | None:
    return _normal(await ctx.bot_intent().find_state(RoomID(room_id), event_type))


async def _pending_state(ctx: Context) -> dict[tuple[str, str], dict[str, Any] | None]:
    """The last hosting state (and topic) still waiting in the outbox per (room, type): what the room
    will have."""
    async with ctx.sessions() as session:
        entries = (
            await session.scalars(
                select(OutboxEntry)
                .where(OutboxEntry.status == OutboxStatus.PENDING, OutboxEntry.kind == OutboxKind.STATE)
                .order_by(OutboxEntry.id)
            )
        ).all()
    pending: dict[tuple[str, str], dict[str, Any] | None] = {}
    for entry in entries:
        if entry.payload.get("event_type") in (*HOSTING_TYPES, TOPIC_TYPE) and "room_id" in entry.payload:
            pending[(entry.payload["room_id"], entry.payload["event_type"])] = _normal(
                entry.payload.get("content")
            )
    return pending


def _room_state(
    ctx: Context, session: AsyncSession, room: Room, event_type: str, content: dict[str, Any] | None
) -> OutboxEntry:
    if room.kind == RoomKind.BROADCAST:  # a channel's public room: written through the seam
        return seam.set_room_state(ctx, session, room.room_id, event_type, content or {})
    return enqueue(session, state_entry(ctx.bot, room.room_id, event_type, content or {}))


async def _reconcile_room(
    ctx: Context,
    room: Room,
    channel: Channel,
    pending: dict[tuple[str, str], dict[str, Any] | None],
    banned: Iterable[str] = (),
) -> list[Change]:
    wanted = wanted_state(ctx.config, channel.retention_days, banned)
    differing: dict[str, dict[str, Any] | None] = {}
    try:
        for event_type, content in wanted.items():
            key = (room.room_id, event_type)
            current = pending[key] if key in pending else await _current(ctx, room.room_id, event_type)
            if current != content:
                differing[event_type] = content
        if room.kind == RoomKind.BROADCAST:
            key = (room.room_id, TOPIC_TYPE)
            topic = pending[key] if key in pending else await _current(ctx, room.room_id, TOPIC_TYPE)
            if lacks_topic(ctx.config, topic):
                differing[TOPIC_TYPE] = {"topic": topic_for(ctx.config, channel)}
    except MatrixRequestError as exc:
        if exc.retryable:
            raise
        log.warning("Hosting policy: cannot read the state of %s (%s); skipping it", room.room_id, exc)
        return []
    if not differing:
        return []
    async with ctx.sessions.begin() as session:
        entries = [
            (event_type, _room_state(ctx, session, room, event_type, content))
            for event_type, content in differing.items()
        ]
    return [
        Change(channel.handle or "", room.kind, room.room_id, event_type, entry.id)
        for event_type, entry in entries
    ]


def lacks_topic(config: Config, content: dict[str, Any] | None) -> bool:
    """Whether a public room's topic is missing: none, empty, or the verified mark alone (a verified
    channel made before the default line). A description the owner wrote is never missing."""
    topic = (content or {}).get("topic")
    text = topic.strip() if isinstance(topic, str) else ""
    return text in ("", config.verified_topic_suffix.strip())


async def reconcile_changes(
    ctx: Context,
    renew: Callable[[], Awaitable[bool]] | None = None,
    pace: Callable[[set[int]], Awaitable[None]] | None = None,
) -> list[Change]:
    """Queue the state every active channel's rooms lack; `renew` (a lease) is asked between batches,
    and `pace` is given each batch's entries (it returns once they are sent: see reconcile_at_start)."""
    async with ctx.sessions() as session:
        rows = (
            await session.execute(
                select(Room, Channel)
                .join(Channel, Room.channel_id == Channel.id)
                .where(
                    Channel.status == ChannelStatus.ACTIVE,
                    Room.kind.in_((RoomKind.BROADCAST, RoomKind.BACKSTAGE, RoomKind.DISCUSSION)),
                )
                .order_by(Room.channel_id, Room.kind)
            )
        ).all()
    pending = await _pending_state(ctx)
    from bridge.moderation.policy import banned_servers

    async with ctx.sessions() as session:
        banned = await banned_servers(session, ctx.domain)
    changes: list[Change] = []
    for start in range(0, len(rows), RECONCILE_PARALLEL_ROOMS):
        if renew is not None and not await renew():
            log.warning(
                "Hosting policy: lost the %s lease; stopping (another process continues)", HOSTING_LEASE
            )
            break
        batch = rows[start : start + RECONCILE_PARALLEL_ROOMS]
        queued: list[Change] = []
        for found in await asyncio.gather(
            *(_reconcile_room(ctx, room, channel, pending, banned) for room, channel in batch)
        ):
            queued.extend(found)
        changes.extend(queued)
        if pace is not None and queued:
            await pace({change.entry_id for change in queued})
    if changes:
        ctx.outbox.wake()
    log.info(
        "Hosting policy (federation %s, retention %s): %d state changes queued for %d of %d rooms",
        ctx.config.federation,
        f"{ctx.config.retention_days} days" if ctx.config.retention_days else "off",
        len(changes),
        len({c.room_id for c in changes}),
        len(rows),
    )
    return changes


async def reconcile(ctx: Context, renew: Callable[[], Awaitable[bool]] | None = None) -> int:
    """Bring every active channel's rooms to the configured ACL and retention; how many entries were queued.

    Only the differences are queued (as the bot, in each room's outbox queue), so a repeat changes
    nothing. `closed` cannot turn off federation of rooms created before (`m.federate` is fixed at
    creation); their ACL allowing only Kanal's own server keeps other servers out instead.
    """
    return len(await reconcile_changes(ctx, renew))


async def reconcile_at_start(ctx: Context, leases: Leases) -> None:
    """Reconcile once per start, one process at a time.

    When another process holds the lease, wait: if it releases the lease it has reconciled with the
    same configuration and nothing is left to do; if it died, its lease expires and we take over.
    """
    while not await leases.hold(HOSTING_LEASE):
        async with ctx.sessions() as session:
            if await session.get(Lease, HOSTING_LEASE) is None:
                log.info("Hosting policy: another Kanal process has just reconciled the rooms")
                return
        await asyncio.sleep(LEASE_WAIT_S)
    try:
        await reconcile_changes(
            ctx, renew=lambda: leases.hold(HOSTING_LEASE), pace=lambda ids: _paced(ctx, ids, ctx.outbox.wake)
        )
    except (MatrixConnectionError, MatrixRequestError) as exc:
        log.warning(
            "Hosting policy: could not check the channel rooms (%s); run `kanal hosting apply` or restart "
            "Kanal once the homeserver answers",
            exc,
        )
    finally:
        await leases.release(HOSTING_LEASE)


# -- per-channel retention -----------------------------------------------------------------------------


async def set_channel_retention(
    ctx: Context, session: AsyncSession, channel: Channel, days: int | None
) -> None:
    """Set the channel's own retention (None: the deployment's; 0: keep everything) and queue it for
    its rooms (broadcast, backstage, discussion), in the caller's transaction."""
    if days is not None and days < 0:
        raise ValueError(f"retention must be 0 or more days, got {days}")
    channel.retention_days = days
    content = wanted_state(ctx.config, days)[RETENTION_TYPE]
    if channel.broadcast_room_id:
        seam.set_state(ctx, session, channel, RETENTION_TYPE, content or {})
    for room_id in (channel.backstage_room_id, channel.comments_room_id):
        if room_id:
            enqueue(session, state_entry(ctx.bot, room_id, RETENTION_TYPE, content or {}))


# -- `kanal hosting apply` -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ApplyResult:
    changes: list[Change]
    failed: dict[int, str]  # entry id -> the homeserver's refusal
    waiting: int  # entries still pending when the timeout ran out


async def _wait_sent(ctx: Context, ids: set[int], deadline: float) -> dict[int, tuple[str, str | None]]:
    """Each entry's (status, last error) once none of `ids` is pending, or at `deadline` (monotonic)."""
    while True:
        outcomes = await _outcomes(ctx, ids)
        if time.monotonic() >= deadline or all(status != OutboxStatus.PENDING for status, _ in outcomes.values()):
            return outcomes
        await asyncio.sleep(APPLY_POLL_S)


async def _paced(
    ctx: Context, ids: set[int], wake: Callable[[], None], deadline: float = float("inf")
) -> None:
    """A batch of rooms is sent (waited for at most PACE_WAIT_S, and not past `deadline`) before the
    next is read. Every channel room may need a change: queued all at once they would stand for minutes
    before what people are waiting for (the bot joining a new chat, an answer), sent behind them."""
    wake()
    await _wait_sent(ctx, ids, min(time.monotonic() + PACE_WAIT_S, deadline))


async def _outcomes(ctx: Context, ids: set[int]) -> dict[int, tuple[str, str | None]]:
    async with ctx.sessions() as session:
        rows = (
            await session.execute(
                select(OutboxEntry.id, OutboxEntry.status, OutboxEntry.last_error).where(
                    OutboxEntry.id.in_(ids)
                )
            )
        ).all()
    return {row.id: (row.status, row.last_error) for row in rows}


async def apply(ctx: Context, *, timeout: float) -> ApplyResult:
    """Reconcile, a batch of rooms at a time, then wait until the queued entries are sent (or failed),
    at most `timeout` seconds in all.

    Who sends (this process, or a running Kanal on SQLite): `bridge.runtime.sending`.
    """
    deadline = time.monotonic() + timeout
    async with sending(ctx, "hosting") as sender:
        # A batch of rooms at a time, as at a start.
        changes = await reconcile_changes(ctx, pace=lambda ids: _paced(ctx, ids, sender.wake, deadline))
        outcomes = await _wait_sent(ctx, {change.entry_id for change in changes}, deadline)
    waiting = sum(1 for status, _error in outcomes.values() if status == OutboxStatus.PENDING)
    failed = {i: error or status for i, (status, error) in outcomes.items() if status == OutboxStatus.FAILED}
    return ApplyResult(changes, failed, waiting)


def policy_summary(config: Config) -> str:
    acl = server_acl_content(config)
    servers = "every server" if acl["allow"] == ["*"] else ", ".join(acl["allow"])
    days = config.retention_days
    return f"federation {config.federation} ({servers}); retention {f'{days} days' if days else 'off'}"


def describe(config: Config, result: ApplyResult, timeout: float) -> list[str]:
    """What `kanal hosting apply` prints: the policy, the rooms updated, and anything not done."""
    lines = [f"Hosting policy: {policy_summary(config)}."]
    rooms: dict[tuple[str, str, str], list[str]] = {}
    for change in result.changes:
        rooms.setdefault((change.handle, change.role, change.room_id), []).append(change.event_type)
    if not rooms:
        lines.append("Nothing to change: every channel room already follows it.")
    else:
        lines.append(f"Updated {len(rooms)} rooms:")
        lines += [f"  #{h} {role} {room}: {', '.join(types)}" for (h, role, room), types in rooms.items()]
    if result.failed:
        lines.append(f"The homeserver refused {len(result.failed)} changes:")
        lines += [f"  outbox entry {entry_id}: {error}" for entry_id, error in sorted(result.failed.items())]
    if result.waiting:
        lines.append(
            f"{result.waiting} changes are still waiting after {timeout:.0f} s (is the homeserver answering?); "
            "they stay queued and Kanal sends them when it runs."
        )
    return lines


async def exec_hosting_reconcile(ctx: Context, entry: OutboxEntry, worker: OutboxWorker) -> str | None:
    """Outbox executor: the policy lists changed which servers are banned; every room follows."""
    await reconcile(ctx)
    return None
