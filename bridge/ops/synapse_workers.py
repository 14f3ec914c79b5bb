"""Start and stop a worker-mode Synapse on loopback: the deployment Synapse documents for large rooms.

    nginx (public port) ──┬── client paths (send, state, join, sync, …) ──▶ client_worker1 (generic worker)
                          └── everything else (admin API, appservice ping, media, …) ──▶ main
    client_worker1, main ── HTTP replication ──▶ event_persister1 … event_persisterN
    every Synapse process ── Redis (pub/sub replication stream) ──▶ every other

`stream_writers.events` lists the event persisters; Synapse shards rooms across them by hashing the room
id (`persister_for_room` computes the same answer). Event creation, where push actions are computed, runs
in the process that serves the client request (the generic worker); persistence in the room's persister.
Worker mode needs PostgreSQL (a database created with LC_COLLATE and LC_CTYPE 'C', as Synapse requires),
Debian's `redis-server` and `nginx`: `start()` says which is missing, and stops whatever it had started.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from sqlalchemy import make_url

from bridge.ops.synapse import LocalSynapse, SynapseError, _write_private, log_tail

_POLL_INTERVAL = 0.1
MAIN = "main"
CLIENT_WORKER = "client_worker1"

# What Synapse's workers documentation routes to a generic worker, among the client API's paths (the
# sections "Sync requests", "Client API requests", "Registration/login requests", "Event sending
# requests" and the room pagination). Everything else goes to the main process.
CLIENT_WORKER_PATHS = (
    # Sync requests
    r"^/_matrix/client/(r0|v3)/sync$",
    r"^/_matrix/client/(api/v1|r0|v3)/events$",
    r"^/_matrix/client/(api/v1|r0|v3)/initialSync$",
    r"^/_matrix/client/(api/v1|r0|v3)/rooms/[^/]+/initialSync$",
    # Client API requests
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/createRoom$",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/publicRooms$",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/joined_members$",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/context/.*$",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/members$",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/state$",
    r"^/_matrix/client/(v1|unstable)/rooms/.*/relations/",
    r"^/_matrix/client/(r0|v3|unstable)/account/whoami$",
    r"^/_matrix/client/versions$",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/event/",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/joined_rooms$",
    r"^/_matrix/client/(api/v1|r0|v3|unstable/.*)/rooms/.*/aliases",
    r"^/_matrix/client/(r0|v3|unstable)/user/.*/filter(/|$)",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/directory/room/.*$",
    r"^/_matrix/client/(r0|v3|unstable)/capabilities$",
    # Registration/login requests
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/login$",
    r"^/_matrix/client/(r0|v3|unstable)/register$",
    r"^/_matrix/client/(r0|v3|unstable)/register/available$",
    # Event sending requests
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/redact",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/send",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/state/",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/(join|invite|leave|ban|unban|kick)$",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/join/",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/profile/",
    # Pagination (all of a room's on one instance: there is one client worker)
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/messages$",
)


def persister_name(index: int) -> str:
    """The worker name of the `index`-th event persister (1-based), as `stream_writers.events` lists it."""
    return f"event_persister{index}"


def persister_for_room(room_id: str, persisters: Sequence[str]) -> str:
    """The event persister Synapse assigns `room_id` among `persisters` (in `stream_writers.events` order).

    Synapse 1.163's `RoutableShardedWorkerHandlingConfig.get_instance` (synapse/config/_base.py): the
    SHA-256 of the room id, read as a little-endian integer, modulo the number of writers.
    """
    if not persisters:
        raise ValueError("no event persisters")
    if len(persisters) == 1:
        return persisters[0]
    digest = hashlib.sha256(room_id.encode("utf-8")).digest()
    return persisters[int.from_bytes(digest, byteorder="little") % len(persisters)]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class _Proc:
    """One child process (in its own session, so its whole group can be signalled)."""

    name: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    log_offset: int = 0

    def spawn(self, cwd: Path) -> None:
        try:
            self.log_offset = self.log_path.stat().st_size
        except FileNotFoundError:
            self.log_offset = 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def signal_group(self, sig: signal.Signals) -> None:
        if self.process is not None:
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float) -> None:
        """SIGTERM, up to `timeout` seconds, then SIGKILL to the whole group; reaps the process."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            self.signal_group(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.signal_group(signal.SIGKILL)  # also whatever the process left in its group
        process.wait()
        self.process = None

    def tail(self) -> str:
        return log_tail(self.log_path, self.log_offset)


