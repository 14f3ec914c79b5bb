"""Who may do what in a channel: owner, editor, moderator.

The owner may do everything. Editors publish (post, edit, delete any post, pin, schedule, polls,
invite links). Moderators look after readers: comments and reactions moderation and join requests;
what a moderator writes in backstage is not published. The table below is the single source of truth
for commands and backstage actions; `require` refuses with a reply that names the role needed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from appservice.ids import RoomID
from bridge.matrix.powerlevels import backstage_power_levels
from bridge.runtime.context import Context, enqueue, reply, state_entry
from bridge.store.models import Channel, ChannelMember
from bridge.text.i18n import t

OWNER = "owner"
EDITOR = "editor"
MODERATOR = "moderator"
ROLES = (OWNER, EDITOR, MODERATOR)
# Before roles there was one kind of helper, "admin", who could publish: an editor now.
LEGACY = {"admin": EDITOR}

# action -> roles allowed to do it
PERMISSIONS: dict[str, frozenset[str]] = {
    "publish": frozenset({OWNER, EDITOR}),  # post, edit, delete any post, !silent
    "pin": frozenset({OWNER, EDITOR}),
    "schedule": frozenset({OWNER, EDITOR}),
    "polls": frozenset({OWNER, EDITOR}),  # !poll results
    "signatures": frozenset({OWNER, EDITOR}),
    "stats": frozenset({OWNER, EDITOR, MODERATOR}),
    "help": frozenset({OWNER, EDITOR, MODERATOR}),
    "links": frozenset({OWNER, EDITOR}),  # invite links
    "join_requests": frozenset({OWNER, EDITOR, MODERATOR}),
    "reactions": frozenset({OWNER, EDITOR, MODERATOR}),  # reactions policy
    "comments_moderation": frozenset({OWNER, EDITOR, MODERATOR}),
    "comments": frozenset({OWNER}),  # turning comments on or off
    "views_in_posts": frozenset({OWNER}),
    "notify": frozenset({OWNER}),  # !notify on|off
    "private": frozenset({OWNER}),
    "tokens": frozenset({OWNER}),  # publishing-API tokens
    "settings": frozenset({OWNER, EDITOR}),  # title, about
    "members": frozenset({OWNER}),  # promote, demote, transfer, delete, rename, retention
}


def normalise(role: str | None) -> str | None:
    if role is None:
        return None
    return LEGACY.get(role, role)


def allowed(role: str | None, action: str) -> bool:
    return normalise(role) in PERMISSIONS[action]


def roles_for(action: str) -> list[str]:
    return [r for r in ROLES if r in PERMISSIONS[action]]


def role_name(lang: str, role: str | None) -> str:
    """A role as people read it in `lang` (the README's words: owner, editor, moderator)."""
    names = {
        OWNER: t(lang, "role_owner"),
        EDITOR: t(lang, "role_editor"),
        MODERATOR: t(lang, "role_moderator"),
    }
    role = normalise(role)
    return names.get(role or "", role or "")


async def role_of(session: AsyncSession, channel: Channel, user_id: str) -> str | None:
    role: str | None = await session.scalar(_ROLE, {"channel_id": channel.id, "user_id": user_id})
    return normalise(role)


_ROLE = select(ChannelMember.role).where(
    ChannelMember.channel_id == bindparam("channel_id"), ChannelMember.user_id == bindparam("user_id")
)


async def require(
    ctx: Context,
    session: AsyncSession,
    room_id: RoomID,
    channel: Channel,
    user_id: str,
    action: str,
    lang: str,
) -> bool:
    """True when `user_id` may do `action` in `channel`; otherwise the bot says who may, and False."""
    if allowed(await role_of(session, channel, user_id), action):
        return True
    reply(
        session,
        ctx,
        room_id,
        lang,
        "role_required",
        handle=channel.handle,
        roles=t(lang, "list_separator").join(role_name(lang, role) for role in roles_for(action)),
        owner=channel.owner,
    )
    return False


TeamListener = Callable[[Context, AsyncSession, Channel], Awaitable[None]]
_team_listeners: list[TeamListener] = []


def on_team_changed(listener: TeamListener) -> TeamListener:
    """Call `listener` after every role change (the comments room's moderators follow the team)."""
    _team_listeners.append(listener)
    return listener


async def team_changed(ctx: Context, session: AsyncSession, channel: Channel) -> None:
    """After a role change or a transfer: the rooms' power levels follow the roles. Editors get 50 in
    backstage (to delete anyone's message there); the listeners follow (the discussion room)."""
    await session.flush()
    if channel.backstage_room_id is not None:
        editors = await session.scalars(
            select(ChannelMember.user_id).where(
                ChannelMember.channel_id == channel.id, ChannelMember.role == EDITOR
            )
        )
        content = backstage_power_levels(channel.owner, sorted(editors.all()))
        enqueue(session, state_entry(ctx.bot, channel.backstage_room_id, "m.room.power_levels", content))
    for listener in _team_listeners:
        await listener(ctx, session, channel)
