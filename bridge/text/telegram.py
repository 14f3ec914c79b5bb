"""Telegram Desktop's machine-readable chat export, pure: read `result.json` as a stream, check each
message, and turn Telegram's text entities into Matrix HTML and a plain body (and back).

    result.json ─▶ read_export: header (name, type, id) ─▶ messages, one at a time (never the whole file)
                     each checked: a message's wrong types, paths leaving the export → ExportError naming it
                     broken JSON → "broken after message N"; a file cut short → "ends after message N"
    text / text_entities ─▶ render_entities ─▶ (plain body, formatted_body)
    formatted_body ─▶ entities_from_html ─▶ text_entities (Kanal's own export, in the same shape)

The format is what Telegram Desktop writes under "Export chat history" with "Machine-readable JSON":
`text` is a string or a list of strings and entity objects, `text_entities` the same as entity
objects only; media are paths relative to the export's folder (or a note when the file was not
exported); dates are local time strings with `date_unixtime` beside them (an export without it is
read as UTC). A message Telegram could not export is written as `{"id": N, "type": "unsupported"}`.
Service messages of a channel are named as a group's (`edit_group_photo`, `edit_group_title` …).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import PurePosixPath
from typing import IO, Any, Final

CHANNEL_TYPES: Final = ("public_channel", "private_channel")
READ_CHUNK: Final = 1 << 16
MAX_MESSAGE_CHARS: Final = 1 << 22  # one message's JSON (a text is at most 4,096 characters on Telegram)
NOT_INCLUDED_PREFIX: Final = "(File "  # "(File not included. Change data exporting settings to download.)"
LINK_SCHEMES: Final = ("http", "https", "mailto", "tg", "matrix")
UNSUPPORTED: Final = "unsupported"  # a message's type when Telegram Desktop could not export it
# Telegram Desktop names a channel's photo changes as a group's; the `_channel_` spellings are taken too.
PHOTO_SET_ACTIONS: Final = frozenset({"edit_group_photo", "edit_channel_photo"})
PHOTO_DELETE_ACTIONS: Final = frozenset({"delete_group_photo", "delete_channel_photo"})
# A decoding error this close to the end of what is read may be the text running out (`tru`, `1.5e`,
# `\u12`), not a mistake in it: more is read before it is called broken.
_DECODE_SLACK: Final = 16

_WHITESPACE = re.compile(r"[ \t\n\r]*")


class ExportError(ValueError):
    """The export cannot be imported as it is; the message says where (a message id, a key) and why."""


# -- entities ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entity:
    """One run of a message's text: `type` is Telegram's entity type ("plain" for none)."""

    type: str
    text: str
    href: str | None = None  # text_link
    language: str | None = None  # pre
    user_id: int | None = None  # mention_name


def parse_entities(message_id: int, text: object, text_entities: object = None) -> list[Entity]:
    """A message's text as entities: `text_entities` when given, else `text` (a string or a list)."""
    raw: object = text_entities if isinstance(text_entities, list) and text_entities else text
    if isinstance(raw, str):
        return [Entity("plain", raw)] if raw else []
    if not isinstance(raw, list):
        raise ExportError(f"message {message_id}: 'text' should be a string or a list, not {_kind(raw)}")
    entities: list[Entity] = []
    for part in raw:
        if isinstance(part, str):
            if part:
                entities.append(Entity("plain", part))
            continue
        if not isinstance(part, dict) or not isinstance(part.get("text"), str):
            raise ExportError(f"message {message_id}: a text entity should be an object with a 'text' string")
        kind = part.get("type")
        href, language, user_id = part.get("href"), part.get("language"), part.get("user_id")
        entities.append(
            Entity(
                kind if isinstance(kind, str) else "plain",
                part["text"],
                href if isinstance(href, str) else None,
                language if isinstance(language, str) and language else None,
                user_id if isinstance(user_id, int) and not isinstance(user_id, bool) else None,
            )
        )
    return [e for e in entities if e.text]


def _safe_href(href: str) -> str | None:
    scheme = href.split(":", 1)[0].lower() if ":" in href else ""
    return href if scheme in LINK_SCHEMES else None


def _link_target(text: str) -> str | None:
    """Where a bare link Telegram recognised points (it may lack its scheme: `example.org/a`)."""
    target = text if re.match(r"(?i)^[a-z][a-z0-9+.-]*://", text) else f"https://{text}"
    return _safe_href(target)


def _escaped(text: str) -> str:
    return html.escape(text, quote=False).replace("\n", "<br>")


