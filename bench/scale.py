"""Channels past one room: what a post costs as subscribers grow, in one room or in shards, on a
single-process or a worker-mode Synapse, and a capacity model fitted to what was measured.

For each configuration (Synapse mode × subscribers N × layout), against a fresh Synapse on PostgreSQL
(a throw-away database with C collation) and a `kanal run` subprocess (its own throw-away database):

1. An owner creates a channel (management chat, `create`). Layout "one": `channels.shard_size` 0, one
   room. Layout "shards": `channels.shard_size` S, so Kanal opens the next room of the channel when the
   open one has S joined readers and points `#handle` at it ("--emulate-shards": K channels of N/K
   readers instead, each post sent to all K, for a Kanal without shards).
2. N readers are registered with the shared-secret admin API (which also returns each one's access
   token) and join `#handle:localhost` through the alias, a bounded number at a time; the room each
   landed in is counted, joins/s reported.
3. A reader of the first and of the last room sync (matrix-nio, long-poll). The owner posts in
   backstage, one post at a time: `--posts` m.text posts, then with `--notice` as many `!silent` posts
   (published as m.notice). Per post: latency until each of the two readers' sync returns it; CPU of
   every Synapse process (/proc/<pid>/stat; nginx and Redis in worker mode), of the PostgreSQL backends
   serving Synapse's database and Kanal's, and of Kanal; per-member notification rows written
   (event_push_actions of the new events; each was first an event_push_actions_staging row).
4. `state_groups_state` rows after the joins.

Then the curve (medians per post) and the capacity model: per-room cost c(n) = a + b·n and last-room
latency fitted by least squares on the measured points; for W event persisters, K = ⌈N/S⌉ rooms are
written W at a time, so the last room's reader waits ≈ L(S) + (⌈K/W⌉ − 1)·c(S) + K·k (k: Kanal's CPU per
room send). EXTRAPOLATION beyond the measured N.

Run (PostgreSQL at KANAL_TEST_POSTGRES or --postgres; redis-server and nginx for --workers):
    .venv/bin/python -m bench.scale --subscribers 1000 --shard-size 500 --posts 20 --notice
    .venv/bin/python -m bench.scale --subscribers 1000,5000 --shard-size 2500 --mode single,workers
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import math
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import asyncpg
import nio
import yaml

from bridge.ops.initfiles import write_init_files
from bridge.ops.synapse import LocalSynapse
from bridge.ops.synapse_workers import SynapseWorkers
from tests.support import Env, User, create_channel, free_port

from ._common import (
    DOMAIN,
    REPO,
    BenchKanal,
    code_version,
    fresh_postgres_database,
    fresh_synapse_database,
    postgres_backend_pids,
    process_table,
    tree_cpu_seconds,
)

SYNC_FILTER = {
    "room": {"timeline": {"limit": 20}, "state": {"lazy_load_members": True}, "ephemeral": {"types": []}},
    "presence": {"types": []},
    "account_data": {"types": []},
}
KANAL_VERIFY_WINDOW_S = 120.0  # bridge.service.VERIFY_WINDOW_S: posts right after start cost a check more


class BenchSynapse(LocalSynapse):
    """The single-process launcher with extra homeserver.yaml settings (caches)."""

    def __init__(self, *args: Any, extra_config: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.extra_config = extra_config or {}

    def config(self) -> dict[str, Any]:
        config = super().config()
        config.update(self.extra_config)
        return config


@dataclass
class Result:
    mode: str
    layout: str
    subscribers: int
    shard_size: int
    rooms: dict[str, int] = field(default_factory=dict)  # room id → readers who landed there
    register_per_s: float = 0.0
    joins_per_s: float = 0.0
    state_groups_state: int = 0
    # per kind ("m.text", "m.notice"): medians and per-post figures
    latency_first_ms: dict[str, float] = field(default_factory=dict)
    latency_last_ms: dict[str, float] = field(default_factory=dict)
    cpu_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # kind → process → ms per post
    push_rows: dict[str, dict[str, float]] = field(default_factory=dict)  # kind → table → rows per post
    lost: dict[str, int] = field(default_factory=dict)

    def synapse_ms(self, kind: str) -> float:
        return sum(
            v for k, v in self.cpu_ms.get(kind, {}).items() if k.startswith(("synapse", "nginx", "redis"))
        )

    def postgres_ms(self, kind: str) -> float:
        return self.cpu_ms.get(kind, {}).get("postgres (synapse db)", 0.0)

    def kanal_ms(self, kind: str) -> float:
        c = self.cpu_ms.get(kind, {})
        return c.get("kanal", 0.0) + c.get("postgres (kanal db)", 0.0)


# -- registration and joins ---------------------------------------------------------------------------


class Progress:
    def __init__(self, what: str, total: int) -> None:
        self.what, self.total, self.done = what, total, 0
        self.started = self.last = time.monotonic()

    def step(self) -> None:
        self.done += 1
        now = time.monotonic()
        if now - self.last >= 5 or self.done == self.total:
            self.last = now
            rate = self.done / max(now - self.started, 1e-9)
            left = (self.total - self.done) / rate if rate else math.inf
            print(
                f"    {self.what}: {self.done:,}/{self.total:,} ({rate:.1f}/s, ~{left:.0f} s left)",
                flush=True,
            )

    @property
    def rate(self) -> float:
        return self.done / max(time.monotonic() - self.started, 1e-9)


async def bounded(items: list[Any], limit: int, work: Callable[[Any], Awaitable[None]]) -> None:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)

    async def worker() -> None:
        while not queue.empty():
            await work(queue.get_nowait())

    await asyncio.gather(*(worker() for _ in range(min(limit, len(items)) or 1)))


async def _retrying(session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
    for attempt in range(8):
        try:
            async with session.request(method, url, **kwargs) as response:
                data = await response.json(content_type=None)
                if response.status == 200:
                    return dict(data)
                if response.status not in (429, 502, 503, 504) and response.status < 500:
                    raise RuntimeError(f"{method} {url}: {response.status} {data}")
        except (aiohttp.ClientError, TimeoutError):
            pass
        await asyncio.sleep(0.2 * 2**attempt)
    raise RuntimeError(f"{method} {url}: gave up after retries")


async def register_readers(
    synapse: LocalSynapse, count: int, prefix: str, concurrency: int
) -> tuple[list[tuple[str, str]], float]:
    """`count` users by the shared-secret admin API: [(user id, access token)], registrations/s."""
    secret = (await asyncio.to_thread(synapse.shared_secret)).encode()
    url = f"{synapse.base_url}/_synapse/admin/v1/register"
    users: list[tuple[str, str]] = []
    progress = Progress("registered", count)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def one(n: int) -> None:
            localpart, password = f"{prefix}{n:06d}", secrets.token_hex(8)
            nonce = (await _retrying(session, "GET", url))["nonce"]
            mac = hmac.new(
                secret,
                b"\x00".join([nonce.encode(), localpart.encode(), password.encode(), b"notadmin"]),
                hashlib.sha1,
            ).hexdigest()
            body = {"nonce": nonce, "username": localpart, "password": password, "admin": False, "mac": mac}
            data = await _retrying(session, "POST", url, json=body)
            users.append((str(data["user_id"]), str(data["access_token"])))
            progress.step()

        await bounded(list(range(count)), concurrency, one)
    return users, progress.rate


async def join_readers(
    synapse: LocalSynapse, readers: list[tuple[str, str, str]], concurrency: int
) -> tuple[list[tuple[str, str, str]], float]:
    """Each (user, token, alias) joins through the alias; [(user, token, room it landed in)] in join order."""
    progress = Progress("joined", len(readers))
    landed: list[tuple[str, str, str]] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:

        async def one(reader: tuple[str, str, str]) -> None:
            user_id, token, alias = reader
            data = await _retrying(
                session,
                "POST",
                f"{synapse.base_url}/_matrix/client/v3/join/{quote(alias)}",
                json={},
                headers={"Authorization": f"Bearer {token}"},
            )
            landed.append((user_id, token, str(data["room_id"])))
            progress.step()

        await bounded(readers, concurrency, one)
    return landed, progress.rate


# -- measuring ----------------------------------------------------------------------------------------


class Meter:
    """CPU seconds of named process trees and of PostgreSQL backends of given databases."""

    def __init__(self, trees: dict[str, int], server_url: str, databases: dict[str, str]) -> None:
        self.trees, self.server_url, self.databases = trees, server_url, databases

    async def snapshot(self) -> dict[str, Any]:
        backends = {
            label: await postgres_backend_pids(self.server_url, db) for label, db in self.databases.items()
        }
        table = await asyncio.to_thread(process_table)
        return {
            "trees": {name: tree_cpu_seconds(pid, table) for name, pid in self.trees.items()},
            "pg": {
                label: {pid: table.get(pid, (0, 0.0))[1] for pid in pids} for label, pids in backends.items()
            },
        }

    @staticmethod
    def used(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
        out = {name: after["trees"][name] - before["trees"][name] for name in after["trees"]}
        for label, pids in after["pg"].items():
            out[f"postgres ({label})"] = sum(
                cpu - before["pg"][label].get(pid, 0.0) for pid, cpu in pids.items()
            )
        return out


async def max_stream_ordering(database_url: str) -> int:
    connection = await asyncpg.connect(database_url)
    try:
        return int(await connection.fetchval("SELECT coalesce(max(stream_ordering), 0) FROM events"))
    finally:
        await connection.close()


async def push_rows_since(database_url: str, stream_ordering: int) -> dict[str, int]:
    """Per-member notification rows of the events after `stream_ordering`: event_push_actions (each one
    was first an event_push_actions_staging row) and the summaries touched."""
    connection = await asyncpg.connect(database_url)
    try:
        actions = await connection.fetchval(
            "SELECT count(*) FROM event_push_actions WHERE stream_ordering > $1", stream_ordering
        )
        summaries = await connection.fetchval(
            "SELECT count(*) FROM event_push_summary WHERE stream_ordering > $1", stream_ordering
        )
    finally:
        await connection.close()
    return {"event_push_actions": int(actions), "event_push_summary": int(summaries)}


async def count_rows(database_url: str, table: str) -> int:
    connection = await asyncpg.connect(database_url)
    try:
        return int(await connection.fetchval(f"SELECT count(*) FROM {table}"))  # noqa: S608 (a constant)
    finally:
        await connection.close()


class Reader:
    """A syncing reader: notes when each body containing `nonce` first arrives."""

    def __init__(self, homeserver: str, user_id: str, token: str, nonce: str) -> None:
        self.client = nio.AsyncClient(homeserver, user_id)
        self.client.access_token = token
        self.client.user_id = user_id
        self.nonce = nonce
        self.seen: dict[str, float] = {}
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        first = await self.client.sync(timeout=0, sync_filter=SYNC_FILTER, full_state=False)
        assert isinstance(first, nio.SyncResponse), first
        self.task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while not self.stop.is_set():
            response = await self.client.sync(
                timeout=30_000, sync_filter=SYNC_FILTER, since=self.client.next_batch
            )
            now = time.monotonic()
            if not isinstance(response, nio.SyncResponse):
                await asyncio.sleep(0.2)
                continue
            for room in response.rooms.join.values():
                for event in room.timeline.events:
                    body = event.source.get("content", {}).get("body")
                    if isinstance(body, str) and self.nonce in body:
                        for token in body.split():
                            if token.startswith(self.nonce):
                                self.seen.setdefault(token, now)

    async def close(self) -> None:
        self.stop.set()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        await self.client.close()


# -- one configuration --------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def stack(
    workdir: Path, args: argparse.Namespace, mode: str, shard_size: int
) -> AsyncIterator[tuple[LocalSynapse, BenchKanal, dict[str, str]]]:
    server = args.postgres
    async with fresh_synapse_database(server) as synapse_db, fresh_postgres_database(server) as kanal_db:
        kanal_port, synapse_port = free_port(), free_port()
        config_path, registration_path = write_init_files(
            workdir / "kanal",
            domain=DOMAIN,
            homeserver_url=f"http://127.0.0.1:{synapse_port}",
            listen=f"127.0.0.1:{kanal_port}",
            database_url=kanal_db,
        )
        config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        config.setdefault("channels", {})["shard_size"] = shard_size
        config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        extra: dict[str, Any] = {}
        if args.push_cache_factor is not None:
            extra["caches"] = {
                "per_cache_factors": {
                    "get_push_rules_for_user": args.push_cache_factor,
                    "get_user_in_room_with_profile": args.push_cache_factor * 5,
                }
            }
        synapse: LocalSynapse
        if mode == "workers":
            synapse = SynapseWorkers(
                workdir / "synapse",
                port=synapse_port,
                app_service_config_files=[registration_path],
                postgres_dsn=synapse_db,
                event_persisters=args.persisters,
                relaxed_rate_limits=True,
                extra_config=extra,
            )
        else:
            synapse = BenchSynapse(
                workdir / "synapse",
                port=synapse_port,
                app_service_config_files=[registration_path],
                postgres_dsn=synapse_db,
                relaxed_rate_limits=True,
                extra_config=extra,
            )
        # This checkout's Kanal (not whichever one the virtualenv's editable install points at), or
        # --kanal-checkout's.
        checkout = str(args.kanal_checkout or REPO)
        kanal = BenchKanal(
            config_path,
            kanal_port,
            workdir / "kanal.log",
            module="bench.scale",
            env={"KANAL_CHECKOUT": checkout},
        )
        try:
            await synapse.start()
            await kanal.start()
            databases = {
                "synapse db": urlsplit(synapse_db).path.lstrip("/"),
                "kanal db": urlsplit(kanal_db).path.lstrip("/"),
            }
            yield synapse, kanal, {"synapse": synapse_db, "kanal": kanal_db, **databases}
        finally:
            try:
                await kanal.stop()
            finally:
                await synapse.stop()


async def run_one(args: argparse.Namespace, mode: str, n: int, layout: str) -> Result:
    shard_size = args.shard_size if layout != "one" else 0
    emulated = layout == "shards" and args.emulate_shards
    rooms_wanted = math.ceil(n / args.shard_size) if layout != "one" else 1
    result = Result(mode, layout + (" (emulated)" if emulated else ""), n, shard_size)
    print(
        f"\n== {mode} Synapse, {n:,} subscribers, {result.layout}"
        + (f" of {args.shard_size:,}" if layout != "one" else ""),
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="kanal-bench-scale-") as tmp:
        workdir = Path(tmp) if args.keep_dir is None else args.keep_dir / f"{mode}-{n}-{layout}"
        workdir.mkdir(parents=True, exist_ok=True)
        async with stack(workdir, args, mode, 0 if emulated else shard_size) as (synapse, kanal, dbs):
            started = time.monotonic()
            env = Env(synapse, kanal, DOMAIN, f"@kanal:{DOMAIN}", "kanal_", workdir)
            try:
                owner = await env.user("owner")
                channels = [
                    await create_channel(env, owner, env.handle("scale"), "Scale bench")
                    for _ in range(rooms_wanted if emulated else 1)
                ]
                print(
                    f"    channel{'s' if len(channels) > 1 else ''} "
                    f"{', '.join(c.broadcast for c in channels)} "
                    f"{', '.join('#' + c.handle for c in channels)} ready",
                    flush=True,
                )
                users, result.register_per_s = await register_readers(
                    synapse, n, f"r{secrets.token_hex(2)}_", args.register_concurrency
                )
                per_channel = math.ceil(n / len(channels))
                wanted = [
                    (user, token, f"#{channels[i // per_channel].handle}:{DOMAIN}")
                    for i, (user, token) in enumerate(users)
                ]
                landed, result.joins_per_s = await join_readers(synapse, wanted, args.join_concurrency)
                counts = Counter(room for _u, _t, room in landed)
                order = list(dict.fromkeys(room for _u, _t, room in landed))
                result.rooms = {room: counts[room] for room in order}
                for i, room in enumerate(order, 1):
                    where = ""
                    if isinstance(synapse, SynapseWorkers):
                        where = f" (written by {synapse.persister_for_room(room)})"
                    print(f"    room {i}: {room} {counts[room]:,} readers{where}", flush=True)
                if layout != "one" and len(order) < rooms_wanted:
                    print(
                        f"    ! expected {rooms_wanted} rooms, readers landed in {len(order)}: this Kanal does "
                        "not shard (try --emulate-shards)",
                        flush=True,
                    )
                result.state_groups_state = await count_rows(dbs["synapse"], "state_groups_state")
                first = next(r for r in landed if r[2] == order[0])
                last = [r for r in landed if r[2] == order[-1]][-1]
                wait = KANAL_VERIFY_WINDOW_S - (time.monotonic() - started)
                if wait > 0 and not args.no_settle:
                    print(f"    waiting {wait:.0f} s for Kanal's post-start verification window", flush=True)
                    await asyncio.sleep(wait)
                await measure_posts(args, synapse, kanal, dbs, owner, channels, first, last, result)
            finally:
                for client in env.users:
                    await client.close()
    return result


async def measure_posts(
    args: argparse.Namespace,
    synapse: LocalSynapse,
    kanal: BenchKanal,
    dbs: dict[str, str],
    owner: User,
    channels: list[Any],
    first: tuple[str, str, str],
    last: tuple[str, str, str],
    result: Result,
) -> None:
    nonce = "p" + secrets.token_hex(4)
    readers = [Reader(synapse.base_url, first[0], first[1], nonce)]
    if last[0] != first[0]:
        readers.append(Reader(synapse.base_url, last[0], last[1], nonce))
    for reader in readers:
        await reader.start()
    assert kanal.process is not None
    trees = {f"synapse {name}": pid for name, pid in synapse.pids.items()}
    if isinstance(synapse, SynapseWorkers):
        trees.update(synapse.helper_pids)
    trees["kanal"] = kanal.process.pid
    meter = Meter(trees, args.postgres, {"synapse db": dbs["synapse db"], "kanal db": dbs["kanal db"]})
    kinds = ["m.text"] + (["m.notice"] if args.notice else [])
    try:
        await asyncio.sleep(2)
        for kind in kinds:
            lat_first: list[float] = []
            lat_last: list[float] = []
            lost = 0
            since = await max_stream_ordering(dbs["synapse"])
            before = await meter.snapshot()
            for i in range(args.posts):
                token = f"{nonce}-{kind[2:]}-{i:04d}"
                body = f"{'!silent ' if kind == 'm.notice' else ''}scale post {token}"
                t0 = time.monotonic()
                for channel in channels:  # emulated shards: the same post to every channel
                    await owner.text(channel.backstage, body)
                deadline = t0 + args.post_timeout
                while time.monotonic() < deadline and not all(token in r.seen for r in readers):
                    await asyncio.sleep(0.01)
                if not all(token in r.seen for r in readers):
                    lost += 1
                    continue
                lat_first.append(readers[0].seen[token] - t0)
                lat_last.append(readers[-1].seen[token] - t0)
                await asyncio.sleep(args.gap)
            await asyncio.sleep(1)
            after = await meter.snapshot()
            rows = await push_rows_since(dbs["synapse"], since)
            used = Meter.used(before, after)
            posts = args.posts
            result.cpu_ms[kind] = {name: 1000 * s / posts for name, s in used.items()}
            result.push_rows[kind] = {t: n / posts for t, n in rows.items()}
            result.latency_first_ms[kind] = 1000 * statistics.median(lat_first) if lat_first else math.nan
            result.latency_last_ms[kind] = 1000 * statistics.median(lat_last) if lat_last else math.nan
            result.lost[kind] = lost
            print(
                f"    {kind}: {posts} posts; latency median first room {result.latency_first_ms[kind]:.0f} ms, "
                f"last room {result.latency_last_ms[kind]:.0f} ms; per post CPU Synapse "
                f"{result.synapse_ms(kind):.0f} ms, PostgreSQL {result.postgres_ms(kind):.0f} ms, "
                f"Kanal {result.kanal_ms(kind):.0f} ms; push rows "
                f"{result.push_rows[kind]['event_push_actions']:.0f}" + (f"; {lost} lost" if lost else ""),
                flush=True,
            )
            print("      " + ", ".join(f"{k} {v:.0f} ms" for k, v in result.cpu_ms[kind].items()), flush=True)
    finally:
        for reader in readers:
            await reader.close()


# -- report and model ---------------------------------------------------------------------------------


def fit_line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares a + b·x; one point: through the origin's slope."""
    if not points:
        return math.nan, math.nan
    if len(points) == 1 or len({x for x, _ in points}) == 1:
        x, y = points[0]
        return 0.0, y / x if x else math.nan
    mean_x = statistics.fmean(x for x, _ in points)
    mean_y = statistics.fmean(y for _, y in points)
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    b = sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx
    return mean_y - b * mean_x, b


