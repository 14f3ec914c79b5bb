from __future__ import annotations

import pytest

from tests.support import Env, create_channel

pytestmark = pytest.mark.integration


async def test_create_and_relay(env: Env) -> None:
    alice = await env.user("alice")
    handle = env.handle()
    channel = await create_channel(env, alice, handle, "Daily News")
    await alice.text(channel.backstage, "hello world")
    event = await alice.wait_for(
        channel.broadcast, lambda e: e.get("content", {}).get("body") == "hello world"
    )
    assert event["sender"] == f"@kanal_{handle}:{env.domain}"
