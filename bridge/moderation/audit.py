"""The tamper-evident audit log: hash-chained entries, signed checkpoints, erasable personal data.

Every notice, decision, appeal and hook configuration change is appended here, in the transaction of
the change it records. Each entry's hash covers the previous entry's hash, so altering, removing or
reordering any entry breaks the chain from that entry on; every `compliance.checkpoint_every` entries
an Ed25519 signature over (seq, size, head) pins the chain, so rewriting it wholesale or cutting off
its end is caught as well::

    entry 1                     entry 2                        entry n (n % checkpoint_every == 0)
    prev_hash = 0…0  ──hash──▶  prev_hash = hash(1)  ──…──▶    hash(n) ──▶ checkpoint: sign(n, n, hash(n))
    personal_hash ─┐            personal_hash ─┐
                   ▼                           ▼
    audit_personal (erasable)   audit_personal (erasable)

Exact hash inputs (``ns(x)`` is the netstring of x's UTF-8 bytes: ``b"<byte length>:" + bytes + b","``,
so no two lists of fields encode alike; hashes are lowercase hex SHA-256):

    entry hash      sha256(ns("kanal-audit/1") ns(prev_hash) ns(seq) ns(at) ns(kind) ns(body) ns(personal_hash))
    checkpoint      Ed25519 over ns("kanal-audit-checkpoint/1") ns(seq) ns(size) ns(head) ns(key_id) ns(at)
    personal_hash   sha256(the audit_personal row's text), or "" for an entry without personal data

`seq` and `size` are decimal, `at` is UTC as ``2025-01-31T12:00:00.000000Z``, `body` is the stored
canonical JSON text (``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``).
The personal row is the canonical JSON of ``{"data": <personal data>, "nonce": <32 random hex>}``:
the nonce keeps the chained hash from confirming a guessed user id once the row has been erased.

Entries after the newest checkpoint are protected by the chain alone: removing them from the end
cannot be detected until a checkpoint (or an export kept elsewhere) covers them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)
from sqlalchemy import FromClause, Label, RowMapping, select, text, type_coerce
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import NullType

from appservice.registration import write_secret_file
from bridge.runtime.config import Config
from bridge.store.db import undecodable_text_as_bytes
from bridge.store.keyfiles import create_once
from bridge.store.models import AuditCheckpoint, AuditEntry, AuditPersonal
from bridge.text.canonical import canonical_json

GENESIS_HASH = "0" * 64
ENTRY_TAG = "kanal-audit/1"
CHECKPOINT_TAG = "kanal-audit-checkpoint/1"
EXPORT_FORMAT = "kanal-audit-export/1"
MAX_KIND_LENGTH = 32  # audit_log.kind is VARCHAR(32)
# The pg_advisory_xact_lock key that serialises appends across processes: b"kanalaud" as an int64.
APPEND_LOCK_KEY = int.from_bytes(b"kanalaud", "big")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

ENTRIES_FILE = "entries.jsonl"
CHECKPOINTS_FILE = "checkpoints.jsonl"
PUBLIC_KEY_FILE = "public_key.pem"
README_FILE = "README.txt"


class AuditError(Exception):
    """The audit key or an export cannot be used; the message names the file and says why."""


def format_time(at: datetime) -> str:
    """`at` in UTC with microseconds; a naive time is taken as UTC (SQLite keeps no zone)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime(TIME_FORMAT)


def parse_time(value: str) -> datetime:
    return datetime.strptime(value, TIME_FORMAT).replace(tzinfo=UTC)


def _netstrings(*fields: str) -> bytes:
    parts = []
    for value in fields:
        data = value.encode("utf-8")
        parts.append(b"%d:%s," % (len(data), data))
    return b"".join(parts)


def entry_hash(prev_hash: str, seq: int, at: datetime, kind: str, body: str, personal_hash: str) -> str:
    """The hash an entry must carry, from its fields (see the module docstring)."""
    data = _netstrings(ENTRY_TAG, prev_hash, str(seq), format_time(at), kind, body, personal_hash)
    return hashlib.sha256(data).hexdigest()


