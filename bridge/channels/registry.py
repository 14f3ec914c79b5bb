"""Channel registration: who may open a channel, under which handle and title; tokens; holds; transfers.

Policies (`channels.creation_policy`): `open` (any local user), `approval` (a request waits in the
operators' room until an operator approves or rejects it, with a reason that reaches the requester),
`token` (a registration token from the operators, with expiry and a use count). Operators
(`operators.users`) are never held back by a policy, a quota or the reserved list.

A handle is refused when it is reserved, taken, held (a renamed channel's old alias during its grace
period, or a released handle cooling down), requested by someone else, or confusable with any of these
(UTS #39 skeletons). A title is refused when its comparison key equals a verified channel's.
Every decision here is written to `registry_log`.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.broadcast import seam
from bridge.matrix.powerlevels import CHANNEL_STATE_TYPE, backstage_name
from bridge.runtime.config import Config
from bridge.runtime.context import Context, enqueue, state_entry
from bridge.runtime.outbox import OutboxKind, aware, new_entry, room_queue
from bridge.store.hashing import hash_token
from bridge.store.models import (
    Channel,
    ChannelMember,
    ChannelRequest,
    ChannelStatus,
    HandleHold,
    RegistrationToken,
    RegistryLog,
    RequestStatus,
    ReservedHandle,
)
from bridge.text.commands import Refusal
from bridge.text.digits import utc_time
from bridge.text.i18n import SOURCE_LANGUAGE, t
from bridge.text.names import handle_skeleton, title_key

VERIFICATION_STATE_TYPE = "net.kanal.verification"
TRANSFER_WINDOW = timedelta(days=7)
TOKEN_PREFIX = "kanal_rt_"  # noqa: S105 (a prefix, not a secret)


def now() -> datetime:
    return datetime.now(UTC)


def is_operator(config: Config, user_id: str) -> bool:
    return user_id in config.operators


async def log_entry(
    session: AsyncSession, config: Config, actor: str, action: str, subject: str, **detail: Any
) -> None:
    """A registry change: in `registry_log`, and in the tamper-evident audit log (who and the details
    as erasable personal data)."""
    from bridge.moderation import audit

    session.add(RegistryLog(actor=actor, action=action, subject=subject, detail=detail))
    await audit.append(
        session, "registry", {"action": action, "subject": subject}, {"actor": actor, **detail}, config=config
    )


# -- handles and titles ----------------------------------------------------------------------------


async def reserved_handles(session: AsyncSession, config: Config) -> set[str]:
    added = (await session.scalars(select(ReservedHandle.handle))).all()
    return set(config.reserved_handles) | set(added)


async def handle_refusal(
    session: AsyncSession,
    config: Config,
    handle: str,
    *,
    user_id: str,
    channel_id: int | None = None,
    request_id: int | None = None,
) -> Refusal | None:
    """Why `handle` may not be taken by `user_id` (for a new channel, or `channel_id` renaming); None: it may."""
    operator = is_operator(config, user_id)
    skeleton = handle_skeleton(handle)
    reserved = await reserved_handles(session, config)
    if not operator:
        if handle in reserved:
            return Refusal("handle_reserved", {"handle": handle})
        for other in reserved:
            if handle_skeleton(other) == skeleton:
                return Refusal("handle_confusable", {"handle": handle, "other": other})
    taken = await session.scalar(select(Channel).where(Channel.handle == handle))
    if taken is not None and taken.id != channel_id:
        return Refusal("handle_taken", {"handle": handle})
    hold = await session.get(HandleHold, handle)
    if hold is not None and aware(hold.until) > now() and not (channel_id and hold.channel_id == channel_id):
        return Refusal("handle_held", {"handle": handle, "until": aware(hold.until).date().isoformat()})
    requested = await session.scalar(
        select(ChannelRequest).where(
            ChannelRequest.handle == handle, ChannelRequest.status == RequestStatus.PENDING
        )
    )
    if requested is not None and requested.id != request_id:
        return Refusal("handle_requested", {"handle": handle})
    look_alike = await session.scalar(
        select(Channel.handle).where(
            Channel.handle_skeleton == skeleton,
            Channel.handle != handle,
            Channel.handle.is_not(None),
            *([Channel.id != channel_id] if channel_id else []),
        )
    )
    if look_alike is None:
        look_alike = await session.scalar(
            select(HandleHold.handle).where(
                HandleHold.skeleton == skeleton,
                HandleHold.handle != handle,
                HandleHold.until > now(),
                or_(HandleHold.channel_id.is_(None), HandleHold.channel_id != (channel_id or -1)),
            )
        )
    if look_alike is not None:
        return Refusal("handle_confusable", {"handle": handle, "other": look_alike})
    return None


async def title_refusal(
    session: AsyncSession, title: str, *, channel_id: int | None = None
) -> Refusal | None:
    """A title that reads like a verified channel's (same comparison key) would impersonate it."""
    key = title_key(title)
    query = select(Channel).where(
        Channel.title_key == key, Channel.verified.is_(True), Channel.status == ChannelStatus.ACTIVE
    )
    if channel_id is not None:
        query = query.where(Channel.id != channel_id)
    verified = await session.scalar(query)
    if verified is None:
        return None
    return Refusal("title_impersonates", {"title": title, "handle": verified.handle})


