"""A token shown once is never at rest in clear: not in a file of Kanal's, not in a database row.

Every kind of token Kanal shows once is issued the way its user issues it (a channel owner's
`!token new` and `!link new` in backstage, an operator's `token new` in the operators' room, an
operator's shell for `kanal token create` and `kanal flagger add`); each is read from what the user
sees, then looked for, byte for byte, while Kanal runs:

- in every file of Kanal's data: its folder (config, media cache, audit key, …), its log, and on
  SQLite the database file with its `-wal`, `-shm` and `-journal` (the raw bytes, so freed pages and
  overwritten row versions count too);
- in every row of every table of the database;
- on PostgreSQL also in the raw pages of every relation of Kanal's database (heap, TOAST and index
  pages, read through the buffer manager with `pageinspect`: dead row versions not yet vacuumed are
  there), and in the WAL segments written since the test began (`pg_read_binary_file`).

What this cannot see: PostgreSQL pages or WAL whose content is compressed (values over about 2 kB,
or `wal_compression`), and the homeserver's own copy of the message (which is the point of it).
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Iterable
from pathlib import Path

import asyncpg
import pytest

from bridge.runtime.config import load
from tests.integration.test_registry import join_operator_room, with_operators
from tests.support import Env, create_channel, reconfigured

pytestmark = pytest.mark.integration

API_TOKEN = re.compile(r"kanal_api_[A-Za-z0-9_-]{20,}")
REGISTRATION_TOKEN = re.compile(r"kanal_rt_[A-Za-z0-9_-]{20,}")
LINK_TOKEN = re.compile(r"kanal_inv_[A-Za-z0-9_-]{20,}")
FLAGGER_TOKEN = re.compile(r"kanal_flag_[A-Za-z0-9_-]{20,}")
PAGE_SIZE = 8192


def shown(pattern: re.Pattern[str], text: str) -> str:
    match = pattern.search(text)
    assert match is not None, text
    return match.group(0)


def files_holding(paths: Iterable[Path], secrets: dict[str, str]) -> list[str]:
    """`<kind> in <file>` for each secret found in the raw bytes of a file."""
    found = []
    for path in paths:
        try:
            data = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            continue
        found += [f"{kind} in {path}" for kind, secret in secrets.items() if secret.encode() in data]
    return found


def kanal_files(env: Env, database_url: str) -> list[Path]:
    """Kanal's state directory as its config names it (media cache, keys; `state.directory`, else the
    config's folder), the config's folder, its log, and an SQLite database with its side files."""
    config = load(env.kanal.config_path)
    folders = {config.writable_dir.resolve(), env.kanal.config_path.parent.resolve()}
    paths = [p for folder in folders for p in folder.rglob("*") if p.is_file()] + [env.kanal.log_path]
    if database_url.startswith("sqlite:///"):
        database = Path(database_url.removeprefix("sqlite:///"))
        paths += [p for p in database.parent.iterdir() if p.name.startswith(database.name)]
    return paths


def sqlite_rows_holding(database_url: str, secrets: dict[str, str]) -> list[str]:
    database = database_url.removeprefix("sqlite:///")
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return [
            f"{kind} in a row of {table}"
            for table in tables
            for row in connection.execute(f'SELECT * FROM "{table}"')  # noqa: S608 (names from sqlite_master)
            for kind, secret in secrets.items()
            if secret in repr(row)
        ]
    finally:
        connection.close()


async def postgres_holding(database_url: str, since_lsn: str, secrets: dict[str, str]) -> list[str]:
    """Rows, raw relation pages (dead row versions included) and WAL written since `since_lsn`."""
    connection = await asyncpg.connect(database_url)
    found: list[str] = []

    def look(where: str, data: bytes | str) -> None:
        blob = data.encode() if isinstance(data, str) else data
        found.extend(f"{kind} in {where}" for kind, secret in secrets.items() if secret.encode() in blob)

    try:
        await connection.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
        tables = await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        for (table,) in tables:
            for (row,) in await connection.fetch(f'SELECT t::text FROM "{table}" t'):  # noqa: S608
                look(f"a row of {table}", row)
        relations = await connection.fetch(
            "SELECT c.oid::regclass::text, pg_relation_size(c.oid) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname IN (current_schema(), 'pg_toast') AND c.relkind IN ('r', 't', 'i', 'm')"
        )
        for relation, size in relations:
            for block in range(size // PAGE_SIZE):
                look(
                    f"a page of {relation}",
                    await connection.fetchval("SELECT get_raw_page($1, 'main', $2)", relation, block),
                )
        segment_size = await connection.fetchval(
            "SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'"
        )
        read = 0
        for segment in await wal_segments(connection, since_lsn, segment_size):
            # A checkpoint may have recycled an early segment meanwhile (missing_ok); the last one,
            # which holds the latest writes, is always there.
            wal = await connection.fetchval(
                "SELECT pg_read_binary_file($1, 0, $2, true)", f"pg_wal/{segment}", segment_size
            )
            if wal is not None:
                look(f"WAL segment {segment}", wal)
                read += 1
        assert read, "no WAL segment of the test could be read"
    finally:
        await connection.close()
    return found


def lsn_number(lsn: str) -> int:
    high, low = lsn.split("/")
    return int(high, 16) << 32 | int(low, 16)


async def wal_segments(connection: asyncpg.Connection, since_lsn: str, segment_size: int) -> list[str]:
    """The names of the WAL files holding what was written from `since_lsn` to now."""
    now = await connection.fetchval("SELECT pg_current_wal_lsn()::text")
    start, end = lsn_number(since_lsn), lsn_number(now)
    names: dict[str, None] = {}
    for at in [*range(start, end, segment_size), end]:  # an LSN on a boundary names the file before
        lsn = f"{at >> 32:X}/{at & 0xFFFFFFFF:X}"
        names[await connection.fetchval("SELECT pg_walfile_name($1::text::pg_lsn)", lsn)] = None
    return list(names)


async def current_lsn(database_url: str) -> str:
    connection = await asyncpg.connect(database_url)
    try:
        lsn: str = await connection.fetchval("SELECT pg_current_wal_lsn()::text")
        return lsn
    finally:
        await connection.close()


async def places_holding(
    env: Env, database_url: str, since_lsn: str | None, secrets: dict[str, str]
) -> list[str]:
    """Every file of Kanal's and every row (on PostgreSQL also every page and the WAL) with a secret."""
    found = await asyncio.to_thread(lambda: files_holding(kanal_files(env, database_url), secrets))
    if since_lsn is None:
        return found + await asyncio.to_thread(sqlite_rows_holding, database_url, secrets)
    return found + await postgres_holding(database_url, since_lsn, secrets)