def personal_data_hash(data: str) -> str:
    """The chained hash of an audit_personal row's text."""
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short name for a public key: the first 16 hex digits of SHA-256 over its raw 32 bytes."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode("ascii")


@dataclass(frozen=True)
class EntryData:
    """One audit_log row, as stored."""

    seq: int
    at: datetime
    kind: str
    body: str
    personal_hash: str
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class CheckpointData:
    """One audit_checkpoints row, as stored; `signature` is base64."""

    seq: int
    size: int
    head: str
    key_id: str
    signature: str
    at: datetime

    def message(self) -> bytes:
        """The bytes the signature covers."""
        return _netstrings(
            CHECKPOINT_TAG, str(self.seq), str(self.size), self.head, self.key_id, format_time(self.at)
        )


def sign_checkpoint(private_key: Ed25519PrivateKey, seq: int, head: str, at: datetime) -> CheckpointData:
    """A checkpoint stating that the log's first `seq` entries end in `head`."""
    unsigned = CheckpointData(seq, seq, head, key_id(private_key.public_key()), "", at)
    signature = base64.b64encode(private_key.sign(unsigned.message())).decode("ascii")
    return CheckpointData(seq, seq, head, unsigned.key_id, signature, at)


@dataclass(frozen=True)
class Unreadable:
    """A stored row holding a value Kanal cannot have written there (a time that is not one, a number
    that is not an integer, bytes where text belongs): it was altered, and verification stops at `seq`,
    the entry the row is, belongs to, or (a checkpoint) covers."""

    seq: int
    problem: str


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    checkpoints: int
    first_bad_seq: int | None
    problem: str | None
    head: str = GENESIS_HASH  # the hash of the last entry proven intact


# -- keys ---------------------------------------------------------------------------------------------


def _load_private_key(path: Path) -> Ed25519PrivateKey:
    info = path.stat()  # FileNotFoundError: the caller decides whether to create the key
    if not stat.S_ISREG(info.st_mode):
        raise AuditError(f"{path}: the audit key must be a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise AuditError(
            f"{path}: the audit signing key is accessible to other users (mode {mode:04o}); "
            f"run `chmod 600 {path}` (and consider it compromised if others could read it)"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AuditError(f"{path}: cannot read the audit key: {exc.strerror}") from None
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise AuditError(f"{path}: not an unencrypted PEM (PKCS8) private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditError(f"{path}: the audit key must be an Ed25519 key, not {type(key).__name__}")
    return key


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The audit signing key at `path`; made (PKCS8 PEM, mode 0600) when the file does not exist yet."""
    try:
        return _load_private_key(path)
    except FileNotFoundError:
        pass
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    try:
        written = create_once(path, pem)
    except OSError as exc:
        raise AuditError(f"{path}: cannot create the audit key: {exc.strerror}") from None
    if written != pem:  # another process made it first: its key wins
        return _load_private_key(path)
    return key


def configured_public_key(config: Config) -> Ed25519PublicKey | None:
    """The public half of the configured audit key, or None while no checkpoint has created it."""
    path = _key_path(config)
    try:
        return _load_private_key(path).public_key()
    except FileNotFoundError:
        return None


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file (SubjectPublicKeyInfo, as `export` writes it)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AuditError(f"{path}: cannot read the public key: {exc.strerror}") from None
    try:
        key = load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise AuditError(f"{path}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise AuditError(f"{path}: not an Ed25519 public key ({type(key).__name__})")
    return key


def _key_path(config: Config) -> Path:
    if config.compliance.audit_key is None:
        raise AuditError(f"{config.path}: 'compliance.audit_key' is not set")
    return config.compliance.audit_key


# -- appending ----------------------------------------------------------------------------------------


async def _lock_log(session: AsyncSession) -> None:
    """Hold the log's write lock until the caller's transaction ends, so the head read next is final."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": APPEND_LOCK_KEY})
    elif dialect == "sqlite":
        # pysqlite begins a transaction only at the first write; a write that changes nothing takes
        # the database's single write lock before the head is read.
        await session.execute(text("UPDATE audit_log SET seq = seq WHERE seq < 0"))


