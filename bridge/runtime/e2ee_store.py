"""The bot's encryption keys in Kanal's database, sealed at rest (issue 17).

    crypto_store rows ──(read once at start, opened with the key file)──▶ DatabaseStore (in memory)
         ▲                                                                  │ matrix-nio calls it
         └──────────── Crypto.flush(): the changed rows, sealed, one transaction ◀──┘ synchronously

matrix-nio asks its store synchronously, in the middle of decrypting or sharing a key, so the store
answers from memory and remembers what changed; `bridge/runtime/e2ee.Crypto` writes the changes after
each operation, and before a transaction's answer: a room key the homeserver delivered is stored before
the homeserver learns it was received. One process holds the bot's device at a time (a lease), so the
memory is the truth and nothing else writes these rows.

Each row's value is JSON sealed with AES-256-GCM (the `cryptography` package) under the key file
`encryption.store_key` (32 random bytes, mode 0600, made at the first start like the audit key); its
kind and key are the associated data, so a row copied to another place does not open. The Olm and
Megolm pickles inside are encrypted by vodozemac as well, with a passphrase derived from the same
key. Without the key file the rows are useless: back it up with the database, or the bot's device
must start over (people's clients then see a new device).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import shutil
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bridge.store.keyfiles import create_once
from bridge.store.models import CryptoRecord

log = logging.getLogger(__name__)

KEY_BYTES = 32
NONCE_BYTES = 12
# Row kinds (crypto_store.kind)
ACCOUNT = "account"  # key "": the Olm account (the device's identity keys, its one-time keys)
OLM = "olm"  # key "<sender curve25519 key> <session id>": an Olm session with another device
MEGOLM = "megolm"  # key "<session id>": a room key received (an inbound Megolm session)
DEVICE = "device"  # key "<user id> <device id>": a member's device, its public keys, trust
ROOM = "room"  # key "<room id>": a room the bot knows is encrypted
KEY_REQUEST = "key_request"  # key "<request id>": a room key the bot asked for
SYNC_POSITION = "sync"  # key "": unused by Kanal (no /sync), kept for matrix-nio's interface
SIGNING = "signing"  # key "<usage>": a cross-signing private key (bridge/runtime/e2ee.py)

Rows = dict[tuple[str, str], dict[str, Any]]


class StoreKeyError(Exception):
    """The key file cannot be made or read, or does not open the rows."""


# -- the key and the seal ------------------------------------------------------------------------------


def load_or_create_key(path: Path) -> bytes:
    """The 32-byte store key in `path` (base64), made when the file does not exist yet."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        try:
            data = create_once(path, base64.b64encode(secrets.token_bytes(KEY_BYTES)) + b"\n")
        except OSError as exc:
            raise StoreKeyError(f"{path}: cannot create the encryption store key (encryption.store_key): {exc.strerror}") from None
    except OSError as exc:
        raise StoreKeyError(f"{path}: cannot read the encryption store key (encryption.store_key): {exc.strerror}") from None
    try:
        key = base64.b64decode(data.strip(), validate=True)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise StoreKeyError(f"{path}: not an encryption store key (encryption.store_key: 32 bytes, base64)")
    return key