class SynapseWorkers(LocalSynapse):
    """Synapse in worker mode behind nginx on 127.0.0.1:`port`, with all its state kept in `data_dir`.

    Processes: redis-server, the main process, `event_persisters` event persisters, one generic worker
    for the client API, nginx. `postgres_dsn` is a URL (postgresql://user@host:port/db) of a database
    created with LC_COLLATE and LC_CTYPE 'C' (see `create_synapse_database`).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        server_name: str = "localhost",
        port: int = 8008,
        app_service_config_files: Sequence[Path] = (),
        postgres_dsn: str,
        event_persisters: int = 2,
        relaxed_rate_limits: bool = False,
        cache_factor: float | None = None,
        per_cache_factors: Mapping[str, float] | None = None,
        extra_config: Mapping[str, Any] | None = None,
        python: str = sys.executable,
    ) -> None:
        if not postgres_dsn:
            raise SynapseError("worker-mode Synapse needs PostgreSQL: pass postgres_dsn")
        if event_persisters < 1:
            raise SynapseError("event_persisters must be at least 1")
        super().__init__(
            data_dir,
            server_name=server_name,
            port=port,
            app_service_config_files=app_service_config_files,
            postgres_dsn=postgres_dsn,
            relaxed_rate_limits=relaxed_rate_limits,
            python=python,
        )
        self.postgres_url: str = postgres_dsn
        self.event_persisters = event_persisters
        self.cache_factor = cache_factor
        self.per_cache_factors = dict(per_cache_factors or {})
        self.extra_config = dict(extra_config or {})
        self.persisters = [persister_name(i) for i in range(1, event_persisters + 1)]
        self._ports: dict[str, int] = {}
        self._procs: list[_Proc] = []
        self._replication_secret = ""

    # -- where things are ---------------------------------------------------------------------------

    @property
    def instances(self) -> list[str]:
        """Synapse's processes by instance name, in start order."""
        return [MAIN, *self.persisters, CLIENT_WORKER]

    def instance_log_path(self, instance: str) -> Path:
        return self.log_path if instance == MAIN else self.data_dir / f"{instance}.log"

    @property
    def log_paths(self) -> dict[str, Path]:
        """Every process's log: each Synapse instance, redis and nginx."""
        paths = {name: self.instance_log_path(name) for name in self.instances}
        paths["redis"] = self.data_dir / "redis.log"
        paths["nginx"] = self.data_dir / "nginx" / "error.log"
        return paths

    def worker_config_path(self, instance: str) -> Path:
        return self.data_dir / "workers" / f"{instance}.yaml"

    @property
    def nginx_config_path(self) -> Path:
        return self.data_dir / "nginx" / "nginx.conf"

    @property
    def running(self) -> bool:
        return any(p.process is not None and p.process.poll() is None for p in self._procs)

    @property
    def pids(self) -> dict[str, int]:
        """Synapse instance name → pid of each running Synapse process (main included)."""
        return {
            p.name: p.process.pid
            for p in self._procs
            if p.name in self.instances and p.process is not None and p.process.poll() is None
        }

    @property
    def helper_pids(self) -> dict[str, int]:
        """redis and nginx (its master process) → pid, while running."""
        return {
            p.name: p.process.pid
            for p in self._procs
            if p.name not in self.instances and p.process is not None and p.process.poll() is None
        }

    def persister_for_room(self, room_id: str) -> str:
        """Which event persister writes `room_id`'s events (Synapse's own hashing)."""
        return persister_for_room(room_id, self.persisters)

    # -- configuration ------------------------------------------------------------------------------

    def _instance_log_config(self, instance: str) -> dict[str, Any]:
        config = self._log_config()
        config["handlers"]["file"]["filename"] = str(self.instance_log_path(instance))
        return config

    def _log_config_path_of(self, instance: str) -> Path:
        return (
            self.log_config_path if instance == MAIN else self.data_dir / "workers" / f"{instance}.log.yaml"
        )

    def _database_section(self) -> dict[str, Any]:
        section = super()._database_section()
        section["args"]["cp_max"] = 5  # per process; five processes share the server
        return section

    def config(self) -> dict[str, Any]:
        """The shared homeserver.yaml (the main process reads only this one)."""
        ports = self._ports
        config = super().config()
        config["listeners"] = [
            {
                "port": ports["main_client"],
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": False,
                "x_forwarded": True,
                "resources": [{"names": ["client"], "compress": False}],
            },
            {
                "port": ports["main_replication"],
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "resources": [{"names": ["replication"]}],
            },
        ]
        config["redis"] = {"enabled": True, "host": "127.0.0.1", "port": ports["redis"]}
        config["instance_map"] = {
            MAIN: {"host": "127.0.0.1", "port": ports["main_replication"]},
            **{name: {"host": "127.0.0.1", "port": ports[name]} for name in self.persisters},
        }
        config["stream_writers"] = {"events": list(self.persisters)}
        config["worker_replication_secret"] = self._replication_secret
        caches: dict[str, Any] = {}
        if self.cache_factor is not None:
            caches["global_factor"] = self.cache_factor
        if self.per_cache_factors:
            caches["per_cache_factors"] = dict(self.per_cache_factors)
        if caches:
            config["caches"] = caches
        config.update(self.extra_config)
        return config

    def worker_config(self, instance: str) -> dict[str, Any]:
        port = self._ports[instance]
        names = ["client"] if instance == CLIENT_WORKER else ["replication"]
        return {
            "worker_app": "synapse.app.generic_worker",
            "worker_name": instance,
            "worker_listeners": [
                {
                    "type": "http",
                    "port": port,
                    "bind_addresses": ["127.0.0.1"],
                    "x_forwarded": True,
                    "resources": [{"names": names, "compress": False}],
                }
            ],
            "worker_log_config": str(self._log_config_path_of(instance)),
        }

    def nginx_config(self) -> str:
        """nginx in front: the client worker's paths to it, the rest to main (Synapse's worker docs)."""
        nginx_dir = self.data_dir / "nginx"
        user = "user root;\n" if os.geteuid() == 0 else ""  # workers must reach data_dir (mode 0700)
        files = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 65536)
        worker_regex = "(" + "|".join(f"(?:{p})" for p in CLIENT_WORKER_PATHS) + ")"
        temp = "\n".join(
            f"    {kind}_temp_path {nginx_dir / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        return f"""{user}worker_processes 1;
worker_rlimit_nofile {files};
pid {nginx_dir / "nginx.pid"};
error_log {nginx_dir / "error.log"} warn;
daemon off;
events {{
    worker_connections {files // 2};
}}
http {{
    access_log off;
{temp}
    client_max_body_size 100m;
    upstream synapse_main {{
        server 127.0.0.1:{self._ports["main_client"]};
        keepalive 64;
    }}
    upstream synapse_client_worker {{
        server 127.0.0.1:{self._ports[CLIENT_WORKER]};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{self.port};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $remote_addr;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_read_timeout 600s;
        proxy_send_timeout 600s;
        proxy_buffering off;
        location ~ {worker_regex} {{
            proxy_pass http://synapse_client_worker;
        }}
        location / {{
            proxy_pass http://synapse_main;
        }}
    }}
}}
"""

    def write_config(self) -> Path:
        """(Re)write every process's files (fresh internal ports); returns the shared homeserver.yaml."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.data_dir / "workers").mkdir(exist_ok=True)
        nginx_dir = self.data_dir / "nginx"
        nginx_dir.mkdir(exist_ok=True)
        if not self._ports:
            self._ports = {
                name: _free_port()
                for name in ("main_client", "main_replication", "redis", *self.persisters, CLIENT_WORKER)
            }
        if not self._replication_secret:
            self._replication_secret = secrets.token_urlsafe(24)
        path = super().write_config()
        for instance in self.instances[1:]:
            _write_private(
                self._log_config_path_of(instance),
                yaml.safe_dump(self._instance_log_config(instance), sort_keys=False),
            )
            _write_private(
                self.worker_config_path(instance),
                yaml.safe_dump(self.worker_config(instance), sort_keys=False),
            )
        _write_private(self.nginx_config_path, self.nginx_config())
        return path

    # -- start and stop -----------------------------------------------------------------------------

    def _preflight(self) -> tuple[str, str]:
        """What the processes need before any is started: binaries, Synapse's Redis support, the port."""
        redis = shutil.which("redis-server")
        nginx = shutil.which("nginx") or next(
            (p for p in ("/usr/sbin/nginx", "/sbin/nginx") if os.access(p, os.X_OK)), None
        )
        missing = []
        if redis is None:
            missing.append("redis-server (Debian: apt-get install redis-server)")
        if nginx is None:
            missing.append("nginx (Debian: apt-get install nginx)")
        if importlib.util.find_spec("txredisapi") is None:
            missing.append("Synapse's Redis support (pip install 'matrix-synapse[redis]')")
        if missing:
            raise SynapseError("worker-mode Synapse cannot start: missing " + "; ".join(missing))
        self._check_port_free()
        self._ports = {}
        self._replication_secret = ""
        self.write_config()
        return redis or "", nginx or ""

    async def _check_postgres(self) -> None:
        import asyncpg

        dsn = self.postgres_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        try:
            connection = await asyncpg.connect(dsn, timeout=10)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise SynapseError(
                f"worker-mode Synapse cannot start: PostgreSQL at {_safe(dsn)} does not answer: {exc}"
            ) from exc
        try:
            collate, ctype = await connection.fetchrow(
                "SELECT datcollate, datctype FROM pg_database WHERE datname = current_database()"
            )
        finally:
            await connection.close()
        if collate != "C" or ctype != "C":
            raise SynapseError(
                f"the database at {_safe(dsn)} has LC_COLLATE {collate!r} and LC_CTYPE {ctype!r}; Synapse "
                "needs 'C': CREATE DATABASE … LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
            )

    def _synapse_argv(self, instance: str) -> list[str]:
        if instance == MAIN:
            return [self.python, "-m", "synapse.app.homeserver", "-c", str(self.config_path)]
        return [
            self.python,
            "-m",
            "synapse.app.generic_worker",
            "-c",
            str(self.config_path),
            "-c",
            str(self.worker_config_path(instance)),
        ]

    async def _spawn(self, proc: _Proc) -> _Proc:
        self._procs.append(proc)
        await asyncio.to_thread(proc.spawn, self.data_dir)
        return proc

    def _failure_of(self, proc: _Proc, reason: str) -> SynapseError:
        return SynapseError(f"{reason}; see {proc.log_path}\n--- last log lines ---\n{proc.tail()}")

    async def _wait_http(self, proc: _Proc, url: str, deadline: float) -> None:
        process = proc.process
        assert process is not None
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while True:
                code = process.poll()
                if code is not None:
                    raise await asyncio.to_thread(
                        self._failure_of, proc, f"{proc.name} exited with code {code} before answering {url}"
                    )
                try:
                    async with session.get(url) as response:
                        if response.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                if time.monotonic() >= deadline:
                    raise await asyncio.to_thread(
                        self._failure_of, proc, f"{proc.name} did not answer {url} in time"
                    )
                await asyncio.sleep(_POLL_INTERVAL)

    async def _wait_redis(self, proc: _Proc, deadline: float) -> None:
        process = proc.process
        assert process is not None
        while True:
            code = process.poll()
            if code is not None:
                raise await asyncio.to_thread(self._failure_of, proc, f"redis-server exited with code {code}")
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self._ports["redis"])
                try:
                    writer.write(b"PING\r\n")
                    await writer.drain()
                    if (await asyncio.wait_for(reader.readline(), 2)).startswith(b"+PONG"):
                        return
                finally:
                    writer.close()
            except (OSError, TimeoutError):
                pass
            if time.monotonic() >= deadline:
                raise await asyncio.to_thread(
                    self._failure_of, proc, "redis-server did not answer PING in time"
                )
            await asyncio.sleep(_POLL_INTERVAL)

    async def start(self, timeout: float = 120) -> None:
        """Check the prerequisites, write every config, start redis, main, the workers and nginx in that
        order, and wait until the client API answers through nginx. On any failure, everything this
        call started is stopped before the error (which names what is missing) is raised."""
        if self.running:
            raise SynapseError(f"Synapse is already running on {self.base_url}")
        redis_bin, nginx_bin = await asyncio.to_thread(self._preflight)
        await self._check_postgres()
        deadline = time.monotonic() + timeout
        try:
            redis = await self._spawn(
                _Proc(
                    "redis",
                    [
                        redis_bin,
                        "--bind",
                        "127.0.0.1",
                        "--port",
                        str(self._ports["redis"]),
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--daemonize",
                        "no",
                        "--dir",
                        str(self.data_dir),
                    ],
                    self.log_paths["redis"],
                )
            )
            await self._wait_redis(redis, deadline)
            main = await self._spawn(_Proc(MAIN, self._synapse_argv(MAIN), self.log_path))
            await self._wait_http(
                main, f"http://127.0.0.1:{self._ports['main_client']}/_matrix/client/versions", deadline
            )
            workers = [
                await self._spawn(_Proc(name, self._synapse_argv(name), self.instance_log_path(name)))
                for name in self.instances[1:]
            ]
            await asyncio.gather(
                *(
                    self._wait_http(proc, f"http://127.0.0.1:{self._ports[proc.name]}/health", deadline)
                    for proc in workers
                )
            )
            nginx = await self._spawn(
                _Proc(
                    "nginx",
                    [
                        nginx_bin,
                        "-p",
                        str(self.data_dir / "nginx"),
                        "-c",
                        str(self.nginx_config_path),
                        "-e",
                        str(self.log_paths["nginx"]),
                    ],
                    self.log_paths["nginx"],
                )
            )
            await self._wait_http(nginx, f"{self.base_url}/_matrix/client/versions", deadline)
        except BaseException:
            await self.stop()
            raise

    async def stop(self, timeout: float = 20) -> None:
        """Stop every process this launcher started (nginx first, redis last). Safe when not running."""
        procs, self._procs = self._procs, []
        for proc in reversed(procs):
            await asyncio.to_thread(proc.stop, timeout)

    def kill(self) -> None:
        """SIGKILL every process at once, without a clean shutdown."""
        procs, self._procs = self._procs, []
        for proc in procs:
            proc.signal_group(signal.SIGKILL)
        for proc in procs:
            if proc.process is not None:
                proc.process.wait()


def _safe(dsn: str) -> str:
    """A database URL without its password."""
    return make_url(dsn).render_as_string(hide_password=True)


async def create_synapse_database(server_url: str, name: str) -> str:
    """CREATE DATABASE `name` the way Synapse requires (C collation, from template0); returns its URL.

    `server_url` is any database URL on the server (postgresql://postgres@127.0.0.1:5432/test)."""
    import asyncpg

    dsn = server_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        await connection.execute(
            f"CREATE DATABASE \"{name}\" LC_COLLATE 'C' LC_CTYPE 'C' ENCODING 'UTF8' TEMPLATE template0"
        )
    finally:
        await connection.close()
    return dsn.rsplit("/", 1)[0] + f"/{name}"


async def drop_database(server_url: str, name: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(
        server_url.replace("postgresql+asyncpg://", "postgresql://", 1), timeout=10
    )
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()
