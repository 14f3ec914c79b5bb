"""Take a channel elsewhere: `kanal export <handle> <dir>` writes its history in Telegram Desktop's
machine-readable JSON shape, so an owner can import it into another Kanal (or Telegram tooling can read it).

    the channel's posts (not deleted), oldest first, from the database, a page at a time
        text ─▶ entities_from_html (formatted_body) or the plain body ─▶ text + text_entities
        media ─▶ downloaded as the bot ─▶ photos/ or files/ beside result.json
        replies (the post its send pointed at), edits (edited_at), polls (the votes as Matrix counts them,
        plus, for a poll imported from Telegram, the counts it had there: its `net.kanal.imported`)
    ─▶ result.json, written message by message (never the whole history in memory)

The post's date is the one it shows (an imported post's original date included); the export's
`about` carries the channel's description, which Telegram's own exports leave out.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from sqlalchemy import select

from appservice.errors import MatrixConnectionError, MatrixRequestError
from appservice.ids import RoomID, UserID
from bridge.matrix.imported import IMPORTED_KEY
from bridge.matrix.polls import Poll, PollTally, parse_poll
from bridge.matrix.relay import POLL_START_TYPES
from bridge.publishing.polls import poll_tally
from bridge.runtime.context import Context
from bridge.store import queries
from bridge.store.models import Channel, OutboxEntry, Post
from bridge.text.telegram import Entity, entities_from_html, entity_json

PAGE: Final = 200
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class ExportRefused(Exception):
    """The export cannot be written; the message says why."""


@dataclass
class ExportSummary:
    channel: str
    folder: Path
    messages: int = 0
    media: int = 0
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"Exported {self.messages} posts ({self.media} media files) of #{self.channel} to {self.folder}"]
        out.extend(f"  {problem}" for problem in self.problems)
        return out


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _dates(key: str, moment: datetime) -> dict[str, str]:
    moment = _utc(moment)
    return {key: moment.strftime("%Y-%m-%dT%H:%M:%S"), f"{key}_unixtime": str(int(moment.timestamp()))}


def _text(content: dict[str, Any]) -> list[Entity]:
    formatted = content.get("formatted_body")
    if content.get("format") == "org.matrix.custom.html" and isinstance(formatted, str):
        return entities_from_html(formatted)
    body = content.get("body")
    return [Entity("plain", body)] if isinstance(body, str) and body else []


def _text_fields(entities: list[Entity]) -> dict[str, Any]:
    parts: list[Any] = [e.text if e.type == "plain" else entity_json(e) for e in entities]
    text: Any = "".join(parts) if all(isinstance(p, str) for p in parts) else parts
    return {"text": text, "text_entities": [entity_json(e) for e in entities]}


def _file_name(content: dict[str, Any]) -> str:
    name = content.get("filename") if isinstance(content.get("filename"), str) else content.get("body")
    return str(name or "file")


def _media_fields(content: dict[str, Any], event_type: str, relative: str) -> dict[str, Any]:
    info = content.get("info") if isinstance(content.get("info"), dict) else {}
    assert isinstance(info, dict)
    out: dict[str, Any] = {"file_name": _file_name(content)}
    msgtype = content.get("msgtype")
    if msgtype == "m.image" and info.get("mimetype") != "image/gif":
        out["photo"] = relative
    else:
        out["file"] = relative
        if event_type == "m.sticker":
            out["media_type"] = "sticker"
        elif msgtype == "m.video":
            out["media_type"] = "video_file"
        elif msgtype == "m.audio":
            out["media_type"] = "voice_message" if "org.matrix.msc3245.voice" in content else "audio_file"
        if isinstance(info.get("mimetype"), str):
            out["mime_type"] = info["mimetype"]
    if isinstance(info.get("w"), int) and isinstance(info.get("h"), int):
        out["width"], out["height"] = info["w"], info["h"]
    if isinstance(info.get("duration"), int):
        out["duration_seconds"] = info["duration"] // 1000
    return out


def imported_poll(payload: object) -> dict[str, Any] | None:
    """The Telegram counts an imported poll's event carries (`net.kanal.imported.poll`), if any."""
    content = payload.get("content") if isinstance(payload, dict) else None
    imported = content.get(IMPORTED_KEY) if isinstance(content, dict) else None
    poll = imported.get("poll") if isinstance(imported, dict) else None
    return poll if isinstance(poll, dict) else None


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def poll_json(poll: Poll, tally: PollTally | None, telegram: dict[str, Any] | None) -> dict[str, Any]:
    """A poll as Telegram Desktop writes it: the votes Matrix counts, plus the counts an imported poll
    had on Telegram (`telegram`, answers in order: ids "1", "2" …), whose voters Matrix never saw."""
    counts = dict(tally.counts) if tally is not None else {}
    raw = telegram.get("answers") if telegram is not None else None
    earlier = {str(i): _count(n) for i, n in enumerate(raw, 1)} if isinstance(raw, list) else {}
    closed = tally.ended if tally is not None else bool(telegram and telegram.get("closed") is True)
    return {
        "question": poll.question,
        "closed": closed,
        "total_voters": (tally.voters if tally is not None else 0)
        + (_count(telegram.get("total_voters")) if telegram is not None else 0),
        "answers": [
            {"text": a.text, "voters": counts.get(a.id or "", 0) + earlier.get(a.id or "", 0), "chosen": False}
            for a in poll.answers
        ],
    }


