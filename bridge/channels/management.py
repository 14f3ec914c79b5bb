"""The management room (a direct chat with the bot): the channel-manager commands."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from appservice.errors import MNotFound
from appservice.events import Event
from appservice.ids import RoomAlias, RoomID, is_user_id, server_of
from bridge.broadcast import seam
from bridge.broadcast.shards import subscriber_count
from bridge.channels import roles
from bridge.channels.registry import (
    TRANSFER_WINDOW,
    find_token,
    hand_over,
    handle_refusal,
    is_operator,
    log_entry,
    quota_refusal,
    release,
    rename,
    title_refusal,
    token_problem,
    topic_for,
)
from bridge.matrix.powerlevels import backstage_name
from bridge.moderation import kinds
from bridge.runtime.context import Context, enqueue, reply, send_entry, state_entry
from bridge.runtime.dispatch import CommandCall, command, dispatch, find, resolve, typed_text
from bridge.runtime.languages import language_for
from bridge.runtime.outbox import OutboxKind, aware, new_entry, room_queue
from bridge.store import queries
from bridge.store.models import (
    AppealStatus,
    Channel,
    ChannelMember,
    ChannelRequest,
    ChannelStatus,
    Confirmation,
    DecisionKind,
    DecisionStatus,
    PendingTransfer,
    Post,
    RequestStatus,
    Room,
    RoomKind,
)
from bridge.text.commands import Refusal, parse_command
from bridge.text.digits import localise_digits
from bridge.text.i18n import t
from bridge.text.names import (
    InvalidHandle,
    InvalidTitle,
    clean_title,
    handle_skeleton,
    normalise_handle,
    title_key,
)

CONFIRM_WINDOW = timedelta(minutes=5)
MAX_ABOUT = 1024
ROLE_OWNER = roles.OWNER


_TOKEN_OPTION = re.compile(r"(?:^|\s)--token(?:=|\s+)(\S+)")
_PRIVATE_OPTION = re.compile(r"(?:^|\s)--private(?=\s|$)", re.IGNORECASE)


role_of = roles.role_of
# What a refusal says cannot be done, in a language: `lambda lang: t(lang, "action_delete")`.
Action = Callable[[str], str]


async def _alias_taken(ctx: Context, handle: str) -> bool:
    """Someone else's room already has the alias `#handle` (our namespace is not exclusive)."""
    try:
        await ctx.bot_intent().resolve_alias(RoomAlias(ctx.alias_for(handle)))
    except MNotFound:
        return False
    return True


# What users of other servers may ask the bot (their server federates with Kanal's): a reader's commands.
REMOTE_COMMANDS = frozenset({"help", "info", "report", "appeal", "language"})


async def on_management_message(ctx: Context, session: AsyncSession, room: Room, event: Event) -> None:
    body = typed_text(event)
    if body is None:
        return
    lang = await language_for(session, ctx, event.sender, body, room)
    command = parse_command(body, require_bang=False)
    if command is None:
        reply(session, ctx, room.room_id, lang, "help")
        return
    if server_of(event.sender) != ctx.domain:
        resolved = resolve(RoomKind.MANAGEMENT, command)
        if resolved is not None and resolved[0].name not in REMOTE_COMMANDS:
            reply(session, ctx, room.room_id, lang, "local_only")
            return
    await dispatch(CommandCall(ctx, session, room, event, command, lang), RoomKind.MANAGEMENT)


@command(RoomKind.MANAGEMENT, "help")
async def _help(call: CommandCall) -> None:
    call.reply("help")


