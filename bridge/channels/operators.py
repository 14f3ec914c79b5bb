"""The operators' room: a private room Kanal keeps for `operators.users`, and the commands used there.

Kanal creates it at the first start with operators configured, invites every operator, and at each
start invites new operators and removes people who are no longer operators. Requests waiting for
approval are announced there; operators approve or reject them, manage registration tokens and the
reserved list, verify channels and recover ownership. Only operators are answered; everything they
decide is written to `registry_log`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from appservice.events import Event
from appservice.ids import is_user_id
from bridge.broadcast import shards
from bridge.channels.registry import (
    create_token,
    describe_token,
    find_token_by_ref,
    hand_over,
    handle_refusal,
    is_operator,
    log_entry,
    set_verified,
    title_refusal,
)
from bridge.runtime.context import Context, reply, reply_sealed
from bridge.runtime.dispatch import CommandCall, command, dispatch, typed_text
from bridge.runtime.languages import language_for
from bridge.runtime.outbox import OutboxKind, OutboxWorker
from bridge.runtime.staffrooms import schedule_staff_room, sync_staff_room
from bridge.store import queries
from bridge.store.models import (
    Channel,
    ChannelRequest,
    ChannelStatus,
    DecisionKind,
    OutboxEntry,
    RegistrationToken,
    RequestStatus,
    ReservedHandle,
    Room,
    RoomKind,
)
from bridge.text.commands import parse_command, parse_duration
from bridge.text.i18n import t
from bridge.text.names import InvalidHandle, normalise_handle

log = logging.getLogger(__name__)

OPERATOR_QUEUE = "operators"
ROOM_NAME = "Kanal operators"


# -- the room itself -------------------------------------------------------------------------------


async def schedule_operator_room(ctx: Context) -> None:
    """Queue the operator room's creation or membership check, once (several processes may start)."""
    if ctx.config.operators:
        await schedule_staff_room(ctx, OPERATOR_QUEUE, OutboxKind.OPERATOR_ROOM)


async def sync_operator_room(ctx: Context, entry: OutboxEntry, worker: OutboxWorker) -> str | None:
    """Outbox executor: create the room if there is none; invite operators; remove former ones."""
    return await sync_staff_room(
        ctx,
        kind=RoomKind.OPERATOR,
        name=ROOM_NAME,
        topic=t(ctx.config.default_language, "operator_room_topic"),
        members=list(ctx.config.operators),
        welcome=t(ctx.config.default_language, "operator_help"),
    )


# -- commands --------------------------------------------------------------------------------------


async def on_operator_message(ctx: Context, session: AsyncSession, room: Room, event: Event) -> None:
    body = typed_text(event)
    if body is None:
        return
    lang = await language_for(session, ctx, event.sender, body, room)
    command = parse_command(body, require_bang=False)
    if command is None:
        return
    if not is_operator(ctx.config, event.sender):
        reply(session, ctx, room.room_id, lang, "operator_only")
        return
    await dispatch(CommandCall(ctx, session, room, event, command, lang), RoomKind.OPERATOR)


@command(RoomKind.OPERATOR, "help")
async def _help(call: CommandCall) -> None:
    call.reply("operator_help")


@command(RoomKind.OPERATOR, "requests")
async def _requests(call: CommandCall) -> None:
    pending = (
        await call.session.scalars(
            select(ChannelRequest)
            .where(ChannelRequest.status == RequestStatus.PENDING)
            .order_by(ChannelRequest.id)
        )
    ).all()
    if not pending:
        call.reply("requests_none")
        return
    lines = "\n".join(
        t(call.lang, "request_line", id=r.id, user=r.user_id, handle=r.handle, title=r.title) for r in pending
    )
    call.reply("requests_list", lines=lines)


async def _pending_request(call: CommandCall, usage: str, nargs: int) -> ChannelRequest | None:
    cmd = call.command
    ref = (cmd.arg(0) or "").lstrip("#")
    if len(cmd.args) < nargs or not ref.isdigit():
        call.reply("usage", usage=usage)
        return None
    request = await call.session.get(ChannelRequest, int(ref))
    if request is None or request.status != RequestStatus.PENDING:
        call.reply("request_not_pending", id=ref)
        return None
    return request


async def _decide(
    call: CommandCall, request: ChannelRequest, status: RequestStatus, action: str, **details: Any
) -> None:
    """The request decided by this operator, and written to the registry log."""
    request.status = status
    request.decided_by = call.sender
    request.decided_at = datetime.now(UTC)
    await log_entry(
        call.session,
        call.ctx.config,
        call.sender,
        action,
        request.handle,
        request=request.id,
        user=request.user_id,
        **details,
    )