def room_size(r: Result) -> float:
    """Readers per room (the largest room's): what one room's send costs scale with."""
    return float(max(r.rooms.values())) if r.rooms else float(r.subscribers)


def print_report(results: list[Result], args: argparse.Namespace) -> None:
    print("\n== Per post (medians of latency; CPU per post = CPU over the series / posts)")
    header = (
        f"{'synapse':8} {'layout':18} {'N':>7} {'rooms':>5} {'largest':>7} {'kind':8} {'joins/s':>7} "
        f"{'sgs rows':>9} {'lat 1st':>8} {'lat last':>8} {'Synapse':>8} {'PG':>7} {'Kanal':>6} {'push rows':>9}"
    )
    print(header)
    for r in results:
        for kind in r.cpu_ms:
            print(
                f"{r.mode:8} {r.layout:18} {r.subscribers:>7,} {len(r.rooms):>5} {int(room_size(r)):>7,} "
                f"{kind:8} {r.joins_per_s:>7.1f} {r.state_groups_state:>9,} "
                f"{r.latency_first_ms[kind]:>6.0f}ms {r.latency_last_ms[kind]:>6.0f}ms "
                f"{r.synapse_ms(kind):>6.0f}ms {r.postgres_ms(kind):>5.0f}ms {r.kanal_ms(kind):>4.0f}ms "
                f"{r.push_rows[kind]['event_push_actions']:>9.0f}"
            )
    print_model(results, args)