@command(RoomKind.MANAGEMENT, "create")
async def _create(call: CommandCall) -> None:
    ctx, s, room, event, cmd, lang = call.ctx, call.session, call.room, call.event, call.command, call.lang
    token_match = _TOKEN_OPTION.search(cmd.rest)
    token = token_match.group(1) if token_match else None
    if token_match:
        cmd = (
            parse_command(
                "create " + cmd.rest[: token_match.start()] + cmd.rest[token_match.end() :],
                require_bang=False,
            )
            or cmd
        )
    private_match = _PRIVATE_OPTION.search(cmd.rest)
    if private_match:
        rest = cmd.rest[: private_match.start()] + " " + cmd.rest[private_match.end() :]
        cmd = parse_command("create " + rest.strip(), require_bang=False) or cmd
    if not cmd.args:
        reply(s, ctx, room.room_id, lang, "create_usage")
        return
    try:
        handle = normalise_handle(cmd.args[0], ctx.config.handle_pattern)
    except InvalidHandle as exc:
        reply(s, ctx, room.room_id, lang, exc.key, **exc.values)
        return
    try:
        title = clean_title(cmd.rest_after(1) or handle, ctx.config.title_max_length)
    except InvalidTitle as exc:
        reply(s, ctx, room.room_id, lang, exc.key, **exc.values)
        return
    refusal = (
        await handle_refusal(s, ctx.config, handle, user_id=event.sender)
        or await title_refusal(s, title)
        or await quota_refusal(s, ctx.config, event.sender)
    )
    if refusal is not None:
        reply(s, ctx, room.room_id, lang, refusal.key, **refusal.values)
        return
    if await _alias_taken(ctx, handle):
        reply(s, ctx, room.room_id, lang, "handle_taken", handle=handle)
        return
    policy = "open" if is_operator(ctx.config, event.sender) else ctx.config.creation_policy
    if policy == "approval":
        request = ChannelRequest(
            user_id=event.sender,
            room_id=room.room_id,
            handle=handle,
            title=title,
            private=private_match is not None,
        )
        s.add(request)
        await s.flush()
        await log_entry(s, ctx.config, event.sender, "requested", handle, request=request.id)
        reply(s, ctx, room.room_id, lang, "request_sent", handle=handle, id=request.id)
        operators = await queries.room_of_kind(s, RoomKind.OPERATOR)
        if operators is not None:
            text = t(
                ctx.config.default_language,
                "request_new",
                id=request.id,
                user=event.sender,
                handle=handle,
                title=title,
            )
            enqueue(s, send_entry(ctx.bot, operators, {"msgtype": "m.notice", "body": text}))
        return
    if policy == "token":
        if token is None:
            reply(s, ctx, room.room_id, lang, "token_required", handle=handle)
            return
        row = await find_token(s, token)
        problem = token_problem(row)
        if problem is not None or row is None:
            problem = problem or Refusal("token_unknown")
            reply(s, ctx, room.room_id, lang, problem.key, **problem.values)
            return
        row.uses += 1
        await log_entry(s, ctx.config, event.sender, "token_used", handle, token=row.id)
    await start_creation(
        ctx,
        s,
        owner=event.sender,
        handle=handle,
        title=title,
        notify_room=room.room_id,
        lang=lang,
        private=private_match is not None,
    )


class CreationRefused(Exception):
    """A channel cannot be created as asked: the refusal's catalogue key and values (its text in English)."""

    def __init__(self, key: str, **values: Any) -> None:
        super().__init__(t("en", key, **values))
        self.key, self.values = key, values


async def create_for(ctx: Context, s: AsyncSession, *, owner: str, handle: str, title: str) -> Channel:
    """An operator's shell command creates a channel for `owner` (`kanal import telegram --owner`): the
    checks `create` makes but the creation policy (an operator's act); the owner's chat with the bot,
    if there is one, hears how it went. Raises CreationRefused."""
    try:
        handle = normalise_handle(handle, ctx.config.handle_pattern)
        title = clean_title(title or handle, ctx.config.title_max_length)
    except (InvalidHandle, InvalidTitle) as exc:
        raise CreationRefused(exc.key, **exc.values) from exc
    refusal = await handle_refusal(s, ctx.config, handle, user_id=owner) or await title_refusal(s, title)
    if refusal is not None:
        raise CreationRefused(refusal.key, **refusal.values)
    if await _alias_taken(ctx, handle):
        raise CreationRefused("handle_taken", handle=handle)
    notify_room = await queries.management_room_of(s, owner)
    lang = ctx.config.default_language
    return await start_creation(ctx, s, owner=owner, handle=handle, title=title, notify_room=notify_room, lang=lang)


