"""One real Synapse and one Kanal process per test session; fresh users and channels per test.

Tests that need a second homeserver ask for `federation`: two more Synapses federating over TLS on
loopback, with their own Kanal on the first (started once per session, only when a test asks).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.ops.initfiles import write_init_files
from bridge.ops.synapse import Federation, LocalSynapse
from tests.federation import Federated, make_test_ca
from tests.support import Env, KanalProcess, free_port

DOMAIN = "localhost"


async def _one_homeserver(
    workdir: Path, database_url: str, *, encryption: bool = False, web: bool = True
) -> AsyncIterator[Env]:
    """A Synapse on loopback and a Kanal wired to it (with `encryption`: the homeserver encrypts every
    private room at creation and Kanal's bot takes part)."""
    kanal_port = free_port()
    synapse_port = free_port()
    config_path, registration_path = write_init_files(
        workdir / "kanal",
        domain=DOMAIN,
        homeserver_url=f"http://127.0.0.1:{synapse_port}",
        listen=f"127.0.0.1:{kanal_port}",
        database_url=database_url,
        web_listen=f"127.0.0.1:{free_port()}" if web else None,
        encryption=encryption,
    )
    synapse = LocalSynapse(
        workdir / "synapse",
        server_name=DOMAIN,
        port=synapse_port,
        app_service_config_files=[registration_path],
        relaxed_rate_limits=True,
        encryption_by_default="invite" if encryption else "off",
    )
    await synapse.start()
    kanal = KanalProcess(config_path, kanal_port, workdir / "kanal.log")
    environment = Env(synapse, kanal, DOMAIN, f"@kanal:{DOMAIN}", "kanal_", workdir)
    try:
        await kanal.start()
        yield environment
    finally:
        for client in environment.users:
            await client.close()
        await kanal.stop()
        await synapse.stop()
        print(f"\nKanal log: {kanal.log_path}\nSynapse log: {synapse.log_path}")


@pytest.fixture(scope="session")
async def env(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> AsyncIterator[Env]:
    async for environment in _one_homeserver(tmp_path_factory.mktemp("kanal-env"), database_url):
        yield environment


@pytest.fixture(scope="session")
def kanal_log(env: Env) -> Path:
    return env.kanal.log_path


@pytest.fixture(scope="session")
async def federation(
    tmp_path_factory: pytest.TempPathFactory, federation_database_url: str
) -> AsyncIterator[Federated]:
    """Kanal on homeserver `127.0.0.1:<port>`, readers on `localhost:<port>`, federating over TLS.

    The two hosts differ because server ACLs ignore ports. Each homeserver verifies the other's
    certificate against the test CA only and may reach loopback; Kanal's keeps its client API on
    plain HTTP for Kanal and the tests, as the single-homeserver `env` does.
    """
    workdir = tmp_path_factory.mktemp("kanal-federation")
    tls = make_test_ca(workdir / "tls")
    home_port, home_federation_port = free_port(), free_port()
    remote_port, remote_federation_port = free_port(), free_port()
    domain = f"127.0.0.1:{home_federation_port}"
    kanal_port = free_port()
    config_path, registration_path = write_init_files(
        workdir / "kanal",
        domain=domain,
        homeserver_url=f"http://127.0.0.1:{home_port}",
        listen=f"127.0.0.1:{kanal_port}",
        database_url=federation_database_url,
        web_listen=f"127.0.0.1:{free_port()}",
    )

    def federating(port: int) -> Federation:
        return Federation(port, tls.certificate, tls.private_key, ca_list=tls.ca, loopback=True)

    home = LocalSynapse(
        workdir / "home",
        server_name=domain,
        port=home_port,
        app_service_config_files=[registration_path],
        relaxed_rate_limits=True,
        federation=federating(home_federation_port),
    )
    remote = LocalSynapse(
        workdir / "remote",
        server_name=f"localhost:{remote_federation_port}",
        port=remote_port,
        relaxed_rate_limits=True,
        federation=federating(remote_federation_port),
    )
    kanal = KanalProcess(config_path, kanal_port, workdir / "kanal.log")
    stack = Federated(Env(home, kanal, domain, f"@kanal:{domain}", "kanal_", workdir), remote)
    try:
        await asyncio.gather(home.start(), remote.start())
        await kanal.start()
        yield stack
    finally:
        for client in stack.home.users:
            await client.close()
        await kanal.stop()
        await asyncio.gather(home.stop(), remote.stop())
        print(f"\nKanal log: {kanal.log_path}\nSynapse logs: {home.log_path}, {remote.log_path}")


@pytest.fixture(scope="session")
async def e2ee(tmp_path_factory: pytest.TempPathFactory, e2ee_database_url: str) -> AsyncIterator[Env]:
    """A homeserver that encrypts every private room at creation (`encryption_enabled_by_default_for_room_type:
    invite`) and a Kanal with `encryption.enabled` (started once per session, only when a test asks)."""
    workdir = tmp_path_factory.mktemp("kanal-e2ee")
    async for environment in _one_homeserver(workdir, e2ee_database_url, encryption=True, web=False):
        yield environment
