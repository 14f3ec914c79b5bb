"""Staff rooms: the private rooms Kanal keeps for people its configuration lists (the operators' room,
the moderation room). Created once, then their membership follows the list at every start."""

from __future__ import annotations

import logging

from sqlalchemy import select

from appservice.errors import MatrixRequestError
from appservice.ids import RoomID
from bridge.runtime.context import Context, enqueue, send_entry
from bridge.runtime.outbox import OutboxKind, OutboxStatus, SkipEntry, new_entry
from bridge.runtime.rooms import create_once, forget_marker
from bridge.store.models import OutboxEntry, Room, RoomKind

log = logging.getLogger(__name__)


async def schedule_staff_room(ctx: Context, queue: str, kind: OutboxKind) -> None:
    """Queue a staff room's sync (outbox `kind` on `queue`) unless one is already waiting."""
    async with ctx.sessions.begin() as session:
        waiting = await session.scalar(
            select(OutboxEntry.id).where(
                OutboxEntry.queue == queue, OutboxEntry.kind == kind, OutboxEntry.status == OutboxStatus.PENDING
            )
        )
        if waiting is None:
            enqueue(session, new_entry(queue, kind, ctx.bot, {}))


async def sync_staff_room(
    ctx: Context, *, kind: RoomKind, name: str, topic: str, members: list[str], welcome: str
) -> RoomID | None:
    """A private room of `kind` for `members`: created once, then membership kept in line with the list."""
    if not members:
        raise SkipEntry(f"nobody is configured for the {kind} room")
    bot = ctx.bot_intent()
    async with ctx.sessions() as session:
        room_id: RoomID | None = await session.scalar(select(Room.room_id).where(Room.kind == kind))
    if room_id is None:
        body = {
            "preset": "private_chat",
            "visibility": "private",
            "name": name,
            "topic": topic,
            "invite": members,
            "power_level_content_override": {"users": {member: 50 for member in members}},
        }
        created = await create_once(ctx, body, "staff", kind)
        async with ctx.sessions.begin() as session:
            session.add(Room(room_id=created, kind=kind, language=ctx.config.default_language))
            enqueue(session, send_entry(ctx.bot, created, {"msgtype": "m.notice", "body": welcome}))
        ctx.remember_room(created)
        await forget_marker(ctx, "staff", kind)
        log.info("Created the %s room %s for %d member(s)", kind, created, len(members))
        return created
    joined = await bot.joined_members(room_id)
    for member in members:
        if member not in joined:
            try:
                await bot.invite(room_id, member)
            except MatrixRequestError as exc:
                if exc.retryable:
                    raise
                # Already invited, or not a user the homeserver knows: nothing to do now.
    for member in joined:
        if member != ctx.bot and member not in members:
            await bot.kick(room_id, member, f"No longer a member of the {name}")
    return room_id
