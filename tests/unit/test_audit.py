"""The audit log: chain and checkpoints (pure, property-based), appends and erasure in SQLite, keys, exports."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import os
import stat
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, Encoding, PrivateFormat
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bridge.moderation.audit import (
    GENESIS_HASH,
    AuditError,
    CheckpointData,
    EntryData,
    VerifyResult,
    append,
    configured_public_key,
    entry_hash,
    erase_personal,
    export,
    key_id,
    load_export,
    load_or_create_key,
    personal_data_hash,
    sign_checkpoint,
    verify,
    verify_entries,
)
from bridge.runtime.config import Config, parse
from bridge.store.db import create_engine, migrate, sessionmaker
from bridge.store.models import AuditCheckpoint, AuditEntry, AuditPersonal
from bridge.text.canonical import canonical_json

KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()
START = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


# -- pure: chains built in memory ------------------------------------------------------------------------


@dataclasses.dataclass
class Chain:
    entries: list[EntryData]
    checkpoints: list[CheckpointData]
    personal: dict[int, str]


def build_chain(
    bodies: list[dict[str, Any]], personals: list[dict[str, Any] | None], every: int, key: Ed25519PrivateKey
) -> Chain:
    """What `append` writes, without a database: checkpoints every `every` entries and after the last."""
    entries: list[EntryData] = []
    checkpoints: list[CheckpointData] = []
    personal: dict[int, str] = {}
    prev = GENESIS_HASH
    for seq, (body, data) in enumerate(zip(bodies, personals, strict=True), start=1):
        at = START + timedelta(seconds=seq)
        body_text = canonical_json(body)
        p_hash = ""
        if data is not None:
            personal[seq] = canonical_json({"data": data, "nonce": f"{seq:032x}"})
            p_hash = personal_data_hash(personal[seq])
        digest = entry_hash(prev, seq, at, "decision", body_text, p_hash)
        entries.append(EntryData(seq, at, "decision", body_text, p_hash, prev, digest))
        if seq % every == 0 or seq == len(bodies):
            checkpoints.append(sign_checkpoint(key, seq, digest, at))
        prev = digest
    return Chain(entries, checkpoints, personal)


json_values = st.one_of(st.integers(), st.text(max_size=8), st.booleans(), st.none())
bodies = st.dictionaries(st.text(max_size=6), json_values, max_size=3)
personals = st.one_of(
    st.none(), st.dictionaries(st.sampled_from(["user", "text"]), st.text(max_size=10), min_size=1)
)


@st.composite
def chains(draw: st.DrawFn) -> Chain:
    size = draw(st.integers(min_value=5, max_value=40))
    every = draw(st.integers(min_value=1, max_value=8))
    return build_chain(
        draw(st.lists(bodies, min_size=size, max_size=size)),
        draw(st.lists(personals, min_size=size, max_size=size)),
        every,
        KEY,
    )


def check(chain: Chain, key: Ed25519PrivateKey = KEY) -> VerifyResult:
    return verify_entries(chain.entries, chain.checkpoints, key.public_key(), chain.personal)


@given(chains())
def test_an_untouched_chain_verifies(chain: Chain) -> None:
    result = check(chain)
    assert result.ok, result.problem
    assert (result.entries, result.checkpoints, result.first_bad_seq) == (
        len(chain.entries),
        len(chain.checkpoints),
        None,
    )
    assert result.head == chain.entries[-1].hash


FIELDS = ("seq", "at", "kind", "body", "personal_hash", "prev_hash", "hash", "personal")


@settings(max_examples=200)
@given(chains(), st.data())
def test_altering_any_field_of_any_entry_is_pinpointed(chain: Chain, data: st.DataObject) -> None:
    index = data.draw(st.integers(min_value=0, max_value=len(chain.entries) - 1), label="index")
    entry = chain.entries[index]
    field = data.draw(st.sampled_from(FIELDS), label="field")
    if field == "personal":
        old = chain.personal.get(entry.seq)
        new = data.draw(st.text(max_size=20), label="personal")
        assume(new != old)
        chain.personal[entry.seq] = new
    else:
        new_value: Any
        if field == "seq":
            new_value = data.draw(st.integers(min_value=-5, max_value=50))
        elif field == "at":
            new_value = entry.at + timedelta(microseconds=data.draw(st.integers(-(10**9), 10**9)))
        elif field in ("kind", "body"):
            new_value = data.draw(st.text(max_size=12))
        else:
            new_value = data.draw(
                st.one_of(st.just(""), st.text("0123456789abcdef", min_size=64, max_size=64))
            )
        assume(new_value != getattr(entry, field))
        chain.entries[index] = dataclasses.replace(entry, **{field: new_value})

    result = check(chain)

    assert not result.ok
    assert result.first_bad_seq == entry.seq, result.problem


@given(chains(), st.data())
def test_deleting_any_entry_is_pinpointed(chain: Chain, data: st.DataObject) -> None:
    index = data.draw(st.integers(min_value=0, max_value=len(chain.entries) - 1))
    deleted = chain.entries.pop(index)

    result = check(chain)

    assert not result.ok
    assert result.first_bad_seq == deleted.seq, result.problem


@given(chains(), st.data())
def test_swapping_any_two_entries_is_pinpointed(chain: Chain, data: st.DataObject) -> None:
    first, second = sorted(
        data.draw(
            st.lists(st.integers(0, len(chain.entries) - 1), min_size=2, max_size=2, unique=True),
            label="pair",
        )
    )
    entries = chain.entries
    entries[first], entries[second] = entries[second], entries[first]

    result = check(chain)

    assert not result.ok
    assert result.first_bad_seq == first + 1, result.problem


@given(chains(), st.data())
def test_erased_personal_data_still_verifies(chain: Chain, data: st.DataObject) -> None:
    erased = data.draw(st.sets(st.sampled_from(sorted(chain.personal) or [0])))
    for seq in erased:
        chain.personal.pop(seq, None)
    assert check(chain).ok


def test_a_rewritten_tail_is_caught_by_the_checkpoint() -> None:
    """Rewriting entries and recomputing every later hash keeps the chain consistent; the signature does not."""
    chain = build_chain([{"n": n} for n in range(10)], [None] * 10, 4, KEY)
    forged = build_chain(
        [{"n": n} for n in range(5)] + [{"n": "changed"}] + [{"n": n} for n in range(6, 10)],
        [None] * 10,
        4,
        OTHER_KEY,
    )

    result = verify_entries(forged.entries, chain.checkpoints, KEY.public_key(), {})

    assert not result.ok
    assert result.first_bad_seq == 5, result.problem  # after the last checkpoint that still holds (4)
    assert "rewritten" in (result.problem or "")


def test_cutting_entries_off_a_checkpointed_end_is_detected() -> None:
    chain = build_chain([{"n": n} for n in range(9)], [None] * 9, 3, KEY)

    result = verify_entries(chain.entries[:7], chain.checkpoints, KEY.public_key(), {})

    assert (result.ok, result.first_bad_seq) == (False, 8)
    assert "removed" in (result.problem or "")


def test_a_checkpoint_signed_by_another_key_is_detected() -> None:
    chain = build_chain([{"n": n} for n in range(6)], [None] * 6, 3, KEY)
    chain.checkpoints[1] = sign_checkpoint(OTHER_KEY, 6, chain.entries[5].hash, START)

    result = check(chain)

    assert (result.ok, result.first_bad_seq) == (False, 6)
    assert key_id(OTHER_KEY.public_key()) in (result.problem or "")


def test_a_checkpoint_with_a_forged_signature_is_detected() -> None:
    chain = build_chain([{"n": n} for n in range(6)], [None] * 6, 3, KEY)
    honest = chain.checkpoints[0]
    other = sign_checkpoint(OTHER_KEY, honest.seq, honest.head, honest.at)
    chain.checkpoints[0] = dataclasses.replace(honest, signature=other.signature)  # the right key id, though

    result = check(chain)

    assert (result.ok, result.first_bad_seq, result.problem) == (
        False,
        3,
        "checkpoint at entry 3 has a bad signature",
    )


def test_checkpoints_need_a_public_key() -> None:
    chain = build_chain([{"n": 1}], [None], 1, KEY)
    assert verify_entries(chain.entries, [], None, {}).ok
    assert not verify_entries(chain.entries, chain.checkpoints, None, {}).ok


def test_personal_data_on_an_entry_without_a_personal_hash_is_detected() -> None:
    chain = build_chain([{"n": 1}, {"n": 2}], [None, None], 5, KEY)
    chain.personal[2] = canonical_json({"data": {"user": "@mallory:x"}, "nonce": "0"})

    result = check(chain)

    assert (result.ok, result.first_bad_seq) == (False, 2)


def test_entry_hash_follows_the_documented_netstring_format() -> None:
    """An independent implementation of the format the module docstring and the export README give."""
    at = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    fields = ["kanal-audit/1", GENESIS_HASH, "1", "2026-01-02T03:04:05.000006Z", "notice", '{"a":"é"}', ""]
    data = b"".join(f"{len(f.encode())}:".encode() + f.encode() + b"," for f in fields)

    assert entry_hash(GENESIS_HASH, 1, at, "notice", '{"a":"é"}', "") == hashlib.sha256(data).hexdigest()
    # A naive time (as SQLite returns it) is UTC.
    assert (
        entry_hash(GENESIS_HASH, 1, at.replace(tzinfo=None), "notice", '{"a":"é"}', "")
        == hashlib.sha256(data).hexdigest()
    )
    # Length prefixes keep field boundaries: moving a character from one field to the next changes the hash.
    assert entry_hash(GENESIS_HASH, 1, at, "notic", 'e{"a":"é"}', "") != entry_hash(
        GENESIS_HASH, 1, at, "notice", '{"a":"é"}', ""
    )


def test_checkpoint_signature_covers_the_documented_message() -> None:
    checkpoint = sign_checkpoint(KEY, 7, "ab" * 32, START)
    fields = [
        "kanal-audit-checkpoint/1",
        "7",
        "7",
        "ab" * 32,
        key_id(KEY.public_key()),
        "2026-01-02T03:04:05.678901Z",
    ]
    message = b"".join(f"{len(f)}:".encode() + f.encode() + b"," for f in fields)

    KEY.public_key().verify(base64.b64decode(checkpoint.signature), message)  # raises when it does not


def test_canonical_json() -> None:
    assert canonical_json({"b": 1, "a": ["é", None]}) == '{"a":["é",null],"b":1}'
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


# -- keys ------------------------------------------------------------------------------------------------


def test_the_key_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"

    key = load_or_create_key(path)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("-----BEGIN PRIVATE KEY-----")  # PKCS8, unencrypted
    assert key_id(load_or_create_key(path).public_key()) == key_id(key.public_key())
    assert [p.name for p in tmp_path.iterdir()] == ["audit.key"]  # no temporary file left behind
    assert len(key_id(key.public_key())) == 16


def test_a_key_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    load_or_create_key(path)
    path.chmod(0o640)

    with pytest.raises(AuditError, match=r"audit.key: .*mode 0640.*chmod 600"):
        load_or_create_key(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_key_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    load_or_create_key(path)
    path.chmod(0o000)

    with pytest.raises(AuditError, match="cannot read the audit key"):
        load_or_create_key(path)


def test_a_key_that_is_not_an_ed25519_pem_is_refused(tmp_path: Path) -> None:
    garbage, directory, encrypted = tmp_path / "garbage.key", tmp_path / "dir.key", tmp_path / "encrypted.key"
    garbage.write_text("not a key")
    garbage.chmod(0o600)
    directory.mkdir()
    encrypted.write_bytes(
        KEY.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(b"pw"))
    )
    encrypted.chmod(0o600)

    with pytest.raises(AuditError, match="not an unencrypted PEM"):
        load_or_create_key(garbage)
    with pytest.raises(AuditError, match="not an unencrypted PEM"):
        load_or_create_key(encrypted)
    with pytest.raises(AuditError, match="regular file"):
        load_or_create_key(directory)
    with pytest.raises(AuditError, match="cannot create"):
        load_or_create_key(tmp_path / "missing-folder" / "audit.key")


def test_concurrent_creation_agrees_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"

    with ThreadPoolExecutor(max_workers=8) as pool:
        keys = list(pool.map(load_or_create_key, [path] * 8))

    assert len({key_id(k.public_key()) for k in keys}) == 1


# -- the database (SQLite) -------------------------------------------------------------------------------


def config_data(tmp_path: Path, every: int) -> dict[str, Any]:
    return {
        "homeserver": {"url": "http://127.0.0.1:8008", "domain": "example.org"},
        "appservice": {"as_token": "a" * 20, "hs_token": "b" * 20},
        "database": {"url": f"sqlite:///{tmp_path / 'kanal.db'}"},
        "compliance": {"checkpoint_every": every, "audit_key": "audit.key"},
    }


def make_config(tmp_path: Path, every: int) -> Config:
    return parse(config_data(tmp_path, every), tmp_path / "config.yaml")


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(f"sqlite:///{tmp_path / 'kanal.db'}")
    await migrate(eng)
    yield eng
    await eng.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return sessionmaker(engine)


async def tampered_log(
    tmp_path: Path, sessions: async_sessionmaker[AsyncSession], *statements: str
) -> Config:
    """Seven entries, checkpoints every three, then `statements` run on the database; its config."""
    config = make_config(tmp_path, every=3)
    await append_many(sessions, config, 7)
    async with sessions.begin() as session:
        for statement in statements:
            await session.execute(text(statement))
    return config


async def append_many(
    sessions: async_sessionmaker[AsyncSession], config: Config, count: int, start: int = 1
) -> None:
    for n in range(start, start + count):
        async with sessions.begin() as session:
            await append(
                session,
                "notice",
                {"notice": n, "category": "spam"},
                {"notifier": f"@user{n}:x"},
                config=config,
            )


async def verify_db(sessions: async_sessionmaker[AsyncSession], config: Config) -> VerifyResult:
    async with sessions() as session:
        return await verify(session, configured_public_key(config))


async def test_append_chains_entries_and_signs_checkpoints(
    tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    config = make_config(tmp_path, every=3)

    await append_many(sessions, config, 7)

    async with sessions() as session:
        rows = (await session.scalars(select(AuditEntry).order_by(AuditEntry.seq))).all()
        checkpoints = (await session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.seq))).all()
        personal = (await session.scalars(select(AuditPersonal))).all()
    assert [r.seq for r in rows] == list(range(1, 8))
    assert rows[0].prev_hash == GENESIS_HASH and all(b.prev_hash == a.hash for a, b in pairwise(rows))
    assert json.loads(rows[0].body) == {"category": "spam", "notice": 1}
    assert all("@user" not in r.body for r in rows)  # personal data stays out of the chained entries
    assert len(personal) == 7 and json.loads(personal[0].data)["data"] == {"notifier": "@user1:x"}
    assert [(c.seq, c.size, c.head) for c in checkpoints] == [(3, 3, rows[2].hash), (6, 6, rows[5].hash)]
    assert stat.S_IMODE((tmp_path / "audit.key").stat().st_mode) == 0o600
    result = await verify_db(sessions, config)
    assert (result.ok, result.entries, result.checkpoints, result.head) == (True, 7, 2, rows[-1].hash)


async def test_erasing_personal_data_keeps_the_log_verifiable(
    tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    config = make_config(tmp_path, every=2)
    await append_many(sessions, config, 4)

    async with sessions.begin() as session:
        assert await erase_personal(session, 2) is True
    async with sessions.begin() as session:
        assert await erase_personal(session, 2) is False

    async with sessions() as session:
        assert await session.get(AuditPersonal, 2) is None
    assert (await verify_db(sessions, config)).ok


async def test_an_append_rolled_back_with_its_decision_leaves_no_gap(
    tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    config = make_config(tmp_path, every=100)
    await append_many(sessions, config, 2)

    with pytest.raises(RuntimeError):
        async with sessions.begin() as session:
            await append(session, "decision", {"decision": 1}, config=config)
            raise RuntimeError("the decision failed")
    await append_many(sessions, config, 1, start=3)

    async with sessions() as session:
        assert list(await session.scalars(select(AuditEntry.seq).order_by(AuditEntry.seq))) == [1, 2, 3]
    assert (await verify_db(sessions, config)).ok


async def test_concurrent_appends_in_sqlite_stay_one_chain(
    tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    config = make_config(tmp_path, every=5)

    async def writer(name: str) -> None:
        for n in range(6):
            async with sessions.begin() as session:
                await append(session, "notice", {"writer": name, "n": n}, config=config)
                await asyncio.sleep(0.005)  # hold the transaction open while the other writer waits

    await asyncio.gather(writer("a"), writer("b"))

    result = await verify_db(sessions, config)
    assert (result.ok, result.entries, result.checkpoints) == (True, 12, 2), result.problem


@pytest.mark.parametrize(
    ("statement", "bad_seq"),
    [
        ("UPDATE audit_log SET body = '{\"notice\": 99}' WHERE seq = 4", 4),
        ("UPDATE audit_log SET kind = 'decision' WHERE seq = 1", 1),
        ("DELETE FROM audit_log WHERE seq = 3", 3),
        ("UPDATE audit_personal SET data = '{}' WHERE seq = 5", 5),
        ("DELETE FROM audit_log WHERE seq >= 5", 5),  # cut off the end: checkpoint 6 says otherwise
        ("UPDATE audit_checkpoints SET head = (SELECT hash FROM audit_log WHERE seq = 5) WHERE seq = 3", 3),
    ],
)
async def test_tampering_in_the_database_is_pinpointed(
    tmp_path: Path, sessions: async_sessionmaker[AsyncSession], statement: str, bad_seq: int
) -> None:
    config = await tampered_log(tmp_path, sessions, statement)

    result = await verify_db(sessions, config)

    assert (result.ok, result.first_bad_seq) == (False, bad_seq), result.problem


async def test_swapping_two_rows_contents_is_pinpointed(
    tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    config = make_config(tmp_path, every=100)
    await append_many(sessions, config, 6)
    async with sessions.begin() as session:
        two, five = (await session.get(AuditEntry, 2)), (await session.get(AuditEntry, 5))
        assert two is not None and five is not None
        columns = ("at", "kind", "body", "personal_hash", "prev_hash")
        values = {c: (getattr(two, c), getattr(five, c)) for c in columns}
        for c, (a, b) in values.items():
            setattr(two, c, b)
            setattr(five, c, a)

    result = await verify_db(sessions, config)

    assert (result.ok, result.first_bad_seq) == (False, 2)


async def test_export_writes_a_verifiable_directory(
    tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    config = make_config(tmp_path, every=2)
    await append_many(sessions, config, 5)
    async with sessions.begin() as session:
        await erase_personal(session, 1)
    public = load_or_create_key(tmp_path / "audit.key").public_key()
    out = tmp_path / "export"

    async with sessions() as session:
        await export(session, out, public)

    assert sorted(p.name for p in out.iterdir()) == [
        "README.txt",
        "checkpoints.jsonl",
        "entries.jsonl",
        "public_key.pem",
    ]
    assert stat.S_IMODE((out / "entries.jsonl").stat().st_mode) == 0o600
    lines = [json.loads(line) for line in (out / "entries.jsonl").read_text().splitlines()]
    assert lines[0]["personal"] is None and "@user2:x" in lines[1]["personal"]
    assert key_id(public) in (out / "README.txt").read_text()
    exported = load_export(out)
    assert exported.public_key is not None and key_id(exported.public_key) == key_id(public)
    result = verify_entries(exported.entries, exported.checkpoints, exported.public_key, exported.personal)
    assert (result.ok, result.entries, result.checkpoints) == (True, 5, 2)

    async with sessions() as session:
        with pytest.raises(AuditError, match="not an empty directory"):
            await export(session, out, public)


def test_a_malformed_export_names_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "entries.jsonl").write_text('{"seq": 1}\n')
    (tmp_path / "checkpoints.jsonl").write_text("")

    with pytest.raises(AuditError, match=r"entries.jsonl:1: 'at' is missing"):
        load_export(tmp_path)
    with pytest.raises(AuditError, match="not a directory"):
        load_export(tmp_path / "nowhere")


# -- values Kanal cannot have written (SQLite) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("statement", "bad_seq", "problem"),
    [
        # The reported case: verify died in SQLAlchemy's row loading (ValueError: Invalid isoformat string).
        (
            "UPDATE audit_log SET at = 'yesterday, about noon' WHERE seq = 5",
            5,
            "entry 5 was altered: its at is not a time",
        ),
        ("UPDATE audit_log SET at = 20260102 WHERE seq = 2", 2, "entry 2 was altered: its at is not a time"),
        # A time that cannot be taken to UTC (it would be in the year 10000).
        (
            "UPDATE audit_log SET at = '9999-12-31 23:59:59.999999-01:00' WHERE seq = 1",
            1,
            "entry 1 was altered: its at is not a time",
        ),
        ("UPDATE audit_log SET kind = x'00ff' WHERE seq = 3", 3, "entry 3 was altered: its kind is not text"),
        (
            "UPDATE audit_log SET body = CAST(x'7bff7d' AS TEXT) WHERE seq = 4",  # text that is not UTF-8
            4,
            "entry 4 was altered: its body is not text",
        ),
        (
            "UPDATE audit_personal SET data = CAST(x'ff' AS TEXT) WHERE seq = 6",
            6,
            "entry 6's personal data was altered: it is not text",
        ),
        (
            "UPDATE audit_checkpoints SET at = 'garbage' WHERE seq = 6",
            6,
            "checkpoint at entry 6 was altered: its at is not a time",
        ),
        (
            "UPDATE audit_checkpoints SET size = 1e300 WHERE seq = 3",
            3,
            "checkpoint at entry 3 was altered: its size is not an integer",
        ),
        # A checkpoint whose own seq is unreadable vouched for the entries after the one before it.
        (
            "UPDATE audit_checkpoints SET seq = 'six' WHERE seq = 6",
            4,
            "the checkpoint after entry 3 (audit_checkpoints id 2) was altered: its seq is not an integer",
        ),
    ],
)
async def test_a_value_kanal_cannot_have_written_is_an_altered_entry(
    tmp_path: Path, sessions: async_sessionmaker[AsyncSession], statement: str, bad_seq: int, problem: str
) -> None:
    config = await tampered_log(tmp_path, sessions, statement)

    result = await verify_db(sessions, config)

    assert (result.ok, result.entries, result.checkpoints) == (False, 7, 2)
    assert (result.first_bad_seq, result.problem) == (bad_seq, problem)


async def test_an_export_leaves_out_what_cannot_be_read_and_says_so(
    tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    config = await tampered_log(
        tmp_path,
        sessions,
        "UPDATE audit_log SET at = 'garbage' WHERE seq = 5",
        "UPDATE audit_checkpoints SET at = 'garbage' WHERE seq = 6",
    )
    out = tmp_path / "export"

    async with sessions() as session:
        await export(session, out, configured_public_key(config))

    readme = (out / "README.txt").read_text()
    assert "At export the log was NOT intact: entry 5 was altered: its at is not a time\n" in readme
    assert "Left out, as they hold values Kanal cannot have written: 1 entries, 1 checkpoints.\n" in readme
    exported = await asyncio.to_thread(load_export, out)  # off the loop, as Kanal reads exports
    assert [e.seq for e in exported.entries] == [1, 2, 3, 4, 6, 7]
    assert [c.seq for c in exported.checkpoints] == [3]
    result = verify_entries(exported.entries, exported.checkpoints, exported.public_key, exported.personal)
    assert (result.ok, result.first_bad_seq) == (False, 5)


async def test_the_command_names_an_entry_whose_time_is_garbage(
    tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """`kanal audit verify` as an operator runs it: exit 1 and the entry named, as for a changed body."""
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config_data(tmp_path, every=3)))
    await tampered_log(tmp_path, sessions, "UPDATE audit_log SET at = 'garbage' WHERE seq = 5")

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge.cli",
        "audit",
        "verify",
        "-c",
        str(config_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)

    assert (process.returncode, out.decode()) == (1, "")
    assert err.decode() == (
        "Audit log NOT intact at entry 5: entry 5 was altered: its at is not a time "
        "(7 entries, 2 checkpoints read)\n"
    )


FUZZ_ENTRIES = 6  # entries 1 to 6, personal data on the odd ones, checkpoints at 2, 4 and 6
FUZZ_TABLES = {  # table: (its key, its columns)
    "audit_log": ("seq", ("seq", "at", "kind", "body", "personal_hash", "prev_hash", "hash")),
    "audit_personal": ("seq", ("seq", "data")),
    "audit_checkpoints": ("id", ("id", "seq", "size", "head", "key_id", "signature", "at")),
}
FUZZ_COLUMNS = [(table, column) for table, (_, columns) in FUZZ_TABLES.items() for column in columns]


@dataclasses.dataclass(frozen=True)
class Stored:
    """A value to store with raw SQL: `sql` is its expression, `params` what it binds."""

    sql: str
    params: dict[str, Any]


def bound(value: object) -> Stored:
    return Stored(":value", {"value": value})


def as_text(data: bytes) -> Stored:
    """Bytes stored as TEXT, which SQLite takes as they are: UTF-8 or not."""
    return Stored("CAST(:value AS TEXT)", {"value": data})


TOO_LARGE = 2**63  # for SQLite's 64-bit integers: it stores a REAL instead
stored_values = st.one_of(
    st.text(max_size=30).map(bound),  # garbage, the empty string
    st.integers(1, 5).map(lambda digits: bound("9" * 10**digits)),  # up to 100 000 characters
    st.integers(-TOO_LARGE, TOO_LARGE - 1).map(bound),
    st.integers(-2, FUZZ_ENTRIES + 2).map(bound),  # another entry's seq, or none's
    st.integers(-10, 10).map(lambda n: bound(str(n))),  # an integer column stores these as integers
    st.one_of(st.integers(min_value=TOO_LARGE), st.integers(max_value=-TOO_LARGE - 1)).map(
        lambda n: Stored(str(n), {})
    ),
    st.floats().map(bound),
    st.none().map(bound),
    st.binary(max_size=40).map(bound),  # a BLOB
    st.binary(min_size=1, max_size=8).map(as_text),
    st.sampled_from(['{"notice": 1', "null", "[]", '{"category":"spam","notice":1}', "{}"]).map(bound),
    st.datetimes(timezones=st.none() | st.timezones()).map(  # valid, but (almost always) another time
        lambda at: bound(at.isoformat(sep=" "))
    ),
)


def _instant(stored_hex: str) -> datetime | None:
    """A stored time's instant, read independently of Kanal (naive means UTC), or None if it is not one."""
    try:
        at = datetime.fromisoformat(bytes.fromhex(stored_hex).decode("utf-8"))
        return at.replace(tzinfo=at.tzinfo or UTC).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def expected_bad_seq(
    table: str, column: str, seq: int, before: tuple[str, str], after: tuple[str, str]
) -> int | None:
    """The entry verification must name after `column` of the row for entry `seq` changed from `before`
    to `after` (typeof, hex), or None when the change does not matter: the log is still intact."""
    (old_type, old_hex), (new_type, new_hex) = before, after
    if (old_type, old_hex) == (new_type, new_hex) or (table, column) == ("audit_checkpoints", "id"):
        return None  # the very same value, or the row id, which no signature covers
    if column == "at" and new_type == "text" and _instant(new_hex) == _instant(old_hex):
        return None  # the same time, spelt another way
    # SQLite's hex() spells an integer's text.
    new_integer = int(bytes.fromhex(new_hex).decode()) if new_type == "integer" else None
    if column == "seq" and table == "audit_log":
        # Moved (to a seq no entry has): a gap where it was, or out of place before entry 1.
        assert new_integer is not None  # seq is SQLite's rowid: anything else is refused
        return 1 if new_integer < 1 else seq
    if column == "seq" and table == "audit_personal":
        assert new_integer is not None
        return new_integer  # now on an entry that has no personal data; the one it left looks erased
    if column == "seq" and table == "audit_checkpoints":
        # Another integer: the signature, over the old one, fails there. No integer: the checkpoint
        # vouched for the entries after the previous checkpoint's (checkpoints every 2 entries).
        return new_integer if new_integer is not None else seq - 1
    return seq