@command(RoomKind.OPERATOR, "approve")
async def _approve(call: CommandCall) -> None:
    from bridge.channels.management import create_requested

    ctx, s = call.ctx, call.session
    request = await _pending_request(call, "approve <request number>", 1)
    if request is None:
        return
    refusal = await handle_refusal(
        s, ctx.config, request.handle, user_id=request.user_id, request_id=request.id
    ) or await title_refusal(s, request.title)
    if refusal is not None:
        why = t(call.lang, refusal.key, **refusal.values)
        call.reply("request_cannot_approve", id=request.id, why=why)
        return
    await _decide(call, request, RequestStatus.APPROVED, "request_approved")
    requester_lang = await _room_language(s, ctx, request.room_id, request.user_id)
    reply(s, ctx, request.room_id, requester_lang, "request_approved", handle=request.handle)
    await create_requested(ctx, s, request, requester_lang)
    call.reply("request_approved_op", id=request.id, handle=request.handle, user=request.user_id)


@command(RoomKind.OPERATOR, "reject")
async def _reject(call: CommandCall) -> None:
    ctx, s = call.ctx, call.session
    request = await _pending_request(call, "reject <request number> <reason>", 2)
    if request is None:
        return
    reason = call.command.rest_after(1)[:1000]
    request.reason = reason
    await _decide(call, request, RequestStatus.REJECTED, "request_rejected", reason=reason)
    # Refusing a registration is an enforcement decision: a statement of reasons and an appeal path.
    from bridge.moderation.decisions import Ground, record

    decision = await record(
        ctx,
        s,
        kind=DecisionKind.REJECT_REQUEST,
        decided_by=call.sender,
        channel=None,
        ground=Ground("terms", "channel registration rules"),
        explanation=reason,
        category="registration",
        target=f"request:{request.id}",
        tell_backstage=False,
    )
    requester_lang = await _room_language(s, ctx, request.room_id, request.user_id)
    reply(
        s,
        ctx,
        request.room_id,
        requester_lang,
        "request_rejected",
        handle=request.handle,
        reason=reason,
        decision=decision.id,
        days=ctx.config.compliance.appeal_window_days,
    )
    call.reply("request_rejected_op", id=request.id, handle=request.handle, user=request.user_id)


async def _room_language(s: AsyncSession, ctx: Context, room_id: str, user_id: str) -> str:
    """The language to tell `user_id` something in their room `room_id`."""
    return await language_for(s, ctx, user_id, room=await s.get(Room, room_id))


@command(RoomKind.OPERATOR, "token")
async def _token(call: CommandCall) -> None:
    ctx, s, cmd = call.ctx, call.session, call.command
    action = (cmd.arg(0) or "").lower()
    if action == "new":
        try:
            options, label = _token_options(cmd.args[1:])
        except ValueError as exc:
            call.reply("token_usage", error=str(exc))
            return
        token, row = await create_token(s, ctx.config, call.sender, label=label, **options)
        text = t(call.lang, "token_created", token=token, details=describe_token(row, call.lang))
        lost = t(call.lang, "token_lost", details=describe_token(row, call.lang), id=row.id)
        reply_sealed(s, ctx, call.room.room_id, text, lost)
    elif action == "revoke" and cmd.arg(1):
        found = await find_token_by_ref(s, cmd.args[1])
        if found is None:
            call.reply("token_not_found", ref=cmd.args[1][:32])
            return
        found.revoked = True
        await log_entry(s, ctx.config, call.sender, "token_revoked", f"token {found.id}")
        call.reply("token_revoked_op", details=describe_token(found, call.lang))
    elif action in ("list", ""):
        await _tokens(call)
    else:
        call.reply("token_usage", error=f"unknown action '{action[:32]}'")


def _token_options(args: tuple[str, ...]) -> tuple[dict[str, Any], str]:
    """`--uses 5 --expires 7d some label` → ({uses: 5, valid_for: 7 days}, "some label")."""
    options: dict[str, Any] = {}
    label: list[str] = []
    items = list(args)
    while items:
        item = items.pop(0)
        if item in ("--uses", "--expires"):
            if not items:
                raise ValueError(f"{item} needs a value")
            value = items.pop(0)
            if item == "--uses":
                if not value.isdigit() or int(value) < 1:
                    raise ValueError(f"--uses needs a whole number of at least 1, got '{value[:16]}'")
                options["uses"] = int(value)
            else:
                options["valid_for"] = parse_duration(value)
        else:
            label.append(item)
    return options, " ".join(label)


@command(RoomKind.OPERATOR, "tokens")
async def _tokens(call: CommandCall) -> None:
    rows = (await call.session.scalars(select(RegistrationToken).order_by(RegistrationToken.id))).all()
    if not rows:
        call.reply("tokens_none")
        return
    call.reply("tokens_list", lines="\n".join(describe_token(r, call.lang) for r in rows))


@command(RoomKind.OPERATOR, "reserve")
async def _reserve(call: CommandCall) -> None:
    s = call.session
    handle = _handle_arg(call, "reserve <handle>")
    if handle is None:
        return
    if await s.get(ReservedHandle, handle) is None:
        s.add(ReservedHandle(handle=handle, added_by=call.sender))
        await log_entry(s, call.ctx.config, call.sender, "reserved", handle)
    call.reply("reserved_added", handle=handle)


