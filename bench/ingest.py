"""Transaction ingest: events/s Kanal accepts for events it must look at but not act on.

What is measured: one load client (this process) PUTs `/_matrix/app/v1/transactions/{id}` with the
hs_token, one transaction in flight (as Synapse does), each transaction 100 events that Kanal has to
inspect and then drop: `m.room.message` events in rooms Kanal does not manage and `m.reaction` events
(half and half by default, `--reaction-share`). Bodies are serialised before the clock starts; event ids
and transaction ids are unique, so no dedupe fast path is hit. Servers, each in its own process:

* Kanal: `kanal run` (subprocess) wired to a real loopback Synapse (LocalSynapse), with SQLite in the
  temp folder, or PostgreSQL via `--database-url` / `--fresh-postgres`.
* bare:  bench.bare_appservice (subprocess), aiohttp that only checks the bearer token with
  hmac.compare_digest and json-parses the body: the floor set by HTTP + JSON in Python.

Each server gets `--runs` runs (default 3, alternating Kanal/bare) of `--transactions` (default 300)
transactions after a warm-up; the median run's events/s is printed, with per-transaction p50/p95.

Run:  cd /work/main && .venv/bin/python -m bench.ingest
      .venv/bin/python -m bench.ingest --fresh-postgres postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.support import free_port

from ._common import (
    DOMAIN,
    REPO,
    Subprocess,
    code_version,
    cpu_seconds,
    engine_of,
    fresh_postgres_database,
    percentile,
    postgres_version,
    synapse_and_kanal,
)

EVENTS_PER_TXN = 100
UNMANAGED_ROOMS = 50
SENDERS = 200


def _id(sigil: str, n: int = 43) -> str:
    return sigil + secrets.token_urlsafe(n)[:n]


class EventFactory:
    """Synapse-shaped events Kanal must inspect but not act on."""

    def __init__(self, reaction_share: float, seed: int = 1) -> None:
        self.random = random.Random(seed)
        self.reaction_share = reaction_share
        self.rooms = [f"!{secrets.token_urlsafe(18)}:{DOMAIN}" for _ in range(UNMANAGED_ROOMS)]
        self.senders = [f"@reader{i}:{DOMAIN}" for i in range(SENDERS)]
        self.ts = int(time.time() * 1000)

    def event(self) -> dict[str, Any]:
        self.ts += 1
        sender = self.random.choice(self.senders)
        base = {
            "room_id": self.random.choice(self.rooms),
            "sender": sender,
            "event_id": _id("$"),
            "origin_server_ts": self.ts,
            "unsigned": {"age": self.random.randint(1, 500)},
            "user_id": sender,
        }
        if self.random.random() < self.reaction_share:
            return {
                **base,
                "type": "m.reaction",
                "content": {"m.relates_to": {"rel_type": "m.annotation", "event_id": _id("$"), "key": "👍"}},
            }
        return {
            **base,
            "type": "m.room.message",
            "content": {
                "msgtype": "m.text",
                "body": "a reader says something in a room Kanal does not manage",
            },
        }

    def bodies(self, count: int) -> list[tuple[str, bytes]]:
        prefix = secrets.token_hex(4)
        return [
            (
                f"bench-{prefix}-{i}",
                json.dumps({"events": [self.event() for _ in range(EVENTS_PER_TXN)]}).encode(),
            )
            for i in range(count)
        ]


@dataclass
class RunResult:
    server: str
    transactions: int
    seconds: float
    latencies: list[float]

    @property
    def events_per_s(self) -> float:
        return self.transactions * EVENTS_PER_TXN / self.seconds


async def load(
    http: aiohttp.ClientSession, base_url: str, hs_token: str, bodies: list[tuple[str, bytes]]
) -> tuple[float, list[float]]:
    """PUT the transactions one after the other (one in flight); returns wall seconds and per-txn latency."""
    headers = {"Authorization": f"Bearer {hs_token}", "Content-Type": "application/json"}
    latencies: list[float] = []
    started = time.perf_counter()
    for txn_id, body in bodies:
        t0 = time.perf_counter()
        async with http.put(
            f"{base_url}/_matrix/app/v1/transactions/{txn_id}", data=body, headers=headers
        ) as r:
            await r.read()
            if r.status != 200:
                raise RuntimeError(f"{base_url}: transaction {txn_id} → {r.status} {await r.text()}")
        latencies.append(time.perf_counter() - t0)
    return time.perf_counter() - started, latencies


@contextlib.asynccontextmanager
async def bare_server(workdir: Path, hs_token: str) -> AsyncIterator[tuple[str, Subprocess]]:
    port = free_port()
    env = {**os.environ, "KANAL_BENCH_HS_TOKEN": hs_token}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    proc = Subprocess(
        [sys.executable, "-m", "bench.bare_appservice", "--port", str(port)], workdir / "bare.log", env
    )
    try:
        proc.start()
        url = f"http://127.0.0.1:{port}"
        await proc.wait_http(url + "/health")
        yield url, proc
    finally:
        await proc.stop()


@contextlib.asynccontextmanager
async def database(args: argparse.Namespace, workdir: Path) -> AsyncIterator[str]:
    if args.fresh_postgres:
        async with fresh_postgres_database(args.fresh_postgres) as url:
            yield url
    else:
        yield args.database_url or f"sqlite:///{workdir / 'kanal.db'}"


def describe(results: list[RunResult]) -> tuple[float, str]:
    rates = [r.events_per_s for r in results]
    median_run = sorted(results, key=lambda r: r.events_per_s)[len(results) // 2]
    lat = median_run.latencies
    text = (
        f"{statistics.median(rates):9,.0f} events/s  (runs: {', '.join(f'{x:,.0f}' for x in rates)}; "
        f"median run: {median_run.transactions} txns in {median_run.seconds:.2f} s, per-transaction "
        f"p50 {percentile(lat, 50) * 1000:.2f} ms, p95 {percentile(lat, 95) * 1000:.2f} ms)"
    )
    return statistics.median(rates), text


async def bench(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="kanal-bench-ingest-") as tmp:
        workdir = args.keep_dir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        async with database(args, workdir) as database_url:
            engine = engine_of(database_url)
            if engine.startswith("PostgreSQL"):
                engine += (
                    f" {await postgres_version(database_url)}, database {database_url.rsplit('/', 1)[1]}"
                )
            profile_path = args.profile
            variant: dict[str, Any] = {}
            async with (
                synapse_and_kanal(
                    workdir, database_url=database_url, profile_path=profile_path, **variant
                ) as stack,
                bare_server(workdir, stack.hs_token) as (bare_url, bare),
            ):
                return await measure(args, stack, bare_url, bare, engine, profile_path)


async def measure(
    args: argparse.Namespace,
    stack: Any,
    bare_url: str,
    bare: Subprocess,
    engine: str,
    profile_path: Path | None,
) -> int:
    factory = EventFactory(args.reaction_share)
    servers = {"kanal": stack.kanal_url, "bare": bare_url}
    print(f"Kanal code: {code_version()}")
    print(
        f"Kanal DB: {engine}; Synapse {stack.synapse.base_url} (real, idle); {args.runs} runs × "
        f"{args.transactions} transactions × {EVENTS_PER_TXN} events per server, one in flight; "
        f"{args.reaction_share:.0%} m.reaction, the rest m.room.message in {UNMANAGED_ROOMS} unmanaged rooms",
        flush=True,
    )
    results: dict[str, list[RunResult]] = {"kanal": [], "bare": []}
    pids = {
        "kanal": stack.kanal.process.pid if stack.kanal.process else None,
        "bare": bare.process.pid if bare.process else None,
    }
    server_cpu = {"kanal": 0.0, "bare": 0.0}
    client_cpu = {"kanal": 0.0, "bare": 0.0}
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as http:
        for url in servers.values():
            await load(http, url, stack.hs_token, factory.bodies(args.warmup))
        for run in range(args.runs):
            order = ("kanal", "bare") if run % 2 == 0 else ("bare", "kanal")
            for name in order:
                bodies = factory.bodies(args.transactions)
                cpu0, client0 = cpu_seconds(pids[name]), sum(os.times()[:2])
                seconds, latencies = await load(http, servers[name], stack.hs_token, bodies)
                server_cpu[name] += cpu_seconds(pids[name]) - cpu0
                client_cpu[name] += sum(os.times()[:2]) - client0
                results[name].append(RunResult(name, len(bodies), seconds, latencies))
                print(
                    f"  run {run + 1} {name:5}: {results[name][-1].events_per_s:9,.0f} events/s", flush=True
                )
    kanal_rate, kanal_text = describe(results["kanal"])
    bare_rate, bare_text = describe(results["bare"])
    print(f"\nKanal ({engine}): {kanal_text}")
    print(f"bare handler:  {bare_text}")
    print(
        f"ratio Kanal/bare: {kanal_rate / bare_rate:.2f}  (Kanal reaches {100 * kanal_rate / bare_rate:.0f}% "
        "of the bare handler's rate)"
    )
    for name in ("kanal", "bare"):
        wall = sum(r.seconds for r in results[name])
        events = sum(r.transactions for r in results[name]) * EVENTS_PER_TXN
        print(
            f"CPU during the {name} runs ({wall:.1f} s wall): server {server_cpu[name]:.2f} s "
            f"({1e6 * server_cpu[name] / events:.1f} µs/event, {100 * server_cpu[name] / wall:.0f}% of a core), "
            f"load client {client_cpu[name]:.2f} s ({100 * client_cpu[name] / wall:.0f}% of a core)"
        )
    print(f"load average now {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    if profile_path is not None:
        print(f"Kanal ran under cProfile (slower than normal); stats go to {profile_path} when it stops")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest",
        description="Events/s Kanal ingests (100-event transactions it must inspect and drop) vs a bare handler.",
    )
    parser.add_argument("--transactions", type=int, default=300, help="transactions per run (default 300)")
    parser.add_argument("--runs", type=int, default=3, help="runs per server; the median is printed (3)")
    parser.add_argument(
        "--warmup", type=int, default=20, help="unmeasured transactions per server first (20)"
    )
    parser.add_argument(
        "--reaction-share",
        type=float,
        default=0.5,
        help="share of m.reaction events; the rest are m.room.message in unmanaged rooms (0.5)",
    )
    db = parser.add_mutually_exclusive_group()
    db.add_argument(
        "--database-url",
        help="Kanal's database, used as given (default: SQLite in the temp folder), "
        "e.g. postgresql://postgres@127.0.0.1:5432/kanal_bench",
    )
    db.add_argument(
        "--fresh-postgres",
        metavar="SERVER_URL",
        help="create a fresh database on this PostgreSQL server (connecting through the URL's database, "
        "e.g. postgresql://postgres@127.0.0.1:5432/postgres), use it, and drop it afterwards",
    )
    parser.add_argument("--profile", metavar="PATH", help="run Kanal under cProfile, stats to PATH (slower)")
    parser.add_argument("--keep-dir", help="use this folder instead of a temporary one, and keep it")
    args = parser.parse_args(argv)
    args.keep_dir = Path(args.keep_dir).resolve() if args.keep_dir else None
    args.profile = Path(args.profile).resolve() if args.profile else None
    if args.transactions < 1 or args.runs < 1 or args.warmup < 0 or not 0 <= args.reaction_share <= 1:
        parser.error("--transactions and --runs must be ≥ 1, --warmup ≥ 0, --reaction-share in 0..1")
    for url in (args.database_url, args.fresh_postgres):
        if (
            url
            and "://" in url
            and url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1].split(":")[0]
            not in ("127.0.0.1", "localhost", "::1", "[::1]", "")
        ):
            parser.error("loopback database servers only")
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