async def start_creation(
    ctx: Context,
    s: AsyncSession,
    *,
    owner: str,
    handle: str,
    title: str,
    notify_room: RoomID | None,
    lang: str,
    private: bool = False,
) -> Channel:
    """Record the channel and queue its rooms' creation; `notify_room` hears how it went (None: nobody,
    as when an operator's shell command creates it)."""
    channel = Channel(
        handle=handle,
        title=title,
        about="",
        owner=owner,
        ghost_user_id=ctx.ghost_for(handle),
        title_key=title_key(title),
        handle_skeleton=handle_skeleton(handle),
        private=private,
    )
    s.add(channel)
    await s.flush()
    s.add(ChannelMember(channel_id=channel.id, user_id=owner, role=ROLE_OWNER))
    await log_entry(
        s, ctx.config, owner, "created", handle, policy=ctx.config.creation_policy, private=private
    )
    payload: dict[str, Any] = {"channel_id": channel.id}
    if notify_room is not None:
        reply(s, ctx, notify_room, lang, "creating", handle=handle)
        created = t(lang, "created", handle=handle, domain=ctx.domain, title=title)
        if private:
            created += "\n" + t(lang, "created_private", handle=handle)
        payload["on_success"] = ctx.note(notify_room, created)
        payload["on_failure"] = ctx.note(notify_room, t(lang, "create_failed", handle=handle, error="{error}"))
    enqueue(s, new_entry(f"channel:{channel.id}", OutboxKind.CREATE_CHANNEL, ctx.bot, payload))
    return channel


async def create_requested(ctx: Context, s: AsyncSession, request: ChannelRequest, lang: str) -> Channel:
    """Create the channel an approved request asked for; the requester hears how it went in `lang`."""
    return await start_creation(
        ctx,
        s,
        owner=request.user_id,
        handle=request.handle,
        title=request.title,
        notify_room=request.room_id,
        lang=lang,
        private=request.private,
    )


@command(RoomKind.MANAGEMENT, "list")
async def _list(call: CommandCall) -> None:
    ctx, s, room, event, lang = call.ctx, call.session, call.room, call.event, call.lang
    rows = (
        await s.execute(
            select(Channel.handle, Channel.title, ChannelMember.role)
            .join(ChannelMember, ChannelMember.channel_id == Channel.id)
            .where(ChannelMember.user_id == event.sender, Channel.handle.is_not(None))
            .order_by(Channel.handle)
        )
    ).all()
    if not rows:
        reply(s, ctx, room.room_id, lang, "list_empty")
        return
    lines = "\n".join(f"• #{h}:{ctx.domain} — {title} ({roles.role_name(lang, role)})" for h, title, role in rows)
    reply(s, ctx, room.room_id, lang, "list", lines=lines)


async def _channel_for(call: CommandCall, usage: str, nargs: int) -> Channel | None:
    """The channel the command's first argument names (`nargs`: how many arguments it needs)."""
    args = call.command.args
    if len(args) < nargs:
        call.reply("usage", usage=usage)
        return None
    channel = await queries.channel_by_handle(call.session, args[0])
    if channel is None:
        call.reply("no_channel", handle=args[0][:64])
    return channel


async def _authorised(call: CommandCall, channel: Channel, action: Action, *, owner_only: bool = False) -> bool:
    """Title and description are the owner's and editors'; the rest (`owner_only`) the owner's.
    `action` says in a language what is refused (`delete it`)."""
    role = await role_of(call.session, channel, call.sender)
    permission = "members" if owner_only else "settings"
    if roles.allowed(role, permission):
        return True
    if role is not None and not owner_only:
        await roles.require(call.ctx, call.session, call.room.room_id, channel, call.sender, permission, call.lang)
    elif role is not None:
        call.reply("owner_only", handle=channel.handle, owner=channel.owner, action=action(call.lang))
    else:
        call.reply("no_role", handle=channel.handle, owner=channel.owner, action=action(call.lang))
    return False


