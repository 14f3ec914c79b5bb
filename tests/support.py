"""Test helpers shared by the integration tests: ports, a Kanal subprocess, matrix-nio users."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import nio
import pytest
import yaml

from bridge.ops.synapse import LocalSynapse

DEFAULT_TIMEOUT = 20.0


def need(*tools: str) -> None:
    """Skip the calling test when a tool is missing here; fail it in CI (`CI` set), where scripts/test
    installs every one of them from Debian's packages, so a missing one is a broken install, not a
    reason to check less."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{', '.join(missing)} missing: scripts/test installs them (apt-get install …)")
        pytest.skip(f"{', '.join(missing)} not installed")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def drop_mid_body(port: int, head: bytes, part: bytes) -> None:
    """Send a request's head and `part` of its body, then close; return once the server closed too."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + part)
        await writer.drain()
        await asyncio.sleep(0.05)  # the server's handler is reading the body now
        writer.write_eof()
        await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


class KanalProcess:
    """`kanal run -c config.yaml` as a subprocess, so a test can SIGTERM or SIGKILL it like an operator."""

    def __init__(self, config_path: Path, port: int, log_path: Path) -> None:
        self.config_path = config_path
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self, timeout: float = 30) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "run", "-c", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.config_path.parent,
        )
        log.close()
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"kanal exited with {self.process.returncode}:\n{self.tail()}")
                try:
                    async with http.get(f"http://127.0.0.1:{self.port}/health") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"kanal did not start within {timeout} s:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self, timeout: float = 30) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@dataclass
class Env:
    synapse: LocalSynapse
    kanal: KanalProcess
    domain: str
    bot: str
    ghost_prefix: str
    workdir: Path
    users: list[nio.AsyncClient] = field(default_factory=list)

    @property
    def homeserver(self) -> str:
        return self.synapse.base_url

    async def user(self, prefix: str = "user") -> User:
        localpart = f"{prefix}{secrets.token_hex(4)}"
        password = secrets.token_urlsafe(12)
        user_id = await self.synapse.register_user(localpart, password)
        client = nio.AsyncClient(self.homeserver, user_id)
        response = await client.login(password)
        assert isinstance(response, nio.LoginResponse), response
        self.users.append(client)
        return User(client, self)

    def handle(self, prefix: str = "chan") -> str:
        return f"{prefix}{secrets.token_hex(4)}"

    async def run_cli(self, *args: str, expect_exit: int = 0) -> str:
        """`kanal <args> -c <the running Kanal's config>`; its stdout (checks the exit code)."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge.cli",
            *args,
            "-c",
            str(self.kanal.config_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await process.communicate()
        assert process.returncode == expect_exit, (
            f"kanal {' '.join(args)} exited {process.returncode}: {err.decode()}"
        )
        return out.decode()


class User:
    """A matrix-nio client plus the waits a test needs."""

    def __init__(self, client: nio.AsyncClient, env: Env) -> None:
        self.client = client
        self.env = env
        self.joined: set[str] = set()

    @property
    def user_id(self) -> str:
        return str(self.client.user_id)

    async def messages(self, room_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The room's latest events, oldest first, as raw dicts."""
        response = await self.client.room_messages(room_id, limit=limit)
        assert isinstance(response, nio.RoomMessagesResponse), response
        return [event.source for event in reversed(response.chunk)]

    async def all_messages(self, room_id: str, page: int = 500) -> list[dict[str, Any]]:
        """Every event of the room's timeline, oldest first (paginating back to the start)."""
        events: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            response = await self.client.room_messages(room_id, start=token, limit=page)
            assert isinstance(response, nio.RoomMessagesResponse), response
            events.extend(event.source for event in response.chunk)
            if not response.chunk or not response.end or response.end == token:
                break
            token = response.end
        events.reverse()
        return events

    async def wait_for(
        self,
        room_id: str,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float = DEFAULT_TIMEOUT,
        limit: int = 100,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            seen = await self.messages(room_id, limit)
            for event in seen:
                if predicate(event):
                    return event
            await asyncio.sleep(0.15)
        bodies = [(e.get("sender"), e.get("type"), e.get("content", {}).get("body")) for e in seen[-10:]]
        raise AssertionError(f"no matching event in {room_id} within {timeout} s; last events: {bodies}")

    async def send(self, room_id: str, content: dict[str, Any], event_type: str = "m.room.message") -> str:
        response = await self.client.room_send(room_id, event_type, content)
        assert isinstance(response, nio.RoomSendResponse), response
        return str(response.event_id)

    async def text(self, room_id: str, body: str) -> str:
        return await self.send(room_id, {"msgtype": "m.text", "body": body})

    async def ask(self, room_id: str, body: str, expect: str, timeout: float = DEFAULT_TIMEOUT) -> str:
        """Send a command and wait for the bot's notice containing `expect`, after the command."""
        before = {e["event_id"] for e in await self.messages(room_id)}
        await self.text(room_id, body)
        event = await self.wait_for(
            room_id,
            lambda e: (
                e["event_id"] not in before
                and e.get("sender") == self.env.bot
                and expect in e.get("content", {}).get("body", "")
            ),
            timeout,
        )
        return str(event["content"]["body"])

    async def open_management_room(self) -> str:
        response = await self.client.room_create(is_direct=True, invite=[self.env.bot])
        assert isinstance(response, nio.RoomCreateResponse), response
        room_id = str(response.room_id)
        await self.wait_for(
            room_id, lambda e: e.get("sender") == self.env.bot and e["type"] == "m.room.message"
        )
        return room_id

    async def wait_invite(
        self, predicate: Callable[[str, Any], bool], timeout: float = DEFAULT_TIMEOUT
    ) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await self.client.sync(timeout=500, full_state=True)
            for room_id, room in self.client.invited_rooms.items():
                if room_id not in self.joined and predicate(room_id, room):
                    return str(room_id)
        raise AssertionError(f"{self.user_id} got no matching invite within {timeout} s")

    async def join(self, room: str) -> str:
        response = await self.client.join(room)
        assert isinstance(response, nio.JoinResponse), response
        self.joined.add(str(response.room_id))
        return str(response.room_id)

    async def state(self, room_id: str, event_type: str, state_key: str = "") -> dict[str, Any]:
        response = await self.client.room_get_state_event(room_id, event_type, state_key)
        assert isinstance(response, nio.RoomGetStateEventResponse), response
        content: dict[str, Any] = response.content
        return content


async def create_channel(env: Env, owner: User, handle: str, title: str = "") -> Channel:
    """As a user would: management chat, `create`, wait for ready, accept the backstage invite."""
    management = await owner.open_management_room()
    await owner.ask(management, f"create {handle} {title}".strip(), "is ready", timeout=30)
    backstage = await owner.wait_invite(lambda _rid, room: f"(#{handle})" in (room.name or ""))
    await owner.join(backstage)
    resolved = await owner.client.room_resolve_alias(f"#{handle}:{env.domain}")
    assert isinstance(resolved, nio.RoomResolveAliasResponse), resolved
    return Channel(handle, str(resolved.room_id), backstage, management)


@dataclass
class Channel:
    handle: str
    broadcast: str
    backstage: str
    management: str


def reads_of(sessions: Any, table: str) -> list[str]:
    """From now on, the SELECTs that read `table` through `sessions`' engine, as the database sees them."""
    from sqlalchemy import event

    reads: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and f"FROM {table}" in statement:
            reads.append(statement)

    event.listen(sessions.kw["bind"].sync_engine, "before_cursor_execute", seen)
    return reads


def postgres_url() -> str | None:
    return os.environ.get("KANAL_TEST_POSTGRES")


@asynccontextmanager
async def reconfigured(env: Env, change: Callable[[dict[str, Any]], None]) -> AsyncIterator[None]:
    """Run Kanal with `change` applied to its config, then restore the config and restart."""
    path = env.kanal.config_path
    original = path.read_text()
    data = yaml.safe_load(original)
    change(data)
    await env.kanal.stop()
    path.write_text(yaml.safe_dump(data))
    try:
        await env.kanal.start()
        yield
    finally:
        await env.kanal.stop()
        path.write_text(original)
        await env.kanal.start()
