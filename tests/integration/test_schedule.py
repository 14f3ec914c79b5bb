"""Scheduled posts as an admin uses them: `!schedule`, `!scheduled`, `!unschedule`, across a restart."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime

import pytest

from bridge.text.digits import ascii_digits
from tests.support import Env, User, create_channel

pytestmark = pytest.mark.integration

# Far enough ahead for the commands below and a clean stop; Kanal is down when the post falls due.
DUE_IN_S = 12
# A scheduler pass every 5 s, plus a lease the stopped process may have left for 15 s.
PUBLISH_TIMEOUT_S = 30.0


def _number(reply: str) -> str:
    match = re.search(r"(?:post|پست) (\d+)", reply)
    assert match is not None, reply
    return ascii_digits(match.group(1))  # a Persian reply writes it in Persian digits


def _due(reply: str) -> datetime:
    match = re.search(r"(\d{4}-\d\d-\d\d \d\d:\d\d(?::\d\d)?) \(UTC\)", reply)
    assert match is not None, reply
    return datetime.fromisoformat(match.group(1)).replace(tzinfo=UTC)


async def _posts(user: User, room: str, ghost: str) -> list[str]:
    events = await user.messages(room)
    return [
        e["content"].get("body") for e in events if e["sender"] == ghost and e["type"] == "m.room.message"
    ]


async def test_a_scheduled_post_is_published_once_after_a_restart(env: Env) -> None:
    alice = await env.user("alice")
    channel = await create_channel(env, alice, env.handle("sched"), "Schedule Desk")
    bs = channel.backstage
    ghost = f"@kanal_{channel.handle}:{env.domain}"

    kept = await alice.ask(bs, f"!schedule +{DUE_IN_S}s hello later", "Scheduled")
    assert "#" + channel.handle in kept
    due = _due(kept)
    assert 0 < (due - datetime.now(UTC)).total_seconds() <= DUE_IN_S
    # Persian in, Persian out; this one is cancelled and must never appear.
    dropped = await alice.ask(bs, f"!schedule +{DUE_IN_S}s خبر لغوشده", "زمان‌بندی شد")
    listed = await alice.ask(bs, "!scheduled", "Waiting to be published")
    assert f"{_number(kept)} — " in listed and "hello later" in listed
    assert f"{_number(dropped)} — " in listed and "خبر لغوشده" in listed
    await alice.ask(bs, f"!unschedule {_number(dropped)}", f"Cancelled: post {_number(dropped)}")
    await alice.ask(bs, f"!unschedule {_number(dropped)}", "is waiting to be published")
    await alice.ask(bs, "!schedule +1x nope", "not a time I can read")
    await alice.ask(bs, "!schedule 2001-01-01 09:00 too late", "is in the past")

    assert await env.kanal.stop() == 0
    assert "hello later" not in await _posts(alice, channel.broadcast, ghost), (
        "published before it was due: the steps above took too long"
    )
    await asyncio.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()) + 1)
    await env.kanal.start()

    post = await alice.wait_for(
        channel.broadcast,
        lambda e: e.get("sender") == ghost and e["content"].get("body") == "hello later",
        timeout=PUBLISH_TIMEOUT_S,
    )
    assert post["content"]["msgtype"] == "m.text"
    await asyncio.sleep(6)  # a second publication would be sent by now
    bodies = await _posts(alice, channel.broadcast, ghost)
    assert bodies.count("hello later") == 1
    assert "خبر لغوشده" not in bodies
    await alice.ask(bs, "!scheduled", "Nothing is waiting to be published")