async def _managed_channel(
    call: CommandCall, usage: str, nargs: int, action: Action, *, owner_only: bool = False
) -> Channel | None:
    """The channel the command names, when the sender may do `action` to it (else None, answered)."""
    channel = await _channel_for(call, usage, nargs)
    if channel is None or not await _authorised(call, channel, action, owner_only=owner_only):
        return None
    return channel


@command(RoomKind.MANAGEMENT, "info")
async def _info(call: CommandCall) -> None:
    ctx, s, event, lang = call.ctx, call.session, call.event, call.lang
    channel = await _channel_for(call, "info <handle>", 1)
    if channel is None:
        return
    members = (
        await s.execute(
            select(ChannelMember.user_id, ChannelMember.role).where(ChannelMember.channel_id == channel.id)
        )
    ).all()
    is_member = any(user == event.sender for user, _ in members)
    team = (
        t(lang, "list_separator").join(
            f"{u} ({roles.role_name(lang, r)})" for u, r in sorted(members) if roles.normalise(r) != ROLE_OWNER
        )
        or "—"
    )
    posts = await s.scalar(
        select(func.count()).select_from(Post).where(Post.channel_id == channel.id, Post.redacted.is_(False))
    )
    subscribers = await subscriber_count(ctx, channel)
    call.reply(
        "info",
        handle=channel.handle,
        title=channel.title,
        about=f"{channel.about}\n" if channel.about else "",
        owner=channel.owner,
        team=team if is_member else "—",
        subscribers="?" if subscribers is None else subscribers,
        posts=posts or 0,
        signatures=t(lang, "on" if channel.signatures else "off"),
        status=channel.status,
        verified=t(lang, "verified_mark") if channel.verified else "",
    )


@command(RoomKind.MANAGEMENT, "title")
async def _title(call: CommandCall) -> None:
    ctx, s = call.ctx, call.session
    channel = await _managed_channel(call, "title <handle> <text>", 2, lambda lang: t(lang, "action_title"))
    if channel is None:
        return
    try:
        title = clean_title(call.command.rest_after(1), ctx.config.title_max_length)
    except InvalidTitle as exc:
        call.reply(exc.key, **exc.values)
        return
    refusal = await title_refusal(s, title, channel_id=channel.id)
    if refusal is not None:
        call.refuse(refusal)
        return
    set_title(ctx, s, channel, title)
    call.reply("title_set", handle=channel.handle, title=title)


def set_title(ctx: Context, s: AsyncSession, channel: Channel, title: str) -> None:
    """A checked title (`clean_title`, no `title_refusal`) everywhere it shows: the ghost's name, the
    public rooms' name, backstage's name."""
    channel.title = title
    channel.title_key = title_key(title)
    enqueue(
        s,
        new_entry(
            f"channel:{channel.id}", OutboxKind.DISPLAYNAME, channel.ghost_user_id, {"displayname": title}
        ),
    )
    if channel.broadcast_room_id:
        seam.set_state(ctx, s, channel, "m.room.name", {"name": title})
    if channel.backstage_room_id:
        name = backstage_name(title, channel.handle or "")
        enqueue(s, state_entry(ctx.bot, channel.backstage_room_id, "m.room.name", {"name": name}))


@command(RoomKind.MANAGEMENT, "about")
async def _about(call: CommandCall) -> None:
    channel = await _managed_channel(call, "about <handle> <text>", 2, lambda lang: t(lang, "action_about"))
    if channel is None:
        return
    set_about(call.ctx, call.session, channel, call.command.rest_after(1))
    call.reply("about_set", handle=channel.handle)


