"""End-to-end encryption in the private rooms Kanal's bot belongs to (issue 17).

The bot takes part in Olm/Megolm as a device of its own. The cryptography is matrix-nio's, on
vodozemac (the Matrix Foundation's Rust implementation): nothing here encrypts or decrypts by hand.

How the keys reach us. Synapse refuses `/sync` to an application service's users, so the bot cannot
sync as a device; the keys come by the homeserver's transactions instead, through Synapse's
application-service extensions (experimental in 1.163, turned on in homeserver.yaml):
MSC2409 (`msc2409_to_device_messages_enabled`; the registration's `receive_ephemeral`) brings the
to-device messages for the bot's device (room keys, sent with Olm), and MSC3202
(`msc3202_transaction_extensions`; the registration's `org.matrix.msc3202: true`) its one-time-key
counts and the device-list changes of the people it shares rooms with. The
device itself: the bot logs in once per start with the Application Service API's
`m.login.application_service` and always the same device id, so its identity keys stay the same
(Synapse 1.163 has no MSC4190 device management for application services).

nio keeps the keys, uploads device and one-time keys (it has no fallback keys), tracks the members' devices and
claims their keys. Room events still arrive by transactions, as before: the processor hands an
`m.room.encrypted` one to `Crypto.decrypt`, and the outbox encrypts what the bot sends into a room
the homeserver marks encrypted (`Crypto.encrypt`).

Only rooms the bot is a member of can ever be decrypted (Megolm keys are sent only to members'
devices), and only the rooms Kanal serves are handed to it (bridge/service.py). No key is exported.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

log = logging.getLogger(__name__)

# One device for the bot, kept across restarts: its identity keys live in the store under this id.
DEVICE_ID = "KANALBOT"
DEVICE_NAME = "Kanal"
# How long a message waits for its room key (sent by the client just before the message itself).
KEY_WAIT_S = 10.0
# The transaction fields of MSC2409 and MSC3202 (unstable names, as Synapse 1.163 sends them).
TO_DEVICE = "de.sorunome.msc2409.to_device"
OTK_COUNTS = "org.matrix.msc3202.device_one_time_keys_count"
DEVICE_LISTS = "org.matrix.msc3202.device_lists"


class CryptoError(Exception):
    """Encryption could not be done now (the outbox retries the entry)."""


class Undecryptable(Exception):
    """A message whose room key the bot does not have (withheld, or sent to other devices only)."""


class Crypto:
    """The bot's encrypting device: one per process that handles events and sends (see README)."""

    def __init__(self, homeserver_url: str, bot_user_id: str, as_token: str, store_dir: Path) -> None:
        self.homeserver_url = homeserver_url.rstrip("/")
        self.user_id = bot_user_id
        self._as_token = as_token
        self.store_dir = store_dir
        self._client: Any = None
        self._keys = asyncio.Condition()
        self._lock = asyncio.Lock()
        self._background: set[asyncio.Task[Any]] = set()
        self.decrypted = 0
        self.encrypted = 0

    async def start(self) -> None:
        import nio  # only a process with encryption on loads the library

        self.store_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.store_dir, 0o700)
        token = await self._login()
        config = nio.AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False)
        client = nio.AsyncClient(
            self.homeserver_url, self.user_id, device_id=DEVICE_ID, store_path=str(self.store_dir), config=config
        )
        client.restore_login(self.user_id, DEVICE_ID, token)  # opens (or creates) the store
        for path in self.store_dir.iterdir():
            os.chmod(path, 0o600)
        self._client = client
        await self._upload_keys()
        log.info("End-to-end encryption: the bot's device is %s", DEVICE_ID)

    async def _upload_keys(self) -> None:
        import nio

        if self._client.should_upload_keys:
            response = await self._client.keys_upload()
            if isinstance(response, nio.KeysUploadError):
                raise CryptoError(f"cannot upload the bot's device keys: {response.message}")

    async def _login(self) -> str:
        """`m.login.application_service` with the registration's token: a device token for the bot."""
        localpart = self.user_id[1:].split(":", 1)[0]
        body = {
            "type": "m.login.application_service",
            "identifier": {"type": "m.id.user", "user": localpart},
            "device_id": DEVICE_ID,
            "initial_device_display_name": DEVICE_NAME,
        }
        headers = {"Authorization": f"Bearer {self._as_token}"}
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{self.homeserver_url}/_matrix/client/v3/login", json=body, headers=headers) as response,
        ):
            data = await response.json()
            if response.status != 200 or not isinstance(data.get("access_token"), str):
                raise CryptoError(
                    f"the homeserver refused the bot's device login ({response.status} {data.get('errcode')})"
                )
            token: str = data["access_token"]
            return token

    async def receive(self, body: Mapping[str, Any]) -> None:
        """A transaction's to-device messages, key counts and device-list changes (MSC2409, MSC3202)."""
        import nio

        client = self._client
        olm = client.olm
        for raw in body.get(TO_DEVICE) or []:
            if not isinstance(raw, dict) or raw.get("to_user_id") != self.user_id:
                continue
            if raw.get("to_device_id") not in (DEVICE_ID, "*"):
                continue
            event = nio.ToDeviceEvent.parse_event(raw)
            if event is None or isinstance(event, nio.BadEvent | nio.UnknownBadEvent):
                continue
            try:
                olm.handle_to_device_event(event)
            except Exception:
                log.exception("End-to-end encryption: a to-device message could not be handled")
        counts = ((body.get(OTK_COUNTS) or {}).get(self.user_id) or {}).get(DEVICE_ID)
        if isinstance(counts, dict) and isinstance(counts.get("signed_curve25519"), int):
            olm.uploaded_key_count = counts["signed_curve25519"]
        changed = (body.get(DEVICE_LISTS) or {}).get("changed") or []
        left = (body.get(DEVICE_LISTS) or {}).get("left") or []
        users = {u for u in (*changed, *left) if isinstance(u, str)}
        if users:
            affected = {u for room in client.rooms.values() if room.encrypted for u in room.users if u in users}
            olm.add_changed_users(affected)
            for room_id, room in client.rooms.items():
                if room.encrypted and affected & set(room.users):
                    self._rotate(room_id)  # a new device gets the next room key
        if client.should_upload_keys or client.outgoing_to_device_messages:
            self._later(self._after_receive())
        async with self._keys:
            self._keys.notify_all()

    async def _after_receive(self) -> None:
        async with self._lock:
            await self._upload_keys()
            await self._client.send_to_device_messages()

    def _later(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def members_changed(self, room_id: str) -> None:
        """Someone joined or left: the members are read again and the next message gets a new room key
        (one who left cannot read it; one who joined can)."""
        client = self._client
        room = client.rooms.get(room_id) if client is not None else None
        if room is not None:
            room.members_synced = False
            self._rotate(room_id)

    def _rotate(self, room_id: str) -> None:
        self._client.olm.outbound_group_sessions.pop(room_id, None)

    async def _next_keys(self, timeout: float) -> None:
        async with self._keys:
            try:
                await asyncio.wait_for(self._keys.wait(), timeout)
            except TimeoutError:
                pass

    async def stop(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._client is not None:
            await self._client.close()

    async def decrypt(self, raw: dict[str, Any]) -> dict[str, Any]:
        """The decrypted event (type, content, and the encrypted event's id, sender, room, time).

        Waits a little for a room key still on its way; raises `Undecryptable` when none comes."""
        import nio

        event = nio.MegolmEvent.from_dict(raw)
        if not isinstance(event, nio.MegolmEvent):
            raise Undecryptable(f"not a Megolm event ({raw.get('content', {}).get('algorithm')})")
        deadline = time.monotonic() + KEY_WAIT_S
        while True:
            try:
                decrypted = self._client.decrypt_event(event)
            except nio.EncryptionError as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Undecryptable(str(exc)) from None
                await self._next_keys(left)
                continue
            if isinstance(decrypted, nio.BadEvent | nio.UnknownBadEvent):
                raise Undecryptable("the decrypted payload is not a valid event")
            source: dict[str, Any] = dict(decrypted.source)
            source["room_id"] = event.room_id
            self.decrypted += 1
            return source

    async def encrypted_room(self, room_id: str) -> bool:
        """Whether the room is end-to-end encrypted (its `m.room.encryption` state), remembered."""
        import nio

        client = self._client
        room = client.rooms.get(room_id)
        if room is not None:
            return bool(room.encrypted)
        response = await client.room_get_state_event(room_id, "m.room.encryption")
        encrypted = isinstance(response, nio.RoomGetStateEventResponse)
        if not encrypted and not (
            isinstance(response, nio.RoomGetStateEventError) and response.status_code == "M_NOT_FOUND"
        ):
            raise CryptoError(f"cannot tell whether {room_id} is encrypted: {getattr(response, 'message', response)}")
        if room_id not in client.rooms:
            client.rooms[room_id] = nio.MatrixRoom(room_id, self.user_id, encrypted=encrypted)
            if encrypted:
                client.encrypted_rooms.add(room_id)
        return encrypted

    async def _read_members(self, room: Any) -> None:
        """The room's joined and invited members, as the homeserver has them now: the room key goes to
        their devices (an invited person can read what was said once they join, as in any client)."""
        client = self._client
        path = f"/_matrix/client/v3/rooms/{quote(room.room_id, safe='')}/members"
        query = [("not_membership", "leave"), ("not_membership", "ban")]
        headers = {"Authorization": f"Bearer {client.access_token}"}
        async with (
            aiohttp.ClientSession() as http,
            http.get(self.homeserver_url + path, params=query, headers=headers) as response,
        ):
            data = await response.json()
            if response.status != 200 or not isinstance(data.get("chunk"), list):
                raise CryptoError(f"cannot read the members of {room.room_id} ({response.status})")
        members = {
            event["state_key"]: event["content"].get("membership")
            for event in data["chunk"]
            if isinstance(event, dict) and isinstance(event.get("state_key"), str)
            and isinstance(event.get("content"), dict)
        }
        for user_id in list(room.users):
            if user_id not in members:
                room.remove_member(user_id)
        for user_id, membership in members.items():
            if membership in ("join", "invite") and user_id not in room.users:
                room.add_member(user_id, None, None, invited=membership == "invite")
        room.members_synced = True
        client.olm.update_tracked_users(room)

    def became_encrypted(self, room_id: str) -> None:
        """An `m.room.encryption` event: the room is encrypted from now on."""
        client = self._client
        if client is not None and room_id in client.rooms:
            client.rooms[room_id].encrypted = True
            client.encrypted_rooms.add(room_id)

    async def encrypt(self, room_id: str, event_type: str, content: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Megolm-encrypt for the room's members' devices, sharing a new session with them when needed."""
        import nio

        client = self._client
        room = client.rooms.get(room_id)
        if room is None or not room.encrypted:
            raise CryptoError(f"{room_id} is not known as an encrypted room")
        async with self._lock:
            if not room.members_synced:
                await self._read_members(room)
            if client.should_query_keys:
                await client.keys_query()
            if client.olm.should_share_group_session(room_id):
                # Every device of every member gets the key (as any client does by default); the
                # homeserver's members list decides who they are.
                shared = await client.share_group_session(room_id, ignore_unverified_devices=True)
                if isinstance(shared, nio.ShareGroupSessionError):
                    raise CryptoError(f"cannot share the room key in {room_id}: {shared.message}")
            new_type, new_content = client.encrypt(room_id, event_type, content)
        encrypted = dict(new_content)
        if "m.relates_to" in content:  # relations stay readable to the homeserver (edits, replies, threads)
            encrypted["m.relates_to"] = content["m.relates_to"]
        self.encrypted += 1
        return new_type, encrypted


def store_dir_for(state_dir: Path) -> Path:
    return state_dir / "e2ee"
