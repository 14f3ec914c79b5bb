"""`kanal up`: a local Synapse (SQLite, loopback) already wired to Kanal, until Ctrl-C.

Everything lives in one data folder; running it again reuses the same homeserver, accounts and channels.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
import sys
from pathlib import Path

from appservice.registration import write_secret_file
from bridge.app import StartupError, run_until_stopped
from bridge.ops.banner import new_encrypted_sandbox, print_banner
from bridge.ops.initfiles import write_init_files
from bridge.ops.synapse import LocalSynapse, SynapseError
from bridge.runtime.config import Config, ConfigError
from bridge.runtime.config import load as load_config

log = logging.getLogger(__name__)

SERVER_NAME = "localhost"
ADMIN_LOCALPART = "admin"


def _ensure_kanal_files(data_dir: Path, synapse_port: int, kanal_port: int, encryption: bool) -> Path:
    kanal_dir = data_dir / "kanal"
    config_path = kanal_dir / "config.yaml"
    if not config_path.exists():
        write_init_files(
            kanal_dir,
            domain=SERVER_NAME,
            homeserver_url=f"http://127.0.0.1:{synapse_port}",
            listen=f"127.0.0.1:{kanal_port}",
            web_listen=f"127.0.0.1:{kanal_port + 1}",
            encryption=encryption,
        )
    return config_path


def _admin_password(data_dir: Path) -> str:
    path = data_dir / "admin-password"
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    password = secrets.token_urlsafe(12)
    write_secret_file(path, password + "\n")
    return password


def addresses(config: Config) -> tuple[int, str | None]:
    """Synapse's port and the web face's URL (None: no web face), from the sandbox's config: the ports
    it was made with, which a later `kanal up` with other ports keeps (the banner prints these)."""
    return int(config.homeserver_url.rsplit(":", 1)[1]), config.web_public_url if config.web_enabled else None


async def _sandbox(config: Config, data_dir: Path, password: str, again: str) -> None:
    assert config.registration_path is not None
    synapse_port, web_url = addresses(config)
    synapse = LocalSynapse(
        data_dir / "synapse",
        server_name=SERVER_NAME,
        port=synapse_port,
        app_service_config_files=[config.registration_path],
        # With encryption on, the homeserver encrypts new direct chats and private rooms, as
        # privacy-minded servers do, and turns on what brings the bot its keys (README, *Encryption*).
        encryption_by_default="invite" if config.encryption_enabled else "off",
    )
    print(f"Starting Synapse on {synapse.base_url} (log: {synapse.log_path}) …", flush=True)
    await synapse.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        admin = await synapse.register_user(ADMIN_LOCALPART, password, admin=True)
        print_banner(synapse.base_url, admin, password, config.bot_user_id, data_dir, web_url)
        await run_until_stopped(config, stop)
    finally:
        print("Stopping Synapse …", flush=True)
        await synapse.stop()
        print(f"Stopped. Run `{again}` to continue where you left off.", flush=True)


def run_sandbox(
    data_dir: Path, *, synapse_port: int, kanal_port: int, again: str, encryption: bool = False
) -> int:
    """`again`: the command line that runs this sandbox again (printed when it stops). `encryption`:
    a new sandbox is made with end-to-end encryption on (an existing one keeps what it was made with)."""
    data_dir = data_dir.resolve()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        config_path = _ensure_kanal_files(data_dir, synapse_port, kanal_port, encryption)
        config = load_config(config_path)
        if encryption and not config.encryption_enabled:
            print(
                f"kanal up: the sandbox in {data_dir} was made without encryption; run "
                f"`{new_encrypted_sandbox()}` for one with it",
                file=sys.stderr,
            )
            return 2
        if config.listen_port != kanal_port or not config.homeserver_url.endswith(f":{synapse_port}"):
            log.warning(
                "Using the ports saved in %s (Kanal %d, homeserver %s); delete the folder to change them",
                config_path,
                config.listen_port,
                config.homeserver_url,
            )
        asyncio.run(_sandbox(config, data_dir, _admin_password(data_dir), again))
    except (SynapseError, StartupError) as exc:
        print(f"kanal up: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"kanal up: configuration error: {exc}", file=sys.stderr)
        return 2
    return 0