def set_about(ctx: Context, s: AsyncSession, channel: Channel, about: str) -> None:
    """The channel's description, and the public rooms' topic that shows it."""
    channel.about = about[:MAX_ABOUT]
    if channel.broadcast_room_id:
        seam.set_state(ctx, s, channel, "m.room.topic", {"topic": topic_for(ctx.config, channel)})


async def _member_change(call: CommandCall, promote: bool) -> None:
    ctx, s, room, event, cmd, lang = call.ctx, call.session, call.room, call.event, call.command, call.lang
    usage = (
        "promote <handle> <@user:domain> [editor|moderator]" if promote else "demote <handle> <@user:domain>"
    )
    action: Action = (lambda lang: t(lang, "action_promote")) if promote else (lambda lang: t(lang, "action_demote"))
    channel = await _managed_channel(call, usage, 2, action, owner_only=True)
    if channel is None:
        return
    user = cmd.args[1]
    if not is_user_id(user):
        reply(s, ctx, room.room_id, lang, "invalid_user", user=user[:255])
        return
    role = await role_of(s, channel, user)
    backstage = channel.backstage_room_id
    if promote:
        wanted = (cmd.arg(2) or roles.EDITOR).lower()
        if wanted not in (roles.EDITOR, roles.MODERATOR):
            reply(s, ctx, room.room_id, lang, "usage", usage=usage)
            return
        if role == ROLE_OWNER:
            reply(s, ctx, room.room_id, lang, "cannot_demote_owner", user=user, handle=channel.handle)
            return
        if role == wanted:
            reply(s, ctx, room.room_id, lang, "already_role", user=user, handle=channel.handle, role=roles.role_name(lang, wanted))
            return
        if role is not None:
            member = await s.get(ChannelMember, (channel.id, user))
            assert member is not None
            member.role = wanted
            await log_entry(s, ctx.config, event.sender, "role", channel.handle or "", user=user, role=wanted)
            await roles.team_changed(ctx, s, channel)
            reply(s, ctx, room.room_id, lang, "role_changed", user=user, handle=channel.handle, role=roles.role_name(lang, wanted))
            return
        s.add(ChannelMember(channel_id=channel.id, user_id=user, role=wanted))
        await log_entry(s, ctx.config, event.sender, "role", channel.handle or "", user=user, role=wanted)
        await roles.team_changed(ctx, s, channel)
        if backstage:
            enqueue(
                s,
                new_entry(
                    room_queue(backstage), OutboxKind.INVITE, ctx.bot, {"room_id": backstage, "user_id": user}
                ),
            )
        reply(s, ctx, room.room_id, lang, "promoted_role", user=user, handle=channel.handle, role=roles.role_name(lang, wanted))
        return
    if role == ROLE_OWNER:
        reply(s, ctx, room.room_id, lang, "cannot_demote_owner", user=user, handle=channel.handle)
        return
    if role is None:
        reply(s, ctx, room.room_id, lang, "no_role_to_take", user=user, handle=channel.handle)
        return
    await s.execute(
        delete(ChannelMember).where(ChannelMember.channel_id == channel.id, ChannelMember.user_id == user)
    )
    await log_entry(s, ctx.config, event.sender, "role", channel.handle or "", user=user, role=None)
    await roles.team_changed(ctx, s, channel)
    if backstage:
        reason = t(await language_for(s, ctx, user), "demoted_kick_reason", handle=channel.handle)
        payload = {"room_id": backstage, "user_id": user, "reason": reason}
        enqueue(s, new_entry(room_queue(backstage), OutboxKind.KICK, ctx.bot, payload))
    reply(s, ctx, room.room_id, lang, "demoted", user=user, handle=channel.handle)


@command(RoomKind.MANAGEMENT, "promote")
async def _promote(call: CommandCall) -> None:
    await _member_change(call, promote=True)


@command(RoomKind.MANAGEMENT, "demote")
async def _demote(call: CommandCall) -> None:
    await _member_change(call, promote=False)


