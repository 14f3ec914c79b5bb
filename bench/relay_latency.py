"""Relay latency: backstage post → relayed copy seen by a subscriber, against a direct send as baseline.

What is measured, in one run against a fresh loopback Synapse (SQLite, relaxed rate limits) and a
`kanal run` subprocess, both in a temporary folder:

* relay:  the channel owner sends a post into the backstage room; the clock starts when the send
          starts and stops when the subscriber's long-poll `/sync` (nio, timeout 30 s, with `since`)
          returns the ghost's relayed copy in the broadcast room.
* direct: the same owner sends into an ordinary room the subscriber is in; same clock, same sync loop.
* bare:   the same owner sends into a room that bench.bare_appservice (relay mode: a minimal relay that
          stores nothing, registered with the same Synapse) copies into a room the subscriber is in.

The three series interleave (a third of an interval apart, order rotated every round) so all see the
same machine noise. Bodies carry a unique sequence number and run nonce, which is how arrivals
are matched. Besides p50/p95 and the relay/direct ratios, a breakdown is printed from the events'
`origin_server_ts` (same machine, so wall clocks agree to the millisecond):
send → send returned; send returned → relayed copy created (Kanal's share: AS push, ingest, processor,
outbox, ghost send); event created → subscriber sees it.

Run:  cd /work/main && .venv/bin/python -m bench.relay_latency [--count 100] [--interval 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import secrets
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nio

from tests.support import Env, User, create_channel

from ._common import DOMAIN, CpuMeter, Stack, code_version, engine_of, percentile, synapse_and_kanal

SYNC_TIMEOUT_MS = 30_000
KINDS = ("relay", "direct", "bare")
SYNC_FILTER = {
    "room": {"timeline": {"limit": 100}, "state": {"lazy_load_members": True}, "ephemeral": {"types": []}},
    "presence": {"types": []},
    "account_data": {"types": []},
}


@dataclass
class Sample:
    kind: str
    seq: int
    body: str
    start_mono: float = 0.0
    start_wall: float = 0.0
    returned_mono: float | None = None
    returned_wall: float | None = None
    seen_mono: float | None = None
    seen_ts_ms: int | None = None
    sender: str | None = None
    event_id: str | None = None
    error: str | None = None

    @property
    def latency(self) -> float | None:
        return None if self.seen_mono is None else self.seen_mono - self.start_mono


@dataclass
class Arrivals:
    pattern: re.Pattern[str]
    by_body: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)
    syncs: int = 0
    sync_errors: int = 0


async def sync_loop(
    client: nio.AsyncClient, arrivals: Arrivals, stop: asyncio.Event, deadline: float
) -> None:
    """Long-poll /sync until `stop` (or the deadline); note when each matching event is first seen."""
    while not stop.is_set() and time.monotonic() < deadline:
        response = await client.sync(
            timeout=SYNC_TIMEOUT_MS, sync_filter=SYNC_FILTER, since=client.next_batch
        )
        seen = time.monotonic()
        arrivals.syncs += 1
        if not isinstance(response, nio.SyncResponse):
            arrivals.sync_errors += 1
            await asyncio.sleep(0.2)
            continue
        for room in response.rooms.join.values():
            for event in room.timeline.events:
                body = event.source.get("content", {}).get("body")
                if (
                    isinstance(body, str)
                    and arrivals.pattern.fullmatch(body)
                    and body not in arrivals.by_body
                ):
                    arrivals.by_body[body] = (seen, event.source)


async def timed_send(user: User, room_id: str, sample: Sample) -> None:
    sample.start_wall = time.time()
    sample.start_mono = time.monotonic()
    response = await user.client.room_send(
        room_id, "m.room.message", {"msgtype": "m.text", "body": sample.body}
    )
    sample.returned_mono = time.monotonic()
    sample.returned_wall = time.time()
    if isinstance(response, nio.RoomSendResponse):
        sample.event_id = str(response.event_id)
    else:
        sample.error = str(response)


async def run_series(
    owner: User,
    rooms: dict[str, str],
    count: int,
    interval: float,
    nonce: str,
    label: str,
    arrivals: Arrivals,
    settle: float,
) -> list[Sample]:
    """Send `count` rounds (one send per kind, a third of an interval apart, order rotating) on a fixed schedule."""
    samples: list[Sample] = []
    tasks: list[asyncio.Task[None]] = []
    start = time.monotonic() + 0.2
    for i in range(count):
        order = KINDS[i % len(KINDS) :] + KINDS[: i % len(KINDS)]
        for slot, kind in enumerate(order):
            target = start + i * interval + slot * interval / len(KINDS)
            delay = target - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sample = Sample(kind, i, f"{label}-{kind}-{i:05d}-{nonce}")
            samples.append(sample)
            tasks.append(asyncio.create_task(timed_send(owner, rooms[kind], sample)))
    await asyncio.gather(*tasks)
    # Wait (bounded) for the stragglers to show up in the subscriber's sync.
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline:
        if all(s.body in arrivals.by_body or s.error for s in samples):
            break
        await asyncio.sleep(0.05)
    for s in samples:
        hit = arrivals.by_body.get(s.body)
        if hit is not None:
            s.seen_mono = hit[0]
            s.seen_ts_ms = hit[1].get("origin_server_ts")
            s.sender = hit[1].get("sender")
    return samples


def ms(value: float) -> str:
    return f"{value * 1000:7.1f} ms"


def summarize(samples: list[Sample], senders: dict[str, str]) -> dict[str, list[float]]:
    lat: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for s in samples:
        if s.latency is None:
            continue
        expected = senders[s.kind]
        if s.sender != expected:
            print(f"  ! {s.body} seen from {s.sender}, expected {expected}", file=sys.stderr)
            continue
        lat[s.kind].append(s.latency)
    return lat


def print_breakdown(samples: list[Sample]) -> None:
    """Where the time goes, from origin_server_ts (ms resolution) and the local wall clock."""
    parts: dict[str, dict[str, list[float]]] = {kind: {} for kind in KINDS}
    for s in samples:
        if s.latency is None or s.returned_wall is None or s.seen_ts_ms is None or s.returned_mono is None:
            continue
        created = s.seen_ts_ms / 1000
        seen_wall = s.start_wall + s.latency
        p = parts[s.kind]
        p.setdefault("send starts → send returns (Synapse persisted the post)", []).append(
            s.returned_mono - s.start_mono
        )
        if s.kind == "relay":
            p.setdefault("send returns → relayed copy created (AS push + Kanal + ghost PUT)", []).append(
                created - s.returned_wall
            )
        elif s.kind == "bare":
            p.setdefault("send returns → relayed copy created (AS push + bare relay + PUT)", []).append(
                created - s.returned_wall
            )
        p.setdefault("seen event created → subscriber's sync returns it", []).append(seen_wall - created)
    print("\nBreakdown (medians; origin_server_ts has 1 ms resolution):")
    for kind in KINDS:
        for name, values in parts[kind].items():
            print(f"  {kind:6} {name:70} {ms(statistics.median(values))}  (p95 {ms(percentile(values, 95))})")


def print_trace(samples: list[Sample], trace_path: Path) -> None:
    """Kanal's own probes (bench._traced_kanal): where a relayed post spends its time inside Kanal."""
    txn_of: dict[str, dict[str, Any]] = {}
    dispatch_of: dict[str, dict[str, Any]] = {}
    exec_of: dict[str, dict[str, Any]] = {}
    send_of: dict[int, dict[str, Any]] = {}
    record_of: dict[int, dict[str, Any]] = {}
    for line in trace_path.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if rec["k"] == "txn":
            for event_id in rec["events"]:
                txn_of.setdefault(event_id, rec)
        elif rec["k"] == "dispatch":
            dispatch_of.setdefault(rec["event"], rec)
        elif rec["k"] == "exec" and rec.get("post_source"):
            exec_of.setdefault(rec["post_source"], rec)
        elif rec["k"] == "send":
            send_of.setdefault(rec["id"], rec)
        elif rec["k"] == "record":
            record_of.setdefault(rec["id"], rec)
    steps: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        steps.setdefault(name, []).append(value)

    for s in samples:
        if s.kind != "relay" or s.event_id is None or s.returned_mono is None or s.seen_mono is None:
            continue
        txn, dispatch, execute = txn_of.get(s.event_id), dispatch_of.get(s.event_id), exec_of.get(s.event_id)
        if txn is None or dispatch is None or execute is None:
            continue
        add("1 admin send starts → send returns (Synapse)", s.returned_mono - s.start_mono)
        add(
            "2 send returns → Kanal receives the AS transaction (Synapse AS push)",
            txn["t0"] - s.returned_mono,
        )
        add("3 transaction handler (ingest, 200 to Synapse)", txn["t1"] - txn["t0"])
        add(
            "4 ingest done → processor dispatch starts (wake, lease, SELECT pending)",
            dispatch["t0"] - txn["t1"],
        )
        add("5 dispatch (decide, outbox row)", dispatch["t1"] - dispatch["t0"])
        add(
            "6 dispatch done → outbox attempt starts (commit, wake, claim SELECTs, queue wait)",
            execute["t0"] - dispatch["t1"],
        )
        add("7 outbox attempt (resolve + ghost PUT)", execute["t1"] - execute["t0"])
        put = send_of.get(execute["id"])
        if put is not None:
            add("7a   of which the ghost PUT to Synapse", put["t1"] - put["t0"])
        record = record_of.get(execute["id"])
        if record is not None:
            add("7b outbox result recorded (UPDATEs, before commit)", record["t1"] - execute["t1"])
        add("8 ghost PUT returned → subscriber's sync returns the copy", s.seen_mono - execute["t1"])
    if not steps:
        print(f"\nTrace: no complete records in {trace_path}")
        return
    print(f"\nInside the relay, from Kanal's probes (n={len(next(iter(steps.values())))}; medians, p95):")
    for name in sorted(steps):
        values = steps[name]
        print(f"  {name:72} {ms(statistics.median(values))}  (p95 {ms(percentile(values, 95))})")


