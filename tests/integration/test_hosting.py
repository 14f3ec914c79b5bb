"""Federation and retention policy on real channel rooms: at creation, on `kanal hosting apply`, at start."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nio
import pytest
import yaml
from sqlalchemy import select

from appservice.client import HomeserverClient
from appservice.ids import RoomID, UserID
from bridge.channels.hosting import DAY_MS, set_channel_retention
from bridge.runtime.config import load
from bridge.runtime.context import Context
from bridge.runtime.outbox import OutboxWorker
from bridge.store.db import create_engine, sessionmaker
from bridge.store.models import Channel as ChannelRow
from bridge.text.i18n import t
from tests.support import Channel, Env, User, create_channel

pytestmark = pytest.mark.integration

OPEN = {"allow": ["*"], "deny": [], "allow_ip_literals": False}
PARTNERS = ["partner-one.example", "partner-two.example"]


def _config_copy(env: Env, name: str, **hosting: Any) -> Path:
    """The env's config with another `hosting` section, beside it (relative paths stay valid)."""
    data = yaml.safe_load(env.kanal.config_path.read_text())
    data["hosting"] = hosting
    path = env.kanal.config_path.parent / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    path.chmod(0o600)
    return path


async def _kanal(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=os.getcwd(),
    )
    out, err = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def _state(user: User, room_id: str, event_type: str) -> dict[str, Any] | None:
    """The room's state event content; None when there is none."""
    response = await user.client.room_get_state_event(room_id, event_type)
    if isinstance(response, nio.RoomGetStateEventError) and response.status_code == "M_NOT_FOUND":
        return None
    assert isinstance(response, nio.RoomGetStateEventResponse), response
    content: dict[str, Any] = response.content
    return content


