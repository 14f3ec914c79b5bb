"""Moderation policy lists (MSC2313) Kanal follows: `m.ban` rules become logged decisions.

The bot joins each room in `compliance.policy_rooms`, reads its rules at start and follows changes as
they arrive. A rule against a server adds it to the deny list of every channel room's
`m.room.server_acl` (never Kanal's own server); against a user, bans them from every channel's
broadcast room (globs: the members who match); against a room, suspends the channel whose broadcast
room or alias it names. Removing or changing a rule lifts what it did — each step a decision with
a statement of reasons, in the audit log.
"""

from __future__ import annotations

import fnmatch
import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from appservice.client import q
from appservice.errors import MatrixRequestError
from appservice.ids import UserID
from bridge.broadcast import seam
from bridge.moderation.decisions import Ground, record, suspend, unsuspend
from bridge.runtime.context import Context, enqueue
from bridge.runtime.outbox import OutboxKind, OutboxWorker, new_entry
from bridge.store import queries
from bridge.store.models import (
    Channel,
    ChannelStatus,
    Decision,
    DecisionKind,
    DecisionStatus,
    OutboxEntry,
    PolicyRule,
    Room,
    RoomKind,
)

log = logging.getLogger(__name__)

KINDS = {
    "m.policy.rule.user": "user",
    "m.policy.rule.server": "server",
    "m.policy.rule.room": "room",
    "m.room.rule.user": "user",
    "m.room.rule.server": "server",
    "m.room.rule.room": "room",
    "org.matrix.mjolnir.rule.user": "user",
    "org.matrix.mjolnir.rule.server": "server",
    "org.matrix.mjolnir.rule.room": "room",
}
BAN = ("m.ban", "org.matrix.mjolnir.ban")


async def banned_servers(session: AsyncSession, own_domain: str) -> list[str]:
    """Server globs banned by followed policy lists (never one that matches Kanal's own server)."""
    rows = (
        await session.scalars(
            select(PolicyRule.entity).where(
                PolicyRule.event_type.in_([t for t, k in KINDS.items() if k == "server"])
            )
        )
    ).all()
    return sorted({e for e in rows if not fnmatch.fnmatchcase(own_domain, e)})


async def follow(ctx: Context) -> int:
    """Join the configured policy rooms and apply their current rules; how many rules changed."""
    changed = 0
    bot = ctx.bot_intent()
    for ref in ctx.config.compliance.policy_rooms:
        try:
            room_id = await bot.join(ref)
            state = await ctx.client.request(
                "GET", f"/_matrix/client/v3/rooms/{q(room_id)}/state", user_id=ctx.bot, array=True
            )
        except MatrixRequestError as exc:
            if exc.retryable:
                raise
            log.warning("Cannot follow the policy list %s (%s)", ref, exc)
            continue
        async with ctx.sessions.begin() as session:
            await session.merge(Room(room_id=room_id, kind=RoomKind.POLICY))
            for event in state if isinstance(state, list) else []:
                if (
                    isinstance(event, dict)
                    and event.get("type") in KINDS
                    and isinstance(event.get("state_key"), str)
                ):
                    changed += await apply_rule(
                        ctx, session, room_id, event["type"], event["state_key"], event.get("content") or {}
                    )
        ctx.remember_room(room_id)
    if changed:
        ctx.outbox.wake()
    log.info(
        "Policy lists: following %d; %d rule change(s) applied",
        len(ctx.config.compliance.policy_rooms),
        changed,
    )
    return changed


async def apply_rule(
    ctx: Context,
    session: AsyncSession,
    room_id: str,
    event_type: str,
    state_key: str,
    content: dict[str, Any],
) -> int:
    """Bring one rule's effect in line with its current content; 1 when something changed."""
    kind = KINDS[event_type]
    entity = content.get("entity")
    recommendation = content.get("recommendation")
    reason = content.get("reason") if isinstance(content.get("reason"), str) else ""
    active = isinstance(entity, str) and bool(entity) and recommendation in BAN
    existing = await session.get(PolicyRule, (room_id, event_type, state_key))
    if existing is not None and active and existing.entity == entity:
        return 0
    if existing is None and not active:
        return 0
    if existing is not None:
        await _lift(ctx, session, existing, kind, room_id)
        await session.delete(existing)
        await session.flush()
    if active:
        rule = PolicyRule(
            room_id=room_id,
            event_type=event_type,
            state_key=state_key,
            entity=str(entity),
            recommendation=str(recommendation),
            reason=reason,
        )
        session.add(rule)
        rule.decision_id = await _enforce(ctx, session, rule, kind, room_id)
    return 1


def _ground(room_id: str, reason: str) -> Ground:
    return Ground("terms", f"moderation policy list {room_id}" + (f" ({reason[:200]})" if reason else ""))