def _deleting(lang: str) -> str:
    return t(lang, "action_delete")


@command(RoomKind.MANAGEMENT, "delete")
async def _delete(call: CommandCall) -> None:
    channel = await _managed_channel(call, "delete <handle>", 1, _deleting, owner_only=True)
    if channel is None:
        return
    await call.session.merge(
        Confirmation(
            room_id=call.room.room_id,
            user_id=call.sender,
            action="delete",
            argument=channel.handle or "",
            expires_at=datetime.now(UTC) + CONFIRM_WINDOW,
        )
    )
    call.reply("delete_confirm", handle=channel.handle)


@command(RoomKind.MANAGEMENT, "confirm")
async def _confirm(call: CommandCall) -> None:
    ctx, s, room, event, cmd, lang = call.ctx, call.session, call.room, call.event, call.command, call.lang
    pending = await s.get(Confirmation, (room.room_id, event.sender))
    expires = pending.expires_at if pending else None
    if expires is not None and expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    # `confirm delete news`, or with the command's word in another language (`تأیید حذف news`)
    confirmed = find(RoomKind.MANAGEMENT, cmd.arg(0) or "")
    action = confirmed.name if confirmed is not None else (cmd.arg(0) or "").lower()
    wanted = action, (cmd.arg(1) or "").lower().lstrip("#")
    if (
        pending is None
        or expires is None
        or expires < datetime.now(UTC)
        or wanted != (pending.action, pending.argument)
    ):
        reply(s, ctx, room.room_id, lang, "nothing_to_confirm")
        return
    await s.delete(pending)
    channel = await queries.channel_by_handle(s, pending.argument)
    if channel is None or not await _authorised(call, channel, _deleting, owner_only=True):
        return
    channel.status = ChannelStatus.DELETING
    handle = channel.handle
    if handle:
        await release(ctx, s, handle)
        await log_entry(s, ctx.config, event.sender, "deleted", handle)
    enqueue(
        s,
        new_entry(
            f"channel:{channel.id}",
            OutboxKind.DELETE_CHANNEL,
            ctx.bot,
            {
                "channel_id": channel.id,
                "on_success": ctx.note(room.room_id, t(lang, "deleted", handle=handle, domain=ctx.domain)),
            },
        ),
    )


@command(RoomKind.MANAGEMENT, "cancel")
async def _cancel(call: CommandCall) -> None:
    await call.session.execute(
        delete(Confirmation).where(Confirmation.room_id == call.room.room_id, Confirmation.user_id == call.sender)
    )
    call.reply("cancelled")


@command(RoomKind.MANAGEMENT, "rename")
async def _rename(call: CommandCall) -> None:
    ctx, s, room, event, cmd, lang = call.ctx, call.session, call.room, call.event, call.command, call.lang
    channel = await _managed_channel(
        call, "rename <handle> <new handle>", 2, lambda lang: t(lang, "action_rename"), owner_only=True
    )
    if channel is None:
        return
    if channel.status != ChannelStatus.ACTIVE:
        reply(s, ctx, room.room_id, lang, "channel_unavailable", handle=channel.handle, status=channel.status)
        return
    try:
        new_handle = normalise_handle(cmd.args[1], ctx.config.handle_pattern)
    except InvalidHandle as exc:
        reply(s, ctx, room.room_id, lang, exc.key, **exc.values)
        return
    if new_handle == channel.handle:
        reply(s, ctx, room.room_id, lang, "rename_same", handle=new_handle)
        return
    refusal = await handle_refusal(s, ctx.config, new_handle, user_id=event.sender, channel_id=channel.id)
    if refusal is not None:
        reply(s, ctx, room.room_id, lang, refusal.key, **refusal.values)
        return
    if await _alias_taken(ctx, new_handle):
        reply(s, ctx, room.room_id, lang, "handle_taken", handle=new_handle)
        return
    old = channel.handle
    await rename(ctx, s, channel, new_handle, event.sender)
    reply(
        s,
        ctx,
        room.room_id,
        lang,
        "renamed",
        old=old,
        handle=new_handle,
        days=ctx.config.rename_grace_days,
    )