async def quota_refusal(session: AsyncSession, config: Config, user_id: str) -> Refusal | None:
    if config.max_channels_per_user == 0 or is_operator(config, user_id):
        return None
    owned = await session.scalar(
        select(func.count())
        .select_from(Channel)
        .where(Channel.owner == user_id, Channel.status.in_((ChannelStatus.CREATING, ChannelStatus.ACTIVE)))
    )
    requested = await session.scalar(
        select(func.count())
        .select_from(ChannelRequest)
        .where(ChannelRequest.user_id == user_id, ChannelRequest.status == RequestStatus.PENDING)
    )
    if (owned or 0) + (requested or 0) >= config.max_channels_per_user:
        return Refusal("quota_reached", {"limit": config.max_channels_per_user})
    return None


# -- registration tokens ---------------------------------------------------------------------------


def new_token() -> str:
    """A registration token. Its first characters (the hint) are typed as a command-line argument
    (`kanal token revoke <hint>`), so the secret never starts with "-", which would read as an option."""
    secret = secrets.token_urlsafe(18)
    while secret.startswith("-"):
        secret = secrets.token_urlsafe(18)
    return TOKEN_PREFIX + secret


async def create_token(
    session: AsyncSession,
    config: Config,
    created_by: str,
    *,
    uses: int | None = None,
    valid_for: timedelta | None = None,
    label: str = "",
) -> tuple[str, RegistrationToken]:
    """A new token (returned once, in clear) and its row (which keeps only the hash)."""
    token = new_token()
    row = RegistrationToken(
        token_hash=hash_token(token),
        hint=token[len(TOKEN_PREFIX) : len(TOKEN_PREFIX) + 6],
        label=label[:200],
        uses_allowed=uses,
        uses=0,
        expires_at=now() + valid_for if valid_for else None,
        revoked=False,
        created_by=created_by,
    )
    session.add(row)
    await session.flush()
    await log_entry(
        session, config, created_by, "token_created", f"token {row.id}", uses=uses, label=row.label
    )
    return token, row


def token_problem(row: RegistrationToken | None) -> Refusal | None:
    """Why a token cannot be used, or None."""
    if row is None:
        return Refusal("token_unknown")
    if row.revoked:
        return Refusal("token_revoked")
    if row.expires_at is not None and aware(row.expires_at) <= now():
        return Refusal("token_expired")
    if row.uses_allowed is not None and row.uses >= row.uses_allowed:
        return Refusal("token_used_up")
    return None


async def find_token(session: AsyncSession, token: str) -> RegistrationToken | None:
    # Looked up by its SHA-256: the clear token is never stored or compared.
    found: RegistrationToken | None = await session.scalar(
        select(RegistrationToken).where(RegistrationToken.token_hash == hash_token(token)).with_for_update()
    )
    return found


