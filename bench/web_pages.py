"""Channel page throughput: Kanal's pages (warm cache, cold cache) against a bare aiohttp "hello".

Run:  cd /work/main && .venv/bin/python -m bench.web_pages [--duration 5] [--connections 16]

One server process (one event loop, as `kanal run` has) listens three times on loopback:

* warm:  the pages app (bridge.web.pages.add_page_routes) with its page cache;
* cold:  the same app with the page cache switched off (every request queries the posts and renders);
* bare:  an aiohttp handler answering "hello" (the floor: what aiohttp itself costs per request).

Both pages apps read one seeded SQLite database (a channel with 50 posts: text, HTML, Persian,
images, a poll) and ask a scripted homeserver (in the same process) for subscriber counts, which
they cache for a minute as in production. This process drives `GET /c/bench_news` (20 posts, about
20 kB) and `GET /hello` with an aiohttp client over N keep-alive connections for a fixed time each,
after a warm-up, and prints requests/s and the ratios to the bare handler. It also prints the
server's CPU time per request (from /proc): the load generator is Python too and may be what limits
requests/s, while CPU per request does not depend on it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from ._common import REPO, CpuMeter, code_version

HANDLE = "bench_news"
POSTS = 50
DOMAIN = "example.org"
PAGE_PATH = f"/c/{HANDLE}"
WARMUP_S = 1.0


# -- the server process ----------------------------------------------------------------------------


async def fake_homeserver(request: web.Request) -> web.Response:
    joined: dict[str, dict[str, str]] = {f"@reader{n}:{DOMAIN}": {} for n in range(1234)}
    return web.json_response({"joined": joined})


async def no_state(request: web.Request) -> web.Response:
    return web.json_response({"errcode": "M_NOT_FOUND", "error": "no avatar"}, status=404)


def post_content(n: int) -> dict[str, Any]:
    kind = n % 5
    if kind == 0:
        return {
            "msgtype": "m.text",
            "body": f"Post {n}: plain text\nwith a second line and a link https://example.org/{n}",
        }
    if kind == 1:
        return {
            "msgtype": "m.text",
            "body": f"Post {n} formatted",
            "format": "org.matrix.custom.html",
            "formatted_body": f"<p><b>Post {n}</b> with <a href='https://example.org/{n}'>a link</a>, "
            f"<code>code</code> and a list:</p><ul><li>one</li><li>two</li></ul><script>x</script>",
        }
    if kind == 2:
        return {
            "msgtype": "m.text",
            "body": f"پست شمارهٔ {n}: این یک متن فارسی است که راست به چپ خوانده می‌شود.",
        }
    if kind == 3:
        return {
            "msgtype": "m.image",
            "body": f"photo {n}",
            "url": f"mxc://{DOMAIN}/image{n}",
            "info": {"w": 800, "h": 600, "mimetype": "image/jpeg"},
        }
    return {
        "m.poll": {
            "question": {"m.text": [{"body": f"Question {n}?"}]},
            "answers": [
                {"m.id": "a", "m.text": [{"body": "Yes"}]},
                {"m.id": "b", "m.text": [{"body": "No"}]},
            ],
        }
    }


async def seed(database_url: str) -> None:
    from bridge.store.db import create_engine, migrate, sessionmaker
    from bridge.store.models import Channel, Post
    from bridge.text.names import title_key

    engine = create_engine(database_url)
    await migrate(engine)
    sessions = sessionmaker(engine)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    async with sessions.begin() as session:
        channel = Channel(
            handle=HANDLE,
            title="Bench News",
            about="Fifty posts of everything a channel shows.",
            owner=f"@owner:{DOMAIN}",
            ghost_user_id=f"@kanal_{HANDLE}:{DOMAIN}",
            broadcast_room_id=f"!{HANDLE}:{DOMAIN}",
            status="active",
            verified=True,
            title_key=title_key("Bench News"),
        )
        session.add(channel)
        await session.flush()
        for n in range(1, POSTS + 1):
            poll = n % 5 == 4
            session.add(
                Post(
                    channel_id=channel.id,
                    source_event_id=f"$source{n}",
                    relayed_event_id=f"$relayed{n}:{DOMAIN}",
                    author=f"@owner:{DOMAIN}",
                    event_type="m.poll.start" if poll else "m.room.message",
                    content=post_content(n),
                    created_at=start + timedelta(minutes=n),
                    edited_at=start + timedelta(hours=n) if n % 7 == 0 else None,
                )
            )
    await engine.dispose()


async def serve(folder: Path) -> None:
    """Start the three listeners (and the scripted homeserver), print their ports, run until stdin closes."""
    from appservice.client import HomeserverClient
    from bridge.runtime.config import parse
    from bridge.runtime.context import Context
    from bridge.runtime.outbox import OutboxWorker
    from bridge.store.db import create_engine, sessionmaker
    from bridge.web.pages import PAGES, add_page_routes

    homeserver = web.Application()
    homeserver.router.add_get("/_matrix/client/v3/rooms/{room}/joined_members", fake_homeserver)
    homeserver.router.add_get("/_matrix/client/v3/rooms/{room}/state/{type}/", no_state)
    runners: list[web.AppRunner] = []

    async def listen(app: web.Application) -> int:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port: int = runner.addresses[0][1]
        return port

    homeserver_port = await listen(homeserver)
    database_url = f"sqlite:///{folder / 'kanal.db'}"
    await seed(database_url)
    config = parse(
        {
            "homeserver": {"url": f"http://127.0.0.1:{homeserver_port}", "domain": DOMAIN},
            "appservice": {"as_token": "as-bench-0123456789", "hs_token": "hs-bench-0123456789"},
            "database": {"url": database_url},
            "web": {"public_url": "https://kanal.example"},
        },
        folder / "config.yaml",
    )
    engine = create_engine(config.database_url)
    sessions = sessionmaker(engine)
    client = HomeserverClient(config.homeserver_url, config.as_token, attempts=1)
    ctx = Context(config, client, sessions, OutboxWorker(sessions, client))

    warm, cold = web.Application(), web.Application()
    add_page_routes(warm, ctx)
    add_page_routes(cold, ctx)
    cold[PAGES].cache.enabled = False

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    bare = web.Application()
    bare.router.add_get("/hello", hello)
    ports = [await listen(app) for app in (warm, cold, bare)]
    print("ready", *ports, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for runner in runners:
        await runner.cleanup()
    await client.close()
    await engine.dispose()


# -- the load generator ----------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    requests: int
    errors: int
    seconds: float
    server_cpu: float
    client_cpu: float
    body_bytes: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_us_per_request(self) -> float:
        return 1e6 * self.server_cpu / max(self.requests, 1)


async def drive(url: str, connections: int, duration: float) -> tuple[int, int, int]:
    """(requests, errors, bytes of the last body) over `connections` keep-alive connections."""
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    requests = errors = size = 0
    async with aiohttp.ClientSession(connector=connector) as http:
        deadline = time.monotonic() + duration

        async def worker() -> None:
            nonlocal requests, errors, size
            while time.monotonic() < deadline:
                async with http.get(url) as response:
                    body = await response.read()
                    if response.status != 200:
                        errors += 1
                    requests += 1
                    size = len(body)

        await asyncio.gather(*(worker() for _ in range(connections)))
    return requests, errors, size


async def measure(name: str, url: str, pid: int, connections: int, duration: float) -> Result:
    await drive(url, connections, WARMUP_S)
    meter = CpuMeter({"server": pid})
    meter.start()
    started = time.monotonic()
    requests, errors, size = await drive(url, connections, duration)
    seconds = time.monotonic() - started
    meter.stop()
    return Result(name, requests, errors, seconds, meter.used["server"], meter.used["bench client"], size)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per target")
    parser.add_argument("--connections", type=int, default=16, help="concurrent keep-alive connections")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        await serve(args.serve)
        return

    print("$ " + shlex.join([".venv/bin/python", "-m", "bench.web_pages", *sys.argv[1:]]))
    print(
        f"code: {code_version()}; {os.cpu_count()} cores; Python {sys.version.split()[0]}; aiohttp {aiohttp.__version__}"
    )
    print(
        f"{args.connections} connections, {args.duration:.0f} s per target after a {WARMUP_S:.0f} s warm-up"
    )
    with tempfile.TemporaryDirectory(prefix="kanal-bench-web-") as folder:
        server = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.web_pages",
            "--serve",
            folder,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=REPO,
        )
        try:
            assert server.stdout is not None
            line = (await asyncio.wait_for(server.stdout.readline(), 60)).decode().split()
            if not line or line[0] != "ready":
                raise RuntimeError(f"the server did not start: {line}")
            warm, cold, bare = (f"http://127.0.0.1:{port}" for port in line[1:])
            results = [
                await measure(
                    "bare aiohttp hello", bare + "/hello", server.pid, args.connections, args.duration
                ),
                await measure(
                    "channel page, warm cache", warm + PAGE_PATH, server.pid, args.connections, args.duration
                ),
                await measure(
                    "channel page, cold cache", cold + PAGE_PATH, server.pid, args.connections, args.duration
                ),
            ]
        finally:
            assert server.stdin is not None
            server.stdin.close()
            await asyncio.wait_for(server.wait(), 30)
    floor = results[0]
    print()
    print(
        f"{'target':28} {'req/s':>9} {'vs bare':>8} {'server CPU/req':>15} {'vs bare':>8} {'body':>8} {'errors':>7}"
    )
    for r in results:
        print(
            f"{r.name:28} {r.rate:9.0f} {r.rate / floor.rate:8.0%} {r.cpu_us_per_request:12.0f} µs "
            f"{floor.cpu_us_per_request / r.cpu_us_per_request:8.0%} {r.body_bytes:7d}B {r.errors:7d}"
        )
    print()
    for r in results:
        print(
            f"{r.name}: server {100 * r.server_cpu / r.seconds:.0f}% of a core, "
            f"load generator {100 * r.client_cpu / r.seconds:.0f}% of a core"
        )
    print(
        "'vs bare' under CPU is the bare handler's CPU per request divided by the target's (higher is better)."
    )


if __name__ == "__main__":
    asyncio.run(main())
