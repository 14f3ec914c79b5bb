"""The bot's commands: one registry for every room where people type them.

A feature declares its commands where it implements them, and says which room they belong to and,
in backstage, which permission (bridge.channels.roles.PERMISSIONS) the sender needs:

    @command(RoomKind.BACKSTAGE, "stats", permission="stats")
    async def stats_command(call: CommandCall) -> None: ...

Each room's handler (management chat, backstage, operators' room, moderation room) parses the line,
checks who may speak there, looks the command up here and calls it with one `CommandCall`
(`dispatch` does the last two in the rooms without backstage permissions). The registry is filled
as the feature modules are imported (bridge.service imports them all).

A command is found by its name or by its word in any language: the catalogue entry
`command:<name>` (bridge/text/locale/commands.pot) gives each language's word (`راهنما` for `help`),
and the handler sees the command under its name. Every registered command must have that entry,
translated (tests/unit/test_command_registry.py), so none can be left without its Persian word.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from appservice.events import Event
from bridge.runtime.context import Context, reply
from bridge.store.models import Channel, Room, RoomKind
from bridge.text.commands import Command, Refusal, command_key
from bridge.text.i18n import catalogue

WORD_KEY_PREFIX = "command:"


@dataclass(frozen=True)
class CommandCall:
    """One command, as typed: where, by whom, in which language, within which transaction."""

    ctx: Context
    session: AsyncSession
    room: Room
    event: Event
    command: Command
    lang: str
    channel: Channel | None = None
    """The channel whose backstage the command was typed in (None in other rooms)."""

    @property
    def sender(self) -> str:
        return self.event.sender

    @property
    def backstage_channel(self) -> Channel:
        """The channel of a backstage command (the backstage handler always sets it)."""
        if self.channel is None:
            raise RuntimeError(f"{self.command.name!r} needs a backstage room")
        return self.channel

    def reply(self, key: str, **values: Any) -> None:
        """Answer in the room the command came from, in the sender's language."""
        reply(self.session, self.ctx, self.room.room_id, self.lang, key, **values)

    def refuse(self, refusal: Refusal) -> None:
        """Answer with what cannot be done, and why."""
        self.reply(refusal.key, **refusal.values)


Handler = Callable[[CommandCall], Awaitable[None]]


@dataclass(frozen=True)
class CommandSpec:
    name: str
    handler: Handler
    permission: str | None
    """Backstage: what the sender's role must allow; None: the handler checks for itself."""


_REGISTRY: dict[RoomKind, dict[str, CommandSpec]] = {}
# Per room kind: each command's word in every language (as `command_key` folds it) → its name.
_WORDS: dict[RoomKind, dict[str, str]] = {}


def command(room: RoomKind, *names: str, permission: str | None = None) -> Callable[[Handler], Handler]:
    """Register the decorated handler for `names` in rooms of kind `room`."""

    def register(handler: Handler) -> Handler:
        table = _REGISTRY.setdefault(room, {})
        for name in names:
            if name in table and table[name].handler is not handler:
                raise RuntimeError(f"two handlers for {room}/{name}")
            table[name] = CommandSpec(name, handler, permission)
        _WORDS.pop(room, None)
        return handler

    return register


def word_key(name: str) -> str:
    """The catalogue key of the words of command `name` (`command:help`)."""
    return WORD_KEY_PREFIX + name


def translated_words(room: RoomKind) -> dict[str, str]:
    """The words of `room`'s commands in every language, folded by `command_key` → the command's name.
    Raises RuntimeError when one word would name two commands of the room."""
    words = _WORDS.get(room)
    if words is None:
        words = {}
        texts = catalogue().translations
        for name in _REGISTRY.get(room, {}):
            for lang in sorted(texts):
                word = texts[lang].get(word_key(name))
                if not word:
                    continue
                key = command_key(word)
                other = words.get(key) or (key if key in _REGISTRY[room] else None)
                if other is not None and other != name:
                    raise RuntimeError(f"{lang} word {word!r} names both {other!r} and {name!r} in {room}")
                words[key] = name
        _WORDS[room] = words
    return words


def find(room: RoomKind, word: str) -> CommandSpec | None:
    """The command typed as `word` (its name, or its word in any language) in rooms of kind `room`."""
    table = _REGISTRY.get(room, {})
    spec = table.get(word)
    if spec is None:
        name = translated_words(room).get(command_key(word))
        spec = table.get(name) if name is not None else None
    return spec


def resolve(room: RoomKind, command: Command) -> tuple[CommandSpec, Command] | None:
    """The command's handler, and the command under the name the handler knows it by."""
    spec = find(room, command.name)
    if spec is None:
        return None
    return spec, dataclasses.replace(command, name=spec.name)


def names(room: RoomKind) -> list[str]:
    """The commands registered for rooms of kind `room`."""
    return sorted(_REGISTRY.get(room, {}))


def typed_text(event: Event) -> str | None:
    """The text of a new message, where a command may be typed (an edit of an earlier one is not a
    new command); None for anything else."""
    body = event.content.get("body")
    if event.type != "m.room.message" or not isinstance(body, str) or event.rel_type == "m.replace":
        return None
    return body


def _unknown_command(name: str) -> Refusal:
    return Refusal("unknown_command", {"name": name})


async def dispatch(
    call: CommandCall, room: RoomKind, *, unknown: Callable[[str], Refusal] = _unknown_command
) -> None:
    """Run the command of `call`, typed in a room of kind `room` by someone who may speak there:
    its handler, or the refusal `unknown(name)` when no feature registered the name."""
    found = resolve(room, call.command)
    if found is None:
        call.refuse(unknown(call.command.name[:64]))
        return
    spec, named = found
    await spec.handler(dataclasses.replace(call, command=named))
