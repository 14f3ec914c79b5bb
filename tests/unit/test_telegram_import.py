"""`kanal import telegram` on a migrated SQLite database with a homeserver that cannot be reached:
what a run commits (posts, pins, the resume point) read back from the database, and what its command
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
from sqlalchemy import func, select

from bridge.channels import management
from bridge.matrix.imported import source_id
from bridge.runtime.context import Context
from bridge.runtime.outbox import OutboxKind
from bridge.store.models import Channel, OutboxEntry, Post, Room
from bridge.text.names import salvage_title
from bridge.text.telegram import MAX_MESSAGE_CHARS
from bridge.transfer.telegram_import import Importer, ImportRefused, ImportStopped, Summary
from tests.telegram_export import png
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


def pin(message_id: int, target: int) -> dict[str, Any]:
    return {"id": message_id, "type": "service", "date_unixtime": str(1_600_000_000 + message_id),
            "action": "pin_message", "message_id": target, "text": ""}


def write_export(folder: Path, messages: list[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    result = {"name": "Unit", "type": "public_channel", "id": CHAT_ID, "messages": messages}
    (folder / "result.json").write_text(json.dumps(result), encoding="utf-8")
    return folder


async def run_import(ctx: Context, folder: Path, *, dry_run: bool = False) -> Summary:
    importer = Importer(ctx, folder, HANDLE, dry_run=dry_run, max_media=1 << 20, patience=0.2, rate=1000)
    return await importer.run()


async def pin_entries(ctx: Context, channel_id: int, target: int) -> int:
    async with ctx.sessions() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(OutboxEntry)
            .where(
                OutboxEntry.kind == OutboxKind.PIN, OutboxEntry.ref_source == source_id(channel_id, CHAT_ID, target)
            )
        )
    return int(count or 0)


async def imported_ids(ctx: Context) -> list[int]:
    async with ctx.sessions() as session:
        sources = (await session.scalars(select(Post.source_event_id).order_by(Post.id))).all()
    return [int(source.rsplit(":", 1)[1]) for source in sources]


async def test_a_rerun_does_not_pin_again_and_a_resumed_run_still_pins(ctx: Context, tmp_path: Path) -> None:
    channel_id = await seed_channel(ctx)
    messages = [text(1), text(2), text(3), pin(4, 2), text(5)]
    # A first run that stopped before the pin (a kill between two batches looks the same).
    first = await asyncio.to_thread(write_export, tmp_path / "part", messages[:3])
    await run_import(ctx, first)
    assert await pin_entries(ctx, channel_id, 2) == 0

    whole = await asyncio.to_thread(write_export, tmp_path / "whole", messages)
    resumed = await run_import(ctx, whole)
    assert (resumed.already, resumed.posts, resumed.pinned) == (3, 1, 1)
    assert await pin_entries(ctx, channel_id, 2) == 1

    # The owner may unpin it now; running the import again must not pin it back.
    again = await run_import(ctx, whole)
    assert (again.already, again.posts, again.pinned) == (4, 0, 0)
    assert await pin_entries(ctx, channel_id, 2) == 1
    dry = await run_import(ctx, whole, dry_run=True)
    assert dry.pinned == 0
    assert any("pins applied: 0" in line for line in again.lines())


async def test_an_upload_the_homeserver_fails_stops_the_import_with_its_resume_point_kept(
    ctx: Context, tmp_path: Path
) -> None:
    await seed_channel(ctx)
    folder = tmp_path / "export"
    (folder / "photos").mkdir(parents=True)
    (folder / "photos" / "p.png").write_bytes(png(2, 2, (1, 2, 3)))
    messages = [text(1), text(2), text(3, photo="photos/p.png", width=2, height=2), text(4)]
    await asyncio.to_thread(write_export, folder, messages)
    with pytest.raises(ImportStopped) as stopped:
        await run_import(ctx, folder)  # the homeserver (127.0.0.1:9) refuses the connection
    said = str(stopped.value)
    assert "the homeserver could not take the media of message 3" in said and "run it again" in said, said
    assert await imported_ids(ctx) == [1, 2]  # the messages before it are kept: a re-run starts at 3
    with pytest.raises(ImportStopped, match="message 3"):
        await run_import(ctx, folder)
    assert await imported_ids(ctx) == [1, 2]


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


async def test_owner_creation_takes_a_cleaned_title_when_the_exports_name_is_unusable(
    ctx: Context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def alias_free(_ctx: Context, _handle: str) -> bool:
        return False

    monkeypatch.setattr(management, "_alias_taken", alias_free)  # asks the homeserver otherwise
    name = "\u200fکانال خبری\u200f " + "اخبار روز " * 20  # right-to-left marks, 212 characters
    folder = tmp_path / "export"
    folder.mkdir()
    result = {"name": name, "type": "public_channel", "id": CHAT_ID, "messages": [text(1)]}
    (folder / "result.json").write_text(json.dumps(result), encoding="utf-8")
    importer = Importer(ctx, folder, "tgowned", owner=OWNER, max_media=1 << 20, patience=0.2)
    with pytest.raises(ImportRefused, match="was not ready"):  # no homeserver makes its rooms here
        await importer.run()
    async with ctx.sessions() as session:
        channel = await session.scalar(select(Channel).where(Channel.handle == "tgowned"))
    assert channel is not None and channel.owner == OWNER
    assert channel.title == salvage_title(name, 128) and "\u200f" not in channel.title
    assert channel.title.startswith("کانال خبری اخبار روز") and channel.title.endswith("…")