async def append(
    session: AsyncSession,
    kind: str,
    body: dict[str, Any],
    personal: dict[str, Any] | None = None,
    *,
    config: Config,
) -> AuditEntry:
    """Append an entry in the caller's transaction (and a signed checkpoint when one falls due).

    `body` must hold no personal data; `personal` (user ids, free text, a notifier's identity) is
    stored apart and only its hash is chained, so `erase_personal` can remove it later.
    """
    if not kind or len(kind) > MAX_KIND_LENGTH:
        raise ValueError(f"audit entry kind must be 1 to {MAX_KIND_LENGTH} characters, got {kind!r}")
    body_text = canonical_json(body)
    personal_text = canonical_json({"data": personal, "nonce": secrets.token_hex(16)}) if personal else None
    personal_hash = personal_data_hash(personal_text) if personal_text is not None else ""

    await _lock_log(session)
    head = (
        await session.execute(
            select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)
        )
    ).first()
    # seq is set here, not by the database's sequence: a rolled-back append must leave no gap.
    seq, prev_hash = (head.seq + 1, head.hash) if head is not None else (1, GENESIS_HASH)
    at = datetime.now(UTC)
    entry = AuditEntry(
        seq=seq,
        at=at,
        kind=kind,
        body=body_text,
        personal_hash=personal_hash,
        prev_hash=prev_hash,
        hash=entry_hash(prev_hash, seq, at, kind, body_text, personal_hash),
    )
    session.add(entry)
    await session.flush()
    if personal_text is not None:
        session.add(AuditPersonal(seq=seq, data=personal_text))
    if seq % config.compliance.checkpoint_every == 0:
        key = await asyncio.to_thread(load_or_create_key, _key_path(config))
        checkpoint = sign_checkpoint(key, seq, entry.hash, at)
        session.add(
            AuditCheckpoint(
                seq=checkpoint.seq,
                size=checkpoint.size,
                head=checkpoint.head,
                key_id=checkpoint.key_id,
                signature=checkpoint.signature,
                at=checkpoint.at,
            )
        )
    await session.flush()
    return entry


async def erase_personal(session: AsyncSession, seq: int) -> bool:
    """Delete the personal data of entry `seq` (erasure); False when it has none (left)."""
    row = await session.get(AuditPersonal, seq)
    if row is None:
        return False
    await session.delete(row)
    await session.flush()
    return True


# -- reading the log ----------------------------------------------------------------------------------
#
# The log's rows are read as the database driver returns them and checked here, value by value: a value
# Kanal cannot have written (a time overwritten with text, bytes where text belongs, a fraction where an
# integer belongs) makes its row `Unreadable`, which verification names as altered, where SQLAlchemy's
# own conversion would fail the whole read before any entry was named.

_Reader = Callable[[object], Any]
_ENTRY_TEXT = ("kind", "body", "personal_hash", "prev_hash", "hash")
_CHECKPOINT_TEXT = ("head", "key_id", "signature")


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _integer(value: object) -> int:
    number = _int_or_none(value)
    if number is None:
        raise ValueError("an integer")
    return number


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    raise ValueError("text")


def _time_reader(session: AsyncSession) -> _Reader:
    """A stored time as the ORM converts it on this database (SQLite keeps ISO text, PostgreSQL's driver
    gives a datetime), and only a time `format_time` can spell (in UTC, within datetime's years)."""
    dialect = session.get_bind().dialect
    convert = AuditEntry.__table__.c.at.type.dialect_impl(dialect).result_processor(dialect, None)

    def read(value: object) -> datetime:
        try:
            at = convert(value) if convert is not None else value
            if isinstance(at, datetime):
                format_time(at)
                return at
        except (ValueError, TypeError, OverflowError):
            pass
        raise ValueError("a time")

    return read


