"""The channel photo: one call sets it everywhere a channel shows a picture.

    `!avatar` (a reply to an image in backstage), an import, … ─▶ set_channel_avatar
        ├▶ channels.avatar_url            the web pages, feeds and embeds (through the media proxy)
        ├▶ seam.set_state m.room.avatar   every public room (each shard; a new shard copies it)
        ├▶ m.room.avatar of backstage     so the team's room list shows it too
        ├▶ m.room.avatar of the discussion room (#<handle>_comments; a new one starts with it)
        └▶ the ghost's profile picture    its posts in every client
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from appservice.ids import EventID
from bridge.broadcast import seam
from bridge.matrix.media import image_of
from bridge.publishing.drafts import draft_content, fetch_draft
from bridge.runtime.context import Context, enqueue, state_entry
from bridge.runtime.dispatch import CommandCall, command
from bridge.runtime.outbox import OutboxKind, new_entry
from bridge.store.models import Channel, RoomKind

REMOVE = "remove"


def set_channel_avatar(ctx: Context, session: AsyncSession, channel: Channel, mxc: str | None) -> None:
    """Make `mxc` (an `mxc://` URI of an image) the channel's photo; None removes it. Queued in the
    caller's transaction: the rooms and the ghost follow once it commits."""
    channel.avatar_url = mxc
    content = {"url": mxc} if mxc else {}
    if channel.broadcast_room_id is not None:
        seam.set_state(ctx, session, channel, "m.room.avatar", content)
    if channel.backstage_room_id is not None:
        enqueue(session, state_entry(ctx.bot, channel.backstage_room_id, "m.room.avatar", content))
    if channel.comments_room_id is not None:  # the bot made it and holds its state (comments.py)
        enqueue(session, state_entry(ctx.bot, channel.comments_room_id, "m.room.avatar", content))
    profile = {"avatar_url": mxc or ""}
    enqueue(session, new_entry(f"channel:{channel.id}", OutboxKind.AVATAR_URL, channel.ghost_user_id, profile))


@command(RoomKind.BACKSTAGE, "avatar", permission="settings")
async def avatar_command(call: CommandCall) -> None:
    """`!avatar` as a reply to an image: the channel's photo; `!avatar remove`: back to the letter."""
    channel, args = call.backstage_channel, call.command.args
    if len(args) == 1 and args[0].lower() == REMOVE:
        set_channel_avatar(call.ctx, call.session, channel, None)
        call.reply("avatar_removed", handle=channel.handle)
        return
    target = call.event.reply_to
    if target is None or args:
        call.reply("avatar_usage", handle=channel.handle)
        return
    mxc = await _image_replied_to(call, target)
    if mxc is None:
        call.reply("avatar_not_image")
        return
    set_channel_avatar(call.ctx, call.session, channel, mxc)
    call.reply("avatar_set", handle=channel.handle)


async def _image_replied_to(call: CommandCall, target: EventID) -> str | None:
    raw = await fetch_draft(call.ctx, call.room, target)
    shown = draft_content(raw) if raw is not None else None
    return image_of(*shown) if shown is not None else None
