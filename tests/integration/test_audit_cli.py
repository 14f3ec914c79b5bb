"""`kanal audit verify` and `kanal audit export` as an operator runs them, and appends racing on PostgreSQL.

Needs no Synapse: each test writes its own config (SQLite in tmp_path) and fills the log in-process.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select, text

from appservice.registration import write_secret_file
from bridge.moderation.audit import append, configured_public_key, key_id, public_key_pem, verify
from bridge.ops.initfiles import write_init_files
from bridge.runtime.config import Config
from bridge.runtime.config import load as load_config
from bridge.store.db import create_engine, migrate, sessionmaker
from bridge.store.models import AuditEntry

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
KANAL = [sys.executable, "-m", "bridge.cli"]


async def kanal(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *KANAL, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def write_config(directory: Path, database_url: str, checkpoint_every: int) -> Config:
    config_path, _ = write_init_files(
        directory, domain="example.org", homeserver_url="http://127.0.0.1:8008", database_url=database_url
    )
    data = yaml.safe_load(config_path.read_text())
    data["compliance"] = {"checkpoint_every": checkpoint_every}
    write_secret_file(config_path, yaml.safe_dump(data, sort_keys=False))
    return load_config(config_path)


async def fill(config: Config, count: int) -> list[str]:
    """Append `count` notices, one transaction each; the entries' hashes, in order."""
    engine = create_engine(config.database_url)
    try:
        await migrate(engine)
        sessions = sessionmaker(engine)
        for n in range(1, count + 1):
            async with sessions.begin() as session:
                await append(
                    session,
                    "notice",
                    {"notice": n, "category": "illegal_content"},
                    {"notifier": f"@user{n}:example.org", "explanation": "see the post"},
                    config=config,
                )
        async with sessions() as session:
            return list(await session.scalars(select(AuditEntry.hash).order_by(AuditEntry.seq)))
    finally:
        await engine.dispose()


