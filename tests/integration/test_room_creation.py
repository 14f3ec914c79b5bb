"""A room Kanal creates exists once, even when the homeserver's answer to `createRoom` is lost.

Kanal talks to the real Synapse through a proxy that forwards every request but, the first time it
sees a `createRoom` body, lets Synapse make the room and then closes the connection instead of
answering. Kanal retries; the room must not be made twice.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from tests.support import Env, create_channel, free_port, reconfigured

pytestmark = pytest.mark.integration


class AnswerLosingProxy:
    """Forwards to the homeserver; drops the answer to the first `createRoom` of each body."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.seen: set[bytes] = set()
        self.dropped = 0
        self.session: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        assert self.session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type")}
        async with self.session.request(
            request.method, f"{self.upstream}{request.rel_url}", data=body, headers=headers
        ) as response:
            answer = await response.read()
            status, content_type = response.status, response.content_type
        if request.path.endswith("/createRoom") and body not in self.seen:
            self.seen.add(body)
            self.dropped += 1
            assert request.transport is not None
            request.transport.close()  # the room exists now; Kanal never hears so
        return web.Response(status=status, body=answer, content_type=content_type)


@pytest.fixture
async def losing_proxy(env: Env) -> AsyncIterator[AnswerLosingProxy]:
    proxy = AnswerLosingProxy(env.homeserver)
    proxy.session = aiohttp.ClientSession()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()

    def through_proxy(config: dict[str, Any]) -> None:
        config["homeserver"]["url"] = f"http://127.0.0.1:{port}"

    try:
        async with reconfigured(env, through_proxy):
            yield proxy
    finally:
        await proxy.session.close()
        await runner.cleanup()


async def bot_rooms(env: Env) -> set[str]:
    """The rooms the bot is in, asked of Synapse directly (as the application service)."""
    token = yaml.safe_load(env.kanal.config_path.read_text())["appservice"]["as_token"]
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{env.homeserver}/_matrix/client/v3/joined_rooms",
            params={"user_id": env.bot},
            headers={"Authorization": f"Bearer {token}"},
        ) as response,
    ):
        assert response.status == 200, await response.text()
        return set((await response.json())["joined_rooms"])


async def test_a_channel_whose_create_room_answers_are_lost_gets_one_room_of_each_kind(
    env: Env, losing_proxy: AnswerLosingProxy
) -> None:
    owner = await env.user("owner")
    before = await bot_rooms(env)

    channel = await create_channel(env, owner, env.handle("lost"))

    assert losing_proxy.dropped == 2  # the public room's and the backstage room's first answers
    # The owner's chat with the bot, and exactly one public and one backstage room.
    assert await bot_rooms(env) - before == {channel.management, channel.broadcast, channel.backstage}
    # The backstage room is an ordinary private room: no marker alias left, none shown as its address.
    assert await owner.state(channel.backstage, "m.room.canonical_alias") in ({}, {"alias": None})
    async with aiohttp.ClientSession() as session:
        token = yaml.safe_load(env.kanal.config_path.read_text())["appservice"]["as_token"]
        async with session.get(
            f"{env.homeserver}/_matrix/client/v3/rooms/{channel.backstage}/aliases",
            params={"user_id": env.bot},
            headers={"Authorization": f"Bearer {token}"},
        ) as response:
            assert (await response.json()).get("aliases") == []
    # …and it works: a post is published once.
    await owner.text(channel.backstage, "after the lost answers")
    await owner.wait_for(channel.broadcast, lambda e: e["content"].get("body") == "after the lost answers")


async def test_metrics_show_the_rows_kept_in_the_pruned_tables(env: Env) -> None:
    owner = await env.user("owner")
    await owner.open_management_room()  # an event recorded and handled at least
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{env.kanal.port}/metrics") as response,
    ):
        text = await response.text()
    rows = {m[0]: float(m[1]) for m in re.findall(r'^kanal_table_rows\{table="(\w+)"\} (\S+)$', text, re.M)}
    assert rows.keys() == {"inbound_events", "outbox"}
    assert rows["inbound_events"] >= 1 and rows["outbox"] >= 1
    assert re.search(r'^kanal_pruned_rows_total\{table="outbox"\} \S+$', text, re.M), text
