"""The worker-mode Synapse (bridge/ops/synapse_workers.py): Kanal relays a post through a channel room
written by the second event persister, a reader receives it; start fails clearly and leaves nothing
behind; stop leaves no process."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from synapse.config._base import RoutableShardedWorkerHandlingConfig

from bridge.ops.initfiles import write_init_files
from bridge.ops.synapse import SynapseError
from bridge.ops.synapse_workers import (
    SynapseWorkers,
    _Proc,
    create_synapse_database,
    drop_database,
    persister_for_room,
)
from tests.support import Env, KanalProcess, create_channel, free_port

SERVER = os.environ.get("KANAL_TEST_POSTGRES", "").replace("postgresql+asyncpg://", "postgresql://")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not SERVER, reason="worker-mode Synapse needs PostgreSQL: set KANAL_TEST_POSTGRES (CI does)"
    ),
]
DOMAIN = "localhost"
# Channels created until one's public room is written by the second persister: each lands there with
# probability 1/2, so this many all missing it happens once in 2**12 runs.
MAX_CHANNELS = 12


def test_persister_for_room_is_synapses_own_choice() -> None:
    for writers in (["event_persister1"], ["event_persister1", "event_persister2"], ["a", "b", "c"]):
        synapse = RoutableShardedWorkerHandlingConfig(writers)
        for n in range(200):
            room_id = f"!{secrets.token_urlsafe(12)}:{DOMAIN}" if n else "!abc:localhost"
            assert persister_for_room(room_id, writers) == synapse.get_instance(room_id)


def _group_members(pgids: set[int]) -> set[int]:
    """Live (not zombie) processes whose process group is one of `pgids`."""
    alive: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, pgrp = fields[0], int(fields[2])
        if pgrp in pgids and state != "Z":
            alive.add(int(entry.name))
    return alive


@pytest.fixture
async def synapse_database() -> AsyncIterator[str]:
    name = f"synapse_workers_{secrets.token_hex(4)}"
    dsn = await create_synapse_database(SERVER, name)
    try:
        yield dsn
    finally:
        await drop_database(SERVER, name)


@pytest.fixture
async def workers_env(tmp_path: Path, synapse_database: str) -> AsyncIterator[Env]:
    kanal_db = f"kanal_workers_{secrets.token_hex(4)}"
    connection = await asyncpg.connect(SERVER)
    try:
        await connection.execute(f'CREATE DATABASE "{kanal_db}"')
    finally:
        await connection.close()
    kanal_port, synapse_port = free_port(), free_port()
    config_path, registration_path = write_init_files(
        tmp_path / "kanal",
        domain=DOMAIN,
        homeserver_url=f"http://127.0.0.1:{synapse_port}",
        listen=f"127.0.0.1:{kanal_port}",
        database_url=SERVER.rsplit("/", 1)[0] + f"/{kanal_db}",
    )
    synapse = SynapseWorkers(
        tmp_path / "synapse",
        server_name=DOMAIN,
        port=synapse_port,
        app_service_config_files=[registration_path],
        postgres_dsn=synapse_database,
        relaxed_rate_limits=True,
    )
    kanal = KanalProcess(config_path, kanal_port, tmp_path / "kanal.log")
    env = Env(synapse, kanal, DOMAIN, f"@kanal:{DOMAIN}", "kanal_", tmp_path)
    try:
        await synapse.start()
        await kanal.start()
        yield env
    finally:
        for client in env.users:
            await client.close()
        await kanal.stop()
        await synapse.stop()
        await drop_database(SERVER, kanal_db)
        print(f"\nKanal log: {kanal.log_path}\nSynapse logs: {synapse.data_dir}")


async def test_a_post_reaches_a_reader_through_a_room_on_the_second_event_persister(
    workers_env: Env, synapse_database: str
) -> None:
    env = workers_env
    synapse = env.synapse
    assert isinstance(synapse, SynapseWorkers)
    assert set(synapse.pids) == {"main", "event_persister1", "event_persister2", "client_worker1"}

    owner = await env.user("owner")
    for _ in range(MAX_CHANNELS):
        channel = await create_channel(env, owner, env.handle())
        if synapse.persister_for_room(channel.broadcast) == "event_persister2":
            break
    else:
        raise AssertionError(f"none of {MAX_CHANNELS} channels' rooms hashed to event_persister2")

    reader = await env.user("reader")
    assert await reader.join(f"#{channel.handle}:{DOMAIN}") == channel.broadcast
    body = f"through the second persister {secrets.token_hex(4)}"
    await owner.text(channel.backstage, body)
    event = await reader.wait_for(channel.broadcast, lambda e: e.get("content", {}).get("body") == body)
    assert event["sender"] == f"@kanal_{channel.handle}:{DOMAIN}"

    # Synapse records which instance persisted each event.
    connection = await asyncpg.connect(synapse_database)
    try:
        writer = await connection.fetchval(
            "SELECT instance_name FROM events WHERE event_id = $1", event["event_id"]
        )
    finally:
        await connection.close()
    assert writer == "event_persister2"


async def test_stop_leaves_no_process_behind(tmp_path: Path, synapse_database: str) -> None:
    synapse = SynapseWorkers(
        tmp_path / "hs", port=free_port(), postgres_dsn=synapse_database, event_persisters=2
    )
    try:
        await synapse.start()
        started = {**synapse.pids, **synapse.helper_pids}
        assert set(started) == {
            "main",
            "event_persister1",
            "event_persister2",
            "client_worker1",
            "redis",
            "nginx",
        }
        # nginx's worker is a child of its master, in the master's process group.
        assert len(_group_members(set(started.values()))) > len(started)
    finally:
        await synapse.stop()
    assert not synapse.running
    assert synapse.pids == {} and synapse.helper_pids == {}
    assert _group_members(set(started.values())) == set()
    await synapse.stop()  # idempotent


async def test_start_names_an_unreachable_postgresql(tmp_path: Path) -> None:
    synapse = SynapseWorkers(
        tmp_path / "hs", port=free_port(), postgres_dsn=f"postgresql://postgres@127.0.0.1:{free_port()}/x"
    )
    with pytest.raises(SynapseError, match=r"PostgreSQL at .* does not answer"):
        await synapse.start()
    assert not synapse.running


async def test_start_names_a_missing_redis_server(
    tmp_path: Path, synapse_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # neither redis-server nor nginx on the PATH
    synapse = SynapseWorkers(tmp_path / "hs", port=free_port(), postgres_dsn=synapse_database)
    with pytest.raises(SynapseError, match="missing redis-server"):
        await synapse.start()
    assert not synapse.running


async def test_start_refuses_a_database_without_c_collation(tmp_path: Path) -> None:
    name = f"synapse_wrong_{secrets.token_hex(4)}"
    connection = await asyncpg.connect(SERVER)
    try:
        await connection.execute(
            f"CREATE DATABASE \"{name}\" LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8' TEMPLATE template0"
        )
    finally:
        await connection.close()
    try:
        synapse = SynapseWorkers(
            tmp_path / "hs", port=free_port(), postgres_dsn=SERVER.rsplit("/", 1)[0] + f"/{name}"
        )
        with pytest.raises(SynapseError, match="LC_COLLATE 'C'"):
            await synapse.start()
    finally:
        await drop_database(SERVER, name)


class BrokenNginx(SynapseWorkers):
    def nginx_config(self) -> str:
        return "this is not an nginx configuration;\n"


async def test_a_failed_start_stops_what_it_had_started(tmp_path: Path, synapse_database: str) -> None:
    synapse = BrokenNginx(tmp_path / "hs", port=free_port(), postgres_dsn=synapse_database)
    spawned: list[int] = []
    original = synapse._spawn

    async def spawn_and_note(proc: _Proc) -> _Proc:
        result = await original(proc)
        assert result.process is not None
        spawned.append(result.process.pid)
        return result

    synapse._spawn = spawn_and_note  # type: ignore[method-assign]
    with pytest.raises(SynapseError, match="nginx exited"):
        await synapse.start()
    assert len(spawned) == 6  # redis, main, two persisters, the client worker, nginx
    assert not synapse.running
    assert _group_members(set(spawned)) == set()
