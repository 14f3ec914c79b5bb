"""End-to-end encrypted management chats and backstage rooms (issue 17), against a real Synapse that
encrypts every private room at creation (`encryption_enabled_by_default_for_room_type: invite`).

The owner's client really encrypts (matrix-nio with its e2e extra, vodozemac underneath, its own
store in a temporary folder): what the bot reads it decrypted, and what it answers the client decrypts.
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import nio
import pytest
import yaml
from canonicaljson import encode_canonical_json
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import text

from bridge.runtime.config import load as load_config
from bridge.runtime.e2ee_store import Seal, StoreKeyError, load_or_create_key
from bridge.store.db import create_engine
from tests.encrypting import Encrypting, encrypted_channel
from tests.support import DEFAULT_TIMEOUT, Env, KanalProcess, free_port, reconfigured

pytestmark = pytest.mark.integration

POLL_START = "org.matrix.msc3381.poll.start"
POLL: dict[str, Any] = {
    POLL_START: {
        "question": {"org.matrix.msc1767.text": "Tea or coffee?"},
        "kind": "org.matrix.msc3381.poll.undisclosed",
        "max_selections": 1,
        "answers": [
            {"id": "tea", "org.matrix.msc1767.text": "Tea"},
            {"id": "coffee", "org.matrix.msc1767.text": "Coffee"},
        ],
    },
    "org.matrix.msc1767.text": "Tea or coffee?\n1. Tea\n2. Coffee",
}


@pytest.fixture
async def owner(e2ee: Env, tmp_path: Path) -> AsyncIterator[Encrypting]:
    person = await Encrypting.new(e2ee, tmp_path / "owner-store")
    try:
        yield person
    finally:
        await person.close()


async def public_event(
    owner: Encrypting,
    room_id: str,
    predicate: Callable[[dict[str, Any]], bool],
    what: str,
    timeout: float = DEFAULT_TIMEOUT,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in await owner.raw(room_id):
            if predicate(event):
                return event
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} never reached the public channel {room_id}")


async def public_post(
    env: Env, owner: Encrypting, room_id: str, body: str, timeout: float = DEFAULT_TIMEOUT
) -> dict[str, Any]:
    return await public_event(
        owner,
        room_id,
        lambda e: e["type"] == "m.room.message" and e.get("content", {}).get("body", "").startswith(body),
        repr(body),
        timeout,
    )


async def test_encrypted_chat_create_and_backstage_post(e2ee: Env, owner: Encrypting) -> None:
    handle, _chat, backstage, channel = await encrypted_channel(e2ee, owner)
    ghost = f"@{e2ee.ghost_prefix}{handle}:{e2ee.domain}"

    body = f"First encrypted post {secrets.token_hex(3)}"
    source = await owner.send(backstage, body)
    post = await public_post(e2ee, owner, channel, body)
    assert post["sender"] == ghost

    # An edit (its relation inside the ciphertext) edits the public copy.
    await owner.until(lambda: backstage in owner.client.rooms, "room")
    edit = await owner.client.room_send(
        backstage,
        "m.room.message",
        {
            "msgtype": "m.text",
            "body": f"* {body} (fixed)",
            "m.new_content": {"msgtype": "m.text", "body": f"{body} (fixed)"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": source},
        },
        ignore_unverified_devices=True,
    )
    assert isinstance(edit, nio.RoomSendResponse), edit
    edited = await public_post(e2ee, owner, channel, f"* {body} (fixed)")
    assert edited["content"]["m.relates_to"] == {"rel_type": "m.replace", "event_id": post["event_id"]}

    # `!silent` posts a notice; a poll is relayed as a poll.
    await owner.send(backstage, "!silent quiet encrypted update")
    silent = await public_post(e2ee, owner, channel, "quiet encrypted update")
    assert silent["content"]["msgtype"] == "m.notice" and silent["sender"] == ghost
    poll = await owner.client.room_send(backstage, POLL_START, POLL, ignore_unverified_devices=True)
    assert isinstance(poll, nio.RoomSendResponse), poll
    relayed_poll = await public_event(
        owner, channel, lambda e: e["type"] == POLL_START and e.get("sender") == ghost, "the poll"
    )
    assert relayed_poll["content"][POLL_START]["question"] == POLL[POLL_START]["question"]

    # A redaction (never encrypted) takes the post down.
    redaction = await owner.client.room_redact(backstage, source, reason="wrong story")
    assert isinstance(redaction, nio.RoomRedactResponse), redaction
    await public_event(
        owner,
        channel,
        lambda e: e["event_id"] == post["event_id"] and "redacted_because" in e.get("unsigned", {}),
        "the redaction",
    )

    # The backstage's own command answers come back encrypted too.
    await owner.ask(backstage, "!help", "!silent", timeout=30)


async def test_kanal_restarted_still_decrypts(e2ee: Env, owner: Encrypting, tmp_path: Path) -> None:
    _handle, chat, backstage, channel = await encrypted_channel(e2ee, owner)
    await e2ee.kanal.stop()
    await e2ee.kanal.start()
    # The session the owner already shared (before the restart) and the bot's own keys survived.
    body = f"After the restart {secrets.token_hex(3)}"
    await owner.send(backstage, body)
    # The first post after a start waits for catch-up (and, on a busy machine, for the room key).
    await public_post(e2ee, owner, channel, body, timeout=60)
    await owner.ask(chat, "help", "create", timeout=30)
    # A chat opened after the restart: a new session, read and answered.
    fresh = await owner.open_chat()
    await owner.ask(fresh, "help", "create", timeout=30)


async def test_the_operators_and_moderation_rooms_are_encrypted_and_served(e2ee: Env, owner: Encrypting) -> None:
    """An operator (here also a moderator) in the two staff rooms the homeserver encrypted: a held post's
    review is read and decided there, encrypted both ways; an operator's command is answered."""

    def staff(data: dict[str, Any]) -> None:
        data["operators"] = {"users": [owner.user_id]}
        data["compliance"] = {
            "hooks": [{"type": "terms", "name": "watch", "terms": ["holdme"], "action": "hold", "category": "spam"}]
        }

    async with reconfigured(e2ee, staff):
        rooms: dict[str, str] = {}

        def invited() -> bool:
            for room_id, room in owner.client.invited_rooms.items():
                if room.name in ("Kanal operators", "Kanal moderation"):
                    rooms[room.name] = str(room_id)
            return len(rooms) == 2

        await owner.until(invited, "invites to the operators' and the moderation room", timeout=30)

        def encrypted(room_id: str) -> Callable[[], bool]:
            return lambda: room_id in owner.client.rooms and bool(owner.client.rooms[room_id].encrypted)

        for room_id in rooms.values():
            joined = await owner.client.join(room_id)
            assert isinstance(joined, nio.JoinResponse), joined
            await owner.until(encrypted(room_id), "an encrypted room")
        await owner.ask(rooms["Kanal operators"], "help", "token", timeout=30)
        _handle, _chat, backstage, channel = await encrypted_channel(e2ee, owner)
        await owner.send(backstage, "please holdme for review")
        held = await owner.wait_reply(rooms["Kanal moderation"], "Held post h", set(), timeout=30)
        number = re.search(r"Held post h(\d+)", held["content"]["body"])
        assert number is not None, held
        await owner.ask(rooms["Kanal moderation"], f"approve h{number.group(1)}", "approved", timeout=30)
        await public_post(e2ee, owner, channel, "please holdme for review")