@dataclass(frozen=True)
class _Row:
    post: Post
    reply_to: int | None  # the id of the post it replies to
    copies: dict[RoomID, str]
    telegram_poll: dict[str, Any] | None  # an imported poll's counts on Telegram


class Exporter:
    def __init__(self, ctx: Context, handle: str, folder: Path) -> None:
        self.ctx = ctx
        self.handle = handle
        self.folder = folder

    async def run(self) -> ExportSummary:
        async with self.ctx.sessions() as session:
            channel = await queries.channel_by_handle(session, self.handle)
        if channel is None:
            raise ExportRefused(f"there is no channel #{self.handle}")
        await asyncio.to_thread(self._prepare)
        summary = ExportSummary(self.handle, self.folder)
        header = {
            "name": channel.title,
            "type": "private_channel" if channel.private else "public_channel",
            "id": channel.id,
            "about": channel.about or "",
        }
        out = await asyncio.to_thread((self.folder / "result.json").open, "w", encoding="utf-8")
        try:
            head = json.dumps(header, ensure_ascii=False, indent=1)[:-2]
            await asyncio.to_thread(out.write, head + ',\n "messages": [')
            first = True
            async for message in self._messages(channel, summary):
                text = ("\n  " if first else ",\n  ") + json.dumps(message, ensure_ascii=False)
                await asyncio.to_thread(out.write, text)
                first = False
                summary.messages += 1
            await asyncio.to_thread(out.write, "\n ]\n}\n")
        finally:
            await asyncio.to_thread(out.close)
        return summary

    def _prepare(self) -> None:
        if self.folder.exists() and (not self.folder.is_dir() or any(self.folder.iterdir())):
            raise ExportRefused(f"{self.folder} is not an empty folder: export into a new one")
        for sub in ("", "photos", "files"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)

    async def _posts(self, channel: Channel) -> AsyncIterator[_Row]:
        """The channel's posts, oldest first, each with the id of the post it replies to."""
        after = 0
        while True:
            async with self.ctx.sessions() as session:
                rows = (
                    await session.execute(
                        select(Post, OutboxEntry.ref_source)
                        .outerjoin(OutboxEntry, OutboxEntry.id == Post.outbox_id)
                        .where(Post.channel_id == channel.id, Post.redacted.is_(False), Post.id > after)
                        .order_by(Post.id)
                        .limit(PAGE)
                    )
                ).all()
                refs = {ref for _post, ref in rows if ref}
                targets = dict(
                    (
                        await session.execute(
                            select(Post.source_event_id, Post.id).where(
                                Post.channel_id == channel.id, Post.source_event_id.in_(refs)
                            )
                        )
                    ).all()
                ) if refs else {}
                copies = {post.id: await queries.copies_of(session, post.id) for post, _ref in rows}
                # An imported poll's Telegram counts are in its marker, which only the sent event keeps.
                polls = [p.outbox_id for p, _ref in rows if p.event_type in POLL_START_TYPES and p.outbox_id]
                payloads: dict[int, dict[str, Any]] = {}
                if polls:
                    query = select(OutboxEntry.id, OutboxEntry.payload).where(OutboxEntry.id.in_(polls))
                    payloads = {entry_id: payload for entry_id, payload in (await session.execute(query)).all()}
            if not rows:
                return
            for post, ref in rows:
                telegram = imported_poll(payloads.get(post.outbox_id)) if post.outbox_id else None
                yield _Row(post, targets.get(ref) if ref else None, copies[post.id], telegram)
            after = rows[-1][0].id

    async def _messages(self, channel: Channel, summary: ExportSummary) -> AsyncIterator[dict[str, Any]]:
        async for row in self._posts(channel):
            post, reply_to, copies = row.post, row.reply_to, row.copies
            content = post.content or {}
            message: dict[str, Any] = {"id": post.id, "type": "message", **_dates("date", post.created_at)}
            if post.edited_at is not None:
                message.update(_dates("edited", post.edited_at))
            message["from"] = channel.title
            message["from_id"] = f"channel{channel.id}"
            if reply_to is not None:
                message["reply_to_message_id"] = reply_to
            entities = _text(content)
            poll = parse_poll(post.event_type, content)
            if poll is not None:
                tally = await poll_tally(self.ctx, channel, post, copies)
                message["poll"] = poll_json(poll, tally, row.telegram_poll)
                entities = []
            url = content.get("url")
            if isinstance(url, str):
                relative = await self._media(channel, post, content, url, summary)
                if relative is not None:
                    message.update(_media_fields(content, post.event_type, relative))
                    summary.media += 1
                # MSC2530: the body is a caption only when `filename` is there; otherwise the file's name.
                if not isinstance(content.get("filename"), str):
                    entities = []
            message.update(_text_fields(entities))
            yield message

    async def _media(
        self, channel: Channel, post: Post, content: dict[str, Any], url: str, summary: ExportSummary
    ) -> str | None:
        safe = _UNSAFE_NAME.sub("_", _file_name(content))[-80:].lstrip(".") or "file"
        photo = content.get("msgtype") == "m.image"
        relative = f"{'photos' if photo else 'files'}/{post.id}_{safe}"
        try:
            data, _content_type = await self.ctx.client.intent(UserID(self.ctx.bot)).download(url)
        except (MatrixRequestError, MatrixConnectionError) as exc:
            summary.problems.append(f"post {post.id}: its media could not be downloaded ({exc}); left out")
            return None
        await asyncio.to_thread((self.folder / relative).write_bytes, data)
        return relative
