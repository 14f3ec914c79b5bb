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

nio tracks the members' devices, claims their keys, uploads the bot's device and one-time keys; the
keys live in Kanal's database, sealed (e2ee_store.py: nio's store interface over rows read once at
start, written after each operation and before a transaction is answered). nio has no fallback keys:
the bot's is made by vodozemac's account here, uploaded at each start and replaced when a transaction
reports it used. The bot's device is signed by its own cross-signing identity (e2ee_identity.py). Room
events still arrive by transactions, as before: the processor hands an
`m.room.encrypted` one to `Crypto.decrypt`, and the outbox encrypts what the bot sends into a room
the homeserver marks encrypted (`Crypto.encrypt`).

Only rooms the bot is a member of can ever be decrypted (Megolm keys are sent only to members'
devices), and only the rooms Kanal serves are handed to it (bridge/service.py). No key is exported.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bridge.runtime.e2ee_identity import USAGES, SigningKey, has_signature, key_object, upload_body
from bridge.runtime.e2ee_store import (
    DatabaseStore,
    Seal,
    StoreKeyError,
    import_file_store,
    load_or_create_key,
    read_rows,
    remove_file_store,
    write_rows,
)

log = logging.getLogger(__name__)

# One device for the bot, kept across restarts: its identity keys live in the store under this id.
DEVICE_ID = "KANALBOT"
DEVICE_NAME = "Kanal"
# How long a message waits for its room key (sent by the client just before the message itself),
# counted from when it was sent; a sender whose message stayed unreadable gets no wait for a while.
KEY_WAIT_S = 10.0
SENDER_QUIET_S = 30.0
MAX_REMEMBERED_SENDERS = 10_000
# The transaction fields of MSC2409 and MSC3202 (unstable names, as Synapse 1.163 sends them).
TO_DEVICE = "de.sorunome.msc2409.to_device"
OTK_COUNTS = "org.matrix.msc3202.device_one_time_keys_count"
DEVICE_LISTS = "org.matrix.msc3202.device_lists"
UNUSED_FALLBACK = "org.matrix.msc3202.device_unused_fallback_key_types"
# A used fallback key is replaced at most this often (vodozemac keeps the previous one as well, so a
# client that claimed it just before still reaches the bot).
FALLBACK_MIN_INTERVAL_S = 5.0


class CryptoError(Exception):
    """Encryption could not be done now (the outbox retries the entry)."""


class Undecryptable(Exception):
    """A message whose room key the bot does not have (withheld, or sent to other devices only)."""


