"""One real Synapse and one Kanal process per test session; fresh users and channels per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.ops.initfiles import write_init_files
from bridge.ops.synapse import LocalSynapse
from tests.support import Env, KanalProcess, free_port

DOMAIN = "localhost"


@pytest.fixture(scope="session")
async def env(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> AsyncIterator[Env]:
    workdir = tmp_path_factory.mktemp("kanal-env")
    kanal_port = free_port()
    synapse_port = free_port()
    config_path, registration_path = write_init_files(
        workdir / "kanal",
        domain=DOMAIN,
        homeserver_url=f"http://127.0.0.1:{synapse_port}",
        listen=f"127.0.0.1:{kanal_port}",
        database_url=database_url,
        web_listen=f"127.0.0.1:{free_port()}",
    )
    synapse = LocalSynapse(
        workdir / "synapse",
        server_name=DOMAIN,
        port=synapse_port,
        app_service_config_files=[registration_path],
        relaxed_rate_limits=True,
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
def kanal_log(env: Env) -> Path:
    return env.kanal.log_path
