"""Fixtures for functional tests of the protocol layer against real loopback aiohttp servers.

test ──HTTP──▶ AppServiceServer.make_app() ──▶ RecordingHandler   (inbound: homeserver → us)
HomeserverClient / Intent ──HTTP──▶ FakeHomeserver                  (outbound: us → homeserver)
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pytest_aiohttp import AiohttpClient, AiohttpServer

from appservice import registration as registration_module
from appservice.ids import RoomAlias, UserID
from appservice.registration import Registration
from appservice.server import AppServiceServer, Transaction

DOMAIN = "example.org"
BOT = f"@kanal:{DOMAIN}"
GHOST = f"@kanal_news:{DOMAIN}"
ALICE = f"@alice:{DOMAIN}"
ROOM = f"!room:{DOMAIN}"
API = "/_matrix/app/v1"


def make_event(n: int, *, sender: str = ALICE, room_id: str = ROOM, **extra: Any) -> dict[str, Any]:
    """A well-formed client-format event as Synapse pushes it."""
    event: dict[str, Any] = {
        "event_id": f"$event{n}",
        "room_id": room_id,
        "sender": sender,
        "type": "m.room.message",
        "content": {"msgtype": "m.text", "body": f"message {n}"},
        "origin_server_ts": 1_700_000_000_000 + n,
        "unsigned": {"age": 1234},
    }
    event.update(extra)
    return event


class RecordingHandler:
    """A `TransactionHandler` that records what it is given; it can be told to fail or to wait."""

    def __init__(self) -> None:
        self.transactions: list[Transaction] = []
        self.calls = 0
        self.failures_left = 0
        self.entered = asyncio.Event()
        self.gate: asyncio.Event | None = None
        self.users: set[str] = set()
        self.aliases: set[str] = set()
        self.user_queries: list[str] = []
        self.alias_queries: list[str] = []
        self.failed_deliveries: list[str] = []

    async def delivery_failed(self, why: str) -> None:
        self.failed_deliveries.append(why)

    async def handle_transaction(self, txn: Transaction) -> None:
        self.calls += 1
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failures_left > 0:
            self.failures_left -= 1
            raise RuntimeError("handler failed on purpose")
        self.transactions.append(txn)

    async def query_user(self, user_id: UserID) -> bool:
        self.user_queries.append(user_id)
        return user_id in self.users

    async def query_alias(self, alias: RoomAlias) -> bool:
        self.alias_queries.append(alias)
        return alias in self.aliases


@pytest.fixture
def registration(tmp_path: Path) -> Registration:
    """A generated registration, saved and loaded back the way `kanal run` reads it."""
    generated = registration_module.generate(
        as_id="kanal",
        url="http://127.0.0.1:29333",
        domain=DOMAIN,
        sender_localpart="kanal",
        user_prefix="kanal_",
    )
    path = tmp_path / "registration.yaml"
    registration_module.save(generated, path)
    loaded = registration_module.load(path)
    assert loaded == generated
    return loaded


@pytest.fixture
def handler() -> RecordingHandler:
    return RecordingHandler()


@pytest.fixture
def appservice(registration: Registration, handler: RecordingHandler) -> AppServiceServer:
    return AppServiceServer(registration, handler)


@pytest.fixture
async def client(
    aiohttp_client: AiohttpClient, appservice: AppServiceServer, handler: RecordingHandler
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    yield await aiohttp_client(appservice.make_app())
    if handler.gate is not None:
        handler.gate.set()  # never leave a handler blocked when the server shuts down


@pytest.fixture
def auth(registration: Registration) -> dict[str, str]:
    return {"Authorization": f"Bearer {registration.hs_token}"}


# -- raw HTTP, for what an HTTP client library will not send ------------------------------------------


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


async def read_response(reader: asyncio.StreamReader) -> RawResponse:
    """Read one HTTP/1.1 response with a Content-Length body."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return RawResponse(int(status_line.split(" ")[1]), headers, body)


async def raw_request(port: int, request: bytes, timeout: float = 5.0) -> RawResponse:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(read_response(reader), timeout)
    finally:
        writer.close()


# -- a fake homeserver for the outbound client ---------------------------------------------------------


@dataclass
class Seen:
    """One request the fake homeserver received."""

    method: str
    path: str
    segments: list[str]
    """The raw path split on `/`, each segment unquoted: how a server sees path parameters."""
    raw_path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    at: float


@dataclass
class FakeHomeserver:
    """A real aiohttp server on loopback answering from per-route scripts; it records every request.

    `on(method, path, *answers)` queues answers for one decoded path; the last one repeats.
    Unscripted routes answer 404 M_UNRECOGNIZED. An answer whose body is `str` is sent as text/html.
    """

    server: TestServer | None = None
    seen: list[Seen] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    stall_paths: set[str] = field(default_factory=set)
    _scripts: dict[tuple[str, str], deque[tuple[int, Any]]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    def on(self, method: str, path: str, *answers: tuple[int, Any]) -> None:
        self._scripts[(method, path)] = deque(answers)

    def requests_to(self, method: str, path: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method and s.path == path]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body: Any = None
        raw = await request.read()
        if raw:
            body = await request.json()
        self.seen.append(
            Seen(
                method=request.method,
                path=request.path,
                segments=[unquote(s) for s in request.raw_path.split("?", 1)[0].split("/")],
                raw_path=request.raw_path,
                query=dict(request.query),
                headers=dict(request.headers),
                body=body,
                at=time.monotonic(),
            )
        )
        if request.path in self.stall_paths:
            await self.release.wait()
        answers = self._scripts.get((request.method, request.path))
        if not answers:
            return web.json_response({"errcode": "M_UNRECOGNIZED", "error": "not scripted"}, status=404)
        status, payload = answers.popleft() if len(answers) > 1 else answers[0]
        if isinstance(payload, str):
            return web.Response(status=status, text=payload, content_type="text/html")
        return web.json_response(payload, status=status)


@pytest.fixture
async def homeserver(aiohttp_server: AiohttpServer) -> AsyncIterator[FakeHomeserver]:
    fake = FakeHomeserver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    fake.server = await aiohttp_server(app)
    yield fake
    fake.release.set()


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    import appservice.client

    monkeypatch.setattr(appservice.client, "BACKOFF_BASE_S", 0.001)
    yield