@command(RoomKind.MANAGEMENT, "transfer")
async def _transfer(call: CommandCall) -> None:
    ctx, s, room, event, cmd, lang = call.ctx, call.session, call.room, call.event, call.command, call.lang
    channel = await _managed_channel(
        call, "transfer <handle> <@user:domain>", 2, lambda lang: t(lang, "action_transfer"), owner_only=True
    )
    if channel is None:
        return
    user = cmd.args[1]
    if not is_user_id(user) or server_of(user) != ctx.domain:
        reply(s, ctx, room.room_id, lang, "transfer_local_only", user=user[:255])
        return
    if user == channel.owner:
        reply(s, ctx, room.room_id, lang, "transfer_self", handle=channel.handle)
        return
    expires = datetime.now(UTC) + TRANSFER_WINDOW
    await s.merge(
        PendingTransfer(channel_id=channel.id, from_user=event.sender, to_user=user, expires_at=expires)
    )
    await log_entry(s, ctx.config, event.sender, "transfer_offered", channel.handle or "", to=user)
    reply(s, ctx, room.room_id, lang, "transfer_offered", handle=channel.handle, user=user, bot=ctx.bot)
    their_room = await queries.management_room_of(s, user)
    if their_room is not None:
        reply(
            s,
            ctx,
            their_room,
            await language_for(s, ctx, user, room=await s.get(Room, their_room)),
            "transfer_incoming",
            handle=channel.handle,
            owner=event.sender,
        )


async def _pending_transfer(call: CommandCall, verb: str) -> tuple[Channel, PendingTransfer] | None:
    channel = await _channel_for(call, f"{verb} <handle>", 1)
    if channel is None:
        return None
    pending = await call.session.get(PendingTransfer, channel.id)
    if pending is None or pending.to_user != call.sender or aware(pending.expires_at) < datetime.now(UTC):
        call.reply("transfer_none", handle=channel.handle)
        return None
    return channel, pending


@command(RoomKind.MANAGEMENT, "accept")
async def _accept(call: CommandCall) -> None:
    ctx, s, lang = call.ctx, call.session, call.lang
    found = await _pending_transfer(call, "accept")
    if found is None:
        return
    channel, pending = found
    await s.delete(pending)
    previous = channel.owner
    await hand_over(ctx, s, channel, call.sender, call.sender, "transfer_accepted")
    call.reply("transfer_done", handle=channel.handle, previous=previous)
    previous_room = await queries.management_room_of(s, previous)
    if previous_room is not None:
        reply(s, ctx, previous_room, lang, "transfer_done_previous", handle=channel.handle, user=call.sender)


@command(RoomKind.MANAGEMENT, "decline")
async def _decline(call: CommandCall) -> None:
    found = await _pending_transfer(call, "decline")
    if found is None:
        return
    channel, pending = found
    await call.session.delete(pending)
    await log_entry(call.session, call.ctx.config, call.sender, "transfer_declined", channel.handle or "")
    call.reply("transfer_declined", handle=channel.handle)


@command(RoomKind.MANAGEMENT, "retention")
async def _retention(call: CommandCall) -> None:
    from bridge.channels.hosting import set_channel_retention

    ctx, s = call.ctx, call.session
    usage = "retention <handle> <days|off|default>"
    channel = await _managed_channel(call, usage, 2, lambda lang: t(lang, "action_retention"), owner_only=True)
    if channel is None:
        return
    value = call.command.args[1].lower()
    if value == "default":
        await set_channel_retention(ctx, s, channel, None)
        call.reply("retention_default", handle=channel.handle)
    elif value == "off":
        await set_channel_retention(ctx, s, channel, 0)
        call.reply("retention_off", handle=channel.handle)
    elif value.isdigit() and 1 <= int(value) <= 36500:
        await set_channel_retention(ctx, s, channel, int(value))
        call.reply("retention_set", handle=channel.handle, days=int(value))
    else:
        call.reply("usage", usage=usage)


