"""`!reactions on|off|only …` as an owner and a subscriber see it in a Matrix client (matrix-nio)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import nio
import pytest

from tests.support import Env, User, create_channel

pytestmark = pytest.mark.integration

# The allow list is enforced after the fact; "promptly" means well within this.
REDACTED_WITHIN_S = 10.0


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, timeout: float = REDACTED_WITHIN_S
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout} s")


async def fetch(user: User, room_id: str, event_id: str) -> dict[str, Any]:
    response = await user.client.room_get_event(room_id, event_id)
    assert isinstance(response, nio.RoomGetEventResponse), response
    source: dict[str, Any] = response.event.source
    return source


def annotation(event_id: str, key: str) -> dict[str, Any]:
    return {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": key}}


async def reaction_level(user: User, room_id: str) -> int:
    levels = await user.state(room_id, "m.room.power_levels")
    level: int = levels["events"]["m.reaction"]
    return level


async def test_an_allow_list_removes_other_reactions_and_off_closes_them(env: Env) -> None:
    alice, bob = await env.user("alice"), await env.user("bob")
    channel = await create_channel(env, alice, env.handle(), "Reacted")
    bs, room = channel.backstage, channel.broadcast

    answer = await alice.ask(bs, "!reactions only 👍 🔥", "only with")
    assert "👍 🔥" in answer and "best-effort" in answer
    await alice.text(bs, "react to this")
    assert await bob.join(f"#{channel.handle}:{env.domain}") == room
    post = await bob.wait_for(room, lambda e: e.get("content", {}).get("body") == "react to this")

    thumbs = await bob.send(room, annotation(post["event_id"], "👍"), "m.reaction")
    angry = await bob.send(room, annotation(post["event_id"], "😡"), "m.reaction")

    async def angry_is_gone() -> bool:
        return not (await fetch(bob, room, angry)).get("content")

    await eventually(angry_is_gone, "the redaction of 😡")
    removed = await fetch(bob, room, angry)
    assert removed["unsigned"]["redacted_because"]["sender"] == env.bot
    assert "👍 🔥" in removed["unsigned"]["redacted_because"]["content"].get("reason", "")
    # Both reactions were screened in order in the same room's queue: 👍 would have gone first.
    kept = await fetch(bob, room, thumbs)
    assert kept["content"]["m.relates_to"]["key"] == "👍"
    assert "redacted_because" not in kept.get("unsigned", {})
    assert not [
        e for e in await bob.messages(room) if e.get("sender") == env.bot and e["type"] == "m.room.message"
    ]

    assert "are off" in await alice.ask(bs, "!reactions off", "are off")

    async def closed() -> bool:
        return await reaction_level(bob, room) == 50

    await eventually(closed, "m.reaction at power 50")
    refused = await bob.client.room_send(room, "m.reaction", annotation(post["event_id"], "🔥"))
    assert isinstance(refused, nio.RoomSendError) and refused.status_code == "M_FORBIDDEN", refused
    assert refused.transport_response is not None and refused.transport_response.status == 403

    assert "are on" in await alice.ask(bs, "!reactions on", "are on")

    async def open_again() -> bool:
        return await reaction_level(bob, room) == 0

    await eventually(open_again, "m.reaction at power 0")
    await bob.send(room, annotation(post["event_id"], "🔥"), "m.reaction")
