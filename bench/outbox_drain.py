"""Outbox drain rate and restart-to-first-relay time, against a real Synapse.

Each round: Kanal is stopped (SIGTERM), the channel owner posts N backstage posts (the backlog), Kanal
is started again. Measured from the relayed events' `origin_server_ts` (same machine, same clock):

* restart → first relayed post: from the moment `kanal run` is launched (process start, migrations,
  homeserver checks, startup ping, catch-up, then the backlog) to the first relayed copy;
* drain rate: posts relayed per second between the first and the last relayed copy of the backlog.

Median of `--rounds` rounds (default 3) on one stack. Run:
    cd /work/main && .venv/bin/python -m bench.outbox_drain [--posts 300] [--fresh-postgres URL]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import statistics
import tempfile
import time
from pathlib import Path

from tests.support import Channel, Env, User, create_channel

from ._common import DOMAIN, code_version, engine_of, fresh_postgres_database, synapse_and_kanal


async def _round(env: Env, owner: User, channel: Channel, posts: int) -> tuple[float, float]:
    ghost = f"@kanal_{channel.handle}:{DOMAIN}"
    nonce = secrets.token_hex(3)
    await env.kanal.stop()
    for i in range(posts):
        await owner.text(channel.backstage, f"drain {nonce} {i:05d}")
    launched_ms = time.time() * 1000
    await env.kanal.start()
    deadline = time.monotonic() + 600
    stamps: list[int] = []
    while time.monotonic() < deadline:
        events = await owner.all_messages(channel.broadcast, page=1000)
        stamps = sorted(
            e["origin_server_ts"]
            for e in events
            if e.get("sender") == ghost and e.get("content", {}).get("body", "").startswith(f"drain {nonce} ")
        )
        if len(stamps) >= posts:
            break
        await asyncio.sleep(1)
    if len(stamps) < posts:
        raise RuntimeError(f"only {len(stamps)} of {posts} posts were relayed within 600 s")
    first_after_s = (stamps[0] - launched_ms) / 1000
    rate = (posts - 1) / max((stamps[-1] - stamps[0]) / 1000, 1e-3)
    return first_after_s, rate


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--posts", type=int, default=300, help="backlog size per round (default 300)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--fresh-postgres",
        metavar="SERVER_URL",
        help="run Kanal on a new database on this PostgreSQL server (dropped afterwards)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kanal-drain-") as tmp:
        async with contextlib.AsyncExitStack() as stack:
            database_url = None
            if args.fresh_postgres:
                database_url = await stack.enter_async_context(fresh_postgres_database(args.fresh_postgres))
            kanal_stack = await stack.enter_async_context(
                synapse_and_kanal(Path(tmp), database_url=database_url)
            )
            env = Env(kanal_stack.synapse, kanal_stack.kanal, DOMAIN, f"@kanal:{DOMAIN}", "kanal_", Path(tmp))
            try:
                owner = await env.user("owner")
                channel = await create_channel(env, owner, env.handle("drain"), "Drain Desk")
                results = [await _round(env, owner, channel, args.posts) for _ in range(args.rounds)]
            finally:
                for client in env.users:
                    await client.close()
    firsts = [r[0] for r in results]
    rates = [r[1] for r in results]
    print(f"code {code_version()}; Kanal on {engine_of(database_url or 'sqlite')}; Synapse on SQLite")
    print(f"backlog {args.posts} posts × {args.rounds} rounds")
    print(
        "restart → first relayed post: "
        + ", ".join(f"{f:.2f} s" for f in firsts)
        + f"  (median {statistics.median(firsts):.2f} s)"
    )
    print(
        "drain rate: "
        + ", ".join(f"{r:.1f}/s" for r in rates)
        + f"  (median {statistics.median(rates):.1f} posts/s)"
    )


if __name__ == "__main__":
    asyncio.run(main())
