"""`kanal import telegram` against a real Synapse: a hand-built Telegram export becomes the channel's
history, as a matrix-nio reader sees it (order, original times, formatting, media, replies, polls);
a re-run adds nothing (and pins nothing again); an import killed with SIGKILL resumes and gives every
message exactly once; an export of the channel imported into another reproduces it, polls' totals too."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import nio
import yaml

from bridge.matrix.imported import IMPORTED_KEY, POLL_END, POLL_START, TEXT_KEY
from bridge.text.names import salvage_title
from bridge.transfer.telegram_import import READ_BATCH
from tests.integration.test_compliance import compliance, join_moderation_room
from tests.support import Env, User, create_channel, reconfigured
from tests.telegram_export import CHANNEL_NAME, RICH_HTML, Expected, build_export

IMPORT_TIMEOUT = 180


async def download(env: Env, user: User, mxc: str) -> bytes:
    server, media_id = mxc.removeprefix("mxc://").split("/", 1)
    url = f"{env.homeserver}/_matrix/client/v1/media/download/{server}/{media_id}"
    async with (
        aiohttp.ClientSession() as http,
        http.get(url, headers={"Authorization": f"Bearer {user.client.access_token}"}) as response,
    ):
        assert response.status == 200, await response.text()
        return await response.read()


def imported(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The imported posts of a timeline (not a poll's end), oldest first."""
    return [e for e in events if isinstance(e.get("content", {}).get(IMPORTED_KEY), dict)]


def message_id(event: dict[str, Any]) -> int:
    return int(event["content"][IMPORTED_KEY]["message_id"])