async def bench(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="kanal-bench-relay-") as tmp:
        workdir = args.keep_dir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        database_url = args.database_url or f"sqlite:///{workdir / 'kanal.db'}"
        trace_path = workdir / "trace.jsonl" if args.trace else None
        profile_path = args.profile
        env: dict[str, str] = {}
        module = "bridge.cli"
        if trace_path is not None:
            module, env["KANAL_BENCH_TRACE"] = "bench._traced_kanal", str(trace_path)
        async with synapse_and_kanal(
            workdir,
            database_url=database_url,
            profile_path=profile_path,
            kanal_module=module,
            kanal_env=env,
            bare_relay=True,
        ) as stack:
            code = await measure(stack, args, database_url, trace_path)
        if profile_path is not None:
            print(f"Kanal cProfile data: {profile_path} (e.g. python -m pstats {profile_path})")
        return code


async def measure(stack: Stack, args: argparse.Namespace, database_url: str, trace_path: Path | None) -> int:
    stack_started = time.monotonic()  # Kanal became ready just before this
    env = Env(stack.synapse, stack.kanal, DOMAIN, f"@kanal:{DOMAIN}", "kanal_", stack.config_path.parent)
    try:
        owner = await env.user("owner")
        handle = env.handle("bench")
        channel = await create_channel(env, owner, handle, "Latency bench")
        ghost = f"@kanal_{handle}:{DOMAIN}"
        subscriber = await env.user("sub")
        await subscriber.join(channel.broadcast)
        created = await owner.client.room_create(name="plain room", invite=[subscriber.user_id])
        assert isinstance(created, nio.RoomCreateResponse), created
        plain = str(created.room_id)
        await subscriber.join(plain)
        assert stack.bare is not None
        bare_rooms = []
        for name in ("bare source", "bare target"):
            created = await owner.client.room_create(name=name, invite=[stack.bare.user_id])
            assert isinstance(created, nio.RoomCreateResponse), created
            bare_rooms.append(str(created.room_id))
        await owner.client.room_invite(bare_rooms[1], subscriber.user_id)
        await stack.bare.relay(*bare_rooms)
        await subscriber.join(bare_rooms[1])  # not the source: the subscriber sees only the copy
        rooms = {"relay": channel.backstage, "direct": plain, "bare": bare_rooms[0]}
        senders = {"relay": ghost, "direct": owner.user_id, "bare": stack.bare.user_id}
        if args.steady_after > 0:
            # Right after a start Kanal checks each backstage post's predecessors (one extra request,
            # bridge.service.VERIFY_WINDOW_S); the headline figure is the steady state after that.
            wait = max(0.0, args.steady_after - (time.monotonic() - stack_started))
            print(f"waiting {wait:.0f} s for Kanal's post-start verification window to close", flush=True)
            await asyncio.sleep(wait)

        nonce = secrets.token_hex(3)
        arrivals = Arrivals(re.compile(rf"(warm|run)-(relay|direct|bare)-\d{{5}}-{nonce}"))
        client = subscriber.client
        first = await client.sync(timeout=0, sync_filter=SYNC_FILTER, full_state=True)
        assert isinstance(first, nio.SyncResponse), first
        stop = asyncio.Event()
        budget = 120 + (args.count + args.warmup) * args.interval * 2 + 2 * args.settle
        syncer = asyncio.create_task(sync_loop(client, arrivals, stop, time.monotonic() + budget))
        meter = CpuMeter(
            {
                "Synapse": stack.synapse._process.pid if stack.synapse._process else None,
                "Kanal": stack.kanal.process.pid if stack.kanal.process else None,
                "bare relay": stack.bare.pid,
            }
        )
        try:
            print(f"Kanal code: {code_version()}")
            print(
                f"Synapse {stack.synapse.base_url}, Kanal {stack.kanal_url}, Kanal DB {engine_of(database_url)}; "
                f"{args.warmup} warm-up rounds, then {args.count} relay + {args.count} direct + {args.count} bare "
                f"sends, each series spaced {args.interval * 1000:.0f} ms (interleaved, offset "
                f"{args.interval * 1000 / len(KINDS):.0f} ms)",
                flush=True,
            )
            if args.warmup:
                await run_series(
                    owner, rooms, args.warmup, args.interval, nonce, "warm", arrivals, args.settle
                )
            meter.start()
            samples = await run_series(
                owner, rooms, args.count, args.interval, nonce, "run", arrivals, args.settle
            )
            meter.stop()
        finally:
            stop.set()
            syncer.cancel()
            await asyncio.gather(syncer, return_exceptions=True)

        errors = [s for s in samples if s.error]
        lat = summarize(samples, senders)
        print(
            f"\nSubscriber syncs: {arrivals.syncs} ({arrivals.sync_errors} errors); send errors: {len(errors)}"
        )
        for s in errors[:5]:
            print(f"  ! {s.body}: {s.error}")
        for kind in KINDS:
            values = lat[kind]
            missing = args.count - len(values)
            if not values:
                print(f"{kind:6}: no arrivals")
                continue
            print(
                f"{kind:6}: n={len(values):4d} missing={missing:3d}  p50 {ms(percentile(values, 50))}  "
                f"p95 {ms(percentile(values, 95))}  min {ms(min(values))}  max {ms(max(values))}"
                f"  mean {ms(statistics.fmean(values))}"
            )
        if lat["relay"] and lat["direct"]:
            r50, d50 = percentile(lat["relay"], 50), percentile(lat["direct"], 50)
            r95, d95 = percentile(lat["relay"], 95), percentile(lat["direct"], 95)
            print(f"ratio relay/direct: p50 {r50 / d50:.2f}x   p95 {r95 / d95:.2f}x")
            print(f"relay overhead (relay − direct): p50 {ms(r50 - d50)}   p95 {ms(r95 - d95)}")
        if lat["relay"] and lat["bare"]:
            r50, b50 = percentile(lat["relay"], 50), percentile(lat["bare"], 50)
            r95, b95 = percentile(lat["relay"], 95), percentile(lat["bare"], 95)
            print(f"ratio relay/bare (Kanal against a minimal relay): p50 {r50 / b50:.2f}x   p95 {r95 / b95:.2f}x")
        if lat["bare"] and lat["direct"]:
            b50, d50 = percentile(lat["bare"], 50), percentile(lat["direct"], 50)
            print(f"ratio bare/direct: p50 {b50 / d50:.2f}x")
        print(meter.report())
        print_breakdown(samples)
        if trace_path is not None:
            print_trace(samples, trace_path)
        if args.keep_dir:
            print(f"\nKanal log: {stack.kanal.log_path}; Synapse log: {stack.synapse.log_path}")
        return 0
    finally:
        for c in env.users:
            await c.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.relay_latency",
        description=(
            "Backstage post → subscriber sees the relayed copy, against a direct send and a minimal relay "
            "(prints p50/p95)."
        ),
    )
    parser.add_argument("--count", type=int, default=100, help="posts per series (default 100)")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between posts of a series (0.2)")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured rounds sent first (default 3)")
    parser.add_argument("--settle", type=float, default=30.0, help="max seconds to wait for stragglers (30)")
    parser.add_argument("--database-url", help="Kanal's database (default: SQLite in the temp folder)")
    parser.add_argument(
        "--trace",
        action="store_true",
        help="run Kanal with timing probes (bench._traced_kanal) and print where the relay spends its time",
    )
    parser.add_argument(
        "--profile",
        metavar="PATH",
        help="run Kanal under cProfile and write its stats to PATH (slows Kanal down: not for headline figures)",
    )
    parser.add_argument(
        "--steady-after",
        type=float,
        default=125.0,
        help="seconds after Kanal's start before measuring (its post-start verification lasts 120 s; 0 = at once)",
    )
    parser.add_argument("--keep-dir", help="use this folder instead of a temporary one, and keep it")
    args = parser.parse_args(argv)
    args.keep_dir = Path(args.keep_dir).resolve() if args.keep_dir else None
    args.profile = Path(args.profile).resolve() if args.profile else None
    if args.count < 1 or args.interval <= 0:
        parser.error("--count must be ≥ 1 and --interval > 0")
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