async def execute(config: Config, statement: str) -> None:
    engine = create_engine(config.database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


@dataclass
class Deployment:
    config: Config
    hashes: list[str]

    @property
    def config_path(self) -> str:
        return str(self.config.path)


@pytest.fixture
async def deployment(tmp_path: Path) -> Deployment:
    """Eight entries with checkpoints at 3 and 6, in a SQLite file next to the config."""
    config = write_config(tmp_path / "kanal", f"sqlite:///{tmp_path / 'kanal' / 'kanal.db'}", 3)
    return Deployment(config, await fill(config, 8))


async def test_verify_proves_an_intact_log(deployment: Deployment) -> None:
    code, out, err = await kanal("audit", "verify", "-c", deployment.config_path)

    assert code == 0, err
    assert "8 entries, 2 checkpoints" in out
    assert f"chain head {deployment.hashes[-1]}" in out
    public = configured_public_key(deployment.config)
    assert public is not None and f"key {key_id(public)}" in out


@pytest.mark.parametrize(
    ("statement", "bad_seq"),
    [
        ('UPDATE audit_log SET body = \'{"category": "other", "notice": 5}\' WHERE seq = 5', 5),
        ("DELETE FROM audit_log WHERE seq >= 6", 6),  # cut off the end; checkpoint 6 remembers it
        ("DELETE FROM audit_log WHERE seq = 2", 2),
    ],
)
async def test_verify_names_the_first_bad_entry(deployment: Deployment, statement: str, bad_seq: int) -> None:
    await execute(deployment.config, statement)

    code, out, err = await kanal("audit", "verify", "-c", deployment.config_path)

    assert code == 1, out
    assert f"NOT intact at entry {bad_seq}:" in err


@pytest.fixture(params=["sqlite", "postgresql"])
async def any_database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Deployment]:
    """Eight entries with checkpoints at 3 and 6, on SQLite and (KANAL_TEST_POSTGRES) on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'kanal' / 'kanal.db'}"
        config = write_config(tmp_path / "kanal", url, 3)
        yield Deployment(config, await fill(config, 8))
        return
    async for url in postgres_url():
        config = write_config(tmp_path / "kanal", url, 3)
        yield Deployment(config, await fill(config, 8))


# PostgreSQL's column types refuse most garbage (a time that is no time, bytes that are no UTF-8), but
# its text columns take any text: each such alteration is named, on both databases, and never a crash.
@pytest.mark.parametrize(
    ("statement", "bad_seq"),
    [
        ("UPDATE audit_log SET kind = 'decision' WHERE seq = 3", 3),
        ("UPDATE audit_log SET body = 'not json at all' WHERE seq = 4", 4),
        ("UPDATE audit_log SET body = '{\"category\": \"illegal_content\", \"notice\": 40}' WHERE seq = 4", 4),
        ("UPDATE audit_log SET hash = '0000000000000000000000000000000000000000000000000000000000000000' WHERE seq = 5", 5),
        ("UPDATE audit_log SET prev_hash = 'ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff' WHERE seq = 2", 2),
        ("UPDATE audit_log SET personal_hash = 'nothing' WHERE seq = 7", 7),
        ("UPDATE audit_personal SET data = '{\"notifier\": \"@someone:else\"}' WHERE seq = 6", 6),
        ("UPDATE audit_checkpoints SET signature = 'AAAA' WHERE seq = 6", 6),
        ("UPDATE audit_checkpoints SET head = '0000000000000000000000000000000000000000000000000000000000000000' WHERE seq = 3", 3),
        ("UPDATE audit_checkpoints SET key_id = 'another' WHERE seq = 3", 3),
    ],
)
async def test_verify_names_an_altered_text_column_on_either_database(
    any_database: Deployment, statement: str, bad_seq: int
) -> None:
    await execute(any_database.config, statement)

    code, out, err = await kanal("audit", "verify", "-c", any_database.config_path)

    assert code == 1, out
    assert f"NOT intact at entry {bad_seq}:" in err, err
    assert "Traceback" not in err


async def test_export_verifies_offline_and_catches_an_edited_export(
    deployment: Deployment, tmp_path: Path
) -> None:
    out_dir = tmp_path / "export"

    code, out, err = await kanal("audit", "export", "-c", deployment.config_path, "--output", str(out_dir))

    assert code == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "README.txt",
        "checkpoints.jsonl",
        "entries.jsonl",
        "public_key.pem",
    ]
    # Offline: no config, no database.
    (tmp_path / "kanal" / "kanal.db").unlink()
    code, out, err = await kanal("audit", "verify", "--export", str(out_dir))
    assert code == 0, err
    assert f"8 entries, 2 checkpoints; chain head {deployment.hashes[-1]}" in out
    assert "compare its key id" in out

    stranger = tmp_path / "stranger.pem"
    stranger.write_text(public_key_pem(Ed25519PrivateKey.generate().public_key()))
    code, out, err = await kanal("audit", "verify", "--export", str(out_dir), "--public-key", str(stranger))
    assert code == 1 and "NOT intact at entry 3:" in err  # the first checkpoint names another key

    entries = out_dir / "entries.jsonl"
    lines = entries.read_text().splitlines()
    second = json.loads(lines[1])
    second["body"] = second["body"].replace("illegal_content", "other")
    lines[1] = json.dumps(second)
    entries.write_text("\n".join(lines) + "\n")
    code, out, err = await kanal("audit", "verify", "--export", str(out_dir))
    assert code == 1 and "NOT intact at entry 2: entry 2 was altered" in err


async def test_export_refuses_a_directory_with_files(deployment: Deployment, tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")

    code, _, err = await kanal(
        "audit", "export", "-c", deployment.config_path, "--output", str(tmp_path / "taken")
    )

    assert code == 2 and "not an empty directory" in err
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"


async def test_a_broken_config_or_export_exits_2(tmp_path: Path) -> None:
    code, _, err = await kanal("audit", "verify", "-c", str(tmp_path / "missing.yaml"))
    assert code == 2 and "configuration error" in err

    code, _, err = await kanal("audit", "verify", "--export", str(tmp_path / "nowhere"))
    assert code == 2 and "not a directory" in err


@pytest.fixture(name="postgres_url")
async def postgres_url_fixture() -> AsyncIterator[str]:
    async for url in postgres_url():
        yield url


async def postgres_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database, dropped afterwards; skipped without KANAL_TEST_POSTGRES."""
    server = os.environ.get("KANAL_TEST_POSTGRES")
    if not server:
        pytest.skip("KANAL_TEST_POSTGRES is not set")
    dsn = server.replace("postgresql+asyncpg://", "postgresql://")
    name = f"kanal_audit_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield f"{dsn.rsplit('/', 1)[0]}/{name}"
    finally:
        admin = await asyncpg.connect(dsn)
        try:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def test_concurrent_appends_on_postgresql_form_one_chain(postgres_url: str, tmp_path: Path) -> None:
    """Two processes' worth of connections append at once; the advisory lock keeps one unbroken chain."""
    config = write_config(tmp_path / "kanal", postgres_url, 4)
    engines = [create_engine(config.database_url) for _ in range(2)]
    try:
        await migrate(engines[0])

        async def writer(index: int) -> None:
            sessions = sessionmaker(engines[index])
            for n in range(10):
                async with sessions.begin() as session:
                    await append(
                        session, "decision", {"writer": index, "n": n}, {"by": "@mod:x"}, config=config
                    )
                    await asyncio.sleep(0.01)  # commit later, while the other writer waits for the lock

        await asyncio.gather(writer(0), writer(1))

        async with sessionmaker(engines[0])() as session:
            result = await verify(session, configured_public_key(config))
            seqs = list(await session.scalars(select(AuditEntry.seq).order_by(AuditEntry.seq)))
    finally:
        for engine in engines:
            await engine.dispose()

    assert (result.ok, result.entries, result.checkpoints) == (True, 20, 5), result.problem
    assert seqs == list(range(1, 21))
    code, out, err = await kanal("audit", "verify", "-c", str(config.path))
    assert code == 0 and "20 entries, 5 checkpoints" in out, err
