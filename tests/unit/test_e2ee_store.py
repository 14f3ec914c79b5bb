"""The bot's encryption keys as sealed rows (bridge/runtime/e2ee_store.py), with matrix-nio's own
objects (vodozemac underneath): what is saved loads back, and what earlier versions kept moves in."""

from __future__ import annotations

import base64
from datetime import datetime
from pathlib import Path

import pytest
from nio.crypto import (
    InboundGroupSession,
    OlmAccount,
    OlmDevice,
    OutboundSession,
    OutgoingKeyRequest,
    TrustState,
)
from nio.store import DefaultStore

from bridge.runtime.e2ee_store import (
    DatabaseStore,
    Seal,
    StoreKeyError,
    import_file_store,
    load_or_create_key,
)

USER, DEVICE = "@kanal:example.org", "KANALBOT"


def test_the_key_file_is_made_once_mode_0600_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "e2ee-store.key"
    key = load_or_create_key(path)
    assert len(key) == 32 and path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_key(path) == key
    path.write_text("not a key\n")
    with pytest.raises(StoreKeyError, match=r"e2ee-store.key.*encryption.store_key"):
        load_or_create_key(path)


def test_a_sealed_row_opens_only_in_its_place_with_its_key() -> None:
    seal = Seal(b"k" * 32)
    sealed = seal.seal("megolm", "abc", {"room_id": "!r:example.org"})
    assert "!r:example.org" not in base64.b64decode(sealed).decode("latin-1")
    assert seal.open("megolm", "abc", sealed) == {"room_id": "!r:example.org"}
    for kind, key in (("megolm", "abd"), ("olm", "abc")):
        with pytest.raises(StoreKeyError):
            seal.open(kind, key, sealed)
    with pytest.raises(StoreKeyError, match="do not open with this key file"):
        Seal(b"j" * 32).open("megolm", "abc", sealed)
    tampered = base64.b64decode(sealed)
    tampered = tampered[:-1] + bytes([tampered[-1] ^ 1])
    with pytest.raises(StoreKeyError):
        seal.open("megolm", "abc", base64.b64encode(tampered).decode())


def _saved_and_reloaded(store: DatabaseStore) -> DatabaseStore:
    """What a restart sees: the rows the flush would write, sealed, opened again."""
    seal = Seal(b"s" * 32)
    rows = {}
    for (kind, key), value in store.take_changes().items():
        assert value is not None
        rows[(kind, key)] = seal.open(kind, key, seal.seal(kind, key, value))
    return DatabaseStore(USER, DEVICE, rows, store.pickle_key)


def test_account_sessions_room_keys_and_devices_survive_a_restart() -> None:
    store = DatabaseStore(USER, DEVICE, {}, "passphrase")
    account = OlmAccount()
    store.save_account(account)
    other = OlmAccount()
    other.generate_one_time_keys(1)
    ((one_time_key,),) = (other.one_time_keys["curve25519"].values(),)
    session = OutboundSession(account, other.identity_keys["curve25519"], one_time_key)
    store.save_session(other.identity_keys["curve25519"], session)
    group = InboundGroupSession(_session_key(), "ed25519key", "curve25519key", "!room:example.org")
    store.save_inbound_group_session(group)
    device = OlmDevice("@owner:example.org", "PHONE", {"curve25519": "ck", "ed25519": "ek"}, display_name="Phone")
    store.save_device_keys({"@owner:example.org": {"PHONE": device}})
    assert store.ignore_device(device) and not store.ignore_device(device)
    store.save_encrypted_rooms(["!room:example.org"])
    store.add_outgoing_key_request(OutgoingKeyRequest("req1", "sid", "!room:example.org", "m.megolm.v1.aes-sha2"))

    again = _saved_and_reloaded(store)
    loaded = again.load_account()
    assert loaded is not None and loaded.identity_keys == account.identity_keys
    (reloaded_session,) = list(again.load_sessions())
    assert reloaded_session.id == session.id
    # nio compares a session's times with its own (naive) clock: they load as they were made.
    assert reloaded_session.use_time == session.use_time and datetime.now() >= reloaded_session.creation_time
    (reloaded_group,) = list(again.load_inbound_group_sessions())
    assert reloaded_group.id == group.id and reloaded_group.room_id == "!room:example.org"
    (reloaded_device,) = list(again.load_device_keys())
    assert reloaded_device.keys == device.keys and reloaded_device.trust_state == TrustState.ignored
    assert again.is_device_ignored(reloaded_device) and not again.is_device_verified(reloaded_device)
    assert again.load_encrypted_rooms() == {"!room:example.org"}
    assert set(again.load_outgoing_key_requests()) == {"req1"}
    # A pickle does not open with another passphrase: the rows are useless without the key file.
    with pytest.raises(ValueError, match="couldn't be decrypted"):  # vodozemac's pickle error
        DatabaseStore(USER, DEVICE, again.rows, "another").load_account()


def _session_key() -> str:
    from nio.crypto import OutboundGroupSession

    return str(OutboundGroupSession().session_key)


def test_the_store_of_earlier_versions_moves_in(tmp_path: Path) -> None:
    """matrix-nio's SQLite store in `e2ee/` (nio's default passphrase) becomes rows; the same identity."""
    old = DefaultStore(USER, DEVICE, str(tmp_path), "DEFAULT_KEY")
    account = OlmAccount()
    old.save_account(account)
    group = InboundGroupSession(_session_key(), "ed25519key", "curve25519key", "!room:example.org")
    old.save_inbound_group_session(group)
    old.database.close()

    store = DatabaseStore(USER, DEVICE, {}, "new passphrase")
    assert import_file_store(tmp_path, USER, DEVICE, store)
    again = _saved_and_reloaded(store)
    loaded = again.load_account()
    assert loaded is not None and loaded.identity_keys == account.identity_keys
    assert [s.id for s in again.load_inbound_group_sessions()] == [group.id]
    assert not import_file_store(tmp_path / "nothing", USER, DEVICE, DatabaseStore(USER, DEVICE, {}, "p"))


def test_changes_not_written_wait_for_the_next_flush_behind_newer_ones() -> None:
    store = DatabaseStore(USER, DEVICE, {}, "p")
    store.put("room", "!a:x", {"v": 1})
    store.put("room", "!b:x", {"v": 1})
    taken = store.take_changes()
    store.put("room", "!b:x", {"v": 2})  # changed again while the write of `taken` failed
    store.keep(taken)
    assert store.take_changes() == {("room", "!a:x"): {"v": 1}, ("room", "!b:x"): {"v": 2}}