_WRAPS: Final = {
    "bold": "strong",
    "italic": "em",
    "underline": "u",
    "strikethrough": "del",
    "code": "code",
    "blockquote": "blockquote",
    "expandable_blockquote": "blockquote",
}


def render_entities(entities: list[Entity]) -> tuple[str, str]:
    """(plain body, Matrix HTML) of a message's text. Mentions, hashtags, commands and custom emoji
    (as their fallback emoji) stay text; links become links only with a safe scheme."""
    plain: list[str] = []
    rich: list[str] = []
    for e in entities:
        plain.append(e.text)
        tag = _WRAPS.get(e.type)
        if tag == "code":
            rich.append(f"<code>{html.escape(e.text, quote=False)}</code>")
        elif tag is not None:
            rich.append(f"<{tag}>{_escaped(e.text)}</{tag}>")
        elif e.type == "pre":
            language = f' class="language-{html.escape(e.language, quote=True)}"' if e.language else ""
            rich.append(f"<pre><code{language}>{html.escape(e.text, quote=False)}</code></pre>")
        elif e.type == "spoiler":
            rich.append(f"<span data-mx-spoiler>{_escaped(e.text)}</span>")
        elif e.type in ("text_link", "link", "email"):
            if e.type == "text_link":
                target = _safe_href(e.href or "")
                if target is not None and target not in (e.text, f"mailto:{e.text}"):
                    plain.append(f" ({target})")
            elif e.type == "email":
                target = _safe_href(f"mailto:{e.text}")
            else:
                target = _link_target(e.text)
            if target is None:
                rich.append(_escaped(e.text))
            else:
                rich.append(f'<a href="{html.escape(target, quote=True)}">{_escaped(e.text)}</a>')
        else:  # plain, mention, mention_name, hashtag, cashtag, bot_command, phone, custom_emoji, …
            rich.append(_escaped(e.text))
    return "".join(plain), "".join(rich)


def is_plain(entities: list[Entity]) -> bool:
    """No formatting at all: a plain body says it all."""
    return all(e.type == "plain" for e in entities)


class _EntityParser(HTMLParser):
    """Matrix HTML (as Kanal renders and stores it) back into Telegram's flat entities."""

    _TAGS: Final = {"strong": "bold", "b": "bold", "em": "italic", "i": "italic", "u": "underline",
                    "del": "strikethrough", "s": "strikethrough", "strike": "strikethrough",
                    "code": "code", "blockquote": "blockquote"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.entities: list[Entity] = []
        self._stack: list[tuple[str, dict[str, str | None]]] = []
        self._skip = 0

    def _current(self) -> tuple[str, str | None, str | None]:
        kind, href, language = "plain", None, None
        for tag, attrs in self._stack:
            if tag == "pre":
                kind = "pre"
            elif tag == "code" and kind == "pre":
                cls = attrs.get("class") or ""
                language = cls.removeprefix("language-") if cls.startswith("language-") else language
            elif tag == "a" and attrs.get("href"):
                kind, href = "text_link", attrs.get("href")
            elif tag == "span" and "data-mx-spoiler" in attrs:
                kind = "spoiler"
            elif tag in self._TAGS and kind == "plain":
                kind = self._TAGS[tag]
        return kind, href, language

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "mx-reply":
            self._skip += 1
        elif tag == "br":
            self._text("\n")
        elif tag == "p":
            pass
        else:
            self._stack.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if tag == "mx-reply":
            self._skip = max(self._skip - 1, 0)
            return
        if tag == "p":
            self._text("\n\n")
            return
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i][0] == tag:
                del self._stack[i:]
                return

    def handle_data(self, data: str) -> None:
        self._text(data)

    def _text(self, data: str) -> None:
        if self._skip or not data:
            return
        kind, href, language = self._current()
        last = self.entities[-1] if self.entities else None
        if last is not None and (last.type, last.href, last.language) == (kind, href, language):
            self.entities[-1] = Entity(kind, last.text + data, href, language)
        else:
            self.entities.append(Entity(kind, data, href, language))


def entities_from_html(formatted_body: str) -> list[Entity]:
    """Telegram's entities for Matrix HTML (Kanal's export): the inverse of `render_entities` for the
    formatting it writes; tags Telegram has no entity for keep their text."""
    parser = _EntityParser()
    parser.feed(formatted_body)
    parser.close()
    entities = parser.entities
    while entities and entities[-1].type == "plain" and not entities[-1].text.strip():
        entities.pop()
    if entities and entities[-1].text.endswith("\n"):
        last = entities[-1]
        entities[-1] = Entity(last.type, last.text.rstrip("\n"), last.href, last.language)
    return [e for e in entities if e.text]