async def find_token_by_ref(session: AsyncSession, ref: str) -> RegistrationToken | None:
    """A token named by its number (`3`) or its hint (the first characters after the prefix)."""
    ref = ref.strip().lstrip("#")
    if ref.isdigit():
        return await session.get(RegistrationToken, int(ref))
    found: RegistrationToken | None = await session.scalar(
        select(RegistrationToken).where(RegistrationToken.hint == ref.removeprefix(TOKEN_PREFIX)[:6])
    )
    return found


def describe_token(row: RegistrationToken, lang: str = SOURCE_LANGUAGE) -> str:
    """One line about a registration token (never the token), in `lang` and its digits (the CLI: English)."""
    expires = utc_time(row.expires_at) if row.expires_at else t(lang, "token_expires_never")
    return t(
        lang,
        "token_line",
        id=row.id,
        hint=f"{TOKEN_PREFIX}{row.hint}",
        label=f" “{row.label}”" if row.label else "",
        uses=row.uses,
        allowed=row.uses_allowed if row.uses_allowed is not None else "∞",
        expires=expires,
        state=_token_state(lang, token_problem(row)),
    )


def _token_state(lang: str, problem: Refusal | None) -> str:
    if problem is None:
        return t(lang, "token_state_valid")
    if problem.key == "token_revoked":
        return t(lang, "token_state_revoked")
    if problem.key == "token_expired":
        return t(lang, "token_state_expired")
    return t(lang, "token_state_used_up")


# -- the channel's state that registration changes -------------------------------------------------


def topic_for(config: Config, channel: Channel) -> str:
    """The broadcast room's topic: the description (a line saying what the room is, until the owner
    writes one: never empty, which clients show as "removed the topic"), and the verified mark."""
    about = channel.about or t(config.default_language, "channel_topic_default")
    return f"{about}{config.verified_topic_suffix}" if channel.verified else about


async def set_verified(
    ctx: Context, session: AsyncSession, channel: Channel, verified: bool, actor: str
) -> None:
    channel.verified = verified
    if channel.broadcast_room_id:
        content: dict[str, Any] = {"verified": verified, "updated_ts": int(now().timestamp() * 1000)}
        seam.set_state(ctx, session, channel, VERIFICATION_STATE_TYPE, content)
        seam.set_state(ctx, session, channel, "m.room.topic", {"topic": topic_for(ctx.config, channel)})
    await log_entry(
        session,
        ctx.config,
        actor,
        "verified" if verified else "unverified",
        channel.handle or str(channel.id),
    )


async def hand_over(
    ctx: Context,
    session: AsyncSession,
    channel: Channel,
    new_owner: str,
    actor: str,
    action: str,
    reason: str = "",
) -> None:
    """Make `new_owner` the owner (the previous owner stays as an admin) and fix backstage power."""
    previous = channel.owner
    members = {
        m.user_id: m
        for m in (
            await session.scalars(select(ChannelMember).where(ChannelMember.channel_id == channel.id))
        ).all()
    }
    if previous in members:
        members[previous].role = "editor"
    if new_owner in members:
        members[new_owner].role = "owner"
    else:
        session.add(ChannelMember(channel_id=channel.id, user_id=new_owner, role="owner"))
    channel.owner = new_owner
    backstage = channel.backstage_room_id
    if backstage:
        if new_owner not in members:
            enqueue(
                session,
                new_entry(
                    room_queue(backstage),
                    OutboxKind.INVITE,
                    ctx.bot,
                    {"room_id": backstage, "user_id": new_owner},
                ),
            )
    from bridge.channels.roles import team_changed

    await team_changed(ctx, session, channel)
    await log_entry(
        session,
        ctx.config,
        actor,
        action,
        channel.handle or str(channel.id),
        **{"from": previous, "to": new_owner},
        reason=reason,
    )


