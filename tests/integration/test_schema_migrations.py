"""Schema upgrades keep every row: a deployment at each earlier revision is upgraded to the newest.

Runs on SQLite, and on PostgreSQL when KANAL_TEST_POSTGRES is set (a fresh database per test).
An upgrade that rebuilt the `channels` table on SQLite would cascade-delete rooms, members and posts
(foreign keys are on); this is the test that catches it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from alembic import command
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.store.db import alembic_config, create_engine, migrate

pytestmark = pytest.mark.integration


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    server = os.environ.get("KANAL_TEST_POSTGRES")
    if not server:
        eng = create_engine(f"sqlite:///{tmp_path / 'kanal.db'}")
        yield eng
        await eng.dispose()
        return
    dsn = server.replace("postgresql+asyncpg://", "postgresql://")
    name = f"kanal_migrate_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    eng = create_engine(f"{dsn.rsplit('/', 1)[0]}/{name}")
    try:
        yield eng
    finally:
        await eng.dispose()
        admin = await asyncpg.connect(dsn)
        try:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def _upgrade_to(connection: Connection, revision: str) -> None:
    command.upgrade(alembic_config(connection), revision)


ROWS_0002 = [
    "INSERT INTO channels (id, handle, title, about, owner, ghost_user_id, broadcast_room_id,"
    " backstage_room_id, status, signatures, reactions)"
    " VALUES (1, 'dailynews', 'Daily News', '', '@alice:x', '@kanal_dailynews:x', '!b:x', '!s:x',"
    " 'active', false, true)",
    "INSERT INTO channel_members (channel_id, user_id, role) VALUES (1, '@alice:x', 'owner')",
    "INSERT INTO rooms (room_id, kind, channel_id, encrypted_warned) VALUES ('!b:x', 'broadcast', 1, false)",
    "INSERT INTO rooms (room_id, kind, channel_id, encrypted_warned) VALUES ('!s:x', 'backstage', 1, false)",
    "INSERT INTO posts (channel_id, source_event_id, relayed_event_id, author, redacted)"
    " VALUES (1, '$src', '$copy', '@alice:x', false)",
]
COUNTS = {"channels": 1, "channel_members": 1, "rooms": 2, "posts": 1, "post_copies": 1}


async def test_upgrading_from_0002_keeps_channels_rooms_members_and_posts(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade_to, "0002")
        for statement in ROWS_0002:
            await connection.execute(text(statement))

    await migrate(engine)

    async with engine.connect() as connection:
        for table, expected in COUNTS.items():
            count = await connection.scalar(text(f"SELECT count(*) FROM {table}"))  # noqa: S608 (fixed names)
            assert count == expected, f"{table}: {count} rows after the upgrade, expected {expected}"
        verified, title_key = (
            await connection.execute(text("SELECT verified, title_key FROM channels WHERE id = 1"))
        ).one()
        assert verified in (False, 0)
        assert title_key == ""
        # A channel of one room: each published post's event is its copy in that room (0014).
        copy = (await connection.execute(text("SELECT event_id, post_id, room_id FROM post_copies"))).one()
        assert tuple(copy) == ("$copy", 1, "!b:x")
        # When a channel and a post last changed, for the web pages' Last-Modified (0015): the best
        # earlier time known; no photo yet.
        channel_changed, avatar, created = (
            await connection.execute(text("SELECT changed_at, avatar_url, created_at FROM channels"))
        ).one()
        assert channel_changed == created and avatar is None
        post_changed, post_created = (
            await connection.execute(text("SELECT changed_at, created_at FROM posts"))
        ).one()
        assert post_changed is not None and post_changed == post_created
        # The bot's encryption keys move into the database (0016): none yet.
        assert await connection.scalar(text("SELECT count(*) FROM crypto_store")) == 0
        head = await connection.scalar(text("SELECT version_num FROM alembic_version"))
    assert head == "0016"
