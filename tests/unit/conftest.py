"""Shared by the unit tests that run commands against a real (SQLite) database: nothing is sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from appservice.client import HomeserverClient
from bridge.runtime.config import parse
from bridge.runtime.context import Context
from bridge.runtime.outbox import OutboxWorker
from bridge.store.db import create_engine, migrate, sessionmaker

DOMAIN = "example.org"


@pytest.fixture
async def ctx(tmp_path: Path) -> AsyncIterator[Context]:
    """A Context on a migrated SQLite database, with a homeserver client that reaches nothing."""
    config = parse(
        {
            "homeserver": {"url": "http://127.0.0.1:9", "domain": DOMAIN},
            "appservice": {"as_token": "as-secret-0123456789", "hs_token": "hs-secret-0123456789"},
            "database": {"url": f"sqlite:///{tmp_path / 'kanal.db'}"},
        },
        tmp_path / "config.yaml",
    )
    engine = create_engine(config.database_url)
    await migrate(engine)
    sessions = sessionmaker(engine)
    client = HomeserverClient(config.homeserver_url, config.as_token, attempts=1)
    try:
        yield Context(config, client, sessions, OutboxWorker(sessions, client))
    finally:
        await client.close()
        await engine.dispose()
