"""Session-wide choices: which database the suite runs against (SQLite, or PostgreSQL when asked), and
the guard that fails a test when Kanal's own code blocks the event loop."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from blockbuster import BlockBuster, blockbuster_ctx

from bridge.moderation import audit as audit_module
from bridge.ops import initfiles as initfiles_module
from bridge.ops.synapse import LocalSynapse
from bridge.runtime import config as config_module
from bridge.store import db as db_module
from bridge.text import i18n as i18n_module

# Kanal's subprocesses (`python -m bridge.cli`, started from temporary folders) run this checkout's
# code, not whichever checkout the virtualenv's editable install points at (a worktree, a clone).
CHECKOUT = Path(__file__).resolve().parents[1]
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CHECKOUT), os.environ.get("PYTHONPATH")]))

# Where a blocking call inside the running event loop fails a test (the blocking_guard fixture).
KANAL_PACKAGES = ["appservice", "bridge"]

# Kanal's functions that may block although a loop runs, each with why. Nothing else in appservice/ or
# bridge/ may: fix the code (asyncio.to_thread, an async client) rather than adding a line here.
# (Functions, not file names, so that moving a module moves its line here with it.)
MAY_BLOCK: list[tuple[str, list[Callable[..., Any]], str]] = [
    # (blocking function or "*", Kanal's functions, why)
    (
        "*",
        [config_module.load, config_module.parse],
        "the configuration is read before the event loop starts (bridge/cli.py, bridge/ops/sandbox.py); "
        "tests build theirs inside async fixtures and tests",
    ),
    (
        "*",
        [initfiles_module.write_init_files],
        "`kanal init` and `kanal up` write a deployment's files before any event loop runs; tests make "
        "theirs inside async fixtures",
    ),
    (
        "os.path.abspath",
        [db_module.create_engine],
        "SQLAlchemy's SQLite dialect makes the file path absolute (os.getcwd, no disk I/O), once per engine",
    ),
    (
        "*",
        [audit_module.configured_public_key],
        "`kanal audit verify` reads the audit key before its event loop starts (bridge/cli.py)",
    ),
    (
        "*",
        [i18n_module.catalogue.__wrapped__],
        "the message catalogue is read once per process and kept; Service.start reads it in a thread",
    ),
    (
        "*",
        [LocalSynapse.__init__],
        "the sandbox's Synapse launcher resolves its paths (a stat or two) when made, once per run",
    ),
    (
        "*",
        [db_module.OneTripConnection._call],
        "SQLite statements run on the loop: a statement answered from SQLite's page cache costs "
        "microseconds, a trip to aiosqlite's thread and back far more; a locked database is waited "
        "for in the thread, and commits (which may checkpoint the WAL with an fsync) go there too",
    ),
    (
        "*",
        [db_module.migrate, db_module._upgrade],
        "the schema is brought up to date once, at start, before Kanal listens: Alembic reads its "
        "migration scripts from disk inside SQLAlchemy's run_sync, which has to run on the loop",
    ),
]

# Other libraries' blocking that Kanal cannot change: (file, its functions, why).
LIBRARIES_MAY_BLOCK: list[tuple[str, set[str], str]] = [
    (
        "asyncpg/connect_utils.py",
        {"_parse_connect_dsn_and_args"},
        "asyncpg looks for ~/.pgpass and client certificates when it connects",
    ),
]

# Test code that calls Kanal's start-up helpers from inside the loop, where Kanal calls them before
# the loop runs or in a thread: (test file, its functions, why).
HARNESS_MAY_BLOCK: list[tuple[str, set[str], str]] = [
    (
        "tests/functional/test_web_pages.py",
        {"client", "test_media_of_a_visible_post_is_served_and_cached", "pages_app"},
        "builds the web app (reads its templates) in the loop; Service._start_web does it in a thread",
    ),
    (
        "tests/functional/test_publishing_api.py",
        {"make_api_app"},
        "builds the API app (reads the OpenAPI document) in the loop; Service._start_web: in a thread",
    ),
    (
        "tests/integration/test_audit_cli.py",
        {"write_config"},
        "writes a deployment's files (`kanal init`, which runs without a loop) from an async fixture",
    ),
    (
        "tests/integration/test_schema_migrations.py",
        {"_upgrade_to"},
        "migrates to a chosen revision in the loop, as db.migrate does (Alembic reads its scripts)",
    ),
    (
        "tests/unit/test_audit.py",
        {"test_export_writes_a_verifiable_directory"},
        "reads the audit key file in the loop; Kanal reads it in a thread (audit.append) or before it",
    ),
]


def _database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
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


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SQLite in a temporary folder, or a fresh PostgreSQL database when KANAL_TEST_POSTGRES is set.

    KANAL_TEST_POSTGRES is a server URL such as postgresql://postgres@127.0.0.1:5432/test; the suite
    creates its own database there and drops it at the end. When it is set and the server is missing,
    the tests fail: they never skip silently.
    """
    yield from _database(tmp_path_factory)


@pytest.fixture(scope="session")
def federation_database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The database of the federation stack's own Kanal (tests/integration/conftest.py), made as
    `database_url` is: it never shares one with the single-homeserver Kanal."""
    yield from _database(tmp_path_factory)


@pytest.fixture(scope="session")
def e2ee_database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The database of the encrypting stack's own Kanal (tests/integration/conftest.py `e2ee`)."""
    yield from _database(tmp_path_factory)


@pytest.fixture(autouse=True)
def blocking_guard() -> Iterator[BlockBuster]:
    """Fails a test when Kanal's own code blocks the event loop, as aiohttp's own suite does.

    BlockBuster swaps blocking functions (time.sleep, file and socket reads and writes, sqlite3,
    os.stat, lock waits...) for wrappers that raise BlockingError when called in a thread whose event
    loop is running and with a frame of appservice/ or bridge/ on the stack. Test code and its
    fixtures may block (they start subprocesses, write files); Kanal's code must not.
    """
    with blockbuster_ctx(KANAL_PACKAGES) as guard:
        for blocking, kanal_functions, _why in MAY_BLOCK:
            for name, function in guard.functions.items():
                if blocking in ("*", name):
                    for kanal_function in kanal_functions:
                        function.can_block_in(kanal_function.__code__.co_filename, kanal_function.__name__)
        for function in guard.functions.values():
            for filename, functions, _why in LIBRARIES_MAY_BLOCK + HARNESS_MAY_BLOCK:
                function.can_block_in(filename, functions)
        yield guard