class Crypto:
    """The bot's encrypting device: one per process that handles events and sends (see README)."""

    def __init__(
        self,
        homeserver_url: str,
        bot_user_id: str,
        as_token: str,
        sessions: async_sessionmaker[AsyncSession],
        store_key: Path,
        old_store_dir: Path | None = None,
    ) -> None:
        self.homeserver_url = homeserver_url.rstrip("/")
        self.user_id = bot_user_id
        self._as_token = as_token
        self._sessions = sessions
        self.store_key = store_key
        self.old_store_dir = old_store_dir  # matrix-nio's SQLite store of earlier versions, moved in
        self._client: Any = None
        self._store: DatabaseStore | None = None
        self._seal: Seal | None = None
        self._flushing = asyncio.Lock()
        self._fallback_pending = False
        self._fallback_at = 0.0
        self._gave_up: dict[str, float] = {}  # sender → when a message of theirs last stayed unreadable
        self.cross_signed = False
        self._keys = asyncio.Condition()
        self._lock = asyncio.Lock()
        self._background: set[asyncio.Task[Any]] = set()
        self.decrypted = 0
        self.encrypted = 0

    async def start(self) -> None:
        import nio  # only a process with encryption on loads the library

        try:
            key = await asyncio.to_thread(load_or_create_key, self.store_key)
            self._seal = Seal(key)
            rows = await read_rows(self._sessions, self._seal)
        except StoreKeyError as exc:
            raise CryptoError(str(exc)) from None
        imported = False
        if not rows and self.old_store_dir is not None:
            store = DatabaseStore(self.user_id, DEVICE_ID, rows, self._seal.pickle_passphrase)
            imported = await asyncio.to_thread(import_file_store, self.old_store_dir, self.user_id, DEVICE_ID, store)
            if imported:
                await write_rows(self._sessions, self._seal, store.take_changes())
        token = await self._login()
        config = nio.AsyncClientConfig(
            encryption_enabled=True,
            store_sync_tokens=False,
            store=DatabaseStore.factory(rows),
            pickle_key=self._seal.pickle_passphrase,
        )
        # store_path: nio asks for one, and DatabaseStore ignores it (the rows are in the database).
        client = nio.AsyncClient(self.homeserver_url, self.user_id, device_id=DEVICE_ID, store_path="-", config=config)
        client.restore_login(self.user_id, DEVICE_ID, token)  # builds the store and the Olm account
        self._client = client
        self._store = client.store
        await self.flush()  # a new account is written before anything uses it
        if imported and self.old_store_dir is not None:
            await asyncio.to_thread(remove_file_store, self.old_store_dir)
        await self._upload_keys()
        await self._upload_fallback_key()
        await self.flush()
        try:
            await self._cross_sign()
        except CryptoError as exc:
            log.warning(
                "End-to-end encryption: the bot's device is not cross-signed (%s); clients show it as "
                "unverified until a start succeeds",
                exc,
            )
        log.info(
            "End-to-end encryption: the bot's device is %s%s",
            DEVICE_ID,
            ", signed by the bot's cross-signing identity" if self.cross_signed else "",
        )

    async def flush(self) -> None:
        """Write what changed in the keys since the last flush (one transaction), in order."""
        if self._store is None or self._seal is None:
            return
        async with self._flushing:
            changes = self._store.take_changes()
            if not changes:
                return
            try:
                await write_rows(self._sessions, self._seal, changes)
            except BaseException:
                # Not written: kept for the next flush (a later change of the same row wins). The caller
                # fails, and a transaction's failure makes the homeserver send it again.
                self._store.keep(changes)
                raise

    async def _upload_keys(self) -> None:
        import nio

        if self._client.should_upload_keys:
            response = await self._client.keys_upload()
            if isinstance(response, nio.KeysUploadError):
                raise CryptoError(f"cannot upload the bot's device keys: {response.message}")

    async def _upload_fallback_key(self) -> None:
        """A new fallback key: what a client gets when the bot's one-time keys have run out (Synapse
        hands the bot's out faster than a transaction reports their count). At each start, and when the
        homeserver reports the last one used. nio has no fallback keys: vodozemac's account makes it."""
        olm = self._client.olm
        account = olm.account._account  # the vodozemac.Account under nio's OlmAccount
        account.generate_fallback_key()
        keys = {}
        for key_id, key in account.fallback_key.items():
            body: dict[str, Any] = {"key": key.to_base64(), "fallback": True}
            body["signatures"] = {self.user_id: {f"ed25519:{DEVICE_ID}": olm.sign_json(body)}}
            keys[f"signed_curve25519:{key_id}"] = body
        await self._call("POST", "/_matrix/client/v3/keys/upload", {"fallback_keys": keys})
        account.mark_keys_as_published()  # every one-time key is published already (_upload_keys)
        olm.save_account()
        self._fallback_at = time.monotonic()

    async def _cross_sign(self) -> None:
        """The bot's cross-signing identity (made once, kept sealed in the store) on the homeserver,
        and the bot's device signed by it: clients show one consistent identity for the bot."""
        assert self._store is not None
        private = self._store.signing_keys()
        if set(private) != set(USAGES):
            private = {usage: SigningKey.generate().private for usage in USAGES}
            for usage, value in private.items():
                self._store.save_signing_key(usage, value)
            await self.flush()
        keys = {usage: SigningKey(value) for usage, value in private.items()}
        master = keys["master"]
        found = await self._call("POST", "/_matrix/client/v3/keys/query", {"device_keys": {self.user_id: []}})
        on_server = (found.get("master_keys") or {}).get(self.user_id) or {}
        if master.key_id not in (on_server.get("keys") or {}):
            # As the application service: Synapse lets it set (or replace) the keys without a password.
            await self._call(
                "POST",
                "/_matrix/client/v3/keys/device_signing/upload",
                upload_body(self.user_id, keys),
                as_service=True,
                params=[("user_id", self.user_id)],
            )
        device = ((found.get("device_keys") or {}).get(self.user_id) or {}).get(DEVICE_ID)
        if not isinstance(device, dict):
            raise CryptoError("the homeserver does not list the bot's device keys")
        if not has_signature(device, self.user_id, keys["self_signing"]):
            # The device signed by the self-signing key; the master key by the device, as clients do.
            master_object = key_object(self.user_id, "master", master)
            master_object["signatures"] = {
                self.user_id: {f"ed25519:{DEVICE_ID}": self._client.olm.sign_json(master_object)}
            }
            answer = await self._call(
                "POST",
                "/_matrix/client/v3/keys/signatures/upload",
                {
                    self.user_id: {
                        DEVICE_ID: keys["self_signing"].signed(self.user_id, device),
                        master.public: master_object,
                    }
                },
            )
            if answer.get("failures"):
                raise CryptoError(f"the homeserver refused the signatures: {answer['failures']}")
        self.cross_signed = True

    async def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        as_service: bool = False,
        params: Sequence[tuple[str, str]] = (),
        what: str = "",
    ) -> dict[str, Any]:
        """A client-server request as the bot's device (or, `as_service`, with the registration's
        token); `what` names it in the error (else its method and path)."""
        token = self._as_token if as_service else self._client.access_token
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, self.homeserver_url + path, json=body, params=params, headers=headers) as response,
        ):
            try:
                data = await response.json(content_type=None)
            except ValueError:
                data = None
            if response.status != 200 or not isinstance(data, dict):
                errcode = data.get("errcode") if isinstance(data, dict) else None
                raise CryptoError(f"{what or f'{method} {path}'}: {response.status} {errcode or ''}".strip())
            return data

    async def _login(self) -> str:
        """`m.login.application_service` with the registration's token: a device token for the bot."""
        localpart = self.user_id[1:].split(":", 1)[0]
        body = {
            "type": "m.login.application_service",
            "identifier": {"type": "m.id.user", "user": localpart},
            "device_id": DEVICE_ID,
            "initial_device_display_name": DEVICE_NAME,
        }
        what = "the homeserver refused the bot's device login"
        data = await self._call("POST", "/_matrix/client/v3/login", body, as_service=True, what=what)
        if not isinstance(data.get("access_token"), str):
            raise CryptoError(f"{what}: no access token in its answer")
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
        if isinstance(counts, dict):
            # Synapse leaves an algorithm out when none of its keys is left: none means 0.
            count = counts.get("signed_curve25519", 0)
            if isinstance(count, int):
                olm.uploaded_key_count = count
        changed = (body.get(DEVICE_LISTS) or {}).get("changed") or []
        left = (body.get(DEVICE_LISTS) or {}).get("left") or []
        users = {u for u in (*changed, *left) if isinstance(u, str)}
        if users:
            affected = {u for room in client.rooms.values() if room.encrypted for u in room.users if u in users}
            olm.add_changed_users(affected)
            for room_id, room in client.rooms.items():
                if room.encrypted and affected & set(room.users):
                    self._rotate(room_id)  # a new device gets the next room key
        unused = ((body.get(UNUSED_FALLBACK) or {}).get(self.user_id) or {}).get(DEVICE_ID)
        if isinstance(unused, list) and "signed_curve25519" not in unused and not self._fallback_pending:
            self._fallback_pending = True
            self._later(self._replace_fallback_key())
        if client.should_upload_keys or client.outgoing_to_device_messages:
            self._later(self._after_receive())
        # Stored before the transaction is answered: a room key the homeserver delivered is never lost.
        await self.flush()
        async with self._keys:
            self._keys.notify_all()

    async def _after_receive(self) -> None:
        async with self._lock:
            await self._upload_keys()
            await self._client.send_to_device_messages()
            await self.flush()

    async def _replace_fallback_key(self) -> None:
        """The homeserver handed out the fallback key: upload the next (not sooner than
        FALLBACK_MIN_INTERVAL_S after the last, since a transaction may report what it was before)."""
        try:
            wait = FALLBACK_MIN_INTERVAL_S - (time.monotonic() - self._fallback_at)
            if wait > 0:
                await asyncio.sleep(wait)
            async with self._lock:
                await self._upload_fallback_key()
                await self.flush()
        except CryptoError as exc:
            log.warning("End-to-end encryption: a new fallback key could not be uploaded (%s)", exc)
        finally:
            self._fallback_pending = False

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
        deadline = self._key_deadline(event.sender, raw.get("origin_server_ts"))
        while True:
            try:
                decrypted = self._client.decrypt_event(event)
            except nio.EncryptionError as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._gave_up[event.sender] = time.monotonic()
                    raise Undecryptable(str(exc)) from None
                await self._next_keys(left)
                continue
            if isinstance(decrypted, nio.BadEvent | nio.UnknownBadEvent):
                raise Undecryptable("the decrypted payload is not a valid event")
            source: dict[str, Any] = dict(decrypted.source)
            source["room_id"] = event.room_id
            self.decrypted += 1
            await self.flush()
            return source

    def _key_deadline(self, sender: str, sent_ms: object) -> float:
        """Until when a message's room key is waited for (monotonic clock). Every event waits behind
        this one, so the wait is bounded: KEY_WAIT_S from when the message was sent (a burst of
        undecryptable messages costs one wait, not one each), and none for a sender whose last
        message never became readable within the last SENDER_QUIET_S (no one stalls Kanal at will)."""
        now = time.monotonic()
        if now - self._gave_up.get(sender, -SENDER_QUIET_S) < SENDER_QUIET_S:
            return now
        if len(self._gave_up) > MAX_REMEMBERED_SENDERS:
            self._gave_up = {s: t for s, t in self._gave_up.items() if now - t < SENDER_QUIET_S}
        wait = KEY_WAIT_S
        if isinstance(sent_ms, int) and not isinstance(sent_ms, bool):
            wait = min(wait, sent_ms / 1000 + KEY_WAIT_S - time.time())
        return now + max(wait, 0.0)

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
        what = f"cannot read the members of {room.room_id}"
        data = await self._call("GET", path, params=query, what=what)
        if not isinstance(data.get("chunk"), list):
            raise CryptoError(f"{what}: no member list in the answer")
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
            try:
                new_type, new_content = client.encrypt(room_id, event_type, content)
            except nio.LocalProtocolError as exc:
                # The members changed while the key was being shared (someone joined meanwhile): the
                # outbox tries again, and the next try reads them and shares a new key.
                raise CryptoError(f"cannot encrypt in {room_id} yet: {exc}") from None
            await self.flush()  # the sessions made to share the room key, and our own copy of it
        encrypted = dict(new_content)
        if "m.relates_to" in content:  # relations stay readable to the homeserver (edits, replies, threads)
            encrypted["m.relates_to"] = content["m.relates_to"]
        self.encrypted += 1
        return new_type, encrypted


def old_store_dir_for(state_dir: Path) -> Path:
    """Where earlier versions kept the keys (matrix-nio's SQLite store); moved into the database."""
    return state_dir / "e2ee"
