"""Forwarding a channel post into another channel's backstage, as Element does it (content copied, relations
dropped): published with a "Forwarded from" header that links to the original."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import Env, create_channel

pytestmark = pytest.mark.integration


def forwarded(event: dict[str, Any]) -> dict[str, Any]:
    """What Element's ForwardDialog sends: the content without m.relates_to."""
    return {k: v for k, v in event["content"].items() if k != "m.relates_to"}


async def test_forwarded_post_is_attributed_to_its_channel(env: Env) -> None:
    alice, bob, reader = await env.user("alice"), await env.user("bob"), await env.user("reader")
    source = await create_channel(env, alice, env.handle(), "Source Desk")
    target = await create_channel(env, bob, env.handle(), "Target Desk")
    await reader.join(source.broadcast)
    await reader.join(target.broadcast)

    await alice.send(
        source.backstage,
        {
            "msgtype": "m.text",
            "body": "scoop",
            "format": "org.matrix.custom.html",
            "formatted_body": "<b>scoop</b>",
        },
    )
    original = await reader.wait_for(source.broadcast, lambda e: e["content"].get("body") == "scoop")

    await bob.send(target.backstage, forwarded(original))
    copy = await reader.wait_for(
        target.broadcast, lambda e: e["content"].get("body", "").startswith("Forwarded from Source Desk")
    )
    link = f"https://matrix.to/#/#{source.handle}:{env.domain}/{original['event_id']}?via={env.domain}"
    assert copy["content"]["body"] == f"Forwarded from Source Desk ({link})\n\nscoop"
    assert f'<a href="{link}">Source Desk</a>' in copy["content"]["formatted_body"]
    assert copy["content"]["formatted_body"].endswith("<b>scoop</b>")
    assert copy["sender"] == f"@kanal_{target.handle}:{env.domain}"

    # A copy whose words were changed still publishes what the source channel really said.
    await bob.send(
        target.backstage, {**forwarded(original), "body": "words never said", "formatted_body": "x"}
    )
    second = await reader.wait_for(
        target.broadcast,
        lambda e: (
            e["event_id"] != copy["event_id"]
            and e["content"].get("body", "").startswith("Forwarded from Source Desk")
        ),
    )
    assert second["content"]["body"].endswith("\n\nscoop")
    assert not [
        e for e in await reader.messages(target.broadcast) if "never said" in e["content"].get("body", "")
    ]

    # Once the original is deleted it is not republished by a forward.
    backstage_post = original["content"]["net.kanal.source"]
    await alice.client.room_redact(source.backstage, backstage_post)
    await reader.wait_for(
        source.broadcast, lambda e: e["event_id"] == original["event_id"] and not e["content"]
    )
    await bob.ask(target.backstage, "!signatures off", "Signatures are now off")  # forwards handled
    before = len(await reader.messages(target.broadcast))
    await bob.send(target.backstage, forwarded(original))
    await bob.wait_for(
        target.backstage,
        lambda e: e.get("sender") == env.bot and "deleted or taken down" in e["content"].get("body", ""),
    )
    assert len(await reader.messages(target.broadcast)) == before