async def rename(ctx: Context, session: AsyncSession, channel: Channel, new_handle: str, actor: str) -> None:
    """New handle and alias now; the old alias keeps pointing at the channel for the grace period."""
    old = channel.handle or ""
    config = ctx.config
    channel.handle = new_handle
    channel.handle_skeleton = handle_skeleton(new_handle)
    await session.execute(delete(HandleHold).where(HandleHold.handle == new_handle))
    grace = config.rename_grace_days
    if grace > 0:
        kind, until = "grace", now() + timedelta(days=grace)
    else:
        kind, until = "cooldown", now() + timedelta(days=config.handle_cooldown_days)
    await session.merge(
        HandleHold(handle=old, skeleton=handle_skeleton(old), kind=kind, channel_id=channel.id, until=until)
    )
    new_alias, old_alias = ctx.alias_for(new_handle), ctx.alias_for(old)
    if channel.broadcast_room_id:
        seam.set_alias(ctx, session, channel, new_alias)
        canonical: dict[str, Any] = {"alias": new_alias}
        if kind == "grace":
            canonical["alt_aliases"] = [old_alias]
        seam.set_canonical_alias(ctx, session, channel, canonical)
        seam.set_state(ctx, session, channel, CHANNEL_STATE_TYPE, {"handle": new_handle, "role": "broadcast"})
        if kind == "cooldown":
            seam.remove_alias(ctx, session, channel, old_alias)
    if channel.backstage_room_id:
        room = channel.backstage_room_id
        name = backstage_name(channel.title, new_handle)
        enqueue(session, state_entry(ctx.bot, room, "m.room.name", {"name": name}))
        role_state = {"handle": new_handle, "role": "backstage"}
        enqueue(session, state_entry(ctx.bot, room, CHANNEL_STATE_TYPE, role_state))
    await log_entry(
        session, ctx.config, actor, "renamed", new_handle, **{"from": old, "grace_until": until.isoformat()}
    )


async def release(ctx: Context, session: AsyncSession, handle: str) -> None:
    """A deleted channel's handle: nobody may take it until the cooldown is over."""
    if ctx.config.handle_cooldown_days > 0:
        until = now() + timedelta(days=ctx.config.handle_cooldown_days)
        await session.merge(
            HandleHold(
                handle=handle, skeleton=handle_skeleton(handle), kind="cooldown", channel_id=None, until=until
            )
        )


async def expire_holds(ctx: Context) -> int:
    """Grace periods that ended: drop the old alias, start the cooldown. Cooldowns that ended: free."""
    changed = 0
    async with ctx.sessions.begin() as session:
        due = (await session.scalars(select(HandleHold).where(HandleHold.until <= now()))).all()
        for hold in due:
            changed += 1
            if hold.kind == "cooldown" or ctx.config.handle_cooldown_days == 0:
                await session.delete(hold)
            else:
                hold.kind = "cooldown"
                hold.until = now() + timedelta(days=ctx.config.handle_cooldown_days)
            if hold.channel_id is None:
                continue
            channel = await session.get(Channel, hold.channel_id)
            if channel is None or not channel.broadcast_room_id or channel.handle is None:
                continue
            seam.remove_alias(ctx, session, channel, ctx.alias_for(hold.handle))
            canonical = {"alias": ctx.alias_for(channel.handle)}
            seam.set_canonical_alias(ctx, session, channel, canonical)
    return changed


async def channel_for_alias(session: AsyncSession, local: str) -> Channel | None:
    """The active channel `#local` names: its handle, or an old handle still in its grace period."""
    channel: Channel | None = await session.scalar(
        select(Channel).where(Channel.handle == local, Channel.status == ChannelStatus.ACTIVE)
    )
    if channel is not None:
        return channel
    hold = await session.get(HandleHold, local)
    if hold is None or hold.kind != "grace" or hold.channel_id is None or aware(hold.until) <= now():
        return None
    held: Channel | None = await session.get(Channel, hold.channel_id)
    return held if held is not None and held.status == ChannelStatus.ACTIVE else None


async def backfill_keys(ctx: Context) -> int:
    """Channels from before schema 0003 get their handle skeleton and title key."""
    async with ctx.sessions.begin() as session:
        rows = (
            await session.scalars(
                select(Channel).where(
                    Channel.handle.is_not(None),
                    or_(Channel.handle_skeleton.is_(None), Channel.title_key == ""),
                )
            )
        ).all()
        for channel in rows:
            channel.handle_skeleton = handle_skeleton(channel.handle or "")
            channel.title_key = title_key(channel.title)
    return len(rows)


