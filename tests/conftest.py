"""Session-wide choices: which database the suite runs against (SQLite, or PostgreSQL when asked)."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SQLite in a temporary folder, or a fresh PostgreSQL database when KANAL_TEST_POSTGRES is set.

    KANAL_TEST_POSTGRES is a server URL such as postgresql://postgres@127.0.0.1:5432/test; the suite
    creates its own database there and drops it at the end. When it is set and the server is missing,
    the tests fail: they never skip silently.
    """
    server = os.environ.get("KANAL_TEST_POSTGRES")
    if not server:
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'kanal.db'}"
        return
    import asyncpg

    name = f"kanal_test_{secrets.token_hex(4)}"
    dsn = server.replace("postgresql+asyncpg://", "postgresql://")

    async def admin(sql: str) -> None:
        connection = await asyncpg.connect(dsn)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    base = dsn.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