def _values(row: RowMapping, readers: Mapping[str, _Reader]) -> dict[str, Any]:
    """`row`'s values through their columns' readers; ValueError("its <column> is not <what>") at the
    first that fails."""
    values = {}
    for column, read in readers.items():
        try:
            values[column] = read(row[column])
        except ValueError as exc:
            raise ValueError(f"its {column} is not {exc}") from None
    return values


def _as_stored(table: FromClause) -> list[Label[Any]]:
    """All of `table`'s columns, selected as the driver returns them: no SQLAlchemy result processing."""
    return [type_coerce(column, NullType()).label(column.key) for column in table.columns]


def _entries(rows: Sequence[RowMapping], read_time: _Reader) -> list[EntryData | Unreadable]:
    readers = {"seq": _integer, "at": read_time} | dict.fromkeys(_ENTRY_TEXT, _text)
    entries: list[EntryData | Unreadable] = []
    for row in rows:
        try:
            entries.append(EntryData(**_values(row, readers)))
        except ValueError as exc:
            seq = _int_or_none(row["seq"])
            if seq is None:  # where the row was read: after the entry before it
                seq = entries[-1].seq + 1 if entries else 1
            entries.append(Unreadable(seq, f"entry {seq} was altered: {exc}"))
    return entries


def _checkpoints(rows: Sequence[RowMapping], read_time: _Reader) -> list[CheckpointData | Unreadable]:
    """`rows` in the order they were written (by id), returned by seq (then id).

    A checkpoint whose seq cannot be read vouched for the entries after the checkpoint written before
    it: it is reported at the first of them."""
    readers = {"seq": _integer, "size": _integer, "at": read_time} | dict.fromkeys(_CHECKPOINT_TEXT, _text)
    checkpoints: list[CheckpointData | Unreadable] = []
    previous = 0
    for row in rows:
        try:
            checkpoints.append(CheckpointData(**_values(row, readers)))
        except ValueError as exc:
            seq = _int_or_none(row["seq"])
            if seq is None:
                where = f"the checkpoint after entry {previous} (audit_checkpoints id {row['id']})"
                checkpoints.append(Unreadable(previous + 1, f"{where} was altered: {exc}"))
                continue
            checkpoints.append(Unreadable(seq, f"checkpoint at entry {seq} was altered: {exc}"))
        previous = checkpoints[-1].seq
    return sorted(checkpoints, key=lambda c: c.seq)


def _personal(rows: Sequence[RowMapping], seqs: set[int]) -> dict[int, str | Unreadable]:
    """The personal data of the entries `seqs`; a row of no such entry is passed over (what happened to
    its entry is verification's to report)."""
    personal: dict[int, str | Unreadable] = {}
    for row in rows:
        seq, data = _int_or_none(row["seq"]), row["data"]
        if seq is None or seq not in seqs:
            continue
        if isinstance(data, str):
            personal[seq] = data
        else:
            personal[seq] = Unreadable(seq, f"entry {seq}'s personal data was altered: it is not text")
    return personal


async def _read_log(
    session: AsyncSession,
) -> tuple[list[EntryData | Unreadable], list[CheckpointData | Unreadable], dict[int, str | Unreadable]]:
    read_time = _time_reader(session)
    async with undecodable_text_as_bytes(session):
        # Checkpoints first: the log only grows, so every checkpoint read is covered by the entries
        # read after it, even while Kanal keeps appending.
        checkpoint_rows = await session.execute(
            select(*_as_stored(AuditCheckpoint.__table__)).order_by(AuditCheckpoint.id)
        )
        checkpoints = _checkpoints(checkpoint_rows.mappings().all(), read_time)
        entry_rows = await session.execute(select(*_as_stored(AuditEntry.__table__)).order_by(AuditEntry.seq))
        entries = _entries(entry_rows.mappings().all(), read_time)
        personal_rows = await session.execute(select(*_as_stored(AuditPersonal.__table__)))
        personal = _personal(personal_rows.mappings().all(), {entry.seq for entry in entries})
    return entries, checkpoints, personal


# -- verifying ----------------------------------------------------------------------------------------


