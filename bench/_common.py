"""Shared helpers for the benchmarks: percentiles, a Synapse + Kanal stack, throw-away PostgreSQL databases."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import yaml

from bridge.ops.initfiles import write_init_files
from bridge.ops.synapse import LocalSynapse
from tests.support import KanalProcess, free_port

DOMAIN = "localhost"
REPO = Path(__file__).resolve().parent.parent


def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (p in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def code_version() -> str:
    """The commit under test, and whether the work tree differs from it (Kanal is edited concurrently)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "-C",
                str(REPO),
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                "appservice",
                "bridge",
            ],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{' + uncommitted changes in appservice/ or bridge/' if dirty else ''}"


def engine_of(database_url: str) -> str:
    if database_url.startswith("sqlite"):
        return "SQLite (aiosqlite)"
    if database_url.startswith(("postgresql", "postgres")):
        return "PostgreSQL (asyncpg)"
    return database_url.split(":", 1)[0]


class BenchKanal(KanalProcess):
    """KanalProcess, optionally under cProfile (`profile_path`) or through a wrapper module (timing probes)."""

    def __init__(
        self,
        config_path: Path,
        port: int,
        log_path: Path,
        *,
        profile_path: Path | None = None,
        module: str = "bridge.cli",
        env: dict[str, str] | None = None,
    ) -> None:
        super().__init__(config_path, port, log_path)
        self.profile_path = profile_path
        self.module = module
        self.env = env

    async def start(self, timeout: float = 30) -> None:
        prefix = [sys.executable]
        if self.profile_path is not None:
            prefix += ["-m", "cProfile", "-o", str(self.profile_path)]
        module = self.module
        # Always the tree the benchmark is in (an editable install may point at another checkout).
        env = {**os.environ, **(self.env or {})}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
        log = self.log_path.open("ab")
        try:
            self.process = await asyncio.to_thread(
                subprocess.Popen,
                [*prefix, "-m", module, "run", "-c", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.config_path.parent,
                env=env,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"kanal exited with {self.process.returncode}:\n{self.tail()}")
                try:
                    async with http.get(f"http://127.0.0.1:{self.port}/health") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"kanal did not start within {timeout} s:\n{self.tail()}")


