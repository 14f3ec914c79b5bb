"""Drafts in backstage on a real Synapse: kept, marked, then published or scheduled from a reply."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import Env, User, create_channel

pytestmark = pytest.mark.integration


def replying(target: str, body: str) -> dict[str, Any]:
    return {"msgtype": "m.text", "body": body, "m.relates_to": {"m.in_reply_to": {"event_id": target}}}


async def ask_replying(user: User, room: str, target: str, body: str, expect: str) -> str:
    before = {e["event_id"] for e in await user.messages(room)}
    await user.send(room, replying(target, body))
    event = await user.wait_for(
        room,
        lambda e: (
            e["event_id"] not in before
            and e.get("sender") == user.env.bot
            and expect in e.get("content", {}).get("body", "")
        ),
    )
    return str(event["content"]["body"])


async def test_drafts_are_kept_until_published_or_scheduled(env: Env) -> None:
    alice, reader = await env.user("alice"), await env.user("reader")
    channel = await create_channel(env, alice, env.handle("draft"), "Draft Desk")
    await reader.join(channel.broadcast)
    bs, ghost = channel.backstage, f"@kanal_{channel.handle}:{env.domain}"

    async def published() -> list[str]:
        return [
            e["content"].get("body", "")
            for e in await reader.messages(channel.broadcast)
            if e["sender"] == ghost
        ]

    await alice.ask(bs, "!draft on", "Draft mode is on")
    first = await alice.text(bs, "first draft")
    second = await alice.text(bs, "second draft")
    for kept in (first, second):

        def is_mark(e: dict[str, Any], kept: str = kept) -> bool:
            return bool(
                e["type"] == "m.reaction"
                and e["sender"] == env.bot
                and e["content"]["m.relates_to"]
                == {"rel_type": "m.annotation", "event_id": kept, "key": "📝"}
            )

        mark = await alice.wait_for(bs, is_mark)
        assert mark
    await alice.ask(bs, "!draft off", "Draft mode is off")
    await alice.text(bs, "live post")
    await reader.wait_for(channel.broadcast, lambda e: e["content"].get("body") == "live post")
    assert "first draft" not in await published() and "second draft" not in await published()

    # Publish one now, schedule the other; neither twice.
    await ask_replying(alice, bs, first, "!publish", "Published in")
    await reader.wait_for(channel.broadcast, lambda e: e["content"].get("body") == "first draft")
    await ask_replying(alice, bs, first, "!publish", "already published")
    await ask_replying(alice, bs, second, "!schedule +2s", "Scheduled")
    await reader.wait_for(channel.broadcast, lambda e: e["content"].get("body") == "second draft", timeout=40)

    # `!draft <text>` keeps one text; scheduling it publishes the text, not the command.
    quick = await alice.text(bs, "!draft quick one")
    await ask_replying(alice, bs, quick, "!schedule +2s", "Scheduled")
    await reader.wait_for(channel.broadcast, lambda e: e["content"].get("body") == "quick one", timeout=40)
    await alice.ask(bs, "!publish", "as a reply")

    bodies = await published()
    assert (
        bodies.count("first draft") == 1
        and bodies.count("second draft") == 1
        and bodies.count("quick one") == 1
    )
    assert not [b for b in bodies if b.startswith("!")]
