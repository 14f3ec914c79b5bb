"""Counting views from read receipts: parsing, positions that only move forward, counts per post."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from bridge.audience.views import count_receipts, receipts, views_of
from bridge.runtime.config import parse
from bridge.runtime.context import Context
from bridge.runtime.outbox import OutboxWorker
from bridge.store.db import create_engine, migrate, sessionmaker
from bridge.store.models import Channel, Post, PostCopy, ReaderPosition


def test_only_public_read_receipts_are_read() -> None:
    ephemeral: list[dict[str, Any]] = [
        {
            "type": "m.receipt",
            "room_id": "!r:x",
            "content": {"$a": {"m.read": {"@bob:x": {"ts": 1}, "@eve:x": {}}}},
        },
        {
            "type": "m.receipt",
            "room_id": "!r:x",
            "content": {"$b": {"m.read.private": {"@carol:x": {"ts": 2}}}},
        },
        {"type": "m.typing", "room_id": "!r:x", "content": {"user_ids": ["@bob:x"]}},
        {"type": "m.receipt", "content": "garbage"},
    ]
    assert receipts(ephemeral) == [("$a", "@bob:x"), ("$a", "@eve:x")]


async def test_positions_move_forward_and_count_earlier_posts(tmp_path: Path) -> None:
    config = parse(
        {
            "homeserver": {"url": "http://127.0.0.1:9", "domain": "x"},
            "appservice": {"as_token": "a" * 20, "hs_token": "b" * 20},
            "database": {"url": f"sqlite:///{tmp_path / 'k.db'}"},
        },
        tmp_path / "config.yaml",
    )
    engine = create_engine(config.database_url)
    await migrate(engine)
    sessions = sessionmaker(engine)
    ctx = Context(config, None, sessions, OutboxWorker(sessions, None))  # type: ignore[arg-type]
    async with sessions.begin() as session:
        channel = Channel(
            handle="dailynews", title="D", owner="@o:x", ghost_user_id="@kanal_dailynews:x", status="active"
        )
        session.add(channel)
        await session.flush()
        for n in (1, 2, 3):
            post = Post(
                channel_id=channel.id, source_event_id=f"$s{n}", relayed_event_id=f"$p{n}", author="@o:x"
            )
            session.add(post)
            await session.flush()
            # The channel spans two rooms: each post has a copy in each.
            session.add(PostCopy(event_id=f"$p{n}", post_id=post.id, room_id="!b:x"))
            session.add(PostCopy(event_id=f"$q{n}", post_id=post.id, room_id="!c:x"))

    def receipt(event_id: str, *users: str) -> dict[str, object]:
        return {
            "type": "m.receipt",
            "room_id": "!b:x",
            "content": {event_id: {"m.read": {u: {} for u in users}}},
        }

    assert await count_receipts(ctx, [receipt("$p2", "@bob:x", "@kanal_dailynews:x", "@kanal:x")]) == 1
    assert await count_receipts(ctx, [receipt("$p1", "@bob:x")]) == 1  # an older receipt never moves back
    assert await count_receipts(ctx, [receipt("$p3", "@eve:x"), receipt("$unknown", "@zed:x")]) == 1
    # A reader of the second room reads the second room's copy: the same post, counted once.
    assert await count_receipts(ctx, [receipt("$q2", "@ann:x")]) == 1
    await count_receipts(ctx, [receipt("$q1", "@eve:x")])  # an older post, in the other room: no step back
    async with sessions() as session:
        positions = dict(
            (await session.execute(select(ReaderPosition.user_id, ReaderPosition.post_id))).all()
        )
        assert positions == {"@bob:x": 2, "@eve:x": 3, "@ann:x": 2}
        assert await views_of(session, 1, [1, 2, 3]) == {1: 3, 2: 3, 3: 1}
    await engine.dispose()
