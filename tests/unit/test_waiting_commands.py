"""What a new chat with the bot held before the bot joined it (`bridge.catchup.waiting_before_join`),
read from a scripted `/messages` (newest first, as the homeserver pages backwards)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from appservice.ids import RoomID
from bridge.catchup import PAGE_SIZE, waiting_before_join
from bridge.runtime.config import parse
from bridge.runtime.context import Context

ROOM = RoomID("!chat:x")
BOT = "@kanal:x"
USER = "@dana:x"
_ids = itertools.count()


def message(body: str, sender: str = USER, event_type: str = "m.room.message") -> dict[str, Any]:
    return {
        "event_id": f"$e{next(_ids)}",
        "room_id": ROOM,
        "sender": sender,
        "type": event_type,
        "content": {"msgtype": "m.text", "body": body},
    }


def bot(membership: str) -> dict[str, Any]:
    return {
        "event_id": f"$m{next(_ids)}",
        "room_id": ROOM,
        "sender": BOT if membership == "join" else USER,
        "type": "m.room.member",
        "state_key": BOT,
        "content": {"membership": membership},
    }


class Timeline:
    """A homeserver's `/messages?dir=b`: `newest_first`, a page at a time."""

    def __init__(self, newest_first: list[dict[str, Any]]) -> None:
        self.events = newest_first
        self.pages = 0

    async def request(self, method: str, path: str, *, query: dict[str, str], user_id: str) -> dict[str, Any]:
        assert (method, path, user_id) == ("GET", "/_matrix/client/v3/rooms/%21chat%3Ax/messages", BOT)
        assert query["dir"] == "b"
        start = int(query.get("from", "0"))
        end = start + int(query["limit"])
        self.pages += 1
        page: dict[str, Any] = {"chunk": self.events[start:end]}
        if end < len(self.events):
            page["end"] = str(end)
        return page


def context(tmp_path: Path, timeline: Timeline) -> Context:
    config = parse(
        {
            "homeserver": {"url": "http://127.0.0.1:9", "domain": "x"},
            "appservice": {"as_token": "a" * 20, "hs_token": "b" * 20},
        },
        tmp_path / "config.yaml",
    )
    return Context(config, timeline, None, None)  # type: ignore[arg-type]


def bodies(events: list[Any]) -> list[str]:
    return [e.content["body"] for e in events]


async def test_what_was_written_between_the_invite_and_the_join(tmp_path: Path) -> None:
    timeline = Timeline(
        [
            message("written after the join: delivered as usual"),
            bot("join"),
            message("a ghost", sender="@kanal_news:x"),
            message("ciphertext", event_type="m.room.encrypted"),
            message("create news First"),
            message("an image", event_type="m.sticker"),
            bot("invite"),
            message("before the bot was asked in"),
        ]
    )
    waiting = await waiting_before_join(context(tmp_path, timeline), ROOM)
    assert bodies(waiting) == ["create news First", "ciphertext"]
    assert [e.type for e in waiting] == ["m.room.message", "m.room.encrypted"]


async def test_a_later_change_of_the_bot_s_profile_is_not_its_join(tmp_path: Path) -> None:
    timeline = Timeline(
        [bot("join"), message("after the join"), bot("join"), message("help"), bot("invite")]
    )
    assert bodies(await waiting_before_join(context(tmp_path, timeline), ROOM)) == ["help"]


async def test_nothing_waits_in_a_chat_the_bot_joined_at_once(tmp_path: Path) -> None:
    timeline = Timeline([message("hello"), bot("join"), bot("invite"), message("old")])
    assert await waiting_before_join(context(tmp_path, timeline), ROOM) == []


async def test_the_reading_back_is_bounded(tmp_path: Path) -> None:
    # A flood before the join: only the newest pages are read, and still only what preceded the join.
    flood = [message(f"m{n}") for n in range(PAGE_SIZE * 5)]
    timeline = Timeline([bot("join"), *flood, bot("invite")])
    waiting = await waiting_before_join(context(tmp_path, timeline), ROOM)
    assert timeline.pages == 2
    assert bodies(waiting) == [f"m{n}" for n in reversed(range(PAGE_SIZE * 2 - 1))]