async def test_the_bots_keys_are_sealed_in_kanals_database(e2ee: Env, owner: Encrypting) -> None:
    """The crypto store is rows of Kanal's database, each opened only with the key file (mode 0600);
    nothing of it in clear there, and no store of matrix-nio's on disk."""
    chat = await owner.open_greeted_chat()
    config = await asyncio.to_thread(load_config, e2ee.kanal.config_path)
    key_path = config.encryption_store_key
    assert key_path is not None
    mode = (await asyncio.to_thread(key_path.stat)).st_mode
    assert mode & 0o777 == 0o600
    assert not await asyncio.to_thread((config.writable_dir / "e2ee").exists)
    engine = create_engine(config.database_url)
    try:
        async with engine.connect() as connection:
            rows = (await connection.execute(text("SELECT kind, key, value FROM crypto_store"))).all()
    finally:
        await engine.dispose()
    kinds = {kind for kind, _key, _value in rows}
    assert {"account", "olm", "megolm", "device"} <= kinds, kinds
    owner_key = owner.client.olm.account.identity_keys["curve25519"]
    for _kind, _key, value in rows:
        assert owner_key not in value and chat not in value and "pickle" not in value
    seal = Seal(await asyncio.to_thread(load_or_create_key, key_path))
    opened = [seal.open(kind, key, value) for kind, key, value in rows]
    assert any(row.get("room_id") == chat for row in opened)  # the owner's room key for the chat
    assert any(owner_key in row.get("keys", {}).values() for row in opened)  # the owner's device
    # A row copied to another place does not open there.
    kind, key, value = rows[0]
    with pytest.raises(StoreKeyError):
        seal.open(kind, key + "x", value)


