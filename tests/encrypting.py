"""A person on an encrypting Matrix client (matrix-nio with its e2e extra, vodozemac underneath, its
own store in a folder): for the end-to-end encryption tests and bench.e2ee_latency."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import nio

from tests.support import DEFAULT_TIMEOUT, Env


class Encrypting:
    """A person on an encrypting client: it syncs in the background (room keys arrive as to-device
    messages), shares its keys with every device of a room, and decrypts what it reads."""

    def __init__(self, client: nio.AsyncClient, env: Env, password: str) -> None:
        self.client = client
        self.env = env
        self.password = password
        self._sync: asyncio.Task[None] | None = None

    @classmethod
    async def new(cls, env: Env, store: Path) -> Encrypting:
        localpart = f"e2e{secrets.token_hex(4)}"
        password = secrets.token_urlsafe(12)
        user_id = await env.synapse.register_user(localpart, password)
        return await cls.login(env, store, user_id, password)

    @classmethod
    async def login(cls, env: Env, store: Path, user_id: str, password: str) -> Encrypting:
        await asyncio.to_thread(store.mkdir, parents=True, exist_ok=True)
        config = nio.AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
        client = nio.AsyncClient(env.homeserver, user_id, store_path=str(store), config=config)
        response = await client.login(password)
        assert isinstance(response, nio.LoginResponse), response
        env.users.append(client)
        person = cls(client, env, password)
        if client.should_upload_keys:
            await client.keys_upload()
        await client.sync(timeout=0, full_state=True)
        person._sync = asyncio.create_task(client.sync_forever(timeout=1000, loop_sleep_time=50))
        return person

    @property
    def user_id(self) -> str:
        return str(self.client.user_id)

    async def close(self) -> None:
        if self._sync is not None:
            self._sync.cancel()
            await asyncio.gather(self._sync, return_exceptions=True)

    async def until(self, check: Callable[[], bool], what: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, f"{self.user_id}: no {what} within {timeout} s"
            await asyncio.sleep(0.1)

    async def open_chat(self) -> str:
        """A direct chat with the bot, as Element opens one (the homeserver encrypts it)."""
        response = await self.client.room_create(is_direct=True, invite=[self.env.bot])
        assert isinstance(response, nio.RoomCreateResponse), response
        room_id = str(response.room_id)
        await self.until(lambda: room_id in self.client.rooms, "room in sync")
        return room_id

    async def open_greeted_chat(self, timeout: float = 30) -> str:
        """A direct chat with the bot, once its (encrypted) greeting has been read here."""
        room_id = await self.open_chat()
        await self.wait_reply(room_id, "create", set(), timeout=timeout)
        return room_id

    async def send(self, room_id: str, body: str) -> str:
        await self.until(lambda: room_id in self.client.rooms, "room in sync")
        response = await self.client.room_send(
            room_id, "m.room.message", {"msgtype": "m.text", "body": body}, ignore_unverified_devices=True
        )
        assert isinstance(response, nio.RoomSendResponse), response
        return str(response.event_id)

    async def raw(self, room_id: str) -> list[dict[str, Any]]:
        """The room's latest events as the homeserver holds them, oldest first."""
        headers = {"Authorization": f"Bearer {self.client.access_token}"}
        url = f"{self.env.homeserver}/_matrix/client/v3/rooms/{room_id}/messages"
        async with (
            aiohttp.ClientSession() as http,
            http.get(url, params={"dir": "b", "limit": "50"}, headers=headers) as response,
        ):
            data = await response.json()
        return list(reversed(data["chunk"]))

    def decrypt(self, raw: dict[str, Any]) -> dict[str, Any] | None:
        """The decrypted form of an `m.room.encrypted` event, or None while its key has not arrived."""
        event = nio.MegolmEvent.from_dict(raw)
        try:
            decrypted = self.client.decrypt_event(event)
        except nio.EncryptionError:
            return None
        source: dict[str, Any] = decrypted.source
        return source

    async def wait_reply(
        self, room_id: str, expect: str, after: set[str], timeout: float = DEFAULT_TIMEOUT
    ) -> dict[str, Any]:
        """The bot's next message containing `expect`: encrypted on the wire, decrypted here."""
        deadline = time.monotonic() + timeout
        seen: list[Any] = []
        while time.monotonic() < deadline:
            seen = []
            for event in await self.raw(room_id):
                if event["event_id"] in after or event.get("sender") != self.env.bot:
                    continue
                if event["type"] != "m.room.encrypted":
                    seen.append(("plain", event["type"], event.get("content", {}).get("body")))
                    continue
                clear = self.decrypt(event)
                seen.append(("encrypted", clear and clear["content"].get("body")))
                if clear is not None and expect in clear["content"].get("body", ""):
                    return clear
            await asyncio.sleep(0.2)
        raise AssertionError(f"no encrypted reply with {expect!r} in {room_id} within {timeout} s: {seen}")

    async def ask(self, room_id: str, body: str, expect: str, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        before = {event["event_id"] for event in await self.raw(room_id)}
        await self.send(room_id, body)
        return await self.wait_reply(room_id, expect, before, timeout)


async def encrypted_channel(env: Env, owner: Encrypting) -> tuple[str, str, str, str]:
    """(handle, chat, backstage, public room): made and joined as a person would, all but the
    public room encrypted by the homeserver."""
    chat = await owner.open_chat()
    encryption = await owner.client.room_get_state_event(chat, "m.room.encryption")
    assert isinstance(encryption, nio.RoomGetStateEventResponse), "the homeserver did not encrypt the chat"
    # The greeting is encrypted, and this client reads it.
    await owner.wait_reply(chat, "create", set(), timeout=30)
    handle = f"sec{secrets.token_hex(3)}"
    await owner.ask(chat, f"create {handle} Secret Garden", "is ready", timeout=40)

    def invite() -> str | None:
        for room_id, room in owner.client.invited_rooms.items():
            if f"(#{handle})" in (room.name or ""):
                return str(room_id)
        return None

    await owner.until(lambda: invite() is not None, "backstage invite")
    backstage = invite()
    assert backstage is not None
    joined = await owner.client.join(backstage)
    assert isinstance(joined, nio.JoinResponse), joined
    await owner.until(
        lambda: backstage in owner.client.rooms and owner.client.rooms[backstage].encrypted, "encrypted backstage"
    )
    resolved = await owner.client.room_resolve_alias(f"#{handle}:{env.domain}")
    assert isinstance(resolved, nio.RoomResolveAliasResponse), resolved
    channel = str(resolved.room_id)
    public = await owner.client.room_get_state_event(channel, "m.room.encryption")
    assert not isinstance(public, nio.RoomGetStateEventResponse), "the public channel must stay unencrypted"
    return handle, chat, backstage, channel
