"""`kanal migrate-db`: an existing SQLite deployment moves to PostgreSQL with all its data."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import func, select

from bridge.ops.initfiles import write_init_files
from bridge.store.db import create_engine, migrate, sessionmaker
from bridge.store.models import Channel, ChannelMember, InboundEvent, OutboxEntry, Post, Room

SERVER = os.environ.get("KANAL_TEST_POSTGRES", "")
pytestmark = pytest.mark.skipif(not SERVER, reason="needs PostgreSQL: set KANAL_TEST_POSTGRES (CI does)")


async def _fill(url: str) -> None:
    engine = create_engine(url)
    await migrate(engine)
    sessions = sessionmaker(engine)
    async with sessions.begin() as s:
        for i in range(1500):
            s.add(InboundEvent(event_id=f"$e{i}", room_id="!r:x", payload={"n": i}, status="done"))
        channel = Channel(
            handle="news_room",
            title="News",
            about="",
            owner="@a:x",
            ghost_user_id="@kanal_news_room:x",
            broadcast_room_id="!b:x",
            backstage_room_id="!s:x",
            status="active",
        )
        s.add(channel)
        await s.flush()
        s.add(ChannelMember(channel_id=channel.id, user_id="@a:x", role="owner"))
        s.add(Room(room_id="!b:x", kind="broadcast", channel_id=channel.id))
        s.add(OutboxEntry(queue="room:!b:x", kind="send", as_user="@kanal_news_room:x", payload={"x": 1}))
        s.add(Post(channel_id=channel.id, source_event_id="$src", relayed_event_id="$rel", author="@a:x"))
    await engine.dispose()


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(SERVER.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def test_sqlite_deployment_is_copied_to_postgres(tmp_path: Path) -> None:
    config_path, _ = write_init_files(tmp_path, domain="x", homeserver_url="http://127.0.0.1:9")
    asyncio.run(_fill(f"sqlite:///{tmp_path / 'kanal.db'}"))
    name = f"kanal_migrate_{secrets.token_hex(4)}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    target = SERVER.replace("postgresql+asyncpg://", "postgresql://").rsplit("/", 1)[0] + f"/{name}"
    try:
        result = subprocess.run(
            [sys.executable, "-m", "bridge.cli", "migrate-db", "-c", str(config_path), "--to", target],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert "inbound_events" in result.stderr and "1500/1500" in result.stderr  # the progress bar
        assert "database.url" in result.stdout

        async def check() -> None:
            engine = create_engine(target)
            sessions = sessionmaker(engine)
            async with sessions.begin() as s:
                assert await s.scalar(select(func.count()).select_from(InboundEvent)) == 1500
                channel = await s.scalar(select(Channel).where(Channel.handle == "news_room"))
                assert channel is not None and channel.broadcast_room_id == "!b:x"
                assert (
                    await s.scalar(select(Post.relayed_event_id).where(Post.source_event_id == "$src"))
                    == "$rel"
                )
                s.add(InboundEvent(event_id="$new", room_id="!r:x", payload={}, status="pending"))
                await s.flush()  # the id sequence continues after the copied rows
                assert await s.scalar(select(InboundEvent.seq).where(InboundEvent.event_id == "$new")) == 1501
            await engine.dispose()

        asyncio.run(check())
        again = subprocess.run(
            [sys.executable, "-m", "bridge.cli", "migrate-db", "-c", str(config_path), "--to", target],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert again.returncode == 1 and "already has data" in again.stderr
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