async def keys_api(person: Encrypting, path: str, body: dict[str, Any]) -> dict[str, Any]:
    url = f"{person.env.homeserver}/_matrix/client/v3/keys/{path}"
    headers = {"Authorization": f"Bearer {person.client.access_token}"}
    async with aiohttp.ClientSession() as http, http.post(url, json=body, headers=headers) as response:
        assert response.status == 200, await response.text()
        data: dict[str, Any] = await response.json()
        return data


def signed_by(value: dict[str, Any], user_id: str, public: str, key_id: str | None = None) -> bool:
    """Whether `value` carries a valid signature by the Ed25519 key `public` (unpadded base64), named
    `ed25519:<key_id>` (a device's id; a cross-signing key is named by itself)."""
    signature = ((value.get("signatures") or {}).get(user_id) or {}).get(f"ed25519:{key_id or public}")
    if signature is None:
        return False
    unsigned = {k: v for k, v in value.items() if k not in ("signatures", "unsigned")}
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public + "=" * (-len(public) % 4)))
    try:
        key.verify(base64.b64decode(signature + "=" * (-len(signature) % 4)), encode_canonical_json(unsigned))
    except InvalidSignature:
        return False
    return True


async def test_the_bots_device_is_cross_signed(e2ee: Env, owner: Encrypting) -> None:
    """What a client checks to show the bot as one identity: master key → self-signing key → device."""
    found = await keys_api(owner, "query", {"device_keys": {e2ee.bot: []}})
    (master,) = found["master_keys"][e2ee.bot]["keys"].values()
    self_signing = found["self_signing_keys"][e2ee.bot]
    assert signed_by(self_signing, e2ee.bot, master)
    (self_signing_key,) = self_signing["keys"].values()
    device = found["device_keys"][e2ee.bot]["KANALBOT"]
    assert signed_by(device, e2ee.bot, self_signing_key)
    # The same identity after a restart (kept in the store, not made again).
    await e2ee.kanal.stop()
    await e2ee.kanal.start()
    again = await keys_api(owner, "query", {"device_keys": {e2ee.bot: []}})
    assert list(again["master_keys"][e2ee.bot]["keys"].values()) == [master]


async def exhaust_to_fallback(person: Encrypting, bot: str) -> tuple[dict[str, Any], int]:
    """Claim the bot's one-time keys until the homeserver hands out its fallback key: that key, and
    how many one-time keys were claimed before it."""
    for claims in range(200):
        claimed = await keys_api(person, "claim", {"one_time_keys": {bot: {"KANALBOT": "signed_curve25519"}}})
        ((_key_id, key),) = claimed["one_time_keys"][bot]["KANALBOT"].items()
        if key.get("fallback"):
            return dict(key), claims
    raise AssertionError("the bot's one-time keys never ran out into a fallback key")


