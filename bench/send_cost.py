"""Kanal's own CPU per relayed post, against a minimal relay in the same run; and the outbox's cost per entry.

In one run against a fresh loopback Synapse (SQLite, relaxed rate limits), a `kanal run` subprocess
and bench.bare_appservice in relay mode (the floor: acknowledges, copies, stores nothing), both
registered with that Synapse:

* Kanal: a channel with one subscriber; the owner sends posts into backstage, each relayed by the
  channel's ghost into the broadcast room.
* bare:  the same owner sends into a room the minimal relay copies into a room the subscriber is in.

Per series, CPU (utime + stime from /proc/<pid>/stat) from the first send until the last copy is in
the target room, minus the process's idle CPU over the same wall time (its idle rate is measured
first, with nothing sent), divided by the posts relayed. Series: paced (`--rate` posts/s, default 5)
in `--rounds` rounds alternating Kanal and bare, then a burst (sent back to back). Medians are printed
with each round. Kanal is measured after its post-start verification window (`--steady-after`).

Then, in this process, the outbox alone: an OutboxWorker on a fresh SQLite database sending
`--outbox-entries` send entries (one room queue, then several) to a stub homeserver (a subprocess that
answers every send at once); process CPU per entry (claim, send through HomeserverClient, record).

`--py-spy PATH` records Kanal with py-spy (raw collapsed stacks) over the paced rounds and prints the
top functions (inclusive share of samples); `--profile PATH` runs Kanal under cProfile instead.

`--rooms K`: the channel spans K rooms (Kanal's shards, one reader each), so each post is K room
sends; comparing K = 1 and K = 4 gives Kanal's cost of one more room send.

Run:  cd <tree> && .venv/bin/python -m bench.send_cost [--posts 100] [--rounds 3] [--rooms 4]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nio

from tests.support import Env, User, create_channel, free_port

from ._common import DOMAIN, REPO, Stack, Subprocess, code_version, cpu_seconds, synapse_and_kanal

POLL_S = 0.25
SETTLE_S = 0.5  # after the last copy is seen: the outbox records the result


@dataclass
class Series:
    who: str
    mode: str
    posts: int
    cpu_s: float
    wall_s: float
    idle_rate: float
    synapse_cpu_s: float
    threads: str = ""

    @property
    def per_post_ms(self) -> float:
        return 1000 * (self.cpu_s - self.idle_rate * self.wall_s) / self.posts

    @property
    def synapse_per_post_ms(self) -> float:
        return 1000 * self.synapse_cpu_s / self.posts


def thread_cpu(pid: int | None) -> dict[int, float]:
    """CPU seconds per thread of a process (Linux /proc/<pid>/task), by thread id."""
    if pid is None:
        return {}
    ticks = os.sysconf("SC_CLK_TCK")
    result: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        result[int(task.name)] = (int(fields[11]) + int(fields[12])) / ticks
    return result


def thread_split(pid: int | None, before: dict[int, float], posts: int) -> str:
    """Per-post CPU of the event loop's thread and of the others (aiosqlite's, the executor's)."""
    after = thread_cpu(pid)
    used = {tid: after[tid] - before.get(tid, 0.0) for tid in after}
    main = used.get(pid or 0, 0.0)
    others = sorted((v for tid, v in used.items() if tid != pid and v > 0), reverse=True)
    return (
        f"event-loop thread {1000 * main / posts:.2f} ms/post, other threads "
        f"{1000 * sum(others) / posts:.2f} ms/post ({len(others)} busy: "
        + ", ".join(f"{1000 * v / posts:.2f}" for v in others[:6])
        + ")"
    )


async def idle_rate(pid: int | None, seconds: float) -> float:
    before = cpu_seconds(pid)
    started = time.monotonic()
    await asyncio.sleep(seconds)
    return (cpu_seconds(pid) - before) / (time.monotonic() - started)


async def copies(reader: User, room_id: str, sender: str, prefix: str, limit: int) -> int:
    response = await reader.client.room_messages(room_id, limit=limit)
    if not isinstance(response, nio.RoomMessagesResponse):
        return 0
    return sum(
        1
        for event in response.chunk
        if event.source.get("sender") == sender
        and str(event.source.get("content", {}).get("body", "")).startswith(prefix)
    )


async def resolved(user: User, alias: str) -> str:
    response = await user.client.room_resolve_alias(alias)
    if not isinstance(response, nio.RoomResolveAliasResponse):
        raise RuntimeError(f"{alias} does not resolve: {response}")
    return str(response.room_id)