def _entry_problem(
    entry: EntryData | Unreadable, position: int, prev_hash: str, personal: Mapping[int, str | Unreadable]
) -> str | None:
    if entry.seq != position:
        return f"entry {position} is missing or out of place (entry {entry.seq} is where it belongs)"
    if isinstance(entry, Unreadable):
        return entry.problem
    expected = entry_hash(entry.prev_hash, entry.seq, entry.at, entry.kind, entry.body, entry.personal_hash)
    if entry.hash != expected:
        return f"entry {position} was altered: its hash does not match its contents"
    if entry.prev_hash != prev_hash:
        if position == 1:
            return "entry 1 does not start the log: its prev_hash is not the genesis hash (64 zeros)"
        return (
            f"entry {position} does not follow entry {position - 1}: its prev_hash is not that entry's "
            "hash (one of the two was rewritten)"
        )
    data = personal.get(entry.seq)
    if isinstance(data, Unreadable):
        return data.problem
    if data is not None:
        if not entry.personal_hash:
            return f"entry {position} has personal data, but the chained entry says it has none"
        if personal_data_hash(data) != entry.personal_hash:
            return f"entry {position}'s personal data was altered: it does not match the chained hash"
    return None


def _checkpoint_problem(
    checkpoint: CheckpointData | Unreadable,
    hashes: Mapping[int, str],
    previous_seq: int,
    public_key: Ed25519PublicKey | None,
) -> tuple[int, str] | None:
    if isinstance(checkpoint, Unreadable):
        return checkpoint.seq, checkpoint.problem
    where = f"checkpoint at entry {checkpoint.seq}"
    if public_key is None:
        return checkpoint.seq, f"{where} cannot be checked: no public key"
    expected_key = key_id(public_key)
    if checkpoint.key_id != expected_key:
        return checkpoint.seq, f"{where} names key {checkpoint.key_id}, not this key ({expected_key})"
    try:
        public_key.verify(base64.b64decode(checkpoint.signature, validate=True), checkpoint.message())
    except (InvalidSignature, ValueError):
        return checkpoint.seq, f"{where} has a bad signature"
    if checkpoint.size != checkpoint.seq:
        return checkpoint.seq, f"{where} states {checkpoint.size} entries, not {checkpoint.seq}"
    last = len(hashes)
    if checkpoint.seq > last:
        return last + 1, f"entries {last + 1} to {checkpoint.seq} were removed (a checkpoint signed them)"
    if hashes[checkpoint.seq] != checkpoint.head:
        return previous_seq + 1, (
            f"entries {previous_seq + 1} to {checkpoint.seq} were rewritten: the chain head at entry "
            f"{checkpoint.seq} differs from the signed checkpoint"
        )
    return None


def verify_entries(
    entries: Sequence[EntryData | Unreadable],
    checkpoints: Sequence[CheckpointData | Unreadable],
    public_key: Ed25519PublicKey | None,
    personal: Mapping[int, str | Unreadable],
) -> VerifyResult:
    """Check the chain entry by entry, then every checkpoint; report the first entry not proven intact.

    `entries` in their stored order (by seq); `personal` maps seq to the audit_personal text, and an
    entry without a row there has had its personal data erased, which is fine. An `Unreadable` row is
    reported where it stands, as an altered one.
    """
    problems: list[tuple[int, str]] = []
    hashes: dict[int, str] = {}
    prev_hash = GENESIS_HASH
    for position, entry in enumerate(entries, start=1):
        problem = _entry_problem(entry, position, prev_hash, personal)
        if problem is not None:
            problems.append((position, problem))
            break
        assert isinstance(entry, EntryData)  # an Unreadable one always has a problem
        hashes[entry.seq] = entry.hash
        prev_hash = entry.hash
    previous_seq = 0
    for checkpoint in sorted(checkpoints, key=lambda c: c.seq):
        if problems and checkpoint.seq >= problems[0][0]:
            break  # the chain is already broken there; the entry's own problem is the precise one
        found = _checkpoint_problem(checkpoint, hashes, previous_seq, public_key)
        if found is not None:
            problems.append(found)
            break
        previous_seq = checkpoint.seq
    if problems:
        first_bad_seq, problem = min(problems, key=lambda p: p[0])
        return VerifyResult(False, len(entries), len(checkpoints), first_bad_seq, problem, prev_hash)
    return VerifyResult(True, len(entries), len(checkpoints), None, None, prev_hash)