@dataclass(frozen=True)
class Model:
    """c(n) = a + b·n per room send (ms); one room's latency L(n) = la + lb·n; k Kanal ms per room send."""

    a: float
    b: float
    la: float
    lb: float
    kanal: float

    def cost_at(self, n: float) -> float:
        return self.a + self.b * n

    def latency_last(self, total: int, shard: int, writers: int) -> float:
        """The last room's reader: its own room's latency, after ⌈K/W⌉ − 1 rounds of W rooms written in
        parallel, and after Kanal has made all K sends (one process)."""
        rooms = math.ceil(total / shard)
        return (
            self.la
            + self.lb * shard
            + (math.ceil(rooms / writers) - 1) * self.cost_at(shard)
            + rooms * self.kanal
        )


def print_model(results: list[Result], args: argparse.Namespace) -> None:
    for mode in dict.fromkeys(r.mode for r in results):
        runs = [r for r in results if r.mode == mode and "m.text" in r.cpu_ms]
        if not runs:
            continue
        # Per room send: Synapse + PostgreSQL CPU of one post divided over the rooms it went to.
        cost = [
            (room_size(r), (r.synapse_ms("m.text") + r.postgres_ms("m.text")) / len(r.rooms)) for r in runs
        ]
        latency = [(room_size(r), r.latency_first_ms["m.text"]) for r in runs if len(r.rooms) == 1]
        kanal = statistics.median(r.kanal_ms("m.text") / max(len(r.rooms), 1) for r in runs)
        a, b = fit_line(cost)
        if a < 0:  # too few or too close points for an intercept: proportional through the origin
            a, b = 0.0, statistics.fmean(y / x for x, y in cost)
        print(
            f"\n== Capacity model, {mode} Synapse (EXTRAPOLATION from N ≤ {max(r.subscribers for r in runs):,})"
        )
        print(
            f"  per room send, Synapse+PostgreSQL CPU: c(n) = {a:.1f} ms + {1000 * b:.1f} µs × n members "
            f"(least squares over {len(cost)} point(s): "
            + ", ".join(f"{int(x):,}→{y:.0f} ms" for x, y in cost)
            + ")"
        )
        print(f"  Kanal CPU per room send: k = {kanal:.1f} ms (median)")
        # A room's latency: a fixed pipeline (Kanal's relay, the readers' sync) plus the room's own
        # processing, taken as its CPU cost c(n).
        overheads = [lat - (a + b * n) for n, lat in latency] or [50.0]
        la, lb = a + max(statistics.median(overheads), 0.0), b
        print(
            f"  one room's latency: L(n) = {la:.0f} ms + {1000 * lb:.1f} µs × n (fixed part from the one-room runs)"
        )
        model = Model(a, b, la, lb, kanal)
        cost_at, latency_last = model.cost_at, model.latency_last

        for writers in args.model_writers:
            best: tuple[int, int] = (0, 0)
            for shard in (1000, 2000, 2500, 5000, 10000, 20000):
                if la + lb * shard > args.target_latency_ms:
                    continue
                total = shard
                while latency_last(total + shard, shard, writers) <= args.target_latency_ms and total < 10**8:
                    total += shard
                if total > best[0]:
                    best = (total, shard)
            print(
                f"  W={writers} event persisters (one core each): largest channel with the last room under "
                f"{args.target_latency_ms:.0f} ms ≈ {best[0]:,} subscribers (shards of {best[1]:,})"
            )
        for shard, total in [
            (shard, total)
            for shard in dict.fromkeys([args.shard_size, *args.model_shard_sizes])
            for total in (100_000, 1_000_000)
        ]:
            rooms = math.ceil(total / shard)
            per_post = rooms * (cost_at(shard) + kanal)
            print(
                f"  {total:,} subscribers in {rooms:,} shards of {shard:,}: ≈ {per_post / 1000:.1f} CPU-s per "
                f"m.text post (Synapse+PostgreSQL {rooms * cost_at(shard) / 1000:.1f} s, Kanal "
                f"{rooms * kanal / 1000:.1f} s); state_groups_state ≈ {total * shard / 200:,.0f} rows (N·S/200)"
            )
        notice = [r for r in runs if "m.notice" in r.cpu_ms]
        for r in notice:
            text = r.synapse_ms("m.text") + r.postgres_ms("m.text")
            quiet = r.synapse_ms("m.notice") + r.postgres_ms("m.notice")
            print(
                f"  m.notice vs m.text at {r.subscribers:,} ({r.layout}): Synapse+PostgreSQL {quiet:.0f} vs "
                f"{text:.0f} ms per post ({100 * (1 - quiet / text):.0f}% less); push rows "
                f"{r.push_rows['m.notice']['event_push_actions']:.0f} vs "
                f"{r.push_rows['m.text']['event_push_actions']:.0f}"
            )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    parser.add_argument("--subscribers", type=ints, default=[1000], help="N values, e.g. 1000,5000,10000")
    parser.add_argument(
        "--shard-size", type=int, default=500, help="readers per shard in the 'shards' layout"
    )
    parser.add_argument("--layouts", default="one,shards", help="one, shards or both (one,shards)")
    parser.add_argument("--mode", default="single", help="single, workers or both (single,workers)")
    parser.add_argument("--workers", action="store_true", help="shorthand for --mode workers")
    parser.add_argument("--persisters", type=int, default=2, help="event persisters in worker mode")
    parser.add_argument("--posts", type=int, default=20)
    parser.add_argument("--notice", action="store_true", help="also post m.notice (`!silent`) and compare")
    parser.add_argument("--emulate-shards", action="store_true", help="K channels instead of Kanal's shards")
    parser.add_argument(
        "--push-cache-factor", type=float, help="caches.per_cache_factors for the push caches"
    )
    parser.add_argument("--register-concurrency", type=int, default=16)
    parser.add_argument("--join-concurrency", type=int, default=8)
    parser.add_argument(
        "--gap", type=float, default=0.3, help="seconds between one post's arrival and the next"
    )
    parser.add_argument("--post-timeout", type=float, default=120.0)
    parser.add_argument("--no-settle", action="store_true", help="do not wait out Kanal's verify window")
    parser.add_argument("--target-latency-ms", type=float, default=2000.0)
    parser.add_argument(
        "--model-shard-sizes", type=ints, default=[5000], help="shard sizes for the cost lines"
    )
    parser.add_argument("--model-writers", type=ints, default=[1, 2, 4, 8, 16])
    parser.add_argument(
        "--postgres",
        default=os.environ.get("KANAL_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"),
        help="a PostgreSQL server URL (through any database)",
    )
    parser.add_argument(
        "--kanal-checkout", type=Path, help="run Kanal from this work tree (default: this one)"
    )
    parser.add_argument("--keep-dir", type=Path, help="keep each run's files (logs, configs) here")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--from-json", type=Path, nargs="*", help="only print the report of earlier runs")
    args = parser.parse_args(argv)
    args.postgres = args.postgres.replace("postgresql+asyncpg://", "postgresql://", 1)
    if args.workers:
        args.mode = "workers"
    return args


