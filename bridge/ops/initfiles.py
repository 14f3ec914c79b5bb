"""`kanal init`: a deployment's `config.yaml` and `registration.yaml`, with fresh tokens (mode 0600)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from appservice.registration import generate, save, write_secret_file
from bridge.runtime.config import DEFAULT_BOT_LOCALPART, DEFAULT_GHOST_PREFIX, DEFAULT_LISTEN, parse_listen


def write_init_files(
    output_dir: Path,
    *,
    domain: str,
    homeserver_url: str,
    listen: str = DEFAULT_LISTEN,
    as_url: str | None = None,
    database_url: str = "sqlite:///kanal.db",
    force: bool = False,
    web_listen: str | None = None,
    state_dir: str | None = None,
    web_public_url: str | None = None,
    encryption: bool = False,
) -> tuple[Path, Path]:
    """Write `config.yaml` and `registration.yaml` (mode 0600) with fresh tokens."""
    host, port = parse_listen(listen, "--listen")
    as_url = as_url or f"http://{host}:{port}"
    config_path, registration_path = output_dir / "config.yaml", output_dir / "registration.yaml"
    existing = [p for p in (config_path, registration_path) if p.exists()]
    if existing and not force:
        raise FileExistsError(
            f"{existing[0]} already exists; pass --force to replace it (this makes new tokens, so the homeserver "
            "must load the new registration file)"
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    registration = generate(
        as_id="kanal",
        url=as_url,
        domain=domain,
        sender_localpart=DEFAULT_BOT_LOCALPART,
        user_prefix=DEFAULT_GHOST_PREFIX,
        device_keys=encryption,
    )
    config: dict[str, Any] = {
        "homeserver": {"url": homeserver_url, "domain": domain},
        "appservice": {
            "id": registration.id,
            "listen": listen,
            "url": as_url,
            "registration": "registration.yaml",
            "as_token": registration.as_token,
            "hs_token": registration.hs_token,
            "bot_localpart": DEFAULT_BOT_LOCALPART,
            "ghost_prefix": DEFAULT_GHOST_PREFIX,
        },
        "database": {"url": database_url},
        "channels": {"creation_policy": "open", "default_language": "en"},
        "logging": {"level": "INFO", "format": "text"},
    }
    if web_listen is not None:
        web_host, web_port = parse_listen(web_listen, "--web-listen")
        public_url = web_public_url or f"http://{web_host}:{web_port}"
        config["web"] = {"enabled": True, "listen": web_listen, "public_url": public_url}
    if state_dir:
        config["state"] = {"directory": state_dir}
    if encryption:
        config["encryption"] = {"enabled": True}
    header = "# Kanal configuration; every key is documented in config.example.yaml.\n"
    write_secret_file(config_path, header + yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    save(registration, registration_path)
    return config_path, registration_path
