"""Private channels: `private <handle> on|off`, invite links (`!link …`), knocks and join requests.

    reader ──/join/<token> (web/join.py)──┐
    reader ──knock, token in the reason───┼─▶ admit(): link active? ─ approval link ─▶ JoinRequest ─▶ backstage
    reader ──knock, no valid token────────┘        │                                     │ !approve / !decline
                                                   └─ plain link ─▶ uses + 1, invite ◀────┘ (decline: kick the knock)

Every decision and the homeserver writes it needs (invites, kicks, state, directory) are queued in the
outbox in the same database transaction. Link uses are counted with one conditional UPDATE, so two
readers racing for the last use of a link never both get in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from appservice.events import Event
from appservice.ids import UserID
from bridge.broadcast import seam
from bridge.channels import roles
from bridge.channels.invites import (
    MAX_ACTIVE_LINKS_PER_CHANNEL,
    MAX_PENDING_REQUESTS_PER_CHANNEL,
    LinkOptionError,
    join_url,
    link_state,
    new_link_token,
    parse_link_options,
    tokens_in,
    without_tokens,
)
from bridge.channels.registry import log_entry
from bridge.runtime.context import Context, reply, reply_sealed
from bridge.runtime.dispatch import CommandCall, command
from bridge.store import queries
from bridge.store.hashing import hash_token
from bridge.store.models import (
    Channel,
    ChannelStatus,
    InviteLink,
    JoinRequest,
    JoinRequestStatus,
    Room,
    RoomKind,
)
from bridge.text.commands import Command
from bridge.text.digits import utc_time
from bridge.text.i18n import t

log = logging.getLogger(__name__)

MAX_DECLINE_REASON = 300
LINK_USAGE = "!link new [--expires 7d] [--uses 100] [--approve] | !link list | !link revoke <id>"


def now() -> datetime:
    return datetime.now(UTC)


# -- private on / off -------------------------------------------------------------------------------


async def private_command(
    ctx: Context, s: AsyncSession, room: Room, event: Event, cmd: Command, lang: str
) -> None:
    """`private <handle> on|off` in the management room (the owner's)."""
    choice = (cmd.arg(1) or "").lower()
    if len(cmd.args) != 2 or choice not in ("on", "off"):
        reply(s, ctx, room.room_id, lang, "private_usage")
        return
    channel = await queries.channel_by_handle(s, cmd.args[0])
    if channel is None:
        reply(s, ctx, room.room_id, lang, "no_channel", handle=cmd.args[0][:64])
        return
    if not await roles.require(ctx, s, room.room_id, channel, event.sender, "private", lang):
        return
    if channel.status != ChannelStatus.ACTIVE or channel.broadcast_room_id is None:
        reply(s, ctx, room.room_id, lang, "private_unavailable", handle=channel.handle, status=channel.status)
        return
    private = choice == "on"
    if channel.private == private:
        reply(
            s,
            ctx,
            room.room_id,
            lang,
            "private_already_on" if private else "private_already_off",
            handle=channel.handle,
        )
        return
    channel.private = private
    seam.set_access(ctx, s, channel)
    await log_entry(
        s, ctx.config, event.sender, "private_on" if private else "private_off", channel.handle or ""
    )
    reply(
        s, ctx, room.room_id, lang, "private_now_on" if private else "private_now_off", handle=channel.handle
    )


# -- admitting a reader -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Admission:
    """What happened to a reader who used a link or knocked."""

    outcome: str  # invited | requested | already_requested | link_<state> | too_many_requests
    request_id: int | None = None


async def find_link(session: AsyncSession, token: str) -> InviteLink | None:
    """The link a token names (looked up by its SHA-256; the clear token is never stored)."""
    link: InviteLink | None = await session.scalar(
        select(InviteLink).where(InviteLink.token_hash == hash_token(token))
    )
    return link


async def _take_use(session: AsyncSession, link: InviteLink) -> bool:
    """Count one use if the link is still active: one conditional UPDATE, safe against races."""
    result = await session.execute(
        update(InviteLink)
        .where(
            InviteLink.id == link.id,
            InviteLink.revoked.is_(False),
            or_(InviteLink.expires_at.is_(None), InviteLink.expires_at > now()),
            or_(InviteLink.uses_allowed.is_(None), InviteLink.uses < InviteLink.uses_allowed),
        )
        .values(uses=InviteLink.uses + 1)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    await session.refresh(link)
    return True


def invite(ctx: Context, session: AsyncSession, channel: Channel, user_id: UserID) -> None:
    """The bot's invite; if the homeserver refuses it (no such user, banned …) backstage hears why."""
    reason = t(ctx.config.default_language, "invite_reason", handle=channel.handle)
    extra: dict[str, Any] = {"reason": reason}
    if channel.backstage_room_id:
        text = t(
            ctx.config.default_language,
            "join_invite_failed",
            user=user_id,
            handle=channel.handle,
            error="{error}",
        )
        extra["on_failure"] = ctx.note(channel.backstage_room_id, text)
    seam.invite(ctx, session, channel, user_id, **extra)


async def admit(
    ctx: Context,
    session: AsyncSession,
    channel: Channel,
    user_id: UserID,
    *,
    link: InviteLink | None,
    source: str,
    reason: str = "",
) -> Admission:
    """Invite `user_id` (an active plain link) or file a join request (an approval link, or a knock
    without a valid token); `source` is `link` (the web page) or `knock`."""
    pending = await session.scalar(
        select(JoinRequest.id).where(
            JoinRequest.channel_id == channel.id,
            JoinRequest.user_id == user_id,
            JoinRequest.status == JoinRequestStatus.PENDING,
        )
    )
    if link is not None:
        if pending is not None and link.approval:
            return Admission("already_requested", pending)
        if not await _take_use(session, link):
            return Admission(f"link_{link_state(link, now())}")
        if not link.approval:
            invite(ctx, session, channel, user_id)
            if pending is not None:
                # A request was waiting too: the link answers it.
                await _decide(session, pending, JoinRequestStatus.APPROVED, user_id)
            await log_entry(
                session,
                ctx.config,
                user_id,
                "invite_link_used",
                channel.handle or "",
                link=link.id,
                via=source,
            )
            return Admission("invited")
    elif pending is not None:
        return Admission("already_requested", pending)
    waiting = await session.scalar(
        select(func.count())
        .select_from(JoinRequest)
        .where(JoinRequest.channel_id == channel.id, JoinRequest.status == JoinRequestStatus.PENDING)
    )
    if (waiting or 0) >= MAX_PENDING_REQUESTS_PER_CHANNEL:
        return Admission("too_many_requests")
    request = JoinRequest(
        channel_id=channel.id,
        user_id=user_id,
        source=source,
        link_id=link.id if link is not None else None,
        reason=without_tokens(reason),
        status=JoinRequestStatus.PENDING,
    )
    session.add(request)
    await session.flush()
    await log_entry(
        session,
        ctx.config,
        user_id,
        "join_requested",
        channel.handle or "",
        request=request.id,
        link=request.link_id,
        via=source,
    )
    if channel.backstage_room_id:
        lang = ctx.config.default_language
        reply(
            session,
            ctx,
            channel.backstage_room_id,
            lang,
            "join_request_new",
            id=request.id,
            user=user_id,
            handle=channel.handle,
            how=_how(lang, request),
            reason=_reason_line(lang, request.reason),
        )
    return Admission("requested", request.id)


async def _decide(session: AsyncSession, request_id: int, status: JoinRequestStatus, by: str) -> None:
    await session.execute(
        update(JoinRequest)
        .where(JoinRequest.id == request_id, JoinRequest.status == JoinRequestStatus.PENDING)
        .values(status=status, decided_by=by, decided_at=now())
    )


def _how(lang: str, request: JoinRequest) -> str:
    if request.source == "knock":
        return t(lang, "join_request_via_knock")
    return t(lang, "join_request_via_link", link=request.link_id or "?")


def _reason_line(lang: str, reason: str) -> str:
    return t(lang, "join_request_reason", reason=reason) if reason else ""


def is_knock(event: Event) -> bool:
    return (
        event.type == "m.room.member"
        and event.content.get("membership") == "knock"
        and event.state_key == event.sender
    )


def is_self_leave(event: Event) -> bool:
    """Someone leaving by themselves: after a knock, that withdraws it."""
    return (
        event.type == "m.room.member"
        and event.content.get("membership") == "leave"
        and event.state_key == event.sender
    )


async def on_member_event(ctx: Context, session: AsyncSession, room: Room, event: Event) -> None:
    """Membership in a private channel's broadcast room: knocks, and knocks withdrawn."""
    if is_knock(event):
        await on_knock(ctx, session, room, event)
    elif is_self_leave(event):
        await _withdraw_requests(ctx, session, room, event)


async def _withdraw_requests(ctx: Context, session: AsyncSession, room: Room, event: Event) -> None:
    """A reader who withdrew their knock (or left) no longer waits: their pending knock requests are
    withdrawn, so approving one later cannot invite someone who changed their mind."""
    if room.channel_id is None:
        return
    channel = await session.get(Channel, room.channel_id)
    if channel is None:
        return
    pending = (
        await session.scalars(
            select(JoinRequest).where(
                JoinRequest.channel_id == channel.id,
                JoinRequest.user_id == event.sender,
                JoinRequest.source == "knock",
                JoinRequest.status == JoinRequestStatus.PENDING,
            )
        )
    ).all()
    for request in pending:
        request.status = JoinRequestStatus.WITHDRAWN
        request.decided_by = event.sender
        request.decided_at = now()
        await log_entry(
            session,
            ctx.config,
            event.sender,
            "join_request_withdrawn",
            channel.handle or "",
            request=request.id,
        )
        if channel.backstage_room_id is not None:
            reply(
                session,
                ctx,
                channel.backstage_room_id,
                ctx.config.default_language,
                "join_request_withdrawn",
                id=request.id,
                user=event.sender,
                handle=channel.handle,
            )


async def on_knock(ctx: Context, session: AsyncSession, room: Room, event: Event) -> None:
    """A knock on a private channel's broadcast room: a valid token in the reason lets the reader in
    (or files a request, for an approval link); otherwise it becomes a join request in backstage."""
    if not is_knock(event) or room.channel_id is None:
        return
    channel = await session.get(Channel, room.channel_id)
    if channel is None or not channel.private or channel.status != ChannelStatus.ACTIVE:
        return
    reason = event.content.get("reason")
    reason = reason if isinstance(reason, str) else ""
    link: InviteLink | None = None
    for token in tokens_in(reason)[:3]:
        found = await find_link(session, token)
        if found is not None and found.channel_id == channel.id and link_state(found, now()) == "active":
            link = found
            break
    admission = await admit(ctx, session, channel, event.sender, link=link, source="knock", reason=reason)
    log.info("Knock on #%s: %s", channel.handle, admission.outcome)


# -- backstage: !link, !requests, !approve, !decline ------------------------------------------------


@command(RoomKind.BACKSTAGE, "link", "requests", "approve", "decline")
async def backstage_command(call: CommandCall) -> None:
    ctx, session, room, channel, event = call.ctx, call.session, call.room, call.backstage_channel, call.event
    command, lang = call.command, call.lang
    action = "links" if command.name == "link" else "join_requests"
    if not await roles.require(ctx, session, room.room_id, channel, event.sender, action, lang):
        return
    if command.name == "link":
        await _link(ctx, session, room, channel, event, command, lang)
    elif command.name == "requests":
        await _requests(ctx, session, room, channel, lang)
    else:
        await _answer(ctx, session, room, channel, event, command, lang)


async def _link(
    ctx: Context, s: AsyncSession, room: Room, channel: Channel, event: Event, command: Command, lang: str
) -> None:
    sub = (command.arg(0) or "").lower()
    if sub == "new":
        await _link_new(ctx, s, room, channel, event, command.args[1:], lang)
    elif sub == "list" and len(command.args) == 1:
        await _link_list(ctx, s, room, channel, lang)
    elif sub == "revoke" and len(command.args) == 2:
        await _link_revoke(ctx, s, room, channel, event, command.args[1], lang)
    else:
        reply(s, ctx, room.room_id, lang, "link_usage", usage=LINK_USAGE)


async def _link_new(
    ctx: Context,
    s: AsyncSession,
    room: Room,
    channel: Channel,
    event: Event,
    args: tuple[str, ...],
    lang: str,
) -> None:
    if not channel.private:
        reply(s, ctx, room.room_id, lang, "link_public_channel", handle=channel.handle, bot=ctx.bot)
        return
    try:
        options = parse_link_options(args)
    except LinkOptionError as exc:
        reply(s, ctx, room.room_id, lang, "link_bad_option", error=str(exc), usage=LINK_USAGE)
        return
    links = (await s.scalars(select(InviteLink).where(InviteLink.channel_id == channel.id))).all()
    active = sum(1 for link in links if link_state(link, now()) == "active")
    if active >= MAX_ACTIVE_LINKS_PER_CHANNEL:
        reply(
            s,
            ctx,
            room.room_id,
            lang,
            "link_too_many",
            handle=channel.handle,
            max=MAX_ACTIVE_LINKS_PER_CHANNEL,
        )
        return
    token = new_link_token()
    link = InviteLink(
        channel_id=channel.id,
        token_hash=hash_token(token),
        created_by=event.sender,
        expires_at=now() + options.expires_in if options.expires_in else None,
        uses_allowed=options.uses,
        uses=0,
        approval=options.approval,
        revoked=False,
    )
    s.add(link)
    await s.flush()
    await log_entry(
        s,
        ctx.config,
        event.sender,
        "invite_link_created",
        channel.handle or "",
        link=link.id,
        expires=link.expires_at.isoformat() if link.expires_at else None,
        uses=link.uses_allowed,
        approval=link.approval,
    )
    if ctx.config.web_enabled:
        text = t(
            lang,
            "link_created",
            id=link.id,
            handle=channel.handle,
            domain=ctx.domain,
            url=join_url(ctx.config.web_public_url, token),
            terms=_terms(lang, link),
        )
    else:  # no web listener to serve /join/…: the token works as a knock's reason only
        text = t(
            lang,
            "link_created_knock_only",
            id=link.id,
            handle=channel.handle,
            domain=ctx.domain,
            token=token,
            terms=_terms(lang, link),
        )
    # Shown once, never written in clear (a sealed reply).
    lost = t(lang, "link_lost", id=link.id, handle=channel.handle)
    reply_sealed(s, ctx, room.room_id, text, lost)


def _terms(lang: str, link: InviteLink) -> str:
    parts = [
        t(lang, "link_expires", when=utc_time(link.expires_at))
        if link.expires_at
        else t(lang, "link_no_expiry"),
        t(lang, "link_uses", uses=link.uses, allowed=link.uses_allowed)
        if link.uses_allowed is not None
        else t(lang, "link_uses_unlimited", uses=link.uses),
        t(lang, "link_approval" if link.approval else "link_no_approval"),
    ]
    return "; ".join(parts)


async def _link_list(ctx: Context, s: AsyncSession, room: Room, channel: Channel, lang: str) -> None:
    links = (
        await s.scalars(select(InviteLink).where(InviteLink.channel_id == channel.id).order_by(InviteLink.id))
    ).all()
    if not links:
        reply(s, ctx, room.room_id, lang, "link_list_empty", handle=channel.handle)
        return
    lines = "\n".join(
        t(
            lang,
            "link_line",
            id=link.id,
            state=_state_name(lang, link_state(link, now())),
            terms=_terms(lang, link),
            by=link.created_by,
        )
        for link in links
    )
    reply(s, ctx, room.room_id, lang, "link_list", handle=channel.handle, lines=lines)


def _state_name(lang: str, state: str) -> str:
    names = {
        "active": t(lang, "link_state_active"),
        "revoked": t(lang, "link_state_revoked"),
        "expired": t(lang, "link_state_expired"),
        "used_up": t(lang, "link_state_used_up"),
    }
    return names[state]


def _number(text: str) -> int | None:
    text = text.strip().lstrip("#")
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None


async def _link_revoke(
    ctx: Context, s: AsyncSession, room: Room, channel: Channel, event: Event, ref: str, lang: str
) -> None:
    number = _number(ref)
    link = await s.get(InviteLink, number) if number is not None else None
    if link is None or link.channel_id != channel.id:
        reply(s, ctx, room.room_id, lang, "link_unknown", id=ref[:20], handle=channel.handle)
        return
    if link.revoked:
        reply(s, ctx, room.room_id, lang, "link_already_revoked", id=link.id)
        return
    link.revoked = True
    await log_entry(s, ctx.config, event.sender, "invite_link_revoked", channel.handle or "", link=link.id)
    reply(s, ctx, room.room_id, lang, "link_revoked", id=link.id)


async def _requests(ctx: Context, s: AsyncSession, room: Room, channel: Channel, lang: str) -> None:
    pending = (
        await s.scalars(
            select(JoinRequest)
            .where(JoinRequest.channel_id == channel.id, JoinRequest.status == JoinRequestStatus.PENDING)
            .order_by(JoinRequest.id)
            .limit(50)
        )
    ).all()
    if not pending:
        reply(s, ctx, room.room_id, lang, "join_requests_empty", handle=channel.handle)
        return
    lines = "\n".join(
        t(
            lang,
            "join_request_line",
            id=request.id,
            user=request.user_id,
            how=_how(lang, request),
            reason=_reason_line(lang, request.reason),
        )
        for request in pending
    )
    reply(s, ctx, room.room_id, lang, "join_requests_list", handle=channel.handle, lines=lines)


async def _answer(
    ctx: Context, s: AsyncSession, room: Room, channel: Channel, event: Event, command: Command, lang: str
) -> None:
    approve = command.name == "approve"
    number = _number(command.arg(0) or "")
    if number is None:
        reply(s, ctx, room.room_id, lang, "join_approve_usage" if approve else "join_decline_usage")
        return
    request = await s.get(JoinRequest, number)
    if request is None or request.channel_id != channel.id or request.status != JoinRequestStatus.PENDING:
        reply(s, ctx, room.room_id, lang, "join_request_unknown", id=number, handle=channel.handle)
        return
    if channel.status != ChannelStatus.ACTIVE or channel.broadcast_room_id is None:
        reply(s, ctx, room.room_id, lang, "channel_unavailable", handle=channel.handle, status=channel.status)
        return
    decided = JoinRequestStatus.APPROVED if approve else JoinRequestStatus.DECLINED
    await _decide(s, request.id, decided, event.sender)
    if approve:
        invite(ctx, s, channel, UserID(request.user_id))
        await log_entry(
            s,
            ctx.config,
            event.sender,
            "join_approved",
            channel.handle or "",
            request=request.id,
            user=request.user_id,
        )
        reply(
            s,
            ctx,
            room.room_id,
            lang,
            "join_approved",
            id=request.id,
            user=request.user_id,
            handle=channel.handle,
        )
        return
    why = command.rest_after(1)[:MAX_DECLINE_REASON]
    if request.source == "knock":
        # Refusing a knock: the reader's membership goes from knock to leave, with the reason.
        seam.kick(ctx, s, channel, UserID(request.user_id), why or f"Your request to join #{channel.handle} was declined")
    await log_entry(
        s,
        ctx.config,
        event.sender,
        "join_declined",
        channel.handle or "",
        request=request.id,
        user=request.user_id,
        reason=why,
    )
    reply(
        s,
        ctx,
        room.room_id,
        lang,
        "join_declined_knock" if request.source == "knock" else "join_declined_link",
        id=request.id,
        user=request.user_id,
    )
