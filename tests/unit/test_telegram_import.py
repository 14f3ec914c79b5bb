"""`kanal import telegram` on a migrated SQLite database with a homeserver that cannot be reached:
what a run commits read back from the database, and what its command
line says when an export is malformed. Nothing is sent; the real homeserver's side is in
tests/integration/test_telegram_import.py."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from bridge.runtime.context import Context
from bridge.store.models import Channel, Post, Room
from bridge.text.telegram import MAX_MESSAGE_CHARS
from bridge.transfer.telegram_import import Importer, Summary
from tests.unit.conftest import DOMAIN

CHAT_ID = 4242
OWNER = f"@alice:{DOMAIN}"
HANDLE = "tgunit"
BROADCAST = f"!{HANDLE}-broadcast:{DOMAIN}"


async def seed_channel(ctx: Context) -> int:
    async with ctx.sessions.begin() as session:
        channel = Channel(
            handle=HANDLE,
            title="Unit",
            owner=OWNER,
            ghost_user_id=f"@kanal_{HANDLE}:{DOMAIN}",
            broadcast_room_id=BROADCAST,
            backstage_room_id=f"!{HANDLE}-backstage:{DOMAIN}",
            status="active",
        )
        session.add(channel)
        await session.flush()
        session.add(Room(room_id=channel.backstage_room_id, kind="backstage", channel_id=channel.id))
        session.add(Room(room_id=BROADCAST, kind="broadcast", channel_id=channel.id))
        return channel.id


def text(message_id: int, body: str = "", **extra: Any) -> dict[str, Any]:
    return {"id": message_id, "type": "message", "date_unixtime": str(1_600_000_000 + message_id),
            "text": body or f"post {message_id}", **extra}


def write_export(folder: Path, messages: list[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    result = {"name": "Unit", "type": "public_channel", "id": CHAT_ID, "messages": messages}
    (folder / "result.json").write_text(json.dumps(result), encoding="utf-8")
    return folder


async def run_import(ctx: Context, folder: Path, *, dry_run: bool = False) -> Summary:
    importer = Importer(ctx, folder, HANDLE, dry_run=dry_run, max_media=1 << 20, patience=0.2, rate=1000)
    return await importer.run()


async def imported_ids(ctx: Context) -> list[int]:
    async with ctx.sessions() as session:
        sources = (await session.scalars(select(Post.source_event_id).order_by(Post.id))).all()
    return [int(source.rsplit(":", 1)[1]) for source in sources]


async def test_the_dry_run_and_the_summary_name_what_telegram_could_not_export(
    ctx: Context, tmp_path: Path
) -> None:
    await seed_channel(ctx)
    messages = [text(1), {"id": 2, "type": "unsupported"}, text(3)]
    folder = await asyncio.to_thread(write_export, tmp_path / "export", messages)
    skipped = "message 2: skipped: Telegram could not export it"
    dry = await run_import(ctx, folder, dry_run=True)
    assert dry.posts == 2 and skipped in "\n".join(dry.lines())
    done = await run_import(ctx, folder)
    assert done.posts == 2 and skipped in "\n".join(done.lines())
    assert await imported_ids(ctx) == [1, 3]


# -- the command line --------------------------------------------------------------------------------


def _kanal_import(tmp_path: Path, export: Path) -> subprocess.CompletedProcess[str]:
    config = {
        "homeserver": {"url": "http://127.0.0.1:9", "domain": DOMAIN},
        "appservice": {"as_token": "as-secret-0123456789", "hs_token": "hs-secret-0123456789"},
        "database": {"url": f"sqlite:///{tmp_path / 'kanal.db'}"},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    command = [sys.executable, "-m", "bridge.cli", "import", "telegram", str(export), "--channel", HANDLE,
               "-c", str(tmp_path / "config.yaml"), "--dry-run"]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def _big_export(count: int) -> str:
    messages = [text(i, "x" * 100) for i in range(1, count + 1)]
    return json.dumps({"name": "Unit", "type": "public_channel", "id": CHAT_ID, "messages": messages})


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        # Bytes that are not UTF-8 (the file saved again as Latin-1).
        (lambda export: export.replace('"x', '"caf\u00e9', 1).encode("latin-1"), "result.json is not UTF-8 text"),
        # A broken message with more than the reader holds for one message after it.
        (
            lambda export: export.replace('"id": 1000,', '"id": 1000 "oops": 1,').encode(),
            "result.json is broken after message 999 (Expecting ',' delimiter)",
        ),
        # A file cut short.
        (lambda export: export[: len(export) // 2].encode(), "result.json ends after message"),
    ],
    ids=["not-utf8", "broken", "truncated"],
)
def test_a_malformed_export_is_named_on_the_command_line_without_a_traceback(
    tmp_path: Path, damage: Any, said: str
) -> None:
    export = _big_export(50_000)
    assert len(export) > 2 * MAX_MESSAGE_CHARS
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "result.json").write_bytes(damage(export))
    done = _kanal_import(tmp_path, folder)
    assert done.returncode == 2, done.stderr
    assert said in done.stderr and "Traceback" not in done.stderr, done.stderr