async def run_series(
    who: str,
    pid: int | None,
    synapse_pid: int | None,
    idle: float,
    sender_user: User,
    reader: User,
    source: str,
    target: str,
    relayed_by: str,
    posts: int,
    rate: float | None,
) -> Series:
    """Send `posts` posts into `source` (paced at `rate`/s, or back to back), wait for every copy in `target`."""
    prefix = f"cost {who} {secrets.token_hex(3)} "
    threads = thread_cpu(pid)
    cpu0, syn0, started = cpu_seconds(pid), cpu_seconds(synapse_pid), time.monotonic()
    for i in range(posts):
        if rate is not None:
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        await sender_user.text(source, f"{prefix}{i:05d}")
    deadline = time.monotonic() + 120 + posts
    while await copies(reader, target, relayed_by, prefix, posts + 50) < posts:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{who}: not every post was relayed within the deadline")
        await asyncio.sleep(POLL_S)
    await asyncio.sleep(SETTLE_S)
    wall = time.monotonic() - started
    split = thread_split(pid, threads, posts)
    return Series(
        who,
        "paced" if rate else "burst",
        posts,
        cpu_seconds(pid) - cpu0,
        wall,
        idle,
        cpu_seconds(synapse_pid) - syn0,
        split,
    )


# -- py-spy -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def py_spy(pid: int | None, path: Path | None, extra: list[str]) -> Iterator[None]:
    """Record `pid` with py-spy (raw collapsed stacks, 200 Hz unless `extra` sets --rate, idle frames left
    out) while inside."""
    if path is None or pid is None:
        yield
        return
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    process = subprocess.Popen(
        [
            exe, "record", "--pid", str(pid), *([] if "--rate" in extra else ["--rate", "200"]),
            "--format", "raw", "--output", str(path), *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.0)  # attach
        yield
    finally:
        process.send_signal(subprocess.signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def summarise_py_spy(path: Path, top: int = 40) -> str:
    """Inclusive and self shares of the samples per function (file:function), from collapsed stacks."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame_name(f) for f in stack.split(";")]
        for name in set(frames):
            inclusive[name] += count
        own[frames[-1]] += count
    if not total:
        return f"py-spy: no samples in {path}"
    lines = [f"py-spy: {total} samples (200 Hz) in {path}", "  inclusive  self  function"]
    for name, count in inclusive.most_common(top):
        lines.append(f"  {100 * count / total:6.1f}% {100 * own[name] / total:5.1f}%  {name}")
    lines.append("  top self:")
    for name, count in own.most_common(15):
        lines.append(f"  {100 * inclusive[name] / total:6.1f}% {100 * count / total:5.1f}%  {name}")
    return "\n".join(lines)


def _frame_name(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/file.py:123)"
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    else:
        file = file.split("/work/", 1)[-1]
    return f"{file}:{name}"


# -- the outbox alone -----------------------------------------------------------------------------------


def stub_homeserver(port: int) -> None:
    """A homeserver that accepts every request at once (for the outbox measurement)."""
    from aiohttp import web

    counter = iter(range(1, 1 << 62))

    async def anything(_request: web.Request) -> web.Response:
        return web.json_response({"event_id": f"$stub{next(counter)}", "chunk": []})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


async def outbox_cost(workdir: Path, entries: int, queues: int) -> tuple[float, float]:
    """Process CPU and wall time per entry for an OutboxWorker draining `entries` sends over `queues` rooms."""
    from appservice.client import HomeserverClient
    from bridge.runtime.outbox import OutboxKind, OutboxWorker, new_entry, room_queue
    from bridge.store.db import create_engine, migrate, sessionmaker

    port = free_port()
    stub = Subprocess(
        [sys.executable, "-m", "bench.send_cost", "--stub-homeserver", str(port)],
        workdir / f"stub-{queues}.log",
        {**os.environ, "PYTHONPATH": str(REPO)},
    )
    stub.start()
    engine = create_engine(f"sqlite:///{workdir / f'outbox-{queues}.db'}")
    client = HomeserverClient(f"http://127.0.0.1:{port}", "stub-token")
    try:
        await stub.wait_http(f"http://127.0.0.1:{port}/health")
        await migrate(engine)
        worker = OutboxWorker(sessionmaker(engine), client)
        await client.versions()  # the connection is open before the clock starts
        async with worker.sessions.begin() as session:
            for i in range(entries):
                room = f"!room{i % queues}:{DOMAIN}"
                session.add(
                    new_entry(
                        room_queue(room),
                        OutboxKind.SEND,
                        f"@kanal_bench:{DOMAIN}",
                        {
                            "room_id": room,
                            "event_type": "m.room.message",
                            "content": {"msgtype": "m.text", "body": f"post {i}"},
                            "post_source": f"$source{i}",
                        },
                    )
                )
        cpu0, wall0 = time.process_time(), time.monotonic()
        while await worker.drain_once():
            pass
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        if worker.sent != entries:
            raise RuntimeError(f"outbox sent {worker.sent} of {entries}")
        return cpu / entries, wall / entries
    finally:
        await client.close()
        await engine.dispose()
        await stub.stop()


# -- the run --------------------------------------------------------------------------------------------


async def measure(stack: Stack, args: argparse.Namespace) -> list[Series]:
    assert stack.bare is not None
    env = Env(stack.synapse, stack.kanal, DOMAIN, f"@kanal:{DOMAIN}", "kanal_", stack.config_path.parent)
    kanal_pid = stack.kanal.process.pid if stack.kanal.process else None
    bare_pid = stack.bare.pid
    synapse_pid = stack.synapse._process.pid if stack.synapse._process else None
    try:
        owner = await env.user("owner")
        handle = env.handle("cost")
        channel = await create_channel(env, owner, handle, "Send cost")
        ghost = f"@kanal_{handle}:{DOMAIN}"
        reader = await env.user("sub")
        await reader.join(channel.broadcast)
        target = channel.broadcast
        # --rooms K: the channel spans K rooms (shard size 1: each reader joining #handle fills the
        # open room, and Kanal opens the next); each post is then K room sends. The reader of the
        # last room is the one waited for.
        alias = f"#{handle}:{DOMAIN}"
        for n in range(1, args.rooms):
            previous = target
            deadline = time.monotonic() + 60
            while (target := await resolved(reader, alias)) == previous:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Kanal did not open room {n + 1} of the channel within 60 s")
                await asyncio.sleep(0.3)
            reader = await env.user(f"sub{n}")
            await reader.join(target)
        if args.rooms > 1:
            print(f"the channel spans {args.rooms} rooms; the reader of the last one is waited for", flush=True)
        rooms = []
        for name in ("bare source", "bare target"):
            created = await owner.client.room_create(name=name, invite=[stack.bare.user_id, reader.user_id])
            assert isinstance(created, nio.RoomCreateResponse), created
            rooms.append(str(created.room_id))
        bare_source, bare_target = rooms
        await stack.bare.relay(bare_source, bare_target)
        await reader.join(bare_target)
        # Warm both paths (connections, caches) before anything is measured. Synapse numbers the
        # transactions of all its appservices in one sequence, so bare's traffic shows Kanal a gap
        # in its transaction ids, which opens Kanal's 120 s verification window (a /context request
        # per backstage post): bare goes first, and (unless --interleave) Kanal's series run before
        # any of bare's.
        await run_series(
            "bare", None, None, 0, owner, reader, bare_source, bare_target, stack.bare.user_id, 3, 5
        )
        started = time.monotonic()  # Kanal's window opens again at its first transaction after bare's
        await run_series(
            "kanal", None, None, 0, owner, reader, channel.backstage, target, ghost, 3, 5
        )
        wait = max(0.0, args.steady_after - (time.monotonic() - started) - args.idle)
        if wait:
            print(f"waiting {wait:.0f} s for Kanal's verification window to close", flush=True)
            await asyncio.sleep(wait)
        kanal_idle, bare_idle = await asyncio.gather(
            idle_rate(kanal_pid, args.idle), idle_rate(bare_pid, args.idle)
        )
        print(
            f"idle CPU: Kanal {1000 * kanal_idle:.1f} ms/s, bare relay {1000 * bare_idle:.1f} ms/s "
            f"(over {args.idle:.0f} s)",
            flush=True,
        )
        results: list[Series] = []

        def show(series: Series) -> None:
            results.append(series)
            print(
                f"  {series.who:5} {series.mode}: {series.posts} posts in {series.wall_s:5.1f} s, "
                f"CPU {series.cpu_s:6.2f} s → {series.per_post_ms:6.2f} ms/post "
                f"(Synapse {series.synapse_per_post_ms:5.1f} ms/post)\n        {series.threads}",
                flush=True,
            )

        async def kanal(posts: int, rate: float | None) -> None:
            show(
                await run_series(
                    "kanal",
                    kanal_pid,
                    synapse_pid,
                    kanal_idle,
                    owner,
                    reader,
                    channel.backstage,
                    target,
                    ghost,
                    posts,
                    rate,
                )
            )

        async def bare(posts: int, rate: float | None) -> None:
            show(
                await run_series(
                    "bare",
                    bare_pid,
                    synapse_pid,
                    bare_idle,
                    owner,
                    reader,
                    bare_source,
                    bare_target,
                    stack.bare.user_id,
                    posts,
                    rate,
                )
            )

        with py_spy(kanal_pid, args.py_spy, args.py_spy_args.split()):
            for _round in range(args.rounds):
                await kanal(args.posts, args.rate)
                if args.interleave:
                    await bare(args.posts, args.rate)
        if args.burst:
            await kanal(args.burst, None)
        if not args.interleave:
            for _round in range(args.rounds):
                await bare(args.posts, args.rate)
        if args.burst:
            await bare(args.burst, None)
        return results
    finally:
        for client in env.users:
            await client.close()


async def bench(args: argparse.Namespace) -> int:
    print(f"Kanal code: {code_version()} ({REPO})", flush=True)
    with tempfile.TemporaryDirectory(prefix="kanal-bench-cost-") as tmp:
        workdir = args.keep_dir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        results: list[Series] = []
        if args.posts:
            async with synapse_and_kanal(
                workdir,
                profile_path=args.profile,
                kanal_module=args.kanal_module,
                bare_relay=True,
                kanal_config={"channels": {"shard_size": 1}} if args.rooms > 1 else None,
            ) as stack:
                results = await measure(stack, args)
        outbox: dict[int, tuple[float, float]] = {}
        for queues in args.outbox_queues if args.outbox_entries else []:
            outbox[queues] = await outbox_cost(workdir, args.outbox_entries, queues)

    print("\nKanal CPU per relayed post (process CPU minus its idle rate; medians over rounds):")
    for mode in ("paced", "burst"):
        kanal = [s.per_post_ms for s in results if s.who == "kanal" and s.mode == mode]
        bare = [s.per_post_ms for s in results if s.who == "bare" and s.mode == mode]
        synapse = [s.synapse_per_post_ms for s in results if s.who == "kanal" and s.mode == mode]
        if kanal and bare:
            k, b = statistics.median(kanal), statistics.median(bare)
            print(
                f"  {mode:5}: Kanal {k:6.2f} ms/post ({', '.join(f'{v:.2f}' for v in kanal)}), "
                f"bare relay {b:5.2f} ms/post ({', '.join(f'{v:.2f}' for v in bare)}); "
                f"Kanal/bare {k / b if b > 0 else float('nan'):.1f}x; "
                f"Synapse {statistics.median(synapse):.1f} ms/post (Kanal's sends)"
            )
    for queues, (cpu, wall) in outbox.items():
        print(
            f"outbox alone, {args.outbox_entries} send entries over {queues} room queue(s), stub homeserver: "
            f"{1000 * cpu:.2f} ms CPU per entry, {1000 * wall:.2f} ms wall per entry"
        )
    if args.py_spy is not None and args.py_spy.exists():
        print()
        print(summarise_py_spy(args.py_spy))
    if args.profile is not None:
        print(f"Kanal cProfile data: {args.profile}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.send_cost",
        description="Kanal's CPU per relayed post against a minimal relay; the outbox's CPU per entry.",
    )
    parser.add_argument(
        "--posts", type=int, default=100, help="posts per paced series (default 100; 0: skip)"
    )
    parser.add_argument(
        "--rooms", type=int, default=1, help="rooms the channel spans (shards of one reader each; default 1)"
    )
    parser.add_argument("--rate", type=float, default=5.0, help="paced series: posts per second (5)")
    parser.add_argument("--rounds", type=int, default=3, help="paced rounds, Kanal and bare each (3)")
    parser.add_argument(
        "--burst", type=int, default=100, help="posts of the back-to-back series (100; 0: none)"
    )
    parser.add_argument("--idle", type=float, default=20.0, help="seconds to measure idle CPU (20)")
    parser.add_argument(
        "--steady-after",
        type=float,
        default=125.0,
        help="seconds after Kanal's first warm-up post before measuring (its verification window lasts 120 s)",
    )
    parser.add_argument(
        "--outbox-entries", type=int, default=500, help="outbox measurement size (500; 0: skip)"
    )
    parser.add_argument(
        "--outbox-queues", type=int, nargs="+", default=[1, 8], help="room queues for the outbox measurement"
    )
    parser.add_argument("--py-spy", metavar="PATH", help="record Kanal with py-spy during the paced rounds")
    parser.add_argument(
        "--py-spy-args", default="", help="more py-spy record options, e.g. '--native' or '--gil'"
    )
    parser.add_argument("--profile", metavar="PATH", help="run Kanal under cProfile (slows it down)")
    parser.add_argument(
        "--kanal-module",
        default="bridge.cli",
        help="run Kanal as `python -m MODULE run` (e.g. bench._traced_kanal; default bridge.cli)",
    )
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="alternate Kanal's and bare's paced rounds (Kanal then verifies every post: see the code)",
    )
    parser.add_argument("--keep-dir", help="use this folder instead of a temporary one, and keep it (logs)")
    parser.add_argument("--stub-homeserver", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stub_homeserver:
        stub_homeserver(args.stub_homeserver)
        return 0
    args.py_spy = Path(args.py_spy).resolve() if args.py_spy else None
    args.profile = Path(args.profile).resolve() if args.profile else None
    args.keep_dir = Path(args.keep_dir).resolve() if args.keep_dir else None
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
