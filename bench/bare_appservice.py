"""The floor for the benchmarks: an aiohttp server that only checks the bearer token and parses the JSON,
and optionally relays (the least a relay can do, for bench.send_cost and bench.relay_latency).

    KANAL_BENCH_HS_TOKEN=... python -m bench.bare_appservice --port 29399
    KANAL_BENCH_HS_TOKEN=... KANAL_BENCH_AS_TOKEN=... python -m bench.bare_appservice --port 29399 \
        --relay-homeserver http://127.0.0.1:8008 --relay-as @bare_relay:localhost

PUT /_matrix/app/v1/transactions/{txn_id}: compares the token with hmac.compare_digest, reads and
`json.loads` the body, answers 200 {}. GET /health answers 200 (readiness). Runs until SIGTERM.

Relay mode (`--relay-homeserver`): POST /_bench/relay {"source": room, "target": room} (same token)
maps a room; every `m.room.message` in a mapped source room, not sent by the relay user itself, is
answered 200 at once and then sent to the target room as the relay user (PUT …/send with a fresh
transaction id), one queue per target room so copies keep their order. Nothing is stored: no
durability, no moderation, no bookkeeping — the floor a relay with guarantees is measured against.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import itertools
import json
import os
import sys
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web


class Relay:
    """Copies messages from source rooms to target rooms as one user, in order per target."""

    def __init__(self, homeserver: str, as_token: str, user_id: str) -> None:
        self.homeserver = homeserver.rstrip("/")
        self.as_token = as_token
        self.user_id = user_id
        self.targets: dict[str, str] = {}
        self.queues: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.counter = itertools.count(1)
        self.session: aiohttp.ClientSession | None = None

    def http(self) -> aiohttp.ClientSession:
        if self.session is None:
            self.session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.as_token}"})
        return self.session

    def map(self, source: str, target: str) -> None:
        self.targets[source] = target

    def take(self, events: list[Any]) -> None:
        for event in events:
            if not isinstance(event, dict) or event.get("type") != "m.room.message":
                continue
            target = self.targets.get(str(event.get("room_id")))
            content = event.get("content")
            if target is None or event.get("sender") == self.user_id or not isinstance(content, dict):
                continue
            queue = self.queues.get(target)
            if queue is None:
                queue = self.queues[target] = asyncio.Queue()
                task = asyncio.create_task(self._drain(target, queue))
                self.tasks.add(task)
            queue.put_nowait(content)

    async def _drain(self, target: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        while True:
            content = await queue.get()
            txn = f"bare-{os.getpid()}-{next(self.counter)}"
            url = f"{self.homeserver}/_matrix/client/v3/rooms/{quote(target, safe='')}/send/m.room.message/{txn}"
            for _attempt in range(5):
                try:
                    async with self.http().put(
                        url, params={"user_id": self.user_id}, json=content
                    ) as response:
                        await response.read()
                        if response.status < 500:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.5)


def make_app(hs_token: str, relay: Relay | None = None) -> web.Application:
    expected = hs_token.encode()

    def refused(request: web.Request) -> web.Response | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return web.json_response({"errcode": "M_MISSING_TOKEN", "error": "Missing token"}, status=401)
        if not hmac.compare_digest(token.strip().encode(), expected):
            return web.json_response({"errcode": "M_FORBIDDEN", "error": "Invalid token"}, status=403)
        return None

    async def transaction(request: web.Request) -> web.Response:
        answer = refused(request)
        if answer is not None:
            return answer
        data = json.loads(await request.read())
        if not isinstance(data, dict) or not isinstance(data.get("events"), list):
            return web.json_response({"errcode": "M_BAD_JSON", "error": "no events"}, status=400)
        if relay is not None:
            relay.take(data["events"])
        return web.json_response({})

    async def relay_map(request: web.Request) -> web.Response:
        answer = refused(request)
        if answer is not None:
            return answer
        if relay is None:
            return web.json_response({"errcode": "M_UNRECOGNIZED", "error": "not relaying"}, status=404)
        data = json.loads(await request.read())
        relay.map(str(data["source"]), str(data["target"]))
        return web.json_response({})

    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def close(_app: web.Application) -> None:
        if relay is not None and relay.session is not None:
            await relay.session.close()

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_put("/_matrix/app/v1/transactions/{txn_id}", transaction)
    app.router.add_post("/_bench/relay", relay_map)
    app.router.add_get("/health", health)
    app.on_cleanup.append(close)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bare_appservice", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--relay-homeserver", help="relay mode: the homeserver's URL (loopback)")
    parser.add_argument("--relay-as", help="relay mode: the user the copies are sent as")
    args = parser.parse_args(argv)
    token = os.environ.get("KANAL_BENCH_HS_TOKEN")
    if not token:
        parser.error("set KANAL_BENCH_HS_TOKEN")
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        parser.error("loopback only")
    relay = None
    if args.relay_homeserver:
        as_token = os.environ.get("KANAL_BENCH_AS_TOKEN")
        if not as_token or not args.relay_as:
            parser.error("relay mode needs KANAL_BENCH_AS_TOKEN and --relay-as")
        relay = Relay(args.relay_homeserver, as_token, args.relay_as)
    web.run_app(make_app(token, relay), host=args.host, port=args.port, access_log=None, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
