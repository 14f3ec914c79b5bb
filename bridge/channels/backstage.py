"""The backstage room: what an editor posts is published as the channel; `!` lines are commands.

    message ─▶ role? (bridge.channels.roles) ─▶ `!command`: the registry (bridge.runtime.dispatch)
                                             └▶ otherwise: kept as a draft, or published
                                                (bridge.publishing.posts, through the gate)
"""

from __future__ import annotations

from sqlalchemy import and_, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from appservice.events import Event
from bridge.channels import roles
from bridge.matrix.relay import RELAYED_EVENT_TYPES
from bridge.publishing import drafts, forwarding, posts
from bridge.runtime.context import Context, reply
from bridge.runtime.dispatch import CommandCall, command, resolve
from bridge.runtime.languages import language_for
from bridge.store import plain, queries
from bridge.store.models import Channel, ChannelMember, ChannelStatus, DraftMode, Post, Room, RoomKind
from bridge.text.commands import parse_command


async def on_backstage_event(ctx: Context, session: AsyncSession, room: Room, event: Event) -> None:
    channel = await queries.channel_of_room(session, room)
    if channel is None:
        return
    if event.type not in RELAYED_EVENT_TYPES and event.type != "m.room.redaction":
        return
    body = event.content.get("body")
    lang = await language_for(session, ctx, event.sender, body if isinstance(body, str) else "", room)
    role, drafting = await _role_and_drafting(session, channel, event.sender)
    is_redaction = event.type == "m.room.redaction"
    if role is None:
        if not is_redaction:
            reply(
                session, ctx, room.room_id, lang, "no_backstage_role", handle=channel.handle, owner=channel.owner
            )
        return
    if channel.status != ChannelStatus.ACTIVE or channel.broadcast_room_id is None:
        if not is_redaction:
            reply(
                session, ctx, room.room_id, lang, "channel_unavailable", handle=channel.handle, status=channel.status
            )
        return
    if is_redaction:
        # A moderator's deletion here is their own business: only editors' deletions are mirrored.
        if roles.allowed(role, "publish"):
            await posts.mirror_redaction(session, channel, event)
        return
    if isinstance(body, str) and event.rel_type != "m.replace":
        parsed = parse_command(body, require_bang=True)
        if parsed is not None:
            found = resolve(RoomKind.BACKSTAGE, parsed)
            if found is None:
                reply(session, ctx, room.room_id, lang, "unknown_backstage_command", name=parsed.name[:64])
                return
            spec, named = found
            if spec.permission is not None and not roles.allowed(role, spec.permission):
                await roles.require(ctx, session, room.room_id, channel, event.sender, spec.permission, lang)
            else:
                await spec.handler(CommandCall(ctx, session, room, event, named, lang, channel))
            return
    if not roles.allowed(role, "publish"):
        reply(session, ctx, room.room_id, lang, "moderator_not_published", handle=channel.handle)
        return
    if event.rel_type is None and drafting:
        drafts.mark_kept(ctx, session, room, event)  # kept: `!publish` or `!schedule` as a reply sends it
        return
    if event.rel_type is None and isinstance(await forwarding.origin_of(session, event.content), Post):
        reply(session, ctx, room.room_id, lang, "forward_unavailable")
        return
    if await posts.may_publish(ctx, session, room, channel, event, lang):
        await posts.relay(ctx, session, channel, event)


async def _role_and_drafting(session: AsyncSession, channel: Channel, user_id: str) -> tuple[str | None, bool]:
    """The sender's role, and whether they are in draft mode (`!draft on`), in one statement."""
    row = (await plain.run(session, _ROLE_AND_DRAFTING, {"channel_id": channel.id, "user_id": user_id})).first()
    if row is None:
        return None, False
    return roles.normalise(row.role), row.drafting is not None


_ROLE_AND_DRAFTING = (
    select(ChannelMember.role, DraftMode.user_id.label("drafting"))
    .outerjoin(
        DraftMode, and_(DraftMode.channel_id == ChannelMember.channel_id, DraftMode.user_id == ChannelMember.user_id)
    )
    .where(ChannelMember.channel_id == bindparam("channel_id"), ChannelMember.user_id == bindparam("user_id"))
)


@command(RoomKind.BACKSTAGE, "help", permission="help")
async def help_command(call: CommandCall) -> None:
    channel = call.backstage_channel
    call.reply("help_backstage", handle=channel.handle, title=channel.title)
