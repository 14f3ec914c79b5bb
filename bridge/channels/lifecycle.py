"""Creating and deleting a channel's rooms: resumable outbox jobs (each step checks what exists)."""

from __future__ import annotations

import logging

from sqlalchemy import select, update

from appservice.errors import MatrixRequestError, MNotFound, MRoomInUse
from appservice.ids import RoomAlias, RoomID, UserID
from bridge.broadcast import seam
from bridge.channels.hosting import with_hosting_policy
from bridge.channels.registry import topic_for
from bridge.matrix.powerlevels import (
    CHANNEL_STATE_TYPE,
    backstage_room_request,
    broadcast_room_request,
    private_room_request,
)
from bridge.runtime.context import Context
from bridge.runtime.outbox import OutboxWorker, SkipEntry, txn_id_for
from bridge.runtime.rooms import create_once, forget_marker
from bridge.store.models import Channel, ChannelMember, ChannelStatus, OutboxEntry, Room, RoomKind
from bridge.text.i18n import t

log = logging.getLogger(__name__)


async def _load(ctx: Context, channel_id: int) -> Channel:
    async with ctx.sessions() as session:
        channel = await session.get(Channel, channel_id)
    if channel is None:
        raise SkipEntry(f"channel {channel_id} no longer exists")
    return channel


async def _adopt_broadcast(ctx: Context, channel: Channel) -> RoomID:
    """The alias exists already: after a crash it is our own room; otherwise the handle is taken."""
    bot = ctx.bot_intent()
    room_id = await bot.resolve_alias(RoomAlias(ctx.alias_for(channel.handle or "")))
    try:
        marker = await bot.get_state(room_id, CHANNEL_STATE_TYPE)
    except MatrixRequestError:
        marker = {}
    async with ctx.sessions() as session:
        owned_by_other = await session.scalar(
            select(Channel.id).where(Channel.broadcast_room_id == room_id, Channel.id != channel.id)
        )
    # The marker state alone proves nothing (anyone can make a room with it); the creator does.
    if marker.get("handle") != channel.handle or owned_by_other is not None or not await bot.created(room_id):
        raise MatrixRequestError(
            409, "M_ROOM_IN_USE", f"the alias {ctx.alias_for(channel.handle or '')} is taken"
        )
    await bot.set_directory_visibility(room_id, "private" if channel.private else "public")
    return room_id


async def _record_room(ctx: Context, channel: Channel, kind: RoomKind, room_id: RoomID) -> None:
    column = Channel.broadcast_room_id if kind == RoomKind.BROADCAST else Channel.backstage_room_id
    async with ctx.sessions.begin() as session:
        await session.execute(update(Channel).where(Channel.id == channel.id).values({column: room_id}))
        joined = 0 if kind == RoomKind.BROADCAST else None  # readers, counted from here on
        await session.merge(Room(room_id=room_id, kind=kind, channel_id=channel.id, joined=joined))
    if kind != RoomKind.BROADCAST:
        ctx.remember_room(room_id)


async def create_channel(ctx: Context, entry: OutboxEntry, worker: OutboxWorker) -> str | None:
    channel = await _load(ctx, entry.payload["channel_id"])
    if channel.status != ChannelStatus.CREATING or channel.handle is None:
        raise SkipEntry(f"channel {channel.id} is {channel.status}")
    from bridge.moderation.policy import banned_servers

    async with ctx.sessions() as session:
        banned = await banned_servers(session, ctx.domain)
    try:
        ghost = ctx.client.intent(UserID(channel.ghost_user_id))
        await ghost.ensure_registered()
        await ghost.set_displayname(channel.title)
        bot = ctx.bot_intent()
        if channel.broadcast_room_id is None:
            broadcast = broadcast_room_request(
                handle=channel.handle,
                title=channel.title,
                topic=topic_for(ctx.config, channel),
                ghost=channel.ghost_user_id,
                domain=ctx.domain,
                reactions=channel.reactions,
            )
            request = with_hosting_policy(
                private_room_request(broadcast) if channel.private else broadcast,
                ctx.config,
                channel.retention_days,
                banned,
            )
            try:
                room_id = await bot.create_room(request)
            except MRoomInUse:
                room_id = await _adopt_broadcast(ctx, channel)
            await _record_room(ctx, channel, RoomKind.BROADCAST, room_id)
            channel.broadcast_room_id = room_id
        await ghost.join(RoomID(channel.broadcast_room_id))
        if channel.backstage_room_id is None:
            room_id = await create_once(
                ctx,
                with_hosting_policy(
                    backstage_room_request(handle=channel.handle, title=channel.title, owner=channel.owner),
                    ctx.config,
                    channel.retention_days,
                    banned,
                ),
                "backstage",
                channel.id,
            )
            await _record_room(ctx, channel, RoomKind.BACKSTAGE, room_id)
            await forget_marker(ctx, "backstage", channel.id)
    except MatrixRequestError as exc:
        if not exc.retryable:
            # Give the handle back so the user can try again (or another name).
            async with ctx.sessions.begin() as session:
                await session.execute(
                    update(Channel)
                    .where(Channel.id == channel.id)
                    .values(status=ChannelStatus.FAILED, former_handle=channel.handle, handle=None)
                )
        raise
    async with ctx.sessions.begin() as session:
        await session.execute(
            update(Channel).where(Channel.id == channel.id).values(status=ChannelStatus.ACTIVE)
        )
    log.info("Channel #%s is ready (broadcast %s)", channel.handle, channel.broadcast_room_id)
    return None


async def delete_channel(ctx: Context, entry: OutboxEntry, worker: OutboxWorker) -> str | None:
    """Archive: out of the directory, alias freed, nobody new may join, admins leave backstage."""
    channel = await _load(ctx, entry.payload["channel_id"])
    if channel.status == ChannelStatus.DELETED:
        raise SkipEntry(f"channel {channel.id} is already deleted")
    bot = ctx.bot_intent()
    if channel.handle:
        try:
            await bot.delete_alias(RoomAlias(ctx.alias_for(channel.handle)))
        except MNotFound:
            pass
    closing = t(ctx.config.default_language, "channel_closed")
    await seam.archive(ctx, channel, closing, txn_id_for(entry.id, "closed"))
    if channel.backstage_room_id:
        backstage = RoomID(channel.backstage_room_id)
        async with ctx.sessions() as session:
            members = (
                await session.scalars(
                    select(ChannelMember.user_id).where(ChannelMember.channel_id == channel.id)
                )
            ).all()
        for user in members:
            try:
                await bot.kick(backstage, user, f"#{channel.handle} was deleted")
            except MatrixRequestError as exc:
                if exc.retryable:
                    raise
    async with ctx.sessions.begin() as session:
        await session.execute(
            update(Channel)
            .where(Channel.id == channel.id)
            .values(status=ChannelStatus.DELETED, former_handle=channel.handle, handle=None)
        )
    log.info("Channel #%s deleted", channel.handle)
    return None
