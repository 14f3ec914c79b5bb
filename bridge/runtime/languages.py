"""Which language the bot answers a person in, and the `language` command that lets them choose.

Matrix does not tell an application service which language a client shows, so the bot goes by, in
order: the person's own choice (`language fa`, stored in `user_settings`), Arabic script in what they
just wrote, the room's language, and the deployment's `channels.default_language`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.runtime.context import Context, reply
from bridge.runtime.dispatch import CommandCall, command
from bridge.store.models import Room, RoomKind, UserSetting
from bridge.text.i18n import catalogue, detect_language, t

# `language auto` forgets the choice: replies follow the script the person writes in again.
AUTO = "auto"


async def chosen_language(session: AsyncSession, user_id: str) -> str | None:
    """The language `user_id` chose with `language <code>`, while Kanal still has it."""
    setting = await session.get(UserSetting, user_id)
    if setting is None or setting.language not in catalogue().languages:
        return None
    return setting.language


async def load_language_users(session: AsyncSession) -> set[str]:
    """Everyone who chose a language (Context.language_users, for a process that is the only writer)."""
    chose = select(UserSetting.user_id).where(UserSetting.language.is_not(None))
    return set((await session.scalars(chose)).all())


async def language_for(
    session: AsyncSession, ctx: Context, user_id: str, text: str = "", room: Room | None = None
) -> str:
    """The language of a reply to `user_id`, who wrote `text` (if anything) in `room` (if any)."""
    maybe_chosen = ctx.language_users is None or user_id in ctx.language_users
    chosen = await chosen_language(session, user_id) if maybe_chosen else None
    if chosen is not None:
        return chosen
    fallback = (room.language if room is not None else None) or ctx.config.default_language
    return detect_language(text, fallback)


def _choices() -> str:
    return ", ".join(f"{code} ({t(code, 'language_name')})" for code in catalogue().languages)


@command(RoomKind.MANAGEMENT, "language")
@command(RoomKind.BACKSTAGE, "language")
async def language_command(call: CommandCall) -> None:
    """`language` shows the choice; `language en|fa` makes it; `language auto` forgets it."""
    session = call.session
    code = (call.command.arg(0) or "").lower()
    if not code:
        chosen = await chosen_language(session, call.sender)
        if chosen is None:
            call.reply("language_auto", choices=_choices())
        else:
            call.reply("language_current", language=t(call.lang, "language_name"), choices=_choices())
        return
    if code != AUTO and code not in catalogue().languages:
        call.reply("language_unknown", code=code[:16], choices=_choices())
        return
    setting = await session.get(UserSetting, call.sender)
    if setting is None:
        setting = UserSetting(user_id=call.sender)
        session.add(setting)
    setting.language = None if code == AUTO else code
    setting.updated_at = datetime.now(UTC)
    if call.ctx.language_users is not None:
        # Kept even if this transaction rolls back: the set may hold more than chose (then we ask).
        call.ctx.language_users.add(call.sender)
    if code == AUTO:
        call.reply("language_cleared", choices=_choices())
    else:
        # Said in the language just chosen.
        reply(
            session,
            call.ctx,
            call.room.room_id,
            code,
            "language_set",
            language=t(code, "language_name"),
            choices=_choices(),
        )