class Seal:
    """AES-256-GCM over each row's JSON, the row's place as associated data."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        # vodozemac's pickles get a passphrase of their own, derived from the key.
        self.pickle_passphrase = base64.b64encode(hmac.digest(key, b"kanal e2ee pickle", hashlib.sha256)).decode()

    def seal(self, kind: str, key: str, value: dict[str, Any]) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, json.dumps(value).encode(), _place(kind, key))
        return base64.b64encode(nonce + sealed).decode()

    def open(self, kind: str, key: str, value: str) -> dict[str, Any]:
        try:
            raw = base64.b64decode(value, validate=True)
            opened: dict[str, Any] = json.loads(self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _place(kind, key)))
        except (ValueError, InvalidTag):
            raise StoreKeyError(
                f"the bot's encryption keys in the database ({kind} {key!r}) do not open with this key file "
                "(encryption.store_key): put back the key file these rows were sealed with (from the backup "
                "of the state directory), or, to let the bot's device start over (people's clients then see "
                "a new device), empty the table crypto_store"
            ) from None
        return opened


def _place(kind: str, key: str) -> bytes:
    return f"{kind}\x00{key}".encode()


# -- reading and writing the rows ------------------------------------------------------------------------


async def read_rows(sessions: async_sessionmaker[AsyncSession], seal: Seal) -> Rows:
    async with sessions() as session:
        records = (await session.scalars(select(CryptoRecord))).all()
    return {(r.kind, r.key): seal.open(r.kind, r.key, r.value) for r in records}


async def write_rows(
    sessions: async_sessionmaker[AsyncSession], seal: Seal, changes: dict[tuple[str, str], dict[str, Any] | None]
) -> None:
    """Upsert the changed rows and delete the removed ones (None), in one transaction."""
    async with sessions.begin() as session:
        insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
        for (kind, key), value in changes.items():
            if value is None:
                await session.execute(delete(CryptoRecord).where(CryptoRecord.kind == kind, CryptoRecord.key == key))
                continue
            sealed = seal.seal(kind, key, value)
            statement = insert(CryptoRecord).values(kind=kind, key=key, value=sealed)
            await session.execute(
                statement.on_conflict_do_update(index_elements=["kind", "key"], set_={"value": sealed})
            )


# -- matrix-nio's store, in memory -----------------------------------------------------------------------


def _time(value: datetime) -> str:
    return value.isoformat()


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)  # as nio made it (it compares them with its naive now())


class DatabaseStore:
    """matrix-nio's `MatrixStore` interface over rows held in memory (see the module's doc).

    nio builds its store as `config.store(user_id, device_id, store_path, pickle_key, store_name)`;
    `factory` binds the rows read at start to that call."""

    def __init__(self, user_id: str, device_id: str, rows: Rows, pickle_key: str) -> None:
        self.user_id = user_id
        self.device_id = device_id
        self.pickle_key = pickle_key
        self.rows = rows
        self.changes: dict[tuple[str, str], dict[str, Any] | None] = {}

    @classmethod
    def factory(cls, rows: Rows) -> Any:
        def make(user_id: str, device_id: str, _path: str, pickle_key: str, _name: str = "") -> DatabaseStore:
            return cls(user_id, device_id, rows, pickle_key)

        return make

    def take_changes(self) -> dict[tuple[str, str], dict[str, Any] | None]:
        changes, self.changes = self.changes, {}
        return changes

    def keep(self, changes: dict[tuple[str, str], dict[str, Any] | None]) -> None:
        """Changes taken but not written: back in line, behind any newer change of the same row."""
        self.changes = {**changes, **self.changes}

    def put(self, kind: str, key: str, value: dict[str, Any]) -> None:
        self.rows[(kind, key)] = value
        self.changes[(kind, key)] = value

    def drop(self, kind: str, key: str) -> None:
        self.rows.pop((kind, key), None)
        self.changes[(kind, key)] = None

    def _of(self, kind: str) -> Iterable[tuple[str, dict[str, Any]]]:
        return [(key, value) for (k, key), value in self.rows.items() if k == kind]

    # -- the account and its sessions

    def load_account(self) -> Any:
        from nio.crypto import OlmAccount

        row = self.rows.get((ACCOUNT, ""))
        if row is None:
            return None
        return OlmAccount.from_pickle(row["pickle"].encode(), self.pickle_key, row["shared"])

    def save_account(self, account: Any) -> None:
        self.put(ACCOUNT, "", {"pickle": account.pickle(self.pickle_key).decode(), "shared": account.shared})

    def load_sessions(self) -> Any:
        from nio.crypto import Session, SessionStore

        store = SessionStore()
        for _key, row in self._of(OLM):
            session = Session.from_pickle(
                row["pickle"].encode(), _parse_time(row["created"]), self.pickle_key, _parse_time(row["used"])
            )
            store.add(row["sender_key"], session)
        return store

    def save_session(self, curve_key: str, session: Any) -> None:
        self.put(
            OLM,
            f"{curve_key} {session.id}",
            {
                "sender_key": curve_key,
                "pickle": session.pickle(self.pickle_key).decode(),
                "created": _time(session.creation_time),
                "used": _time(session.use_time),
            },
        )

    def load_inbound_group_sessions(self) -> Any:
        from nio.crypto import GroupSessionStore, InboundGroupSession

        store = GroupSessionStore()
        for _key, row in self._of(MEGOLM):
            store.add(
                InboundGroupSession.from_pickle(
                    row["pickle"].encode(),
                    row["signing_key"],
                    row["sender_key"],
                    row["room_id"],
                    self.pickle_key,
                    row["chain"],
                )
            )
        return store

    def save_inbound_group_session(self, session: Any) -> None:
        self.put(
            MEGOLM,
            session.id,
            {
                "pickle": session.pickle(self.pickle_key).decode(),
                "signing_key": session.ed25519,
                "sender_key": session.sender_key,
                "room_id": session.room_id,
                "chain": list(session.forwarding_chain),
            },
        )

    # -- devices and their trust

    def load_device_keys(self) -> Any:
        from nio.crypto import DeviceStore, OlmDevice, TrustState

        store = DeviceStore()
        for _key, row in self._of(DEVICE):
            store.add(
                OlmDevice(
                    row["user_id"],
                    row["device_id"],
                    row["keys"],
                    display_name=row["display_name"],
                    deleted=row["deleted"],
                    trust_state=TrustState[row["trust"]],
                )
            )
        return store

    def save_device_keys(self, device_keys: dict[str, dict[str, Any]]) -> None:
        for devices in device_keys.values():
            for device in devices.values():
                self._save_device(device)

    def _save_device(self, device: Any) -> None:
        self.put(
            DEVICE,
            f"{device.user_id} {device.id}",
            {
                "user_id": device.user_id,
                "device_id": device.id,
                "keys": dict(device.keys),
                "display_name": device.display_name,
                "deleted": device.deleted,
                "trust": device.trust_state.name,
            },
        )

    def _trust(self, device: Any) -> str:
        row = self.rows.get((DEVICE, f"{device.user_id} {device.id}"))
        return str(row["trust"]) if row is not None else "unset"

    def _set_trust(self, device: Any, state: str, unless: str | None = None, only_if: str | None = None) -> bool:
        from nio.crypto import TrustState

        current = self._trust(device)
        if (unless is not None and current == unless) or (only_if is not None and current != only_if):
            return False
        device.trust_state = TrustState[state]
        self._save_device(device)
        return True

    def verify_device(self, device: Any) -> bool:
        return self._set_trust(device, "verified", unless="verified")

    def unverify_device(self, device: Any) -> bool:
        return self._set_trust(device, "unset", only_if="verified")

    def is_device_verified(self, device: Any) -> bool:
        return self._trust(device) == "verified"

    def blacklist_device(self, device: Any) -> bool:
        return self._set_trust(device, "blacklisted", unless="blacklisted")

    def unblacklist_device(self, device: Any) -> bool:
        return self._set_trust(device, "unset", only_if="blacklisted")

    def is_device_blacklisted(self, device: Any) -> bool:
        return self._trust(device) == "blacklisted"

    def ignore_device(self, device: Any) -> bool:
        return self._set_trust(device, "ignored", unless="ignored")

    def unignore_device(self, device: Any) -> bool:
        return self._set_trust(device, "unset", only_if="ignored")

    def ignore_devices(self, devices: list[Any]) -> None:
        for device in devices:
            self.ignore_device(device)

    def is_device_ignored(self, device: Any) -> bool:
        return self._trust(device) == "ignored"

    # -- the cross-signing identity (bridge/runtime/e2ee_identity.py)

    def signing_keys(self) -> dict[str, bytes]:
        """The cross-signing private keys by usage (master, self_signing, user_signing)."""
        return {key: base64.b64decode(row["private"]) for key, row in self._of(SIGNING)}

    def save_signing_key(self, usage: str, private: bytes) -> None:
        self.put(SIGNING, usage, {"private": base64.b64encode(private).decode()})

    # -- rooms, key requests, the sync token

    def load_encrypted_rooms(self) -> set[str]:
        return {key for key, _row in self._of(ROOM)}

    def save_encrypted_rooms(self, rooms: Iterable[str]) -> None:
        for room_id in rooms:
            if (ROOM, room_id) not in self.rows:
                self.put(ROOM, room_id, {})

    def delete_encrypted_room(self, room: str) -> None:
        self.drop(ROOM, room)

    def load_outgoing_key_requests(self) -> dict[str, Any]:
        from nio.crypto import OutgoingKeyRequest

        return {
            key: OutgoingKeyRequest(key, row["session_id"], row["room_id"], row["algorithm"])
            for key, row in self._of(KEY_REQUEST)
        }

    def add_outgoing_key_request(self, key_request: Any) -> None:
        self.put(
            KEY_REQUEST,
            key_request.request_id,
            {"session_id": key_request.session_id, "room_id": key_request.room_id, "algorithm": key_request.algorithm},
        )

    def remove_outgoing_key_request(self, key_request: Any) -> None:
        self.drop(KEY_REQUEST, key_request.request_id)

    def save_sync_token(self, token: str) -> None:
        self.put(SYNC_POSITION, "", {"token": token})

    def load_sync_token(self) -> str | None:
        row = self.rows.get((SYNC_POSITION, ""))
        return str(row["token"]) if row is not None else None


# -- the store of earlier versions -----------------------------------------------------------------------


def import_file_store(directory: Path, user_id: str, device_id: str, store: DatabaseStore) -> bool:
    """Move the keys of matrix-nio's SQLite store (`e2ee/` in the state directory, what Kanal kept
    before) into `store`; True when there was one. The caller flushes, then `remove_file_store`."""
    database = directory / f"{user_id}_{device_id}.db"
    if not database.exists():
        return False
    from nio.store import DefaultStore

    old = DefaultStore(user_id, device_id, str(directory), "DEFAULT_KEY")  # nio's default passphrase
    try:
        account = old.load_account()
        if account is None:
            return False
        store.save_account(account)
        for sender_key, sessions in old.load_sessions().items():
            for session in sessions:
                store.save_session(sender_key, session)
        for session in old.load_inbound_group_sessions():
            store.save_inbound_group_session(session)
        for device in old.load_device_keys():
            store._save_device(device)
        store.save_encrypted_rooms(old.load_encrypted_rooms())
        for request in old.load_outgoing_key_requests().values():
            store.add_outgoing_key_request(request)
    finally:
        old.database.close()
    return True


def remove_file_store(directory: Path) -> None:
    """The old store's files, once their keys are in the database: no second copy of the keys."""
    shutil.rmtree(directory, ignore_errors=True)
    log.info("End-to-end encryption: the keys of %s are in the database now; the directory is removed", directory)