class BareRelay:
    """bench.bare_appservice in relay mode, registered with the same Synapse as Kanal (the floor)."""

    LOCALPART = "bare_relay"

    def __init__(self, workdir: Path, homeserver_url: str) -> None:
        self.port = free_port()
        self.as_token = secrets.token_urlsafe(24)
        self.hs_token = secrets.token_urlsafe(24)
        self.user_id = f"@{self.LOCALPART}:{DOMAIN}"
        self.homeserver_url = homeserver_url
        self.registration_path = workdir / "bare-relay-registration.yaml"
        self.registration_path.parent.mkdir(parents=True, exist_ok=True)
        self.registration_path.write_text(
            yaml.safe_dump(
                {
                    "id": "bare-relay",
                    "url": f"http://127.0.0.1:{self.port}",
                    "as_token": self.as_token,
                    "hs_token": self.hs_token,
                    "sender_localpart": self.LOCALPART,
                    "namespaces": {
                        "users": [{"exclusive": True, "regex": f"@{self.LOCALPART}:{DOMAIN}"}],
                        "aliases": [],
                        "rooms": [],
                    },
                    "rate_limited": False,
                }
            ),
            encoding="utf-8",
        )
        env = {**os.environ, "KANAL_BENCH_HS_TOKEN": self.hs_token, "KANAL_BENCH_AS_TOKEN": self.as_token}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
        self.process = Subprocess(
            [
                sys.executable,
                "-m",
                "bench.bare_appservice",
                "--port",
                str(self.port),
                "--relay-homeserver",
                homeserver_url,
                "--relay-as",
                self.user_id,
            ],
            workdir / "bare-relay.log",
            env,
        )

    @property
    def pid(self) -> int | None:
        return self.process.process.pid if self.process.process else None

    async def start(self) -> None:
        self.process.start()
        await self.process.wait_http(f"http://127.0.0.1:{self.port}/health")

    async def relay(self, source: str, target: str) -> None:
        """Join the relay user to both rooms (it must be invited to private ones) and map them."""
        headers = {"Authorization": f"Bearer {self.as_token}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            for room in (source, target):
                url = f"{self.homeserver_url}/_matrix/client/v3/join/{room}"
                async with http.post(url, params={"user_id": self.user_id}, json={}) as response:
                    if response.status != 200:
                        raise RuntimeError(f"bare relay cannot join {room}: {await response.text()}")
            async with http.post(
                f"http://127.0.0.1:{self.port}/_bench/relay",
                json={"source": source, "target": target},
                headers={"Authorization": f"Bearer {self.hs_token}"},
            ) as response:
                if response.status != 200:
                    raise RuntimeError(f"bare relay refused the mapping: {await response.text()}")


@dataclass
class Stack:
    synapse: LocalSynapse
    kanal: BenchKanal
    config_path: Path
    registration_path: Path
    hs_token: str
    kanal_url: str
    bare: BareRelay | None = None


@contextlib.asynccontextmanager
async def synapse_and_kanal(
    workdir: Path,
    *,
    database_url: str | None = None,
    profile_path: Path | None = None,
    kanal_module: str = "bridge.cli",
    kanal_env: dict[str, str] | None = None,
    bare_relay: bool = False,
    kanal_config: dict[str, dict[str, Any]] | None = None,
    encryption: bool = False,
) -> AsyncIterator[Stack]:
    """A fresh loopback Synapse (relaxed rate limits) and a `kanal run` subprocess; both stopped on exit.

    `encryption`: the homeserver encrypts every private room at creation (`invite`) and Kanal's bot
    takes part (`encryption.enabled`), as in tests/integration/test_e2ee.py.

    `bare_relay`: also bench.bare_appservice in relay mode, registered with the same Synapse (Stack.bare).
    `kanal_config`: sections merged into Kanal's config before it starts (e.g. {"channels": {…}}).
    """
    kanal_port, synapse_port = free_port(), free_port()
    config_path, registration_path = write_init_files(
        workdir / "kanal",
        domain=DOMAIN,
        homeserver_url=f"http://127.0.0.1:{synapse_port}",
        listen=f"127.0.0.1:{kanal_port}",
        database_url=database_url or f"sqlite:///{workdir / 'kanal.db'}",
        encryption=encryption,
    )
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    if kanal_config:
        for section, values in kanal_config.items():
            config.setdefault(section, {}).update(values)
        config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    bare = BareRelay(workdir / "bare", f"http://127.0.0.1:{synapse_port}") if bare_relay else None
    synapse = LocalSynapse(
        workdir / "synapse",
        server_name=DOMAIN,
        port=synapse_port,
        app_service_config_files=[registration_path, *([bare.registration_path] if bare else [])],
        relaxed_rate_limits=True,
        encryption_by_default="invite" if encryption else "off",
    )
    kanal = BenchKanal(
        config_path,
        kanal_port,
        workdir / "kanal.log",
        profile_path=profile_path,
        module=kanal_module,
        env=kanal_env,
    )
    try:
        await synapse.start()
        if bare is not None:
            await bare.start()
        await kanal.start()
        yield Stack(
            synapse,
            kanal,
            config_path,
            registration_path,
            config["appservice"]["hs_token"],
            f"http://127.0.0.1:{kanal_port}",
            bare,
        )
    finally:
        try:
            await kanal.stop()
            if bare is not None:
                await bare.process.stop()
        finally:
            await synapse.stop()


@contextlib.asynccontextmanager
async def fresh_postgres_database(server_url: str) -> AsyncIterator[str]:
    """Create `kanal_bench_<hex>` on the server (connecting through the URL's database), drop it afterwards."""
    import asyncpg

    parts = urlsplit(server_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    admin_dsn = urlunsplit(parts)
    name = f"kanal_bench_{secrets.token_hex(4)}"

    async def admin(sql: str) -> None:
        connection = await asyncpg.connect(admin_dsn, timeout=10)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    await admin(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(parts._replace(path="/" + name))
    finally:
        await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def postgres_version(database_url: str) -> str:
    import asyncpg

    connection = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        return str(await connection.fetchval("SHOW server_version"))
    finally:
        await connection.close()


class Subprocess:
    """A helper process in its own session, stopped with SIGTERM then SIGKILL."""

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.log_path = log_path
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
            )

    async def wait_http(self, url: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.process is None or self.process.poll() is not None:
                    raise RuntimeError(f"{self.argv} exited early; see {self.log_path}")
                try:
                    async with http.get(url) as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.argv} did not answer {url} within {timeout} s")

    async def stop(self, timeout: float = 10) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait)


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc), 0.0 when unknown."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds used by named processes (and this one) between `start()` and `stop()`."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = pids
        self.before: dict[str, float] = {}
        self.used: dict[str, float] = {}
        self.wall = 0.0
        self.load_before = (0.0, 0.0, 0.0)
        self.load_after = (0.0, 0.0, 0.0)

    def _now(self) -> dict[str, float]:
        values = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        values["bench client"] = sum(os.times()[:2])
        return values

    def start(self) -> None:
        self.load_before = os.getloadavg()
        self.before = self._now()
        self.wall = time.monotonic()

    def stop(self) -> None:
        self.wall = time.monotonic() - self.wall
        after = self._now()
        self.used = {name: after[name] - self.before[name] for name in after}
        self.load_after = os.getloadavg()

    def report(self) -> str:
        parts = ", ".join(
            f"{name} {used:.1f} s ({100 * used / self.wall:.0f}% of a core)"
            for name, used in self.used.items()
        )
        return (
            f"CPU over {self.wall:.1f} s wall: {parts}; {os.cpu_count()} cores; load average "
            f"{self.load_before[0]:.2f} before, {self.load_after[0]:.2f} after"
        )


@contextlib.asynccontextmanager
async def fresh_synapse_database(server_url: str) -> AsyncIterator[str]:
    """Create `synapse_bench_<hex>` as Synapse requires it (C collation), drop it afterwards."""
    from bridge.ops.synapse_workers import create_synapse_database, drop_database

    name = f"synapse_bench_{secrets.token_hex(4)}"
    url = await create_synapse_database(server_url, name)
    try:
        yield url
    finally:
        await drop_database(server_url, name)


def process_table() -> dict[int, tuple[int, float]]:
    """Every process on the machine: pid → (parent pid, user + system CPU seconds so far)."""
    table: dict[int, tuple[int, float]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    return table


def tree_cpu_seconds(pid: int, table: dict[int, tuple[int, float]]) -> float:
    """CPU seconds of a process and its live descendants (nginx's master and its worker, say)."""
    children: dict[int, list[int]] = {}
    for child, (parent, _cpu) in table.items():
        children.setdefault(parent, []).append(child)
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        total += table.get(current, (0, 0.0))[1]
        stack.extend(children.get(current, []))
    return total


async def postgres_backend_pids(server_url: str, database: str) -> list[int]:
    """The PostgreSQL server processes serving `database` now (pg_stat_activity)."""
    import asyncpg

    connection = await asyncpg.connect(server_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        rows = await connection.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", database)
    finally:
        await connection.close()
    return [int(row["pid"]) for row in rows]