async def verify(session: AsyncSession, public_key: Ed25519PublicKey | None) -> VerifyResult:
    """Verify the log in the database (checkpoints against `public_key`)."""
    entries, checkpoints, personal = await _read_log(session)
    return verify_entries(entries, checkpoints, public_key, personal)


# -- exporting ----------------------------------------------------------------------------------------

_README = """\
Kanal audit log export ({format})

Files
  entries.jsonl      one entry per line: seq, at, kind, body, personal_hash, prev_hash, hash, and
                     personal (the audit_personal text, or null once erased). Holds personal data:
                     keep this file private.
  checkpoints.jsonl  one signed checkpoint per line: seq, size, head, key_id, signature (base64), at
  public_key.pem     the Ed25519 public key the checkpoints are signed with (key id {key_id})

At export: {entries} entries, {checkpoints} checkpoints, chain head {head}.

Verify it, without a database:

  kanal audit verify --export DIR                        # checks against public_key.pem
  kanal audit verify --export DIR --public-key FILE.pem  # checks against a key you trust

Whoever could rewrite this export could also replace public_key.pem: compare its key id with one
published by the operator, or pass the trusted key with --public-key.

How to verify it by hand. ns(x) is the netstring of x's UTF-8 bytes: "<byte length>:" + bytes + ",".
  1. Entry n (n = 1, 2, …, in order, no gaps) has seq n and prev_hash equal to entry n-1's hash
     (entry 1: 64 zeros), and
       hash = hex(sha256(ns("{entry_tag}") ns(prev_hash) ns(seq) ns(at) ns(kind) ns(body) ns(personal_hash)))
     with seq in decimal and every other field exactly as written in entries.jsonl.
  2. Where personal is not null: hex(sha256(personal)) == personal_hash. A null personal is erased data.
  3. Every checkpoint: key_id is the first 16 hex digits of sha256(the raw 32-byte public key),
     signature is a valid Ed25519 signature over
       ns("{checkpoint_tag}") ns(seq) ns(size) ns(head) ns(key_id) ns(at)
     size == seq, and entry seq exists and has hash == head.
Entries after the last checkpoint are protected by the chain alone: cutting them off the end would
not show, until a later checkpoint or another copy of the log covers them.
"""


def _entry_line(entry: EntryData, personal: str | None) -> str:
    return canonical_json(
        {
            "seq": entry.seq,
            "at": format_time(entry.at),
            "kind": entry.kind,
            "body": entry.body,
            "personal_hash": entry.personal_hash,
            "prev_hash": entry.prev_hash,
            "hash": entry.hash,
            "personal": personal,
        }
    )


def _checkpoint_line(checkpoint: CheckpointData) -> str:
    return canonical_json(
        {
            "seq": checkpoint.seq,
            "size": checkpoint.size,
            "head": checkpoint.head,
            "key_id": checkpoint.key_id,
            "signature": checkpoint.signature,
            "at": format_time(checkpoint.at),
        }
    )


def _write_export(out: Path, files: dict[str, str], secret: set[str]) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AuditError(f"{out}: already exists and is not an empty directory")
    try:
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name, content in files.items():
            if name in secret:
                write_secret_file(out / name, content)
            else:
                (out / name).write_text(content, encoding="utf-8")
    except OSError as exc:
        raise AuditError(f"{out}: cannot write the export: {exc.strerror}") from None