async def test_a_fallback_key_when_one_time_keys_run_out(e2ee: Env, owner: Encrypting, tmp_path: Path) -> None:
    found = await keys_api(owner, "query", {"device_keys": {e2ee.bot: []}})
    device_key = found["device_keys"][e2ee.bot]["KANALBOT"]["keys"]["ed25519:KANALBOT"]
    first, _ = await exhaust_to_fallback(owner, e2ee.bot)
    assert signed_by(first, e2ee.bot, device_key, "KANALBOT")  # signed by the bot's device
    # The next transaction tells the bot its fallback key was used: it uploads a new one. Someone
    # who reaches the bot meanwhile (their client claims a key now) is still answered.
    person = await Encrypting.new(e2ee, tmp_path / "person-store")
    try:
        await person.open_greeted_chat()
    finally:
        await person.close()
    # The one-time keys are refilled too (the transactions said none was left).
    deadline = time.monotonic() + 30
    refilled = replaced = False
    while not (refilled and replaced):
        assert time.monotonic() < deadline, f"new one-time keys: {refilled}, a new fallback key: {replaced}"
        fallback, one_time_keys = await exhaust_to_fallback(owner, e2ee.bot)
        refilled = refilled or one_time_keys > 0
        replaced = replaced or fallback["key"] != first["key"]
        await asyncio.sleep(1)


async def test_a_second_device_reads_later_replies(e2ee: Env, owner: Encrypting, tmp_path: Path) -> None:
    chat = await owner.open_greeted_chat()
    second = await Encrypting.login(e2ee, tmp_path / "second-store", owner.user_id, owner.password)
    try:
        await second.until(lambda: chat in second.client.rooms, "the chat on the second device")
        before = {event["event_id"] for event in await owner.raw(chat)}
        await owner.send(chat, "help")
        # The bot's answer after the new device appeared is encrypted for it too.
        await second.wait_reply(chat, "create", before, timeout=30)
        await owner.wait_reply(chat, "create", before, timeout=30)
    finally:
        await second.close()


UNREADABLE_CIPHERTEXT = (
    "AwgAEnACgAkLmt6qF84IK++J7UDH2Za1YVchHyprqTqsg2yyOwAtHaZTwyNg37afzg8f3r9IsN9r4RNFg7MaZencUJe4qvELiDiopUjy5wYV"
    "DAtqdBzer5bWRD9ldxp1FLgbQvBcjkkywYjCsmsq6+hArLd9oAQZnGKn/qLsK+5uNX3PaWzDRC9wZPQvWYYPCTov3jCwXKTPsLKIiTrcCXDq"
    "Mvnn8m+T3zF/I2zqxg158tnUq5alcjjwRYf6WzPzBnK1tfpEAZvR2UX2sUFqDmWHp2C/mmoNUZj+VVb7yqxKOVt4jxyyX+2jnXkeXIaTCtH6"
    "Y0yamfxVf14vmIvHlrUYWPM3xU9cwhkPVqmNBdfwQ8QG/23CuLAIj6yiFiwmpjGCkqWcH7kE2TDvqbB7pkxwAEBGyR4Fp3Nh+k4e8uj+tbjH"
    "/kRgaw"
)


async def send_unreadable(env: Env, person: Encrypting, room_id: str) -> None:
    """A Megolm message whose session the bot was never given (as when keys are withheld from it),
    sent as it is (nio would encrypt it again): the homeserver just stores the ciphertext."""
    content = {
        "algorithm": "m.megolm.v1.aes-sha2",
        "sender_key": person.client.olm.account.identity_keys["curve25519"],
        "ciphertext": UNREADABLE_CIPHERTEXT,
        "session_id": "X3lUlvLELLYxeTx4yOVu6UDpasGEVO0Jbu+QFnm0cKQ",
        "device_id": person.client.device_id,
    }
    url = f"{env.homeserver}/_matrix/client/v3/rooms/{room_id}/send/m.room.encrypted/{secrets.token_hex(8)}"
    headers = {"Authorization": f"Bearer {person.client.access_token}"}
    async with aiohttp.ClientSession() as http, http.put(url, json=content, headers=headers) as response:
        assert response.status == 200, await response.text()


async def test_a_message_without_its_key_gets_an_encrypted_answer(e2ee: Env, owner: Encrypting) -> None:
    chat = await owner.open_greeted_chat()
    before = {event["event_id"] for event in await owner.raw(chat)}
    await send_unreadable(e2ee, owner, chat)
    reply = await owner.wait_reply(chat, "could not read your last message", before, timeout=40)
    assert "send it again" in reply["content"]["body"]