async def test_a_token_shown_once_is_in_no_file_and_no_row_of_kanal(env: Env, database_url: str) -> None:
    postgres = not database_url.startswith("sqlite:")
    lsn = await current_lsn(database_url) if postgres else None
    operator, alice = await env.user("ops"), await env.user("alice")
    async with reconfigured(env, with_operators(operator, policy="open")):
        ops_room = await join_operator_room(env, operator)
        channel = await create_channel(env, alice, env.handle("sec"), "Secrets")
        private = await create_channel(env, alice, env.handle("secp"), "Closed --private")
        secrets = {
            "publishing-API token": shown(
                API_TOKEN, await alice.ask(channel.backstage, "!token new newsbot", "shown only this once")
            ),
            "invite link token": shown(
                LINK_TOKEN, await alice.ask(private.backstage, "!link new --uses 3", "shown only this once")
            ),
            "registration token (operators' room)": shown(
                REGISTRATION_TOKEN, await operator.ask(ops_room, "token new --uses 1 a", "shown only now")
            ),
            "registration token (shell)": shown(
                REGISTRATION_TOKEN, await env.run_cli("token", "create", "--uses", "1")
            ),
            "flagger token": shown(FLAGGER_TOKEN, await env.run_cli("flagger", "add", env.handle("flagger"))),
        }
        # Something more after the tokens, so the outbox has recorded their sends (and, before sealed
        # replies, scrubbed them) by the time the files are read.
        await alice.ask(channel.backstage, "!token list", "newsbot")
        await operator.ask(ops_room, "tokens", "Registration tokens")
        found = await places_holding(env, database_url, lsn, secrets)
    assert found == [], found