async def kanal_import(env: Env, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge.cli",
        "import",
        "telegram",
        *args,
        "-c",
        str(env.kanal.config_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


async def run_import(env: Env, *args: str, expect_exit: int = 0) -> tuple[str, str]:
    process = await kanal_import(env, *args)
    out, err = await asyncio.wait_for(process.communicate(), IMPORT_TIMEOUT)
    assert process.returncode == expect_exit, f"exit {process.returncode}: {err.decode()[-2000:]}"
    return out.decode(), err.decode()


async def until_all(reader: User, room: str, count: int, timeout: float = IMPORT_TIMEOUT) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    events: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        events = imported(await reader.all_messages(room))
        if len(events) >= count:
            return events
        await asyncio.sleep(0.5)
    raise AssertionError(f"{len(events)} of {count} imported posts arrived")


async def test_an_export_becomes_the_channels_history(env: Env, tmp_path: Path) -> None:
    owner = await env.user("owner")
    channel = await create_channel(env, owner, env.handle("tg"), "Before Import")
    # Ordinary posts enough for several transactions (BATCH each) and reads of the file (READ_BATCH).
    expected = build_export(tmp_path / "export", posts=2 * READ_BATCH)

    out, _err = await run_import(env, str(expected.folder), "--channel", channel.handle)
    assert f"Imported {len(expected.posts)} posts" in out, out
    assert f"message {expected.missing}: imported without its media" in out, out
    assert f"message {expected.unsupported}: skipped: Telegram could not export it" in out, out
    # The fixture names the photo change as Telegram Desktop does (edit_group_photo).
    assert "edit_group_photo 1" in out and "Channel photo set" in out and "Title set" in out, out
    assert "pins applied: 1" in out, out

    reader = await env.user("reader")
    await reader.join(channel.broadcast)
    events = await until_all(reader, channel.broadcast, len(expected.posts))
    by_id = {message_id(e): e for e in events}
    assert [message_id(e) for e in events] == expected.posts  # in order, each once
    for mid, ts in expected.dates.items():
        assert by_id[mid]["origin_server_ts"] == ts, mid
    for mid, text in expected.bodies.items():
        assert text in by_id[mid]["content"]["body"], (mid, by_id[mid]["content"])
    assert by_id[expected.rich]["content"]["formatted_body"] == RICH_HTML
    assert "\u200c" in by_id[expected.persian]["content"]["body"]
    edited = by_id[expected.edited]["content"]
    assert "(edited 2020-09-14" in edited["body"]
    for mid, data in expected.photos.items():
        content = by_id[mid]["content"]
        assert content["msgtype"] == "m.image"
        assert (content["info"]["w"], content["info"]["h"]) == struct.unpack(">II", data[16:24])
        assert await download(env, reader, content["url"]) == data
    for mid, data in expected.files.items():
        assert by_id[mid]["content"]["msgtype"] == "m.file"
        assert await download(env, reader, by_id[mid]["content"]["url"]) == data
    assert by_id[expected.missing]["content"]["msgtype"] == "m.text"
    for mid, target in expected.replies.items():
        relation = by_id[mid]["content"]["m.relates_to"]["m.in_reply_to"]["event_id"]
        assert relation == by_id[target]["event_id"]
    # A reply to another chat's message is not linked to this channel's message of the same number.
    assert "m.relates_to" not in by_id[expected.reply_elsewhere]["content"]
    poll = by_id[expected.poll]
    assert poll["type"] == "org.matrix.msc3381.poll.start"
    assert "Tea: 4" in poll["content"]["org.matrix.msc1767.text"]
    everything = await reader.all_messages(channel.broadcast)
    ends = [e for e in everything if e["type"] == "org.matrix.msc3381.poll.end"]
    assert [e["content"]["m.relates_to"]["event_id"] for e in ends] == [poll["event_id"]]
    assert "Forwarded from Other Channel" in by_id[expected.forwarded]["content"]["body"]
    pinned = await reader.state(channel.broadcast, "m.room.pinned_events")
    assert pinned["pinned"] == [by_id[expected.pinned]["event_id"]]
    assert (await reader.state(channel.broadcast, "m.room.avatar"))["url"].startswith("mxc://")
    assert (await reader.state(channel.broadcast, "m.room.name"))["name"] == CHANNEL_NAME

    # The web page dates the posts as they were first published.
    config = yaml.safe_load(env.kanal.config_path.read_text())
    async with aiohttp.ClientSession() as http, http.get(f"http://{config['web']['listen']}/c/{channel.handle}") as page:
        assert 'datetime="2020-' in await page.text()

    # A second run imports nothing twice, and does not pin again (which would undo an owner's unpin).
    out, _err = await run_import(env, str(expected.folder), "--channel", channel.handle)
    assert "Imported 0 posts" in out and f"Already imported before: {len(expected.posts)}" in out, out
    assert "pins applied: 0" in out, out
    again = await reader.all_messages(channel.broadcast)
    assert len(imported(again)) == len(expected.posts)
    assert len(again) == len(everything)

    # Exported, then imported into a second channel: the same history.
    folder = tmp_path / "kanal-export"
    out = await env.run_cli("export", channel.handle, str(folder))
    assert f"Exported {len(expected.posts)} posts" in out, out
    second = await create_channel(env, owner, env.handle("tgback"))
    out, _err = await run_import(env, str(folder), "--channel", second.handle)
    assert f"Imported {len(expected.posts)} posts" in out, out
    await reader.join(second.broadcast)
    copies = await until_all(reader, second.broadcast, len(expected.posts))
    assert len(copies) == len(events)
    for first, copy in zip(events, copies, strict=True):
        assert copy["origin_server_ts"] == first["origin_server_ts"]
        assert copy["type"] == first["type"]
        if first["type"] == POLL_START:  # the question, the answers and Telegram's totals in the text
            assert {k: copy["content"].get(k) for k in (POLL_START, TEXT_KEY)} == {
                k: first["content"].get(k) for k in (POLL_START, TEXT_KEY)
            }
            continue
        if first["type"] != "m.room.message":
            continue
        shown = ("msgtype", "body", "filename")
        assert {k: copy["content"].get(k) for k in shown} == {k: first["content"].get(k) for k in shown}
        if "url" in first["content"]:
            assert await download(env, reader, copy["content"]["url"]) == await download(
                env, reader, first["content"]["url"]
            )
        if "m.relates_to" in first["content"]:
            assert "m.in_reply_to" in copy["content"]["m.relates_to"]
    rich = next(c for c in copies if c["content"].get("body", "").startswith("Start bold"))
    assert rich["content"]["formatted_body"] == RICH_HTML
    copied_poll = next(c for c in copies if c["type"] == POLL_START)
    assert "(7 voters): Tea: 4, Coffee: 3" in copied_poll["content"][TEXT_KEY]
    ended = [e for e in await reader.all_messages(second.broadcast) if e["type"] == POLL_END]
    assert [e["content"]["m.relates_to"]["event_id"] for e in ended] == [copied_poll["event_id"]]


async def test_an_import_killed_midway_resumes_exactly_once(env: Env, tmp_path: Path) -> None:
    owner = await env.user("owner")
    channel = await create_channel(env, owner, env.handle("tgkill"))
    expected: Expected = build_export(tmp_path / "export", posts=200)
    reader = await env.user("reader")
    await reader.join(channel.broadcast)

    process = await kanal_import(env, str(expected.folder), "--channel", channel.handle, "--rate", "40")
    deadline = time.monotonic() + IMPORT_TIMEOUT
    while len(imported(await reader.all_messages(channel.broadcast))) < 60:
        assert time.monotonic() < deadline and process.returncode is None, "the import ended before the kill"
        await asyncio.sleep(0.3)
    process.send_signal(signal.SIGKILL)
    await process.wait()
    before = len(imported(await reader.all_messages(channel.broadcast)))
    assert before < len(expected.posts)

    out, _err = await run_import(env, str(expected.folder), "--channel", channel.handle)
    assert "Already imported before:" in out, out
    events = await until_all(reader, channel.broadcast, len(expected.posts))
    await asyncio.sleep(2)  # anything sent twice would arrive now
    events = imported(await reader.all_messages(channel.broadcast))
    assert [message_id(e) for e in events] == expected.posts


async def test_a_malformed_export_is_refused_with_the_message_named(env: Env, tmp_path: Path) -> None:
    owner = await env.user("owner")
    channel = await create_channel(env, owner, env.handle("tgbad"))
    expected = build_export(tmp_path / "export", posts=20)
    result = expected.folder / "result.json"
    good = result.read_text()

    result.write_text(good[: len(good) * 2 // 3])
    _out, err = await run_import(env, str(expected.folder), "--channel", channel.handle, expect_exit=2)
    assert "result.json ends after message" in err and "Traceback" not in err, err

    data = json.loads(good)
    data["messages"][5]["width"] = "wide"
    result.write_text(json.dumps(data))
    _out, err = await run_import(env, str(expected.folder), "--channel", channel.handle, expect_exit=2)
    assert f"message {data['messages'][5]['id']}: 'width' should be a whole number" in err, err
    assert "Traceback" not in err, err

    data = json.loads(good)
    data["messages"][4]["photo"] = "../../etc/passwd"
    result.write_text(json.dumps(data))
    _out, err = await run_import(env, str(expected.folder), "--channel", channel.handle, expect_exit=2)
    assert f"message {data['messages'][4]['id']}: the media path" in err and "leaves" in err, err
    assert "Traceback" not in err, err

    data = json.loads(good)
    data["type"] = "personal_chat"
    result.write_text(json.dumps(data))
    _out, err = await run_import(env, str(expected.folder), "--channel", channel.handle, expect_exit=2)
    assert "personal_chat, not a channel" in err and "Traceback" not in err, err

    # Persian text saved again as Windows-1256 (Arabic), as a text editor may: not UTF-8.
    result.write_bytes(good.encode("cp1256", errors="replace"))
    _out, err = await run_import(env, str(expected.folder), "--channel", channel.handle, expect_exit=2)
    assert "result.json is not UTF-8 text" in err and "Traceback" not in err, err

    # Nothing was imported by any of these.
    reader = await env.user("reader")
    await reader.join(channel.broadcast)
    assert imported(await reader.all_messages(channel.broadcast)) == []

    # The dry run says what would be imported, and changes nothing.
    result.write_text(good)
    out, _err = await run_import(env, str(expected.folder), "--channel", channel.handle, "--dry-run")
    assert f"Would import {len(expected.posts)} posts" in out and f"message {expected.missing}" in out, out
    assert imported(await reader.all_messages(channel.broadcast)) == []


async def test_the_compliance_hooks_judge_every_imported_post(env: Env, tmp_path: Path) -> None:
    moderator, owner = await env.user("mod"), await env.user("owner")
    hooks = [
        {"type": "terms", "name": "watchlist", "terms": ["holdme"], "action": "hold", "category": "spam"},
        {"type": "terms", "name": "banned", "terms": ["forbiddenword"], "action": "reject"},
    ]
    async with reconfigured(env, compliance(moderator, hooks=hooks)):
        mod_room = await join_moderation_room(moderator)
        channel = await create_channel(env, owner, env.handle("tgmod"))
        expected = build_export(tmp_path / "export", posts=5)
        result = expected.folder / "result.json"
        data = json.loads(result.read_text())
        last = data["messages"][-1]
        held_id, rejected_id = last["id"] + 1, last["id"] + 2
        for mid, text in ((held_id, "please holdme"), (rejected_id, "a forbiddenword here")):
            data["messages"].append({**last, "id": mid, "text": text, "text_entities": [{"type": "plain", "text": text}]})
        result.write_text(json.dumps(data))

        out, _err = await run_import(env, str(expected.folder), "--channel", channel.handle)
        assert f"Held for the moderators: 1 (messages {held_id})" in out, out
        assert f"rejected by the compliance hooks: 1 (messages {rejected_id})" in out, out
        reader = await env.user("reader")
        await reader.join(channel.broadcast)
        events = await until_all(reader, channel.broadcast, len(expected.posts))
        assert held_id not in {message_id(e) for e in events} and rejected_id not in {message_id(e) for e in events}

        def this_held_post(e: dict[str, Any]) -> bool:
            # The moderation room is shared by the whole session: this channel's notice, not another's.
            body = e.get("content", {}).get("body", "")
            return "please holdme" in body and f"#{channel.handle} " in body

        notice = await moderator.wait_for(mod_room, this_held_post)
        number = re.search(r"Held post h(\d+)", notice["content"]["body"])
        assert number is not None, notice
        await moderator.ask(mod_room, f"approve h{number.group(1)}", "approved")
        approved = await reader.wait_for(
            channel.broadcast, lambda e: e.get("content", {}).get(IMPORTED_KEY, {}).get("message_id") == held_id
        )
        assert approved["origin_server_ts"] == int(last["date_unixtime"]) * 1000
        # A re-run leaves the judged posts alone.
        out, _err = await run_import(env, str(expected.folder), "--channel", channel.handle)
        assert "Imported 0 posts" in out, out


async def test_an_import_creates_the_channel_it_names_for_its_owner(env: Env, tmp_path: Path) -> None:
    owner = await env.user("owner")
    handle = env.handle("tgnew")
    # A name Kanal does not take as a title as it is: right-to-left marks, and longer than 128 characters.
    name = "\u200fکانال خبری\u200f " + "اخبار روز و تحلیل " * 8
    expected = build_export(tmp_path / "export", posts=15, name=name)
    # Without an owner, a channel that does not exist is refused, and nothing is created.
    _out, err = await run_import(env, str(expected.folder), "--channel", handle, expect_exit=2)
    assert f"there is no channel #{handle}" in err and "--owner" in err, err
    _out, err = await run_import(env, str(expected.folder), "--channel", handle, "--owner", "ann", expect_exit=2)
    assert "--owner must be a Matrix user id" in err, err
    # A dry run says it would create it, and creates nothing.
    out, _err = await run_import(env, str(expected.folder), "--channel", handle, "--owner", owner.user_id, "--dry-run")
    assert f"Would create #{handle} for {owner.user_id}" in out, out
    alias = f"#{handle}:{env.domain}"
    assert isinstance(await owner.client.room_resolve_alias(alias), nio.RoomResolveAliasError)

    out, _err = await run_import(env, str(expected.folder), "--channel", handle, "--owner", owner.user_id)
    assert f"Created #{handle} for {owner.user_id}" in out, out
    resolved = await owner.client.room_resolve_alias(alias)
    assert isinstance(resolved, nio.RoomResolveAliasResponse), resolved
    reader = await env.user("reader")
    await reader.join(alias)
    events = await until_all(reader, str(resolved.room_id), len(expected.posts))
    assert [message_id(e) for e in events] == expected.posts
    title = (await reader.state(str(resolved.room_id), "m.room.name"))["name"]
    assert title == salvage_title(name) and "\u200f" not in title and title.endswith("…"), title
    # It is the owner's: they are invited to its backstage, and its `info` names them as the owner.
    backstage = await owner.wait_invite(lambda _rid, room: f"(#{handle})" in (room.name or ""))
    await owner.join(backstage)
    management = await owner.open_management_room()
    await owner.ask(management, f"info {handle}", owner.user_id)