@command(RoomKind.OPERATOR, "unreserve")
async def _unreserve(call: CommandCall) -> None:
    s, config = call.session, call.ctx.config
    handle = _handle_arg(call, "unreserve <handle>")
    if handle is None:
        return
    row = await s.get(ReservedHandle, handle)
    if row is None:
        if handle in config.reserved_handles:
            call.reply("reserved_in_config", handle=handle, path=str(config.path))
        else:
            call.reply("reserved_not", handle=handle)
        return
    await s.delete(row)
    await log_entry(s, config, call.sender, "unreserved", handle)
    call.reply("reserved_removed", handle=handle)


@command(RoomKind.OPERATOR, "reserved")
async def _reserved(call: CommandCall) -> None:
    added = sorted((await call.session.scalars(select(ReservedHandle.handle))).all())
    call.reply(
        "reserved_list",
        config=", ".join(sorted(call.ctx.config.reserved_handles)) or "—",
        added=", ".join(added) or "—",
    )


def _handle_arg(call: CommandCall, usage: str) -> str | None:
    cmd = call.command
    if not cmd.args:
        call.reply("usage", usage=usage)
        return None
    try:
        return normalise_handle(cmd.args[0], call.ctx.config.handle_pattern)
    except InvalidHandle as exc:
        call.reply(exc.key, **exc.values)
        return None


async def _channel_arg(call: CommandCall, usage: str, nargs: int) -> Channel | None:
    cmd = call.command
    if len(cmd.args) < nargs:
        call.reply("usage", usage=usage)
        return None
    channel = await queries.channel_by_handle(call.session, cmd.args[0])
    if channel is None or channel.status != ChannelStatus.ACTIVE:
        call.reply("no_channel", handle=cmd.args[0][:64])
        return None
    return channel


@command(RoomKind.OPERATOR, "verify")
async def _verify(call: CommandCall) -> None:
    await _set_verified(call, True)


@command(RoomKind.OPERATOR, "unverify")
async def _unverify(call: CommandCall) -> None:
    await _set_verified(call, False)


async def _set_verified(call: CommandCall, verified: bool) -> None:
    channel = await _channel_arg(call, f"{'verify' if verified else 'unverify'} <handle>", 1)
    if channel is None:
        return
    if channel.verified != verified:
        await set_verified(call.ctx, call.session, channel, verified, call.sender)
    call.reply("verified_set" if verified else "unverified_set", handle=channel.handle)


@command(RoomKind.OPERATOR, "shard-size")
async def _shard_size(call: CommandCall) -> None:
    """`shard-size <handle> [<readers>|default]`: how many joined readers a room of the channel takes
    before the next opens (0: never); alone, what the channel has now."""
    ctx, s, cmd = call.ctx, call.session, call.command
    channel = await _channel_arg(call, "shard-size <handle> [<readers>|default]", 1)
    if channel is None:
        return
    value = (cmd.arg(1) or "").lower()
    if value:
        if value != "default" and not value.isdigit():
            call.reply("usage", usage="shard-size <handle> [<readers>|default]")
            return
        size = None if value == "default" else int(value)
        previous = channel.shard_size
        channel.shard_size = size
        await log_entry(
            s, ctx.config, call.sender, "shard_size", channel.handle or "", size=size, previous=previous
        )
        if size != previous:
            shards.check(ctx, s, channel)  # a smaller size may already be reached
    joined = {
        room_id: count
        for room_id, count in (
            await s.execute(select(Room.room_id, Room.joined).where(Room.room_id.in_(channel.rooms)))
        ).all()
    }
    rooms = "\n".join(
        f"{n}. {room} — {'?' if joined.get(room) is None else joined[room]}"
        for n, room in enumerate(channel.rooms, 1)
    )
    size = shards.shard_size(ctx, channel)
    call.reply(
        "shard_size_op",
        handle=channel.handle,
        size=size if size else t(call.lang, "off"),
        source=t(call.lang, "shard_size_default" if channel.shard_size is None else "shard_size_own"),
        rooms=rooms,
    )


@command(RoomKind.OPERATOR, "recover")
async def _recover(call: CommandCall) -> None:
    ctx, s, cmd = call.ctx, call.session, call.command
    channel = await _channel_arg(call, "recover <handle> <@user:domain> <reason>", 3)
    if channel is None:
        return
    user = cmd.args[1]
    if not is_user_id(user):
        call.reply("invalid_user", user=user[:255])
        return
    reason = cmd.rest_after(2)[:1000]
    previous = channel.owner
    await hand_over(ctx, s, channel, user, call.sender, "ownership_recovered", reason)
    call.reply("recovered_op", handle=channel.handle, user=user, previous=previous)
    owner_room = await queries.management_room_of(s, user)
    if owner_room is not None:
        reply(
            s,
            ctx,
            owner_room,
            await _room_language(s, ctx, owner_room, user),
            "recovered_owner",
            handle=channel.handle,
            reason=reason,
        )
