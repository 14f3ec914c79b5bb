"""Every command the README documents is registered for its room, and every registered one is documented.

Commands register themselves when their feature module is imported (bridge.runtime.dispatch); the
service imports every feature. A module left out, or a command renamed in only one place, shows here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import bridge.service  # noqa: F401 (imports every feature, which registers its commands)
from bridge.runtime.dispatch import find, names, resolve, translated_words, word_key
from bridge.store.models import RoomKind
from bridge.text.commands import parse_command
from bridge.text.i18n import catalogue, t

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def _section(start: str, end: str) -> str:
    return README[README.index(start) : README.index(end, README.index(start))]


def _first_words(text: str, prefix: str = "") -> set[str]:
    """The command word of each backticked `prefix<word> …` in `text`."""
    return set(re.findall(rf"`{re.escape(prefix)}([a-z][a-z-]*)[^`]*`", text))


def _first_cells(text: str, start: str) -> str:
    """The first cell of each table row of `text` that starts with `start` (`\\|` stays in its cell)."""
    return "\n".join(
        re.split(r"(?<!\\)\|", line)[1] for line in text.splitlines() if line.startswith(f"| {start}")
    )


def documented() -> dict[RoomKind, set[str]]:
    dm_table = _first_cells(_section("## Commands", "### Roles"), "`")
    backstage_table = _first_cells(README, "`!")
    operators = _section("Commands there:", "Only operators are answered")
    moderation = _section("**Moderation room:**", "A ground is")
    return {
        RoomKind.MANAGEMENT: _first_words(dm_table),
        RoomKind.BACKSTAGE: _first_words(backstage_table, "!"),
        RoomKind.OPERATOR: _first_words(operators),
        RoomKind.MODERATION: _first_words(moderation) - {"compliance"},
    }


DOCUMENTED = documented()


def test_the_readme_lists_were_found() -> None:
    # Guards the test below against passing because the parsing found nothing.
    assert {"help", "create", "delete", "private", "language"} <= DOCUMENTED[RoomKind.MANAGEMENT]
    assert {"silent", "pin", "unpin", "edit", "token", "link", "requests", "comments"} <= DOCUMENTED[
        RoomKind.BACKSTAGE
    ]
    assert {"requests", "approve", "reject", "token", "tokens", "recover"} <= DOCUMENTED[RoomKind.OPERATOR]
    assert {"held", "takedown", "grant", "deny", "decision"} <= DOCUMENTED[RoomKind.MODERATION]


@pytest.mark.parametrize(
    ("room", "name"), sorted((room, name) for room, names in DOCUMENTED.items() for name in names)
)
def test_every_documented_command_is_registered(room: RoomKind, name: str) -> None:
    assert find(room, name) is not None, f"README documents {name!r} in {room} rooms; nothing registers it"


@pytest.mark.parametrize("room", [RoomKind.MANAGEMENT, RoomKind.BACKSTAGE, RoomKind.OPERATOR, RoomKind.MODERATION])
def test_every_registered_command_is_in_the_readme(room: RoomKind) -> None:
    prefix = "!" if room == RoomKind.BACKSTAGE else ""
    undocumented = [name for name in names(room) if f"`{prefix}{name}" not in README]
    assert names(room) and undocumented == []


ROOMS = [RoomKind.MANAGEMENT, RoomKind.BACKSTAGE, RoomKind.OPERATOR, RoomKind.MODERATION]
# The help of each room, as `help` answers it (placeholders filled with anything).
HELP = {
    RoomKind.MANAGEMENT: ("help", {"domain": "example.org"}),
    RoomKind.BACKSTAGE: ("help_backstage", {"handle": "news", "title": "News"}),
    RoomKind.OPERATOR: ("operator_help", {}),
    RoomKind.MODERATION: ("mod_help", {}),
}
REGISTERED = sorted((room, name) for room in ROOMS for name in names(room))


@pytest.mark.parametrize(("room", "name"), REGISTERED)
def test_every_registered_command_has_a_persian_word(room: RoomKind, name: str) -> None:
    key = word_key(name)
    assert catalogue().english.get(key) == name, f"bridge/text/locale/commands.pot has no {key!r} for {name!r}"
    word = catalogue().translations["fa"].get(key)
    assert word and len(word.split()) == 1, f"{key!r} has no Persian word (one word, no spaces)"
    assert find(room, word) is find(room, name)


@pytest.mark.parametrize(("room", "name"), REGISTERED)
def test_the_persian_help_lists_every_persian_word(room: RoomKind, name: str) -> None:
    key, values = HELP[room]
    word = catalogue().translations["fa"][word_key(name)]
    assert word in t("fa", key, **values), f"the Persian {key!r} does not list {word!r} ({name})"


@pytest.mark.parametrize("room", ROOMS)
def test_no_word_names_two_commands(room: RoomKind) -> None:
    words = translated_words(room)  # raises on a clash

    assert sorted(set(words.values())) == names(room)


def test_a_persian_command_reaches_its_handler_under_its_name() -> None:
    command = parse_command("!زمان‌بندی +۲h متن", require_bang=True)
    assert command is not None
    found = resolve(RoomKind.BACKSTAGE, command)

    assert found is not None
    spec, named = found
    assert spec is find(RoomKind.BACKSTAGE, "schedule")
    assert (named.name, named.args, named.rest) == ("schedule", ("+2h", "متن"), "+۲h متن")


def test_words_of_other_rooms_are_not_commands_here() -> None:
    assert find(RoomKind.MANAGEMENT, "آمار") is None  # !stats is a backstage command
    assert find(RoomKind.MANAGEMENT, "نه‌فرمان") is None
