"""A Telegram export's message as the Matrix event a Kanal channel publishes, pure.

    ExportMessage ─▶ plan_message ─▶ Planned: event type, content (text, caption, poll, sticker …),
                                     the media file to upload (if any), a closed poll's end event,
                                     or why it cannot be imported
    after the upload ─▶ with_media(content, mxc, size)

Every imported event carries `net.kanal.imported` (the source channel, its id and the message id)
and Kanal's source marker (`net.kanal.source`, the post's import id), so a re-run finds what is
there already and a forward of an imported post is attributed like any channel post's.
"""

from __future__ import annotations

import html
import mimetypes
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from bridge.matrix.relay import REF_PLACEHOLDER, SOURCE_KEY
from bridge.text.i18n import t
from bridge.text.telegram import UNSUPPORTED, Entity, ExportMessage, is_plain, render_entities

IMPORTED_KEY: Final = "net.kanal.imported"
SOURCE_PREFIX: Final = "telegram:"
POLL_START: Final = "org.matrix.msc3381.poll.start"  # as Element sends polls
POLL_END: Final = "org.matrix.msc3381.poll.end"
TEXT_KEY: Final = "org.matrix.msc1767.text"
NOT_EXPORTED: Final = "Telegram could not export it"  # why an `unsupported` message is skipped


def source_id(channel_id: int, chat_id: int, message_id: int) -> str:
    """The import id of a message: the post's source in Kanal (unique per target channel)."""
    return f"{SOURCE_PREFIX}{channel_id}:{chat_id}:{message_id}"


def source_prefix(channel_id: int) -> str:
    """What every post imported into a channel has its source start with."""
    return f"{SOURCE_PREFIX}{channel_id}:"


@dataclass(frozen=True)
class Media:
    """A file of the export to upload before the post is published."""

    path: str
    mimetype: str
    filename: str


@dataclass(frozen=True)
class Planned:
    message_id: int
    ts: int
    event_type: str = "m.room.message"
    content: dict[str, Any] | None = None  # None: nothing to publish (see `problem`)
    media: Media | None = None
    end: dict[str, Any] | None = None  # a closed poll's end event (relates to the poll)
    problem: str | None = None  # why the message is not imported, or what of it is left out


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _mimetype(message: ExportMessage, path: str) -> str:
    if message.mime_type:
        return message.mime_type
    guessed, _ = mimetypes.guess_type(path)
    return guessed or "application/octet-stream"


def _notes(message: ExportMessage, lang: str) -> tuple[list[str], list[str], list[str], list[str]]:
    """Lines before the text (forwarded from, a reply in another chat) and after it (edited), plain and rich."""
    head_plain: list[str] = []
    head_rich: list[str] = []
    tail_plain: list[str] = []
    tail_rich: list[str] = []
    if message.forwarded_from:
        header = t(lang, "forwarded_from", title=message.forwarded_from)
        head_plain.append(header)
        head_rich.append(f"<p><em>{html.escape(header, quote=False)}</em></p>")
    if message.reply_elsewhere:  # its id is another chat's: a link would point at this channel's namesake
        note = t(lang, "import_reply_elsewhere")
        head_plain.append(note)
        head_rich.append(f"<p><em>{html.escape(note, quote=False)}</em></p>")
    if message.author:
        tail_plain.append(f"— {message.author}")
        tail_rich.append(f"<br><em>— {html.escape(message.author, quote=False)}</em>")
    if message.edited is not None:
        note = t(lang, "import_edited", date=_utc(message.edited))
        tail_plain.append(note)
        tail_rich.append(f"<br><em>{html.escape(note, quote=False)}</em>")
    return head_plain, head_rich, tail_plain, tail_rich


def _text_parts(message: ExportMessage, lang: str) -> tuple[str, str | None]:
    """(body, formatted_body or None when plain text says it all) of a message's text and notes."""
    plain, rich = render_entities(message.entities)
    head_plain, head_rich, tail_plain, tail_rich = _notes(message, lang)
    body = "\n\n".join([*head_plain, plain]) if plain else "\n\n".join(head_plain)
    if tail_plain:
        body = "\n".join([body, *tail_plain]) if body else "\n".join(tail_plain)
    if is_plain(message.entities) and not head_plain and not tail_plain:
        return body, None
    return body, "".join([*head_rich, rich, *tail_rich])


def _marker(message: ExportMessage, chat_id: int, chat_name: str, source: str) -> dict[str, Any]:
    imported: dict[str, Any] = {
        "from": "telegram",
        "channel": chat_name,
        "channel_id": chat_id,
        "message_id": message.id,
        "date": message.date,
    }
    if message.edited is not None:
        imported["edited"] = message.edited
    if message.poll is not None:  # Telegram's counts (no voters): `kanal export` writes them again
        imported["poll"] = {
            "closed": message.poll.closed,
            "total_voters": message.poll.total_voters,
            "answers": [a.voters for a in message.poll.answers],  # in answer order (ids "1", "2" …)
        }
    return {SOURCE_KEY: source, IMPORTED_KEY: imported}


