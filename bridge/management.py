"""The management room (a direct chat with the bot): the channel-manager commands."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from appservice.errors import MatrixConnectionError, MatrixRequestError, MNotFound
from appservice.events import Event
from appservice.ids import RoomAlias, RoomID, is_user_id, server_of

from .commands import Command, parse_command
from .context import Context, enqueue, reply
from .handles import InvalidHandle, clean_title, normalise_handle
from .i18n import detect_language, t
from .outbox import new_entry
from .powerlevels import backstage_name
from .store.models import Channel, ChannelMember, Confirmation, Post, Room

CONFIRM_WINDOW = timedelta(minutes=5)
ROLE_OWNER = "owner"
ROLE_ADMIN = "admin"


async def find_channel(session: AsyncSession, handle_text: str) -> Channel | None:
    try:
        handle = normalise_handle(handle_text)
    except InvalidHandle:
        return None
    return await session.scalar(select(Channel).where(Channel.handle == handle))


async def role_of(session: AsyncSession, channel: Channel, user_id: str) -> str | None:
    role: str | None = await session.scalar(
        select(ChannelMember.role).where(
            ChannelMember.channel_id == channel.id, ChannelMember.user_id == user_id
        )
    )
    return role


async def subscriber_count(ctx: Context, channel: Channel) -> int | None:
    if channel.broadcast_room_id is None:
        return 0
    try:
        members = await ctx.bot_intent().joined_members(RoomID(channel.broadcast_room_id))
    except (MatrixRequestError, MatrixConnectionError):
        return None
    return len(set(members) - {ctx.bot, channel.ghost_user_id})


async def on_management_message(ctx: Context, session: AsyncSession, room: Room, event: Event) -> None:
    body = event.content.get("body")
    if event.type != "m.room.message" or not isinstance(body, str):
        return
    if event.rel_type == "m.replace":
        return  # an edit of an earlier command is not a new command
    lang = detect_language(body, room.language or ctx.config.default_language)
    command = parse_command(body, require_bang=False)
    if command is None:
        reply(session, ctx, room.room_id, lang, "help")
        return
    if server_of(event.sender) != ctx.domain:
        reply(session, ctx, room.room_id, lang, "local_only")
        return
    handler = _HANDLERS.get(command.name)
    if handler is None:
        reply(session, ctx, room.room_id, lang, "unknown_command", name=command.name[:64])
        return
    await handler(ctx, session, room, event, command, lang)


async def _help(ctx: Context, s: AsyncSession, room: Room, event: Event, cmd: Command, lang: str) -> None:
    reply(s, ctx, room.room_id, lang, "help")


async def _create(ctx: Context, s: AsyncSession, room: Room, event: Event, cmd: Command, lang: str) -> None:
    if not cmd.args:
        reply(s, ctx, room.room_id, lang, "create_usage")
        return
    try:
        handle = normalise_handle(cmd.args[0])
    except InvalidHandle as exc:
        reply(s, ctx, room.room_id, lang, "invalid_handle", error=str(exc), handle=cmd.args[0][:64])
        return
    try:
        title = clean_title(cmd.rest_after(1) or handle)
    except ValueError as exc:
        reply(s, ctx, room.room_id, lang, "invalid_title", error=str(exc))
        return
    if await s.scalar(select(Channel.id).where(Channel.handle == handle)) is not None:
        reply(s, ctx, room.room_id, lang, "handle_taken", handle=handle)
        return
    try:
        await ctx.bot_intent().resolve_alias(RoomAlias(ctx.alias_for(handle)))
    except MNotFound:
        pass
    else:
        # Someone else's room already has this alias (our namespace is not exclusive).
        reply(s, ctx, room.room_id, lang, "handle_taken", handle=handle)
        return
    channel = Channel(
        handle=handle, title=title, about="", owner=event.sender, ghost_user_id=ctx.ghost_for(handle)
    )
    s.add(channel)
    await s.flush()
    s.add(ChannelMember(channel_id=channel.id, user_id=event.sender, role=ROLE_OWNER))
    reply(s, ctx, room.room_id, lang, "creating", handle=handle)
    payload = {
        "channel_id": channel.id,
        "on_success": ctx.note(
            room.room_id, t(lang, "created", handle=handle, domain=ctx.domain, title=title)
        ),
        "on_failure": ctx.note(room.room_id, t(lang, "create_failed", handle=handle, error="{error}")),
    }
    enqueue(s, new_entry(f"channel:{channel.id}", "create_channel", ctx.bot, payload))


async def _list(ctx: Context, s: AsyncSession, room: Room, event: Event, cmd: Command, lang: str) -> None:
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
    lines = "\n".join(f"• #{h}:{ctx.domain} — {title} ({role})" for h, title, role in rows)
    reply(s, ctx, room.room_id, lang, "list", lines=lines)


async def _channel_for(
    ctx: Context, s: AsyncSession, room: Room, cmd: Command, lang: str, usage: str, nargs: int
) -> Channel | None:
    if len(cmd.args) < nargs:
        reply(s, ctx, room.room_id, lang, "usage", usage=usage)
        return None
    channel = await find_channel(s, cmd.args[0])
    if channel is None:
        reply(s, ctx, room.room_id, lang, "no_channel", handle=cmd.args[0][:64])
    return channel


async def _authorised(
    ctx: Context,
    s: AsyncSession,
    room: Room,
    event: Event,
    channel: Channel,
    lang: str,
    action: str,
    *,
    owner_only: bool = False,
) -> bool:
    role = await role_of(s, channel, event.sender)
    if role == ROLE_OWNER or (role == ROLE_ADMIN and not owner_only):
        return True
    if role == ROLE_ADMIN:
        reply(
            s,
            ctx,
            room.room_id,
            lang,
            "owner_only",
            handle=channel.handle,
            owner=channel.owner,
            action=action,
        )
    else:
        reply(
            s, ctx, room.room_id, lang, "not_admin", handle=channel.handle, owner=channel.owner, action=action
        )
    return False


async def _info(ctx: Context, s: AsyncSession, room: Room, event: Event, cmd: Command, lang: str) -> None:
    channel = await _channel_for(ctx, s, room, cmd, lang, "info <handle>", 1)
    if channel is None:
        return
    members = (
        await s.execute(
            select(ChannelMember.user_id, ChannelMember.role).where(ChannelMember.channel_id == channel.id)
        )
    ).all()
    is_member = any(user == event.sender for user, _ in members)
    admins = ", ".join(sorted(u for u, r in members if r == ROLE_ADMIN)) or "—"
    posts = await s.scalar(
        select(func.count()).select_from(Post).where(Post.channel_id == channel.id, Post.redacted.is_(False))
    )
    subscribers = await subscriber_count(ctx, channel)
    reply(
        s,
        ctx,
        room.room_id,
        lang,
        "info",
        handle=channel.handle,
        title=channel.title,
        about=f"{channel.about}\n" if channel.about else "",
        owner=channel.owner,
        admins=admins if is_member else "—",
        subscribers="?" if subscribers is None else subscribers,
        posts=posts or 0,
        signatures=t(lang, "on" if channel.signatures else "off"),
        status=channel.status,
    )


async def _title(ctx: Context, s: AsyncSession, room: Room, event: Event, cmd: Command, lang: str) -> None:
    channel = await _channel_for(ctx, s, room, cmd, lang, "title <handle> <text>", 2)
    if channel is None or not await _authorised(ctx, s, room, event, channel, lang, "rename"):
        return
    try:
        title = clean_title(cmd.rest_after(1))
    except ValueError as exc:
        reply(s, ctx, room.room_id, lang, "invalid_title", error=str(exc))
        return
    channel.title = title
    enqueue(
        s, new_entry(f"channel:{channel.id}", "displayname", channel.ghost_user_id, {"displayname": title})
    )
    for room_id, name in (
        (channel.broadcast_room_id, title),
        (channel.backstage_room_id, backstage_name(title, channel.handle or "")),
    ):
        if room_id:
            enqueue(
                s,
                new_entry(
                    f"room:{room_id}",
                    "state",
                    ctx.bot,
                    {"room_id": room_id, "event_type": "m.room.name", "content": {"name": name}},
                ),
            )
    reply(s, ctx, room.room_id, lang, "title_set", handle=channel.handle, title=title)


async def _about(ctx: Context, s: AsyncSession, room: Room, event: Event, cmd: Command, lang: str) -> None:
    channel = await _channel_for(ctx, s, room, cmd, lang, "about <handle> <text>", 2)
    if channel is None or not await _authorised(ctx, s, room, event, channel, lang, "describe"):
        return
    about = cmd.rest_after(1)[:1024]
    channel.about = about
    if channel.broadcast_room_id:
        enqueue(
            s,
            new_entry(
                f"room:{channel.broadcast_room_id}",
                "state",
                ctx.bot,
                {
                    "room_id": channel.broadcast_room_id,
                    "event_type": "m.room.topic",
                    "content": {"topic": about},
                },
            ),
        )
    reply(s, ctx, room.room_id, lang, "about_set", handle=channel.handle)


async def _member_change(
    ctx: Context, s: AsyncSession, room: Room, event: Event, cmd: Command, lang: str, promote: bool
) -> None:
    verb = "promote" if promote else "demote"
    channel = await _channel_for(ctx, s, room, cmd, lang, f"{verb} <handle> <@user:domain>", 2)
    if channel is None or not await _authorised(
        ctx, s, room, event, channel, lang, f"{verb} admins", owner_only=True
    ):
        return
    user = cmd.args[1]
    if not is_user_id(user):
        reply(s, ctx, room.room_id, lang, "invalid_user", user=user[:255])
        return
    role = await role_of(s, channel, user)
    backstage = channel.backstage_room_id
    if promote:
        if role is not None:
            reply(s, ctx, room.room_id, lang, "already_admin", user=user, handle=channel.handle)
            return
        s.add(ChannelMember(channel_id=channel.id, user_id=user, role=ROLE_ADMIN))
        if backstage:
            enqueue(
                s, new_entry(f"room:{backstage}", "invite", ctx.bot, {"room_id": backstage, "user_id": user})
            )
        reply(s, ctx, room.room_id, lang, "promoted", user=user, handle=channel.handle)
        return
    if role == ROLE_OWNER:
        reply(s, ctx, room.room_id, lang, "cannot_demote_owner", user=user, handle=channel.handle)
        return
    if role is None:
        reply(s, ctx, room.room_id, lang, "not_an_admin", user=user, handle=channel.handle)
        return
    await s.execute(
        delete(ChannelMember).where(ChannelMember.channel_id == channel.id, ChannelMember.user_id == user)
    )
    if backstage:
        enqueue(
            s,
            new_entry(
                f"room:{backstage}",
                "kick",
                ctx.bot,
                {"room_id": backstage, "user_id": user, "reason": f"No longer an admin of #{channel.handle}"},
            ),
        )
    reply(s, ctx, room.room_id, lang, "demoted", user=user, handle=channel.handle)


async def _promote(ctx: Context, s: AsyncSession, room: Room, event: Event, cmd: Command, lang: str) -> None:
    await _member_change(ctx, s, room, event, cmd, lang, promote=True)


async def _demote(ctx: Context, s: AsyncSession, room: Room, event: Event, cmd: Command, lang: str) -> None:
    await _member_change(ctx, s, room, event, cmd, lang, promote=False)


async def _delete(ctx: Context, s: AsyncSession, room: Room, event: Event, cmd: Command, lang: str) -> None:
    channel = await _channel_for(ctx, s, room, cmd, lang, "delete <handle>", 1)
    if channel is None or not await _authorised(
        ctx, s, room, event, channel, lang, "delete the channel", owner_only=True
    ):
        return
    await s.merge(
        Confirmation(
            room_id=room.room_id,
            user_id=event.sender,
            action="delete",
            argument=channel.handle or "",
            expires_at=datetime.now(UTC) + CONFIRM_WINDOW,
        )
    )
    reply(s, ctx, room.room_id, lang, "delete_confirm", handle=channel.handle)


async def _confirm(ctx: Context, s: AsyncSession, room: Room, event: Event, cmd: Command, lang: str) -> None:
    pending = await s.get(Confirmation, (room.room_id, event.sender))
    expires = pending.expires_at if pending else None
    if expires is not None and expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    wanted = (cmd.arg(0) or "").lower(), (cmd.arg(1) or "").lower().lstrip("#")
    if (
        pending is None
        or expires is None
        or expires < datetime.now(UTC)
        or wanted != (pending.action, pending.argument)
    ):
        reply(s, ctx, room.room_id, lang, "nothing_to_confirm")
        return
    await s.delete(pending)
    channel = await find_channel(s, pending.argument)
    if channel is None or not await _authorised(
        ctx, s, room, event, channel, lang, "delete the channel", owner_only=True
    ):
        return
    channel.status = "deleting"
    handle = channel.handle
    enqueue(
        s,
        new_entry(
            f"channel:{channel.id}",
            "delete_channel",
            ctx.bot,
            {
                "channel_id": channel.id,
                "on_success": ctx.note(room.room_id, t(lang, "deleted", handle=handle, domain=ctx.domain)),
            },
        ),
    )


async def _cancel(ctx: Context, s: AsyncSession, room: Room, event: Event, cmd: Command, lang: str) -> None:
    await s.execute(
        delete(Confirmation).where(Confirmation.room_id == room.room_id, Confirmation.user_id == event.sender)
    )
    reply(s, ctx, room.room_id, lang, "cancelled")


_HANDLERS = {
    "help": _help,
    "create": _create,
    "list": _list,
    "info": _info,
    "title": _title,
    "about": _about,
    "promote": _promote,
    "demote": _demote,
    "delete": _delete,
    "confirm": _confirm,
    "cancel": _cancel,
}
