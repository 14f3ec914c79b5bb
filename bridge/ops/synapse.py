"""Start and stop a real local Synapse homeserver on loopback, for the `kanal up` sandbox and the tests."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
import yaml

from bridge.runtime.config import DEFAULT_SHARD_SIZE

_LOG_TAIL_LINES = 20
_POLL_INTERVAL = 0.1
_RELAXED = {"per_second": 1000, "burst_count": 10000}


class SynapseError(Exception):
    """Synapse could not be started, or refused a request made by this launcher."""


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    # The mode given to os.open only applies to new files; tighten an existing one too.
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _relaxed_rate_limits() -> dict[str, Any]:
    return {
        "rc_message": dict(_RELAXED),
        "rc_registration": dict(_RELAXED),
        "rc_login": {key: dict(_RELAXED) for key in ("address", "account", "failed_attempts")},
        "rc_joins": {key: dict(_RELAXED) for key in ("local", "remote")},
        "rc_joins_per_room": dict(_RELAXED),
        "rc_invites": {key: dict(_RELAXED) for key in ("per_room", "per_user", "per_issuer")},
        "rc_room_creation": dict(_RELAXED),
        "rc_3pid_validation": dict(_RELAXED),
        "rc_admin_redaction": dict(_RELAXED),
    }


# Synapse's caches read for every local member of a room on every message (BulkPushRuleEvaluator):
# name (as caches.per_cache_factors spells it), entries before the factor (Synapse 1.163), what an
# entry is. A room with more members than a cache holds reloads them all on every post.
LARGE_ROOM_CACHES: Final = (
    ("get_push_rules_for_user", 5000, "a member's push rules"),
    ("get_user_in_room_with_profile", 1000, "a member's display name in the room"),
)
SYNAPSE_DEFAULT_CACHE_FACTOR: Final = 0.5


def large_room_cache_factors(members: int) -> dict[str, float]:
    """`caches.per_cache_factors` that hold a room of `members` members (never below Synapse's own)."""
    return {
        name: max(SYNAPSE_DEFAULT_CACHE_FACTOR, math.ceil(members / base * 100) / 100)
        for name, base, _what in LARGE_ROOM_CACHES
    }


def log_tail(path: Path, offset: int = 0) -> str:
    """The last lines a process wrote to its log after `offset` (for an error message)."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return "(no log)"
    lines = data.decode("utf-8", "replace").splitlines()[-_LOG_TAIL_LINES:]
    return "\n".join(lines) if lines else "(log is empty)"


# Synapse's default `ip_range_blacklist` (1.163) without loopback (127.0.0.0/8, ::1/128): the ranges
# outbound requests may never reach when two homeservers federate on one machine. (Adding loopback to
# `ip_range_whitelist` is not enough: a server named by an IP literal, `127.0.0.1:8448`, is checked
# against the blacklist alone.)
BLACKLIST_BUT_LOOPBACK: Final = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "192.0.0.0/24",
    "169.254.0.0/16",
    "192.88.99.0/24",
    "198.18.0.0/15",
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "fe80::/10",
    "fc00::/7",
    "2001:db8::/32",
    "ff00::/8",
    "fec0::/10",
)


@dataclass(frozen=True)
class Federation:
    """A federation listener over TLS on 127.0.0.1, and whom the homeserver trusts and reaches.

    `certificate` and `private_key` are PEM files for the server name's host; `ca_list` (PEM), when
    given, is the only trust Synapse gives other servers' certificates (`federation_custom_ca_list`),
    which stay verified (`federation_verify_certificates`). `loopback` lets outbound requests reach
    127.0.0.0/8 and ::1 (`ip_range_blacklist` without them), as two homeservers on one machine need.
    `domain_whitelist`, when given, is Synapse's `federation_domain_whitelist`.
    """

    port: int
    certificate: Path
    private_key: Path
    ca_list: Path | None = None
    loopback: bool = False
    domain_whitelist: tuple[str, ...] | None = None

    def config(self) -> dict[str, Any]:
        """The homeserver.yaml keys of this listener and its trust (merged into LocalSynapse.config)."""
        config: dict[str, Any] = {
            "tls_certificate_path": str(Path(self.certificate).resolve()),
            "tls_private_key_path": str(Path(self.private_key).resolve()),
            "federation_verify_certificates": True,
        }
        if self.ca_list is not None:
            config["federation_custom_ca_list"] = [str(Path(self.ca_list).resolve())]
        if self.loopback:
            config["ip_range_blacklist"] = list(BLACKLIST_BUT_LOOPBACK)
        if self.domain_whitelist is not None:
            config["federation_domain_whitelist"] = list(self.domain_whitelist)
        return config

    def listener(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "bind_addresses": ["127.0.0.1"],
            "type": "http",
            "tls": True,
            "x_forwarded": False,
            "resources": [{"names": ["federation"], "compress": False}],
        }


class LocalSynapse:
    """A Synapse subprocess listening on 127.0.0.1, with all its state kept in `data_dir`.

    Without `federation` it serves the client API only; with it, also federation over TLS (its
    `server_name` then names that listener's port, e.g. `127.0.0.1:8448`, so that other servers
    contact it directly, without DNS or .well-known).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        server_name: str = "localhost",
        port: int = 8008,
        app_service_config_files: Sequence[Path] = (),
        postgres_dsn: str | None = None,
        relaxed_rate_limits: bool = False,
        python: str = sys.executable,
        large_rooms: int | None = DEFAULT_SHARD_SIZE,
        federation: Federation | None = None,
        encryption_by_default: str = "off",
    ) -> None:
        # Synapse resolves relative paths against its working directory, so pin everything down now.
        self.data_dir = Path(data_dir).resolve()
        self.server_name = server_name
        self.port = port
        self.app_service_config_files = [Path(p).resolve() for p in app_service_config_files]
        self.postgres_dsn = postgres_dsn
        self.relaxed_rate_limits = relaxed_rate_limits
        self.python = python
        # Caches sized for rooms of this many members (a channel's full shard); None: Synapse's own.
        self.large_rooms = large_rooms
        self.federation = federation
        # `encryption_enabled_by_default_for_room_type`: "off", or "invite" for a homeserver that
        # encrypts private rooms (Kanal then needs `encryption.enabled`).
        self.encryption_by_default = encryption_by_default
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "homeserver.log"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "homeserver.yaml"

    @property
    def log_config_path(self) -> Path:
        return self.data_dir / "log_config.yaml"

    @property
    def shared_secret_path(self) -> Path:
        return self.data_dir / "shared_secret"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pids(self) -> dict[str, int]:
        """Synapse instance name → pid while running: {"main": pid} (SynapseWorkers lists its workers)."""
        process = self._process
        return {"main": process.pid} if process is not None and process.poll() is None else {}

    def shared_secret(self) -> str:
        """The registration shared secret, created on first use and kept for later runs."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.shared_secret_path
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            secret = path.read_text(encoding="utf-8").strip()
            if not secret:
                raise SynapseError(f"{path} is empty; delete it to generate a new secret") from None
            return secret
        secret = secrets.token_urlsafe(32)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(secret + "\n")
        return secret

    def _database_section(self) -> dict[str, Any]:
        if self.postgres_dsn is None:
            return {"name": "sqlite3", "args": {"database": str(self.data_dir / "homeserver.db")}}
        return {"name": "psycopg2", "args": {"dsn": self.postgres_dsn, "cp_min": 1, "cp_max": 10}}

    def _log_config(self) -> dict[str, Any]:
        return {
            "version": 1,
            "formatters": {
                "precise": {
                    "format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - "
                    "%(request)s - %(message)s"
                }
            },
            "handlers": {
                "file": {
                    "class": "logging.FileHandler",
                    "formatter": "precise",
                    "filename": str(self.log_path),
                    "encoding": "utf8",
                }
            },
            "loggers": {"synapse.storage.SQL": {"level": "INFO"}},
            "root": {"level": "INFO", "handlers": ["file"]},
            "disable_existing_loggers": False,
        }

    def config(self) -> dict[str, Any]:
        """The homeserver.yaml content as a dict (creates the shared secret if needed)."""
        config: dict[str, Any] = {
            "server_name": self.server_name,
            "public_baseurl": self.base_url + "/",
            "report_stats": False,
            "listeners": [
                {
                    "port": self.port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client"], "compress": False}],
                }
            ],
            "database": self._database_section(),
            "log_config": str(self.log_config_path),
            "media_store_path": str(self.data_dir / "media_store"),
            "signing_key_path": str(self.data_dir / "signing.key"),
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "registration_shared_secret": self.shared_secret(),
            "enable_registration": False,
            "room_list_publication_rules": [{"action": "allow"}],
            # Off unless asked: a homeserver that encrypts private rooms needs Kanal's `encryption.enabled`.
            "encryption_enabled_by_default_for_room_type": self.encryption_by_default,
            "app_service_config_files": [str(p) for p in self.app_service_config_files],
            "presence": {"enabled": False},
        }
        if self.encryption_by_default != "off":
            # Kanal's bot takes part in encryption through the application-service extensions that
            # bring it the keys (bridge/runtime/e2ee.py): to-device messages, key counts, device lists.
            config["experimental_features"] = {
                "msc2409_to_device_messages_enabled": True,
                "msc3202_transaction_extensions": True,
            }
        if self.federation is not None:
            config["listeners"].append(self.federation.listener())
            config.update(self.federation.config())
        if self.large_rooms:
            config["caches"] = {"per_cache_factors": large_room_cache_factors(self.large_rooms)}
        if self.relaxed_rate_limits:
            config.update(_relaxed_rate_limits())
            # Tests register many users; full-strength hashing costs ~0.3 s per user.
            config["bcrypt_rounds"] = 4
        return config

    def write_config(self) -> Path:
        """(Re)write homeserver.yaml and the log config; returns the homeserver.yaml path."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.data_dir / "media_store").mkdir(exist_ok=True)
        _write_private(self.log_config_path, yaml.safe_dump(self._log_config(), sort_keys=False))
        _write_private(self.config_path, yaml.safe_dump(self.config(), sort_keys=False))
        return self.config_path

    def _log_tail(self) -> str:
        return log_tail(self.log_path, self._log_offset)

    def _failure(self, reason: str) -> SynapseError:
        return SynapseError(f"{reason}; see {self.log_path}\n--- last log lines ---\n{self._log_tail()}")

    def _check_port_free(self) -> None:
        # Otherwise a leftover server on the port could answer the readiness poll in Synapse's place.
        ports = [self.port] + ([self.federation.port] if self.federation is not None else [])
        for port in ports:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                # Twisted binds with SO_REUSEADDR too, so connections in TIME_WAIT are no obstacle.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError as e:
                    raise SynapseError(
                        f"Synapse cannot listen on 127.0.0.1:{port}: {e.strerror} "
                        f"(is an earlier Synapse still running?); see {self.log_path}"
                    ) from e

    def _prepare(self) -> None:
        self._check_port_free()
        self.write_config()
        try:
            self._log_offset = self.log_path.stat().st_size
        except FileNotFoundError:
            self._log_offset = 0

    async def start(self, timeout: float = 60) -> None:
        """Write the config, spawn Synapse and wait until the client API answers."""
        if self.running:
            raise SynapseError(f"Synapse is already running on {self.base_url}")
        await asyncio.to_thread(self._prepare)  # files on disk: off the event loop
        with self.log_path.open("ab") as log:
            # A plain Popen (not asyncio's) so stop() and kill() work from any event loop or none.
            self._process = await asyncio.to_thread(
                subprocess.Popen,
                [self.python, "-m", "synapse.app.homeserver", "-c", str(self.config_path)],
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = self._process
        deadline = time.monotonic() + timeout
        url = f"{self.base_url}/_matrix/client/versions"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while True:
                code = process.poll()
                if code is not None:
                    # The failure quotes the end of Synapse's log: read off the event loop.
                    raise await asyncio.to_thread(
                        self._failure, f"Synapse exited with code {code} before answering on {self.base_url}"
                    )
                try:
                    async with session.get(url) as response:
                        if response.status == 200:
                            break
                except (aiohttp.ClientError, TimeoutError):
                    pass
                if time.monotonic() >= deadline:
                    await asyncio.to_thread(self.kill)
                    raise await asyncio.to_thread(
                        self._failure, f"Synapse did not answer on {self.base_url} within {timeout:g} s"
                    )
                await asyncio.sleep(_POLL_INTERVAL)

    def _signal(self, sig: signal.Signals) -> None:
        if self._process is None:
            return
        try:
            os.killpg(self._process.pid, sig)
        except ProcessLookupError:
            pass

    async def stop(self, timeout: float = 20) -> None:
        """SIGTERM, wait up to `timeout` seconds, then SIGKILL. Safe to call when not running."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, timeout)
            except subprocess.TimeoutExpired:
                pass
        # Also catches children left in the process group after the main process has gone.
        self._signal(signal.SIGKILL)
        await asyncio.to_thread(process.wait)
        self._process = None

    def kill(self) -> None:
        """SIGKILL Synapse at once, without a clean shutdown."""
        process = self._process
        if process is None:
            return
        self._signal(signal.SIGKILL)
        process.wait()
        self._process = None

    async def _request(
        self, session: aiohttp.ClientSession, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        async with session.request(method, self.base_url + path, json=body) as response:
            try:
                data = await response.json(content_type=None)
            except ValueError:
                data = None
            if not isinstance(data, dict):
                data = {"raw": await response.text()}
            return response.status, data

    async def register_user(self, localpart: str, password: str, *, admin: bool = False) -> str:
        """Create a user with the shared-secret admin API; an existing user is not an error."""
        user_id = f"@{localpart}:{self.server_name}"
        secret = (await asyncio.to_thread(self.shared_secret)).encode("utf-8")  # a file: off the loop
        path = "/_synapse/admin/v1/register"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            status, data = await self._request(session, "GET", path)
            if status != 200 or "nonce" not in data:
                raise SynapseError(f"GET {path} failed: {status} {data}")
            nonce = str(data["nonce"])
            message = b"\x00".join(
                [
                    nonce.encode("utf-8"),
                    localpart.encode("utf-8"),
                    password.encode("utf-8"),
                    b"admin" if admin else b"notadmin",
                ]
            )
            mac = hmac.new(secret, message, hashlib.sha1).hexdigest()
            body = {
                "nonce": nonce,
                "username": localpart,
                "password": password,
                "admin": admin,
                "mac": mac,
            }
            status, data = await self._request(session, "POST", path, body)
        if status == 200:
            return str(data.get("user_id", user_id))
        if status == 400 and data.get("errcode") == "M_USER_IN_USE":
            return user_id
        raise SynapseError(f"registering {user_id} failed: {status} {data}")

    async def login(self, localpart: str, password: str) -> str:
        """Log in with a password and return the access token."""
        body = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": localpart},
            "password": password,
        }
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            status, data = await self._request(session, "POST", "/_matrix/client/v3/login", body)
        token = data.get("access_token")
        if status != 200 or not isinstance(token, str):
            raise SynapseError(f"login as {localpart} failed: {status} {data}")
        return token