def entity_json(entity: Entity) -> dict[str, Any]:
    """An entity as Telegram Desktop writes it in `text_entities`."""
    out: dict[str, Any] = {"type": entity.type, "text": entity.text}
    if entity.href is not None:
        out["href"] = entity.href
    if entity.type == "pre":
        out["language"] = entity.language or ""
    return out


# -- the export ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PollAnswer:
    text: str
    voters: int


@dataclass(frozen=True)
class ExportPoll:
    question: str
    closed: bool
    total_voters: int
    answers: tuple[PollAnswer, ...]


@dataclass(frozen=True)
class ExportMessage:
    """One message of the export, checked (types right, media paths inside the export)."""

    id: int
    type: str  # "message", "service" or UNSUPPORTED
    date: int  # milliseconds since the epoch, UTC (0 for an unsupported message, which has none)
    entities: list[Entity] = field(default_factory=list)
    edited: int | None = None
    reply_to: int | None = None  # a message of this channel
    reply_elsewhere: bool = False  # a reply to a message of another chat (not linked)
    forwarded_from: str | None = None
    author: str | None = None
    photo: str | None = None  # a path relative to the export's folder
    file: str | None = None
    missing: str | None = None  # the note of a media file the export left out
    media_type: str | None = None
    mime_type: str | None = None
    file_name: str | None = None
    width: int | None = None
    height: int | None = None
    duration: int | None = None  # seconds
    sticker_emoji: str | None = None
    poll: ExportPoll | None = None
    action: str | None = None  # service messages
    action_target: int | None = None  # pin_message's message_id
    title: str | None = None  # edit_group_title, create_channel
    has_reactions: bool = False


@dataclass(frozen=True)
class ExportHeader:
    name: str
    type: str
    id: int
    about: str | None = None


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}.get(
        type(value), "a number"
    )


def _int(message_id: int, raw: dict[str, Any], key: str, *, required: bool = False) -> int | None:
    value = raw.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ExportError(f"message {message_id}: {key!r} should be a whole number, not {_kind(value)}")
    return value