async def _enforce(
    ctx: Context, session: AsyncSession, rule: PolicyRule, kind: str, room_id: str
) -> int | None:
    decided_by = f"policy:{room_id}"
    explanation = (
        f"A followed moderation policy list bans {kind} {rule.entity}: {rule.reason or 'no reason given'}"
    )
    if kind in ("server", "user"):
        if kind == "server" and fnmatch.fnmatchcase(ctx.domain, rule.entity):
            log.warning(
                "Policy list %s bans %s, which matches our own server; ignoring it", room_id, rule.entity
            )
            return None
        decision = await record(
            ctx,
            session,
            kind=DecisionKind(f"ban_{kind}"),
            decided_by=decided_by,
            channel=None,
            ground=_ground(room_id, rule.reason),
            explanation=explanation,
            target=rule.entity,
            automated=True,
        )
        if kind == "server":
            enqueue(session, new_entry("hosting", OutboxKind.HOSTING_RECONCILE, ctx.bot, {}))
        else:
            payload = {"entity": rule.entity, "ban": True, "reason": explanation}
            enqueue(session, new_entry("policy", OutboxKind.POLICY_BAN, ctx.bot, payload))
        return decision.id
    channel = await _channel_named(session, ctx, rule.entity)
    if channel is None or channel.status != ChannelStatus.ACTIVE:
        return None
    decision = await record(
        ctx,
        session,
        kind=DecisionKind.SUSPEND,
        decided_by=decided_by,
        channel=channel,
        ground=_ground(room_id, rule.reason),
        explanation=explanation,
        target=rule.entity,
        automated=True,
    )
    suspend(ctx, session, channel)
    return decision.id


async def _lift(ctx: Context, session: AsyncSession, rule: PolicyRule, kind: str, room_id: str) -> None:
    decision = await session.get(Decision, rule.decision_id) if rule.decision_id else None
    if decision is None or decision.status != DecisionStatus.IN_FORCE:
        return
    channel = await queries.channel_by_id(session, decision.channel_id)
    await record(
        ctx,
        session,
        kind=DecisionKind.REINSTATE,
        decided_by=f"policy:{room_id}",
        channel=channel,
        ground=_ground(room_id, ""),
        explanation=f"The policy list no longer bans {kind} {rule.entity}.",
        target=rule.entity,
        automated=True,
        reverses=decision,
    )
    decision.status = DecisionStatus.REVERSED
    if kind == "server":
        enqueue(session, new_entry("hosting", OutboxKind.HOSTING_RECONCILE, ctx.bot, {}))
    elif kind == "user":
        enqueue(
            session,
            new_entry(
                "policy", OutboxKind.POLICY_BAN, ctx.bot, {"entity": rule.entity, "ban": False, "reason": ""}
            ),
        )
    elif channel is not None and channel.status == ChannelStatus.SUSPENDED:
        unsuspend(ctx, session, channel)


async def _channel_named(session: AsyncSession, ctx: Context, entity: str) -> Channel | None:
    active = select(Channel).where(Channel.status == ChannelStatus.ACTIVE)
    for channel in (await session.scalars(active)).all():
        names = [*channel.rooms, ctx.alias_for(channel.handle or "")]
        if any(fnmatch.fnmatchcase(name, entity) for name in names if name):
            return channel
    return None


async def on_policy_event(ctx: Context, session: AsyncSession, room: Room, event: Any) -> None:
    if event.type in KINDS and event.state_key is not None:
        if await apply_rule(ctx, session, room.room_id, event.type, event.state_key, event.content):
            ctx.outbox.wake()


# -- outbox executors ------------------------------------------------------------------------------


async def exec_policy_ban(ctx: Context, entry: OutboxEntry, worker: OutboxWorker) -> str | None:
    """Ban (or unban) a user, or the members matching a glob, in every active channel's public rooms
    (all its shards) and discussion room."""
    entity: str = entry.payload["entity"]
    ban: bool = entry.payload["ban"]
    async with ctx.sessions() as session:
        channels = (
            await session.scalars(select(Channel).where(Channel.status == ChannelStatus.ACTIVE))
        ).all()
    rooms = [room for channel in channels for room in (*channel.rooms, channel.comments_room_id) if room]
    glob = any(c in entity for c in "*?")
    for room_id in rooms:
        if room_id is None:
            continue
        targets = [entity]
        if glob:
            members = await ctx.bot_intent().joined_members(room_id)
            targets = [m for m in members if fnmatch.fnmatchcase(m, entity) and m != ctx.bot]
        for user in targets:
            try:
                await seam.ban(ctx, room_id, UserID(user), banned=ban, reason=entry.payload.get("reason", ""))
            except MatrixRequestError as exc:
                if exc.retryable:
                    raise
                log.warning("Could not %s %s in %s: %s", "ban" if ban else "unban", user, room_id, exc)
    return None
