"""/join's rate limits behind a reverse proxy (bridge/web/forwarded.py, web.trusted_proxies).

test (127.0.0.1, as a proxy on this machine) ──HTTP, X-Forwarded-For──▶ make_web_app (the app
`kanal run` serves) ──SQL──▶ SQLite (migrated, no links: every link is unknown, which is enough: the
rate limits come first)

Readers that a trusted proxy names get a bucket each; a peer that is not trusted is the reader,
whatever its X-Forwarded-For says.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from appservice.client import HomeserverClient
from bridge.runtime.config import parse
from bridge.runtime.context import Context
from bridge.runtime.outbox import OutboxWorker
from bridge.store.db import create_engine, migrate, sessionmaker
from bridge.web import make_web_app
from bridge.web.join import POSTS_PER_ADDRESS, VIEWS_PER_ADDRESS

LINK = "/join/kanal_inv_" + "A" * 24  # a token as links have them, of no link
FORM = {"user_id": "@reader:example.org", "form": "0.0"}

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[list[str] | None], Coroutine[Any, Any, Client]]


@pytest.fixture
async def make_client(aiohttp_client: AiohttpClient, tmp_path: Path) -> AsyncIterator[MakeClient]:
    engine = create_engine(f"sqlite:///{tmp_path / 'kanal.db'}")
    await migrate(engine)
    sessions = sessionmaker(engine)
    homeserver = HomeserverClient("http://127.0.0.1:1", "a" * 32)

    async def make(trusted: list[str] | None) -> Client:
        web_section: dict[str, Any] = {"public_url": "https://matrix.example.org"}
        if trusted is not None:
            web_section["trusted_proxies"] = trusted
        config = parse(
            {"homeserver": {"url": "http://127.0.0.1:1", "domain": "example.org"},
             "appservice": {"as_token": "a" * 32, "hs_token": "h" * 32}, "web": web_section},
            tmp_path / "config.yaml",
        )  # fmt: skip
        ctx = Context(config, homeserver, sessions, OutboxWorker(sessions, homeserver))
        app = await asyncio.to_thread(make_web_app, ctx)  # reads its templates from disk
        return await aiohttp_client(app)

    yield make
    await homeserver.close()
    await engine.dispose()


async def _post(client: Client, forwarded_for: str) -> int:
    async with client.post(LINK, data=FORM, headers={"X-Forwarded-For": forwarded_for}) as response:
        return response.status


async def _view(client: Client, forwarded_for: str) -> int:
    async with client.get(LINK, headers={"X-Forwarded-For": forwarded_for}) as response:
        return response.status


async def test_readers_behind_a_trusted_proxy_are_limited_each_on_their_own(make_client: MakeClient) -> None:
    client = await make_client(None)  # the default: loopback, where the test's requests come from
    burst = int(POSTS_PER_ADDRESS.burst)
    assert [await _post(client, "203.0.113.1") for _ in range(burst)] == [404] * burst  # unknown link
    assert await _post(client, "203.0.113.1") == 429
    # Another reader through the same proxy is not slowed down by the first ...
    assert await _post(client, "203.0.113.2") == 404
    # ... nor can the first escape its bucket by writing another address in front of the proxy's.
    assert await _post(client, "203.0.113.2, 203.0.113.1") == 429

    views = int(VIEWS_PER_ADDRESS.burst)
    assert {await _view(client, "198.51.100.1") for _ in range(views)} == {404}
    assert await _view(client, "198.51.100.1") == 429
    assert await _view(client, "198.51.100.2") == 404


async def test_a_peer_that_is_not_trusted_is_the_reader_whatever_its_header_says(
    make_client: MakeClient,
) -> None:
    client = await make_client(["192.0.2.0/24"])  # some other proxy; 127.0.0.1 is not trusted
    burst = int(POSTS_PER_ADDRESS.burst)
    statuses = [await _post(client, f"203.0.113.{n}") for n in range(1, burst + 2)]
    assert statuses == [404] * burst + [429], "a forged X-Forwarded-For gave a fresh bucket"

    client = await make_client([])  # nobody trusted: the header is never read
    statuses = [await _post(client, f"203.0.113.{n}") for n in range(1, burst + 2)]
    assert statuses == [404] * burst + [429]
