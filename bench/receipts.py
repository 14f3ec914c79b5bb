"""Receipt ingest cost: views counted per second from synthetic ephemeral transactions.

A channel with --posts published posts; --readers readers send read receipts in transactions of
--batch receipts each (as Synapse pushes them with receive_ephemeral), through the same
Bridge.handle_transaction Kanal uses. Prints receipts/s per run and the median of --runs runs.

    .venv/bin/python -m bench.receipts [--posts 1000 --readers 2000 --batch 100 --runs 3]
    .venv/bin/python -m bench.receipts --postgres postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python -m bench.receipts --views-in-posts   (the channel keeps view counts in its posts)
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, insert, select

from appservice.server import Transaction
from bench._common import code_version, fresh_postgres_database
from bridge.runtime.config import parse
from bridge.runtime.context import Context
from bridge.runtime.outbox import OutboxWorker
from bridge.service import Bridge
from bridge.store.db import create_engine, migrate, sessionmaker
from bridge.store.leases import Leases
from bridge.store.models import Channel, Post, ReaderPosition


async def one_run(
    url: str, posts: int, readers: int, batch: int, seed: int, views_in_posts: bool = False
) -> float:
    config = parse(
        {
            "homeserver": {"url": "http://127.0.0.1:9", "domain": "bench"},
            "appservice": {"as_token": "a" * 20, "hs_token": "b" * 20},
            "database": {"url": url},
        },
        Path(tempfile.mkdtemp()) / "config.yaml",
    )
    engine = create_engine(config.database_url)
    await migrate(engine)
    sessions = sessionmaker(engine)
    ctx = Context(config, None, sessions, OutboxWorker(sessions, None))  # type: ignore[arg-type]
    bridge = Bridge(ctx, Leases(sessions, "bench"))
    async with sessions.begin() as session:
        channel = Channel(
            handle="benchnews",
            title="B",
            owner="@o:bench",
            ghost_user_id="@kanal_benchnews:bench",
            status="active",
            views_in_posts=views_in_posts,
        )
        session.add(channel)
        await session.flush()
        await session.execute(
            insert(Post),
            [
                {
                    "channel_id": channel.id,
                    "source_event_id": f"$s{n}",
                    "relayed_event_id": f"$p{n}",
                    "author": "@o:bench",
                    "content": {"msgtype": "m.text", "body": f"post {n}"},
                }
                for n in range(posts)
            ],
        )
    rng = random.Random(seed)
    total = readers * 3  # each reader reads on three times
    txns = []
    for t in range(0, total, batch):
        content: dict[str, dict[str, dict[str, dict[str, int]]]] = {}
        for _ in range(min(batch, total - t)):
            event = f"$p{rng.randrange(posts)}"
            content.setdefault(event, {"m.read": {}})["m.read"][f"@reader{rng.randrange(readers)}:bench"] = {
                "ts": 1
            }
        txns.append(
            Transaction(f"t{t}", [], [], [{"type": "m.receipt", "room_id": "!b:bench", "content": content}])
        )
    started = time.perf_counter()
    for txn in txns:
        await bridge.handle_transaction(txn)
    elapsed = time.perf_counter() - started
    async with sessions() as session:
        counted = await session.scalar(select(func.count()).select_from(ReaderPosition))
    await engine.dispose()
    assert counted and counted <= readers
    return total / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--posts", type=int, default=1000)
    parser.add_argument("--readers", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--postgres", help="a PostgreSQL server URL; a fresh database per run")
    parser.add_argument(
        "--views-in-posts",
        action="store_true",
        help="the channel has !views-in-posts on (after each transaction the counts are checked and "
        "posts that crossed a threshold get an edit queued)",
    )
    args = parser.parse_args()
    print(
        f"$ .venv/bin/python -m bench.receipts --posts {args.posts} --readers {args.readers} --batch {args.batch} --runs {args.runs}"
        + (" --postgres …" if args.postgres else "")
        + (" --views-in-posts" if args.views_in_posts else "")
    )
    print(f"code {code_version()}")
    rates = []
    for run in range(args.runs):
        if args.postgres:
            async with fresh_postgres_database(args.postgres) as url:
                rate = await one_run(url, args.posts, args.readers, args.batch, run, args.views_in_posts)
        else:
            with tempfile.TemporaryDirectory() as folder:
                rate = await one_run(
                    f"sqlite:///{folder}/k.db", args.posts, args.readers, args.batch, run, args.views_in_posts
                )
        rates.append(rate)
        print(f"run {run + 1}: {rate:,.0f} receipts/s")
    print(
        f"median of {args.runs}: {statistics.median(rates):,.0f} receipts counted per second "
        f"({'PostgreSQL' if args.postgres else 'SQLite'}, transactions of {args.batch} receipts)"
    )


if __name__ == "__main__":
    asyncio.run(main())
