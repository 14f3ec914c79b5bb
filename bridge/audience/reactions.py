"""A channel's reactions policy: `!reactions on|off|only <reaction…>` and its allow list, best-effort.

    !reactions on          ─▶ reactions, reaction_allow = True, None ─▶ m.reaction at power 0
    !reactions off         ─▶ reactions, reaction_allow = False, [] ─▶ m.reaction at power 50:
                              Synapse itself refuses subscribers' reactions
    !reactions only 👍 🔥  ─▶ reactions, reaction_allow = True, [👍, 🔥] ─▶ m.reaction at power 0, and
    transaction ─▶ screen_reactions: m.reaction in a broadcast room whose channel has an allow list,
                   key not in it ─▶ outbox "redact" as the bot, silently (nobody is told)

Matrix has no per-key permission for reactions, so an allow list can only be enforced after the fact:
a reaction outside it is accepted by the homeserver, seen by clients for a moment, then redacted.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from appservice.events import Event
from bridge.broadcast import seam
from bridge.matrix.powerlevels import broadcast_power_levels
from bridge.runtime.context import Context
from bridge.runtime.dispatch import CommandCall, command
from bridge.store.models import Channel, Room, RoomKind
from bridge.text.commands import Refusal
from bridge.text.i18n import t

REACTION_TYPE: Final = "m.reaction"
MAX_ALLOWED_REACTIONS: Final = 20
# Reaction keys are usually one emoji (a ZWJ family with skin tones is about a dozen code points).
MAX_REACTION_KEY_LENGTH: Final = 64
# Emoji (U+FE0F) and text (U+FE0E) presentation selectors: clients send ❤ and ❤️ for the same heart.
_PRESENTATION_SELECTORS: Final = str.maketrans("", "", "\ufe0e\ufe0f")
# `!reactions only 👍,❤️` works as well as `!reactions only 👍 ❤️` (Persian keyboards type ،).
_SEPARATORS: Final = str.maketrans({",": " ", "،": " "})


@dataclass(frozen=True)
class ReactionPolicy:
    enabled: bool
    """Subscribers may send reactions at all (the broadcast room's power levels)."""
    allow: tuple[str, ...] | None
    """None: any reaction; otherwise only these keys (as typed; compared with `normalise_key`)."""


def normalise_key(key: str) -> str:
    """The form two reaction keys are compared in: NFC, without presentation selectors.

    Skin tones and other modifiers are kept, so 👍🏽 and 👍 stay different reactions.
    """
    return unicodedata.normalize("NFC", key).translate(_PRESENTATION_SELECTORS)


def allowed(key: str, allow: list[str] | None) -> bool:
    """Whether a reaction with `key` may stay under the allow list `allow` (None: anything goes)."""
    if allow is None:
        return True
    wanted = normalise_key(key)
    return any(isinstance(entry, str) and normalise_key(entry) == wanted for entry in allow)


def parse_policy(args: Sequence[str]) -> ReactionPolicy | Refusal | None:
    """The policy `!reactions <args>` asks for, a refusal saying why not, or None for the usage."""
    choice = args[0].lower() if args else ""
    rest = args[1:]
    if choice == "on" and not rest:
        return ReactionPolicy(enabled=True, allow=None)
    if choice == "off" and not rest:
        return ReactionPolicy(enabled=False, allow=())
    if choice != "only":
        return None
    keys: list[str] = []
    seen: set[str] = set()
    for key in " ".join(rest).translate(_SEPARATORS).split():
        if len(key) > MAX_REACTION_KEY_LENGTH:
            return Refusal(
                "reactions_key_too_long", {"reaction": key[:16] + "…", "max": MAX_REACTION_KEY_LENGTH}
            )
        normalised = normalise_key(key)
        if normalised and normalised not in seen:
            seen.add(normalised)
            keys.append(key)
    if not keys:
        return None
    if len(keys) > MAX_ALLOWED_REACTIONS:
        return Refusal("reactions_too_many", {"count": len(keys), "max": MAX_ALLOWED_REACTIONS})
    return ReactionPolicy(enabled=True, allow=tuple(keys))


def _shown(allow: Sequence[Any]) -> str:
    return " ".join(key for key in allow if isinstance(key, str))


@command(RoomKind.BACKSTAGE, "reactions", permission="reactions")
async def reactions_command(call: CommandCall) -> None:
    """`!reactions on|off|only <reaction…>` in a channel's backstage (the caller checked the sender)."""
    channel, lang = call.backstage_channel, call.lang
    policy = parse_policy(call.command.args)
    if policy is None:
        if channel.reaction_allow:
            state = _shown(channel.reaction_allow)
        else:
            state = t(lang, "on" if channel.reactions and channel.reaction_allow is None else "off")
        call.reply("reactions_usage", max=MAX_ALLOWED_REACTIONS, state=state)
        return
    if isinstance(policy, Refusal):
        call.refuse(policy)
        return
    channel.reactions = policy.enabled
    channel.reaction_allow = None if policy.allow is None else list(policy.allow)
    if channel.broadcast_room_id:
        # Sent even when `enabled` did not change: it also repairs power levels someone else altered.
        levels = broadcast_power_levels(channel.ghost_user_id, reactions=policy.enabled)
        seam.set_state(call.ctx, call.session, channel, "m.room.power_levels", levels)
    if policy.allow is None:
        call.reply("reactions_on", handle=channel.handle)
    elif not policy.allow:
        call.reply("reactions_off", handle=channel.handle)
    else:
        call.reply("reactions_only", handle=channel.handle, keys=_shown(policy.allow))


@dataclass(frozen=True)
class _RoomPolicy:
    allow: list[str]
    ghost: str


async def _policies(session: AsyncSession, room_ids: set[str]) -> dict[str, _RoomPolicy]:
    """The allow lists of those rooms that are channel broadcast rooms and have one (one query)."""
    rows = await session.execute(
        select(Room.room_id, Channel.reaction_allow, Channel.ghost_user_id)
        .join(Channel, Channel.id == Room.channel_id)
        .where(Room.room_id.in_(room_ids), Room.kind == RoomKind.BROADCAST)
    )
    return {
        room_id: _RoomPolicy([key for key in allow if isinstance(key, str)], ghost)
        for room_id, allow, ghost in rows.all()
        if isinstance(allow, list)
    }


async def screen_reactions(ctx: Context, events: list[Event]) -> int:
    """Queue the redaction of each reaction outside its channel's allow list; how many were queued.

    Looks only at `m.reaction` events in channel broadcast rooms. Silent: nobody is told; the
    redaction's reason (in the deployment's default language) names the allowed reactions.
    """
    reactions = [e for e in events if e.type == REACTION_TYPE and "redacted_because" not in e.unsigned]
    if not reactions:
        return 0
    lang = ctx.config.default_language
    queued = 0
    async with ctx.sessions.begin() as session:
        policies = await _policies(session, {e.room_id for e in reactions})
        for event in reactions:
            policy = policies.get(event.room_id)
            if policy is None or event.sender in (ctx.bot, policy.ghost):
                continue
            key = event.relates_to.get("key")
            if isinstance(key, str) and allowed(key, policy.allow):
                continue
            reason = t(
                lang,
                "reactions_removed_reason" if policy.allow else "reactions_removed_off",
                keys=_shown(policy.allow),
            )
            seam.redact_event(ctx, session, event.room_id, event.event_id, reason)
            queued += 1
    if queued:
        ctx.outbox.wake()
    return queued