def _str(message_id: int, raw: dict[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ExportError(f"message {message_id}: {key!r} should be a string, not {_kind(value)}")
    return value


def _time(message_id: int, raw: dict[str, Any], key: str) -> int | None:
    """A date in milliseconds: `<key>_unixtime` (seconds, as a string), else `<key>` read as UTC."""
    unix = raw.get(f"{key}_unixtime")
    if isinstance(unix, str) and unix.isdigit():
        return int(unix) * 1000
    if isinstance(unix, int) and not isinstance(unix, bool):
        return unix * 1000
    text = raw.get(key)
    if text is None:
        return None
    if not isinstance(text, str):
        raise ExportError(f"message {message_id}: {key!r} should be a date string, not {_kind(text)}")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ExportError(f"message {message_id}: {key!r} is not a date: {text[:40]!r}") from None
    return int((parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp() * 1000)


def media_path(message_id: int, value: str) -> str:
    """A media path of the export, refused when it would leave the export's folder."""
    path = PurePosixPath(value.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or re.match(r"^[A-Za-z]:", value) or not path.parts:
        raise ExportError(f"message {message_id}: the media path {value[:200]!r} leaves the export's folder")
    return str(path)


def _poll(message_id: int, raw: object) -> ExportPoll:
    if not isinstance(raw, dict) or not isinstance(raw.get("question"), str):
        raise ExportError(f"message {message_id}: 'poll' should be an object with a 'question'")
    answers = raw.get("answers")
    if not isinstance(answers, list):
        raise ExportError(f"message {message_id}: the poll's 'answers' should be a list")
    parsed: list[PollAnswer] = []
    for answer in answers:
        if not isinstance(answer, dict) or not isinstance(answer.get("text"), str):
            raise ExportError(f"message {message_id}: a poll answer should be an object with a 'text'")
        voters = answer.get("voters", 0)
        parsed.append(PollAnswer(answer["text"], voters if isinstance(voters, int) else 0))
    total = raw.get("total_voters", 0)
    return ExportPoll(raw["question"], raw.get("closed") is True, total if isinstance(total, int) else 0, tuple(parsed))


def _same_chat(peer: object, chat_id: int | None) -> bool:
    """Whether `reply_to_peer_id` (Telegram Desktop writes `channel<id>`; a bare or `-100` id is
    taken too) names the exported channel."""
    if chat_id is None or isinstance(peer, bool) or not isinstance(peer, int | str):
        return False
    return str(peer) in (f"channel{chat_id}", str(chat_id), f"-100{chat_id}")


def parse_message(raw: object, after: int | None = None, chat_id: int | None = None) -> ExportMessage:
    """One message of `messages`, checked; `after`: the id of the message before it (for errors);
    `chat_id`: the exported channel's id (a reply to another chat's message is not a reply here)."""
    where = f"the message after id {after}" if after is not None else "the first message"
    if not isinstance(raw, dict):
        raise ExportError(f"{where} should be an object, not {_kind(raw)}")
    message_id = raw.get("id")
    if isinstance(message_id, bool) or not isinstance(message_id, int):
        raise ExportError(f"{where}: 'id' should be a whole number, not {_kind(message_id)}")
    kind = _str(message_id, raw, "type") or "message"
    if kind == UNSUPPORTED:  # Telegram Desktop writes nothing else of it, not even a date
        return ExportMessage(id=message_id, type=UNSUPPORTED, date=_time(message_id, raw, "date") or 0)
    date = _time(message_id, raw, "date")
    if date is None:
        raise ExportError(f"message {message_id}: it has no 'date'")
    entities = parse_entities(message_id, raw.get("text", ""), raw.get("text_entities"))
    photo = _str(message_id, raw, "photo")
    file = _str(message_id, raw, "file")
    missing = None
    for value in (photo, file):
        if value is not None and value.startswith(NOT_INCLUDED_PREFIX):
            missing = value
    if photo is not None and photo == missing:
        photo = None
    if file is not None and file == missing:
        file = None
    poll = _poll(message_id, raw["poll"]) if raw.get("poll") is not None else None
    forwarded = raw.get("forwarded_from")
    reply_to = _int(message_id, raw, "reply_to_message_id")
    peer = raw.get("reply_to_peer_id")
    elsewhere = reply_to is not None and peer is not None and not _same_chat(peer, chat_id)
    return ExportMessage(
        id=message_id,
        type=kind,
        date=date,
        entities=entities,
        edited=_time(message_id, raw, "edited"),
        reply_to=None if elsewhere else reply_to,
        reply_elsewhere=elsewhere,
        forwarded_from=forwarded if isinstance(forwarded, str) else None,
        author=_str(message_id, raw, "author"),
        photo=media_path(message_id, photo) if photo else None,
        file=media_path(message_id, file) if file else None,
        missing=missing,
        media_type=_str(message_id, raw, "media_type"),
        mime_type=_str(message_id, raw, "mime_type"),
        file_name=_str(message_id, raw, "file_name"),
        width=_int(message_id, raw, "width"),
        height=_int(message_id, raw, "height"),
        duration=_int(message_id, raw, "duration_seconds"),
        sticker_emoji=_str(message_id, raw, "sticker_emoji"),
        poll=poll,
        action=_str(message_id, raw, "action") if kind == "service" else None,
        action_target=_int(message_id, raw, "message_id") if kind == "service" else None,
        title=_str(message_id, raw, "title") if kind == "service" else None,
        has_reactions=bool(raw.get("reactions")),
    )


class _EndsEarly(json.JSONDecodeError):
    """The file ends inside a value: it was cut short (a copy or a download stopped early)."""


class _TooLarge(ExportError):
    """A value runs on for longer than any message can be: the JSON is broken."""


class _NotText(ExportError):
    """The file is not UTF-8 text (`where`: after which message, when that is known)."""

    def __init__(self, detail: str, where: str = "") -> None:
        super().__init__(
            f"result.json is not UTF-8 text{' ' + where if where else ''} ({detail}): Telegram Desktop "
            "writes UTF-8; was the file saved again in another encoding?"
        )
        self.detail = detail


def _broken(exc: json.JSONDecodeError, read: int) -> bool:
    """Whether a decoding error is a mistake in the text itself: more text read after it cannot mend
    it. An unterminated string is named where it starts, so it may only be short of its end."""
    return not exc.msg.startswith("Unterminated string") and exc.pos < read - _DECODE_SLACK


class _Stream:
    """A JSON text read in chunks: values are decoded one at a time, the file never whole in memory."""

    def __init__(self, source: IO[str]) -> None:
        self._source = source
        self._buf = ""
        self._pos = 0
        self._eof = False
        self._decoder = json.JSONDecoder()

    def _fill(self) -> bool:
        if self._eof:
            return False
        # Read at least as much as is buffered: a long value is retried a logarithmic number of times.
        try:
            chunk = self._source.read(max(READ_CHUNK, len(self._buf) - self._pos))
        except UnicodeDecodeError as exc:
            raise _NotText(f"{exc.reason}: byte 0x{exc.object[exc.start]:02x}") from None
        if not chunk:
            self._eof = True
            return False
        self._buf = self._buf[self._pos :] + chunk
        self._pos = 0
        return True

    def peek(self) -> str:
        """The next character that is not whitespace ("" at the end of the file)."""
        while True:
            match = _WHITESPACE.match(self._buf, self._pos)
            self._pos = match.end() if match else self._pos
            if self._pos < len(self._buf):
                return self._buf[self._pos]
            if not self._fill():
                return ""

    def take(self, char: str) -> bool:
        if self.peek() == char:
            self._pos += 1
            return True
        return False

    def value(self, limit: int = MAX_MESSAGE_CHARS) -> Any:
        """The next JSON value. Raises json.JSONDecodeError where the text is broken, _EndsEarly where
        the file ends inside the value, _TooLarge when it runs on past `limit` characters."""
        self.peek()
        while True:
            try:
                value, end = self._decoder.raw_decode(self._buf, self._pos)
            except json.JSONDecodeError as exc:
                if _broken(exc, len(self._buf)):
                    raise
                if len(self._buf) - self._pos > limit:
                    raise _TooLarge(
                        f"a value runs on for more than {limit:,} characters, longer than any message"
                    ) from None
                if not self._fill():
                    raise _EndsEarly(exc.msg, exc.doc, exc.pos) from None
                continue
            if end == len(self._buf) and not self._eof and self._fill():
                continue  # a number may go on in the next chunk
            self._pos = end
            return value


def read_export(source: IO[str]) -> tuple[ExportHeader, Iterator[ExportMessage]]:
    """The export's header and its messages, checked one by one as they are read.

    Refuses (ExportError) an export of anything but a channel, one without `messages`, a file that is
    not UTF-8, and JSON that is broken or ends early, naming the last message read well."""
    stream = _Stream(source)
    header: dict[str, Any] = {}
    try:
        if not stream.take("{"):
            raise ExportError("result.json is not a JSON object (is this Telegram's JSON export?)")
        while True:
            if stream.take("}"):
                raise ExportError(
                    "result.json has no 'messages': export one channel's history (a whole account's "
                    "export is not one channel)"
                )
            key = stream.value()
            if not isinstance(key, str) or not stream.take(":"):
                raise ExportError("result.json is not valid JSON near its start")
            if key == "messages":
                break
            header[key] = stream.value()
            stream.take(",")
    except json.JSONDecodeError as exc:
        raise ExportError(f"result.json is not valid JSON near its start ({exc.msg})") from None
    except _TooLarge as exc:
        raise ExportError(f"result.json is not valid JSON near its start: {exc}") from None
    parsed = _header(header)
    if not stream.take("["):
        raise ExportError("result.json: 'messages' should be a list")
    return parsed, _messages(stream, parsed.id)


def _header(raw: dict[str, Any]) -> ExportHeader:
    kind, name, chat_id = raw.get("type"), raw.get("name"), raw.get("id")
    if "chats" in raw or "personal_information" in raw:
        raise ExportError("this is a whole account's export; export one channel's history instead")
    if kind not in CHANNEL_TYPES:
        raise ExportError(
            f"this export is of a {kind if isinstance(kind, str) else 'chat of unknown type'}, not a channel "
            f"(its 'type' should be one of {', '.join(CHANNEL_TYPES)})"
        )
    if not isinstance(chat_id, int) or isinstance(chat_id, bool):
        raise ExportError("result.json: the channel's 'id' should be a whole number")
    about = raw.get("about")
    return ExportHeader(name if isinstance(name, str) else "", kind, chat_id, about if isinstance(about, str) else None)


def _messages(stream: _Stream, chat_id: int) -> Iterator[ExportMessage]:
    last: int | None = None

    def where() -> str:
        return f"after message {last}" if last is not None else "before its first message"

    try:
        while True:
            try:
                if stream.take("]"):
                    return
                raw = stream.value()
            except _EndsEarly as exc:
                raise ExportError(f"result.json ends {where()} ({exc.msg})") from None
            except json.JSONDecodeError as exc:
                raise ExportError(f"result.json is broken {where()} ({exc.msg})") from None
            except _TooLarge as exc:
                raise ExportError(f"result.json is broken {where()}: {exc}") from None
            message = parse_message(raw, last, chat_id)
            last = message.id
            yield message
            if not stream.take(","):
                after = stream.peek()
                if after == "":
                    raise ExportError(f"result.json ends {where()} (the list of messages is not closed)")
                if after != "]":
                    raise ExportError(f"result.json is broken {where()} (expected ',' or ']')")
    except _NotText as exc:
        raise _NotText(exc.detail, where()) from None