async def export(session: AsyncSession, out: Path, public_key: Ed25519PublicKey | None) -> None:
    """Write the log to the new directory `out`: entries.jsonl, checkpoints.jsonl, public_key.pem, README.txt."""
    entries, checkpoints, personal = await _read_log(session)
    result = verify_entries(entries, checkpoints, public_key, personal)
    # The format has no room for a value Kanal cannot have written: such an entry (or its personal
    # data) or checkpoint is left out, and the README says so.
    texts = {seq: data for seq, data in personal.items() if isinstance(data, str)}
    kept = [
        e for e in entries if isinstance(e, EntryData) and not isinstance(personal.get(e.seq), Unreadable)
    ]
    signed = [c for c in checkpoints if isinstance(c, CheckpointData)]
    left_out = (
        f"Left out, as they hold values Kanal cannot have written: {len(entries) - len(kept)} entries, "
        f"{len(checkpoints) - len(signed)} checkpoints.\n"
        if len(kept) < len(entries) or len(signed) < len(checkpoints)
        else ""
    )
    files = {
        ENTRIES_FILE: "".join(_entry_line(e, texts.get(e.seq)) + "\n" for e in kept),
        CHECKPOINTS_FILE: "".join(_checkpoint_line(c) + "\n" for c in signed),
        README_FILE: _README.format(
            format=EXPORT_FORMAT,
            key_id=key_id(public_key) if public_key is not None else "none: no key yet",
            entries=len(kept),
            checkpoints=len(signed),
            head=kept[-1].hash if kept else GENESIS_HASH,
            entry_tag=ENTRY_TAG,
            checkpoint_tag=CHECKPOINT_TAG,
        )
        + ("" if result.ok else f"\nAt export the log was NOT intact: {result.problem}\n{left_out}"),
    }
    if public_key is not None:
        files[PUBLIC_KEY_FILE] = public_key_pem(public_key)
    await asyncio.to_thread(_write_export, out, files, {ENTRIES_FILE})


@dataclass(frozen=True)
class Export:
    """An export read back from its directory."""

    entries: list[EntryData]
    checkpoints: list[CheckpointData]
    personal: dict[int, str]
    public_key: Ed25519PublicKey | None  # None when the export has no public_key.pem


def _jsonl(path: Path, fields: dict[str, type | tuple[type, ...]]) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise AuditError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise AuditError(f"{path}: not UTF-8 text") from None
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AuditError(f"{path}:{number}: not JSON: {exc.msg}") from None
        if not isinstance(record, dict):
            raise AuditError(f"{path}:{number}: expected a JSON object")
        for name, expected in fields.items():
            value = record.get(name)
            if not isinstance(value, expected) or isinstance(value, bool):
                raise AuditError(f"{path}:{number}: '{name}' is missing or of the wrong type")
        try:
            record["at"] = parse_time(record["at"])
        except ValueError:
            raise AuditError(
                f"{path}:{number}: 'at' is not a time like 2025-01-31T12:00:00.000000Z"
            ) from None
        records.append(record)
    return records


def load_export(directory: Path) -> Export:
    """Read an export written by `export`, for `verify_entries`; AuditError when a file is malformed."""
    if not directory.is_dir():
        raise AuditError(f"{directory}: not a directory")
    entry_fields: dict[str, type | tuple[type, ...]] = {
        "seq": int,
        "at": str,
        "kind": str,
        "body": str,
        "personal_hash": str,
        "prev_hash": str,
        "hash": str,
        "personal": (str, type(None)),
    }
    checkpoint_fields: dict[str, type | tuple[type, ...]] = {
        "seq": int,
        "size": int,
        "head": str,
        "key_id": str,
        "signature": str,
        "at": str,
    }
    entries, personal = [], {}
    for record in _jsonl(directory / ENTRIES_FILE, entry_fields):
        entries.append(EntryData(**{k: record[k] for k in entry_fields if k != "personal"}))
        if record["personal"] is not None:
            personal[record["seq"]] = record["personal"]
    checkpoints = [CheckpointData(**r) for r in _jsonl(directory / CHECKPOINTS_FILE, checkpoint_fields)]
    key_path = directory / PUBLIC_KEY_FILE
    public_key = load_public_key(key_path) if key_path.exists() else None
    return Export(entries, checkpoints, personal, public_key)