@pytest.fixture
async def fuzz_log(tmp_path: Path, sessions: async_sessionmaker[AsyncSession]) -> Config:
    config = make_config(tmp_path, every=2)
    for n in range(1, FUZZ_ENTRIES + 1):
        async with sessions.begin() as session:
            personal = {"notifier": f"@user{n}:x"} if n % 2 else None
            await append(session, "notice", {"notice": n, "category": "spam"}, personal, config=config)
    assert (await verify_db(sessions, config)).ok
    return config


# The fixtures are made once for all examples: each example's change is rolled back.
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
async def test_verify_names_any_stored_value_that_matters_and_never_fails(
    fuzz_log: Config, sessions: async_sessionmaker[AsyncSession], data: st.DataObject
) -> None:
    table, column = data.draw(st.sampled_from(FUZZ_COLUMNS), label="column")
    key = FUZZ_TABLES[table][0]
    value = data.draw(stored_values, label="value")
    # Names from FUZZ_TABLES, values bound (or, too large to bind, an integer literal).
    keys = text(f"SELECT {key} FROM {table} ORDER BY {key}")  # noqa: S608
    read = text(f"SELECT seq, typeof({column}), hex({column}) FROM {table} WHERE {key} = :row")  # noqa: S608
    write = text(
        f"UPDATE {table} SET {column} = {value.sql} WHERE {key} = :row "  # noqa: S608
        f"RETURNING typeof({column}), hex({column})"
    )
    async with sessions() as session:
        row = data.draw(st.sampled_from(list(await session.scalars(keys))), label="row")
        seq, old_type, old_hex = (await session.execute(read, {"row": row})).one()
        try:
            new_type, new_hex = (await session.execute(write, {**value.params, "row": row})).one()
        except IntegrityError:  # NULL, a duplicate hash, a seq no entry has: the schema refuses them
            event(f"{table}.{column}: refused")
            return
        try:
            result = await verify(session, configured_public_key(fuzz_log))
        finally:
            await session.rollback()

    expected = expected_bad_seq(table, column, seq, (old_type, old_hex), (new_type, new_hex))
    event(f"{table}.{column}: {'intact' if expected is None else 'named'}")
    assert (result.ok, result.first_bad_seq) == (expected is None, expected), result.problem
    assert result.entries == FUZZ_ENTRIES
