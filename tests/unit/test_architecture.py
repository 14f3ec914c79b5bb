"""The house rules that keep one seam for channel writes (bridge/broadcast/), read from the code.

import-linter (scripts/test) checks which package may import which; this checks what no import rule
can see: that nothing but the seam (and the shards it opens) writes to a channel's public rooms, and
that every room queue is named by `room_queue`.
"""

from __future__ import annotations

import ast
from pathlib import Path

BRIDGE = Path(__file__).resolve().parents[2] / "bridge"
SEAM = BRIDGE / "broadcast" / "seam.py"
SHARDS = BRIDGE / "broadcast" / "shards.py"
# How code names a channel's public rooms: the first one, all of them, the open one.
ROOM_NAMES = ("broadcast_room_id", ".rooms", "open_room", "shard_rooms")
# Whatever builds an outbox entry, or writes through an Intent at once.
WRITES = frozenset(
    {
        "new_entry",
        "send_entry",
        "state_entry",
        "send",
        "send_state",
        "redact",
        "invite",
        "kick",
        "ban",
        "set_directory_visibility",
        "set_alias",
        "delete_alias",
    }
)


def _name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def _names_a_room(node: ast.AST) -> bool:
    text = ast.unparse(node)
    return any(name in text for name in ROOM_NAMES)


def channel_room_writes(path: Path) -> list[str]:
    """Calls in `path` that write and name a channel's public room (`….broadcast_room_id`,
    `channel.rooms`, `channel.open_room`) among their arguments, directly or through a local
    variable assigned (or looped) from it."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for function in ast.walk(tree):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        aliases = {
            target.id
            for node in ast.walk(function)
            if isinstance(node, (ast.Assign, ast.For))
            and _names_a_room(node.value if isinstance(node, ast.Assign) else node.iter)
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(target, ast.Name)
        }
        for node in ast.walk(function):
            if not isinstance(node, ast.Call) or _name(node) not in WRITES:
                continue
            arguments = [*node.args, *(k.value for k in node.keywords)]
            named = {n.id for a in arguments for n in ast.walk(a) if isinstance(n, ast.Name)}
            if any(_names_a_room(a) for a in arguments) or named & aliases:
                found.append(f"{path.name}:{node.lineno} {_name(node)}")
    return found


def test_the_detector_finds_a_write_to_a_channel_room(tmp_path: Path) -> None:
    # Guards the test below against passing because the detector sees nothing.
    assert channel_room_writes(SEAM), "the seam itself writes to channel rooms"
    assert channel_room_writes(SHARDS), "opening a shard writes to channel rooms"
    sample = tmp_path / "sample.py"
    sample.write_text(
        "def f(channel, enqueue, new_entry, bot):\n"
        "    room = channel.broadcast_room_id\n"
        "    enqueue(new_entry(room, 'state', 'bot', {}))\n"
        "    for shard in channel.rooms:\n"
        "        bot.send_state(shard, 'm.room.name', {})\n"
        "    bot.invite(channel.open_room, '@someone:example.org')\n"
    )
    assert len(channel_room_writes(sample)) == 3


def test_only_the_seam_writes_to_a_channel_s_public_room() -> None:
    writers = {
        path.relative_to(BRIDGE.parent).as_posix()
        for path in BRIDGE.rglob("*.py")
        if path not in (SEAM, SHARDS) and "migrations" not in path.parts and channel_room_writes(path)
    }
    assert writers == set(), "write to channel rooms through bridge.broadcast.seam"


def test_room_queues_are_named_in_one_place() -> None:
    hand_made = [
        f"{path.relative_to(BRIDGE.parent)}:{node.lineno}"
        for path in BRIDGE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.JoinedStr)
        and node.values
        and isinstance(node.values[0], ast.Constant)
        and node.values[0].value == "room:"
    ]
    assert len(hand_made) == 1 and hand_made[0].startswith("bridge/runtime/outbox.py:"), hand_made