def checkout_version(path: Path) -> str:
    """The commit of the Kanal that runs, and whether its work tree differs from it."""
    if Path(path).resolve() == REPO:
        return code_version()
    import subprocess

    head = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = subprocess.run(
        [
            "git",
            "-C",
            str(path),
            "status",
            "--porcelain",
            "--untracked-files=all",
            "--",
            "appservice",
            "bridge",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return f"{path} at {head}" + (" + uncommitted changes in appservice/ or bridge/" if dirty else "")


def load_results(paths: list[Path]) -> list[Result]:
    results = []
    for path in paths:
        for data in json.loads(path.read_text(encoding="utf-8")):
            results.append(Result(**data))
    return results


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        print_report(load_results(args.from_json), args)
        return 0
    print(
        f"Kanal code: {checkout_version(args.kanal_checkout or REPO)}; {os.cpu_count()} cores; PostgreSQL {args.postgres.rsplit('@', 1)[-1]}"
    )
    print(" ".join(["python -m bench.scale", *(argv if argv is not None else sys.argv[1:])]), flush=True)
    results: list[Result] = []
    for mode in args.mode.split(","):
        for n in args.subscribers:
            for layout in args.layouts.split(","):
                result = await run_one(args, mode, n, layout)
                results.append(result)
                if args.json:
                    args.json.write_text(json.dumps([asdict(r) for r in results], indent=1), encoding="utf-8")
    print_report(results, args)
    return 0


def run_kanal_from_checkout(checkout: str) -> None:
    """`python -m bench.scale run -c config.yaml` with KANAL_CHECKOUT set: `kanal run` from that checkout
    (--kanal-checkout: measure another work tree's Kanal, e.g. a branch with shards not merged here)."""
    import runpy

    for name in [m for m in sys.modules if m.split(".")[0] in ("bridge", "appservice")]:
        del sys.modules[name]
    sys.path.insert(0, checkout)
    sys.argv = ["kanal", *sys.argv[1:]]
    runpy.run_module("bridge.cli", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["run"] and os.environ.get("KANAL_CHECKOUT"):
        run_kanal_from_checkout(os.environ["KANAL_CHECKOUT"])
    else:
        sys.exit(asyncio.run(main()))
