"""Two `kanal run` processes on one PostgreSQL behave as one service (and survive losing one)."""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import shutil
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import nio
import pytest
import yaml
from aiohttp import web

from bridge.ops.initfiles import write_init_files
from bridge.ops.synapse import LocalSynapse
from tests.support import Env, KanalProcess, create_channel, free_port

SERVER = os.environ.get("KANAL_TEST_POSTGRES", "")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not SERVER, reason="several processes need PostgreSQL: set KANAL_TEST_POSTGRES (CI does)"
    ),
]
DOMAIN = "localhost"


class RoundRobinProxy:
    """What a load balancer does: each request to the next backend; a dead backend is skipped."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self.cycle = itertools.cycle(range(len(backends)))
        self.served: Counter[int] = Counter()
        self.session: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        assert self.session is not None
        for _ in range(len(self.backends)):
            port = self.backends[next(self.cycle)]
            try:
                async with self.session.request(
                    request.method,
                    f"http://127.0.0.1:{port}{request.rel_url}",
                    data=body,
                    headers={
                        k: v
                        for k, v in request.headers.items()
                        if k.lower() in ("authorization", "content-type")
                    },
                ) as response:
                    self.served[port] += 1
                    return web.Response(
                        status=response.status, body=await response.read(), content_type=response.content_type
                    )
            except aiohttp.ClientConnectionError:
                continue
        return web.Response(status=502)


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(SERVER.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


Pair = tuple[Env, KanalProcess, KanalProcess, RoundRobinProxy]


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    name = f"kanal_pair_{secrets.token_hex(4)}"
    await _admin(f'CREATE DATABASE "{name}"')
    database = SERVER.replace("postgresql+asyncpg://", "postgresql://").rsplit("/", 1)[0] + f"/{name}"
    port_a, port_b, proxy_port, synapse_port = free_port(), free_port(), free_port(), free_port()
    config_a, registration = write_init_files(
        tmp_path / "kanal",
        domain=DOMAIN,
        homeserver_url=f"http://127.0.0.1:{synapse_port}",
        listen=f"127.0.0.1:{port_a}",
        as_url=f"http://127.0.0.1:{proxy_port}",
        database_url=database,
    )
    config_b = config_a.with_name("config-b.yaml")
    data = yaml.safe_load(config_a.read_text())
    data["appservice"]["listen"] = f"127.0.0.1:{port_b}"
    config_b.write_text(yaml.safe_dump(data))
    shutil.copymode(config_a, config_b)

    proxy = RoundRobinProxy([port_a, port_b])
    proxy.session = aiohttp.ClientSession()
    app = web.Application(client_max_size=32 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", proxy_port).start()

    synapse = LocalSynapse(
        tmp_path / "synapse",
        server_name=DOMAIN,
        port=synapse_port,
        app_service_config_files=[registration],
        relaxed_rate_limits=True,
    )
    a = KanalProcess(config_a, port_a, tmp_path / "kanal-a.log")
    b = KanalProcess(config_b, port_b, tmp_path / "kanal-b.log")
    env = Env(synapse, a, DOMAIN, f"@kanal:{DOMAIN}", "kanal_", tmp_path)
    try:
        await synapse.start()
        await a.start()
        await b.start()
        yield env, a, b, proxy
    finally:
        for client in env.users:
            await client.close()
        await a.stop()
        await b.stop()
        await synapse.stop()
        await runner.cleanup()
        await proxy.session.close()
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _relayed(events: list[dict[str, Any]], ghost: str, prefix: str) -> list[str]:
    return [
        e["content"]["body"]
        for e in events
        if e.get("sender") == ghost
        and e["type"] == "m.room.message"
        and e["content"].get("body", "").startswith(prefix)
    ]


async def test_two_processes_one_service_survive_losing_one(pair: Pair) -> None:
    env, a, b, proxy = pair
    alice = await env.user("alice")
    channel = await create_channel(env, alice, env.handle("pair"), "Pair Desk")
    ghost = f"@kanal_{channel.handle}:{env.domain}"

    bodies = [f"pair-post {i:03d}" for i in range(300)]
    for body in bodies[:150]:
        await alice.text(channel.backstage, body)
    assert proxy.served[a.port] > 0 and proxy.served[b.port] > 0, proxy.served  # both took transactions
    b.kill()  # mid-burst, without warning
    for body in bodies[150:]:
        await alice.text(channel.backstage, body)

    deadline = time.monotonic() + 120
    relayed: list[str] = []
    while time.monotonic() < deadline:
        relayed = _relayed(await alice.all_messages(channel.broadcast), ghost, "pair-post ")
        if len(relayed) >= len(bodies):
            break
        await asyncio.sleep(1)
    await asyncio.sleep(2)
    relayed = _relayed(await alice.all_messages(channel.broadcast), ghost, "pair-post ")
    assert [b for b, n in Counter(relayed).items() if n > 1] == []
    assert relayed == bodies


async def test_the_same_transaction_delivered_to_both_processes_is_handled_once(pair: Pair) -> None:
    env, a, b, _proxy = pair
    alice = await env.user("alice")
    channel = await create_channel(env, alice, env.handle("twice"), "Twice Desk")
    hs_token = yaml.safe_load(a.config_path.read_text())["appservice"]["hs_token"]
    event = {
        "event_id": f"$synthetic-{secrets.token_hex(8)}",
        "room_id": channel.backstage,
        "sender": alice.user_id,
        "type": "m.room.message",
        "origin_server_ts": int(time.time() * 1000),
        "content": {"msgtype": "m.text", "body": "delivered twice, published once"},
    }
    txn = f"synthetic-{secrets.token_hex(4)}"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {hs_token}"}) as http:

        async def deliver(port: int) -> int:
            async with http.put(
                f"http://127.0.0.1:{port}/_matrix/app/v1/transactions/{txn}", json={"events": [event]}
            ) as response:
                return response.status

        assert list(await asyncio.gather(deliver(a.port), deliver(b.port))) == [200, 200]
    ghost = f"@kanal_{channel.handle}:{env.domain}"
    await alice.wait_for(
        channel.broadcast, lambda e: e["content"].get("body") == "delivered twice, published once"
    )
    await asyncio.sleep(2)
    copies = _relayed(await alice.all_messages(channel.broadcast), ghost, "delivered twice")
    assert copies == ["delivered twice, published once"]
    response = await alice.client.room_messages(channel.broadcast, limit=5)
    assert isinstance(response, nio.RoomMessagesResponse)
