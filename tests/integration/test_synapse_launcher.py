"""Integration tests for bridge.ops.synapse.LocalSynapse against a real Synapse on loopback."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import aiohttp
import pytest

from bridge.ops.synapse import LocalSynapse, SynapseError

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def whoami(base_url: str, token: str) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{base_url}/_matrix/client/v3/account/whoami",
            headers={"Authorization": f"Bearer {token}"},
        ) as response,
    ):
        assert response.status == 200, await response.text()
        user_id: str = (await response.json())["user_id"]
        return user_id


async def test_start_register_login_restart(tmp_path: Path) -> None:
    synapse = LocalSynapse(tmp_path / "hs", port=free_port(), relaxed_rate_limits=True)
    try:
        await synapse.start()
        assert synapse.running

        async with aiohttp.ClientSession() as session:
            async with session.get(f"{synapse.base_url}/_matrix/client/versions") as response:
                assert response.status == 200
                assert "versions" in await response.json()

        assert await synapse.register_user("admin", "admin-pw", admin=True) == "@admin:localhost"
        assert await synapse.register_user("alice", "alice-pw") == "@alice:localhost"
        assert await synapse.register_user("alice", "alice-pw") == "@alice:localhost"

        token = await synapse.login("alice", "alice-pw")
        assert await whoami(synapse.base_url, token) == "@alice:localhost"
        admin_token = await synapse.login("admin", "admin-pw")
        assert await whoami(synapse.base_url, admin_token) == "@admin:localhost"

        with pytest.raises(SynapseError):
            await synapse.login("alice", "wrong-pw")

        secret = (tmp_path / "hs" / "shared_secret").read_text()
        for private in (synapse.config_path, tmp_path / "hs" / "shared_secret"):
            assert stat.S_IMODE(private.stat().st_mode) == 0o600
        assert (tmp_path / "hs" / "signing.key").exists()
        assert (tmp_path / "hs" / "homeserver.db").exists()

        await synapse.stop()
        assert not synapse.running
        await synapse.stop()  # idempotent

        await synapse.start()
        assert (tmp_path / "hs" / "shared_secret").read_text() == secret
        token = await synapse.login("alice", "alice-pw")
        assert await whoami(synapse.base_url, token) == "@alice:localhost"
        assert await synapse.register_user("alice", "alice-pw") == "@alice:localhost"

        synapse.kill()
        assert not synapse.running
    finally:
        await synapse.stop()
    assert synapse.log_path.stat().st_size > 0


async def test_start_fails_when_port_taken(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        synapse = LocalSynapse(tmp_path / "hs", port=port)
        try:
            with pytest.raises(SynapseError) as excinfo:
                await synapse.start(timeout=30)
            assert str(synapse.log_path) in str(excinfo.value)
            assert str(port) in str(excinfo.value)
            assert not synapse.running
        finally:
            await synapse.stop()


async def test_start_fails_when_synapse_exits(tmp_path: Path) -> None:
    synapse = LocalSynapse(
        tmp_path / "hs",
        port=free_port(),
        app_service_config_files=[tmp_path / "missing-registration.yaml"],
    )
    try:
        with pytest.raises(SynapseError) as excinfo:
            await synapse.start(timeout=60)
        message = str(excinfo.value)
        assert str(synapse.log_path) in message
        assert "exited with code" in message
        assert "missing-registration.yaml" in message
        assert not synapse.running
    finally:
        await synapse.stop()