async def test_unreadable_messages_hold_up_nobody_for_long(e2ee: Env, tmp_path: Path) -> None:
    """Each event waits behind an undecryptable one while its key may still come: a burst of them costs
    one wait (counted from when they were sent), and a sender whose message stayed unreadable gets no
    wait for a while. Five at once used to hold every chat for five times ten seconds."""
    sender = await Encrypting.new(e2ee, tmp_path / "sender-store")
    other = await Encrypting.new(e2ee, tmp_path / "other-store")
    try:
        chat = await sender.open_greeted_chat()
        other_chat = await other.open_greeted_chat()
        before = {event["event_id"] for event in await other.raw(other_chat)}
        for _ in range(5):
            await send_unreadable(e2ee, sender, chat)
        await other.send(other_chat, "help")
        # One key wait (10 s) and the answer, not five waits.
        await other.wait_reply(other_chat, "create", before, timeout=25)
        # Every unreadable message was answered.
        deadline = time.monotonic() + 30
        while True:
            answers = [
                e
                for e in await sender.raw(chat)
                if e.get("sender") == e2ee.bot
                and e["type"] == "m.room.encrypted"
                and (clear := sender.decrypt(e)) is not None
                and "could not read your last message" in clear["content"].get("body", "")
            ]
            if len(answers) == 5:
                break
            assert time.monotonic() < deadline, f"{len(answers)} of 5 unreadable messages answered"
            await asyncio.sleep(0.5)
    finally:
        await sender.close()
        await other.close()


async def test_an_editor_who_joins_the_encrypted_backstage_posts_and_reads(
    e2ee: Env, owner: Encrypting, tmp_path: Path
) -> None:
    """A new member of an encrypted backstage: the bot reads their posts and they read its later answers
    (the bot's next room key goes to the members the homeserver lists now)."""
    handle, chat, backstage, channel = await encrypted_channel(e2ee, owner)
    editor = await Encrypting.new(e2ee, tmp_path / "editor-store")
    try:
        await owner.ask(chat, f"promote {handle} {editor.user_id} editor", "is now editor of", timeout=30)
        await editor.until(lambda: backstage in editor.client.invited_rooms, "the backstage invite")
        joined = await editor.client.join(backstage)
        assert isinstance(joined, nio.JoinResponse), joined
        await editor.until(
            lambda: backstage in editor.client.rooms and editor.client.rooms[backstage].encrypted, "the room"
        )
        body = f"Editor's encrypted post {secrets.token_hex(3)}"
        await editor.send(backstage, body)
        post = await public_post(e2ee, editor, channel, body)
        assert post["sender"] == f"@{e2ee.ghost_prefix}{handle}:{e2ee.domain}"
        await editor.ask(backstage, "!help", "!silent", timeout=30)
    finally:
        await editor.close()


async def test_one_process_holds_the_bots_device(e2ee: Env, tmp_path: Path) -> None:
    """A second Kanal with encryption on, sharing the database, refuses to start: two processes with
    one device would upload conflicting one-time keys and split the room keys between them."""
    config = yaml.safe_load(e2ee.kanal.config_path.read_text())
    port = free_port()
    config["appservice"]["listen"] = f"127.0.0.1:{port}"
    second_config = e2ee.kanal.config_path.parent / "second.yaml"
    second_config.write_text(yaml.safe_dump(config))
    second_config.chmod(0o600)
    second = KanalProcess(second_config, port, tmp_path / "second.log")
    try:
        await second.start(timeout=60)  # it listens (its health answers) before it asks for the device
    except RuntimeError:
        pass  # it already gave up
    assert second.process is not None
    deadline = time.monotonic() + 60
    while second.process.poll() is None:
        assert time.monotonic() < deadline, "the second process kept running"
        await asyncio.sleep(0.5)
    assert second.process.returncode != 0
    assert "another Kanal process holds the bot's encrypting device" in second.log_path.read_text()
    # The first one still answers, encrypted.
    person = await Encrypting.new(e2ee, tmp_path / "store")
    try:
        await person.open_greeted_chat()
    finally:
        await person.close()