@command(RoomKind.MANAGEMENT, "private")
async def _private(call: CommandCall) -> None:
    ctx, s, room, event, cmd, lang = call.ctx, call.session, call.room, call.event, call.command, call.lang
    from bridge.channels.private import private_command

    await private_command(ctx, s, room, event, cmd, lang)


@command(RoomKind.MANAGEMENT, "report")
async def _report(call: CommandCall) -> None:
    ctx, s, room, event, cmd, lang = call.ctx, call.session, call.room, call.event, call.command, call.lang
    from bridge.moderation.notices import event_id_in, file_notice, split_category

    event_id = event_id_in(cmd.arg(0) or "")
    reason = cmd.rest_after(1)
    if event_id is None or not reason:
        reply(s, ctx, room.room_id, lang, "report_usage")
        return
    category, explanation = split_category(reason)
    notice = await file_notice(
        ctx,
        s,
        source="command",
        event_id=event_id,
        explanation=explanation,
        category=category,
        notifier=event.sender,
        notifier_room=room.room_id,
    )
    if notice is None:
        reply(s, ctx, room.room_id, lang, "report_not_public")
        return
    reply(s, ctx, room.room_id, lang, "report_received", id=notice.id)


@command(RoomKind.MANAGEMENT, "appeal")
async def _appeal(call: CommandCall) -> None:
    ctx, s, room, event, cmd, lang = call.ctx, call.session, call.room, call.event, call.command, call.lang
    from bridge.moderation.notices import appeal_deadline, file_appeal, may_appeal
    from bridge.store.models import Appeal, Decision

    ref = (cmd.arg(0) or "").lower().lstrip("#d")
    text = cmd.rest_after(1)
    if not ref.isdigit() or not text:
        reply(s, ctx, room.room_id, lang, "appeal_usage")
        return
    decision = await s.get(Decision, int(ref))
    if (
        decision is None
        or decision.kind in (DecisionKind.APPROVE_POST, DecisionKind.REINSTATE)
        or not await may_appeal(s, decision, event.sender)
    ):
        reply(s, ctx, room.room_id, lang, "appeal_not_yours", id=ref)
        return
    deadline = appeal_deadline(ctx, decision)
    if deadline < datetime.now(UTC):
        reply(
            s,
            ctx,
            room.room_id,
            lang,
            "appeal_too_late",
            id=decision.id,
            deadline=localise_digits(deadline.strftime("%Y-%m-%d"), lang),
        )
        return
    if decision.status != DecisionStatus.IN_FORCE or await s.scalar(
        select(Appeal.id).where(Appeal.decision_id == decision.id, Appeal.status == AppealStatus.OPEN)
    ):
        reply(s, ctx, room.room_id, lang, "appeal_pending", id=decision.id)
        return
    appeal = await file_appeal(ctx, s, decision, event.sender, room.room_id, text)
    reply(s, ctx, room.room_id, lang, "appeal_received", id=appeal.id, decision=decision.id)




async def _reopen_request(ctx: Context, s: AsyncSession, request_id: int) -> None:
    """A refused registration, granted on appeal: the channel is created for the requester."""
    request = await s.get(ChannelRequest, request_id)
    if request is None:
        return
    refusal = await handle_refusal(
        s, ctx.config, request.handle, user_id=request.user_id, request_id=request.id
    )
    lang = await language_for(s, ctx, request.user_id, room=await s.get(Room, request.room_id))
    if refusal is not None:
        why = t(lang, refusal.key, **refusal.values)
        reply(s, ctx, request.room_id, lang, "appeal_granted_unavailable", handle=request.handle, why=why)
        return
    request.status = RequestStatus.APPROVED
    await create_requested(ctx, s, request, lang)


kinds.register_channel_request(kinds.ChannelRequestKind(reopen=_reopen_request))