def _media_content(message: ExportMessage, path: str) -> tuple[str, dict[str, Any], Media]:
    """(event type, content without url and caption, the file) of a message's photo or file."""
    mimetype = _mimetype(message, path)
    filename = message.file_name or path.rsplit("/", 1)[-1]
    info: dict[str, Any] = {"mimetype": mimetype}
    if message.width is not None and message.height is not None:
        info["w"], info["h"] = message.width, message.height
    if message.duration is not None:
        info["duration"] = message.duration * 1000
    content: dict[str, Any] = {"info": info}
    kind = message.media_type
    event_type = "m.room.message"
    if message.photo is not None:
        content["msgtype"] = "m.image"
    elif kind == "sticker" and mimetype in ("image/webp", "image/png", "image/gif"):
        event_type = "m.sticker"
    elif kind == "sticker" and mimetype.startswith("video/"):
        content["msgtype"] = "m.video"
    elif kind == "animation":
        content["msgtype"] = "m.image" if mimetype == "image/gif" else "m.video"
    elif kind in ("video_file", "video_message") or (kind is None and mimetype.startswith("video/")):
        content["msgtype"] = "m.video"
    elif kind == "voice_message":
        content["msgtype"] = "m.audio"
        content["org.matrix.msc3245.voice"] = {}
        if message.duration is not None:
            content["org.matrix.msc1767.audio"] = {"duration": message.duration * 1000}
    elif kind == "audio_file" or (kind is None and mimetype.startswith("audio/")):
        content["msgtype"] = "m.audio"
    elif kind is None and mimetype.startswith("image/"):
        content["msgtype"] = "m.image"
    else:
        content["msgtype"] = "m.file"
    return event_type, content, Media(path, mimetype, filename)


def _poll_totals(message: ExportMessage, lang: str) -> str:
    assert message.poll is not None
    results = ", ".join(
        t(lang, "import_poll_answer", answer=a.text, votes=a.voters) for a in message.poll.answers
    )
    return t(lang, "import_poll_totals", voters=message.poll.total_voters, results=results)


def _poll(message: ExportMessage, lang: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    poll = message.poll
    assert poll is not None
    answers = [{"id": str(i), TEXT_KEY: a.text} for i, a in enumerate(poll.answers, 1)]
    totals = _poll_totals(message, lang)
    lines = [poll.question, *(f"{i}. {a.text}" for i, a in enumerate(poll.answers, 1)), totals]
    start = {
        POLL_START: {
            "question": {TEXT_KEY: poll.question},
            "kind": "org.matrix.msc3381.poll.disclosed",
            "max_selections": 1,
            "answers": answers,
        },
        TEXT_KEY: "\n".join(lines),
    }
    if not poll.closed:
        return start, None
    end = {
        "m.relates_to": {"rel_type": "m.reference", "event_id": REF_PLACEHOLDER},
        POLL_END: {},
        TEXT_KEY: f"{t(lang, 'import_poll_ended')} {totals}",
    }
    return start, end


def plan_message(
    message: ExportMessage, *, chat_id: int, chat_name: str, source: str, lang: str
) -> Planned:
    """What a (non-service) message becomes in the channel, or why it is not imported."""
    if message.type == UNSUPPORTED:
        return Planned(message.id, message.date, problem=f"message {message.id}: skipped: {NOT_EXPORTED}")
    marker = _marker(message, chat_id, chat_name, source)
    if message.poll is not None:
        start, end = _poll(message, lang)
        return Planned(message.id, message.date, POLL_START, {**start, **marker}, end=end)
    path = message.photo or message.file
    body, formatted = _text_parts(message, lang)
    has_text = bool(message.entities)
    problem = None
    if message.missing is not None:
        problem = f"message {message.id}: its media file was not in the export ({message.missing})"
    if path is None:
        if not has_text and not message.forwarded_from:
            return Planned(message.id, message.date, problem=problem or f"message {message.id}: nothing to show")
        content: dict[str, Any] = {"msgtype": "m.text", "body": body}
        if formatted is not None:
            content["format"] = "org.matrix.custom.html"
            content["formatted_body"] = formatted
        return Planned(message.id, message.date, content={**content, **marker}, problem=problem)
    event_type, content, media = _media_content(message, path)
    if event_type == "m.sticker":
        content["body"] = message.sticker_emoji or media.filename
    elif has_text or message.edited is not None or any((message.forwarded_from, message.reply_elsewhere, message.author)):
        # MSC2530: the caption is the body, the file's name moves to `filename`.
        content["filename"] = media.filename
        content["body"] = body
        if formatted is not None:
            content["format"] = "org.matrix.custom.html"
            content["formatted_body"] = formatted
    else:
        content["body"] = media.filename
    return Planned(message.id, message.date, event_type, {**content, **marker}, media=media, problem=problem)


def with_media(content: dict[str, Any], mxc: str, size: int) -> dict[str, Any]:
    """The content with its uploaded file."""
    info = dict(content.get("info") or {})
    info["size"] = size
    return {**content, "url": mxc, "info": info}


def as_reply(content: dict[str, Any]) -> dict[str, Any]:
    """A reply to the imported post the outbox resolves (REF_PLACEHOLDER) in each room."""
    return {**content, "m.relates_to": {"m.in_reply_to": {"event_id": REF_PLACEHOLDER}}}


def text_of_entities(entities: list[Entity]) -> str:
    return "".join(e.text for e in entities)