async def _wait_state(
    user: User, rooms: list[str], event_type: str, expected: dict[str, Any], timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        found = {room: await _state(user, room, event_type) for room in rooms}
        if all(content == expected for content in found.values()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{event_type} is not {expected} everywhere: {found}")
        await asyncio.sleep(0.2)


def _rooms(*channels: Channel) -> list[str]:
    return [room for channel in channels for room in (channel.broadcast, channel.backstage)]


@pytest.fixture
async def restore_env(env: Env) -> AsyncIterator[Env]:
    """Whatever a test does to the env's Kanal, it runs again with the original config afterwards."""
    original = env.kanal.config_path
    try:
        yield env
    finally:
        await env.kanal.stop()
        env.kanal.config_path = original
        await env.kanal.start()
        for copy in original.parent.glob("config-hosting-*.yaml"):
            copy.unlink()


async def _set_retention(env: Env, handle: str, days: int | None) -> None:
    """What the channel's management command does: store it and queue it (the env's Kanal sends it)."""
    config = load(env.kanal.config_path)
    engine = create_engine(config.database_url)
    sessions = sessionmaker(engine)
    client = HomeserverClient(config.homeserver_url, config.as_token)
    ctx = Context(config, client, sessions, OutboxWorker(sessions, client))
    try:
        async with sessions.begin() as session:
            channel = await session.scalar(select(ChannelRow).where(ChannelRow.handle == handle))
            assert channel is not None
            await set_channel_retention(ctx, session, channel, days)
    finally:
        await client.close()
        await engine.dispose()


async def test_policy_changes_reach_every_channel_room(restore_env: Env) -> None:
    env = restore_env
    alice = await env.user("alice")
    first = await create_channel(env, alice, env.handle("fed"), "Federated")
    second = await create_channel(env, alice, env.handle("fed"), "Also federated")
    # The first channel has comments: its discussion room follows the policy too.
    ready = await alice.ask(first.backstage, "!comments on", "is ready:", timeout=40)
    found = re.search(r"\((![^)\s]+)\)", ready)
    assert found is not None, ready
    discussion = await alice.join(found.group(1))
    rooms = [*_rooms(first, second), discussion]
    for room in rooms:
        assert await _state(alice, room, "m.room.server_acl") == OPEN  # the default policy, from creation
        assert await _state(alice, room, "m.room.retention") is None

    await _set_retention(env, first.handle, 3)
    await _wait_state(alice, [*_rooms(first), discussion], "m.room.retention", {"max_lifetime": 3 * DAY_MS})

    # Allowlist while the env's Kanal runs: two processes on one database.
    allowlist = _config_copy(
        env,
        "config-hosting-allowlist.yaml",
        federation="allowlist",
        allowed_servers=PARTNERS,
        retention_days=7,
    )
    code, out, err = await _kanal("hosting", "apply", "-c", str(allowlist))
    assert code == 0, out + err
    assert "federation allowlist (localhost, partner-one.example, partner-two.example)" in out
    for room in rooms:
        assert room in out
    allowed = {"allow": ["localhost", *PARTNERS], "deny": [], "allow_ip_literals": False}
    for room in rooms:  # sent by the time `apply` returns
        assert await _state(alice, room, "m.room.server_acl") == allowed
    for room in _rooms(first):  # the channel's own retention wins over the deployment's
        assert await _state(alice, room, "m.room.retention") == {"max_lifetime": 3 * DAY_MS}
    for room in _rooms(second):
        assert await _state(alice, room, "m.room.retention") == {"max_lifetime": 7 * DAY_MS}

    code, out, err = await _kanal("hosting", "apply", "-c", str(allowlist))
    assert code == 0 and "Nothing to change" in out, out + err

    # Closed, with Kanal stopped: `apply` sends the changes itself.
    await env.kanal.stop()
    closed = _config_copy(env, "config-hosting-closed.yaml", federation="closed")
    code, out, err = await _kanal("hosting", "apply", "-c", str(closed))
    assert code == 0, out + err
    for room in rooms:
        assert await _state(alice, room, "m.room.server_acl") == {
            "allow": ["localhost"],
            "deny": [],
            "allow_ip_literals": False,
        }
    for room in _rooms(second):
        assert await _state(alice, room, "m.room.retention") == {}  # the deployment's retention is off
    assert await _state(alice, first.broadcast, "m.room.retention") == {"max_lifetime": 3 * DAY_MS}

    # Kanal starts again with the original (open) config and brings every room back to it.
    await env.kanal.start()
    await _wait_state(alice, rooms, "m.room.server_acl", OPEN)


async def test_a_channel_made_without_a_topic_gets_its_topic_line_once_at_start(restore_env: Env) -> None:
    # Channels made before new ones got a default topic line have an empty topic ("kanal removed the
    # topic"); at its next start Kanal gives them the line, and leaves a description the owner wrote.
    env = restore_env
    alice = await env.user("alice")
    bare = await create_channel(env, alice, env.handle("bare"), "Bare")
    told = await create_channel(env, alice, env.handle("told"), "Told")
    await alice.ask(told.management, f"about {told.handle} Our own words", "is updated")
    await _wait_state(alice, [told.broadcast], "m.room.topic", {"topic": "Our own words"})
    config = load(env.kanal.config_path)
    client = HomeserverClient(config.homeserver_url, config.as_token)
    try:  # what such a channel's room has: an empty topic, set by Kanal's bot
        await client.intent(UserID(env.bot)).send_state(RoomID(bare.broadcast), "m.room.topic", {"topic": ""})
    finally:
        await client.close()
    assert await _state(alice, bare.broadcast, "m.room.topic") == {"topic": ""}

    await env.kanal.stop()
    await env.kanal.start()

    default = {"topic": t("en", "channel_topic_default")}
    await _wait_state(alice, [bare.broadcast], "m.room.topic", default)
    assert await _state(alice, told.broadcast, "m.room.topic") == {"topic": "Our own words"}
    # Once: a room with its topic line is not touched again at the next start.
    topics = len([e for e in await alice.all_messages(bare.broadcast) if e["type"] == "m.room.topic"])
    await env.kanal.stop()
    await env.kanal.start()
    code, out, err = await _kanal("hosting", "apply", "-c", str(env.kanal.config_path))
    assert code == 0 and "Nothing to change" in out, out + err
    assert len([e for e in await alice.all_messages(bare.broadcast) if e["type"] == "m.room.topic"]) == topics


async def test_a_closed_deployment_creates_rooms_that_never_federate(restore_env: Env) -> None:
    env = restore_env
    await env.kanal.stop()
    env.kanal.config_path = _config_copy(env, "config-hosting-closed-start.yaml", federation="closed")
    await env.kanal.start()
    alice = await env.user("alice")
    channel = await create_channel(env, alice, env.handle("local"), "Local only")
    for room in _rooms(channel):
        create = await _state(alice, room, "m.room.create")
        assert create is not None and create["m.federate"] is False
        acl = await _state(alice, room, "m.room.server_acl")
        assert acl == {"allow": ["localhost"], "deny": [], "allow_ip_literals": False}


async def test_hosting_apply_with_a_broken_config_exits_2(env: Env) -> None:
    data = yaml.safe_load(env.kanal.config_path.read_text())
    data["hosting"] = {"federation": "allowlist"}  # and no allowed_servers
    path = env.kanal.config_path.parent / "config-hosting-broken.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    try:
        code, out, err = await _kanal("hosting", "apply", "-c", str(path))
    finally:
        path.unlink()
    assert code == 2 and not out, out + err
    assert "configuration error" in err and "'hosting.allowed_servers'" in err and "Traceback" not in err
