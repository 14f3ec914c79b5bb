"""A Telegram Desktop channel export, built by hand in Telegram's machine-readable JSON format.

`build_export(folder, posts=N)` writes `result.json` and media folders the way Telegram Desktop does
("Export chat history", format "Machine-readable JSON"): `text` as a string or a list of strings and
entity objects, `text_entities` beside it, dates as local strings with `date_unixtime`, media paths
relative to the folder (or Telegram's note when a file was left out), a channel's service messages
named as a group's (`edit_group_photo`, `edit_group_title`), a message Telegram could not export as
`{"id": N, "type": "unsupported"}`, a reply to another chat's message with its `reply_to_peer_id`.
What it holds is returned as an `Expected` for the tests to compare with what readers see.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

CHAT_ID = 1987654321
CHANNEL_NAME = "Kanal Import Test"
START = 1_600_000_000  # 2020-09-13, seconds
NOT_INCLUDED = "(File not included. Change data exporting settings to download.)"


def png(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    """A tiny valid PNG of one colour."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + bytes(colour) * width
    raw = zlib.compress(row * height)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def _entities(parts: list[str | dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "plain", "text": p} if isinstance(p, str) else p for p in parts]


# Every entity type Telegram Desktop writes, in one message.
RICH_TEXT: list[str | dict[str, Any]] = [
    "Start ",
    {"type": "bold", "text": "bold"},
    " ",
    {"type": "italic", "text": "italic"},
    " ",
    {"type": "underline", "text": "under"},
    " ",
    {"type": "strikethrough", "text": "struck"},
    " ",
    {"type": "code", "text": "x < y"},
    "\n",
    {"type": "pre", "text": "print('hi')\n", "language": "python"},
    {"type": "link", "text": "https://example.org/a?b=1&c=2"},
    " ",
    {"type": "text_link", "text": "docs", "href": "https://example.org/docs"},
    " ",
    {"type": "text_link", "text": "bad", "href": "javascript:alert(1)"},
    " ",
    {"type": "mention", "text": "@someone"},
    " ",
    {"type": "mention_name", "text": "Ali", "user_id": 42},
    " ",
    {"type": "hashtag", "text": "#news"},
    " ",
    {"type": "cashtag", "text": "$USD"},
    " ",
    {"type": "bot_command", "text": "/start"},
    " ",
    {"type": "email", "text": "a@example.org"},
    " ",
    {"type": "phone", "text": "+98 21 1234"},
    " ",
    {"type": "spoiler", "text": "secret"},
    " ",
    {"type": "custom_emoji", "text": "🔥", "document_id": "5368324170671202286"},
    "\n",
    {"type": "blockquote", "text": "quoted <b>not bold</b>"},
]
RICH_HTML = (
    "Start <strong>bold</strong> <em>italic</em> <u>under</u> <del>struck</del> <code>x &lt; y</code><br>"
    '<pre><code class="language-python">print(\'hi\')\n</code></pre>'
    '<a href="https://example.org/a?b=1&amp;c=2">https://example.org/a?b=1&amp;c=2</a> '
    '<a href="https://example.org/docs">docs</a> bad @someone Ali #news $USD /start '
    '<a href="mailto:a@example.org">a@example.org</a> +98 21 1234 <span data-mx-spoiler>secret</span> 🔥<br>'
    "<blockquote>quoted &lt;b&gt;not bold&lt;/b&gt;</blockquote>"
)
PERSIAN = "این یک متن فارسی با نیم‌فاصله است: می‌خواهم Kanal را امتحان کنم (version 2.0)"


@dataclass
class Expected:
    """What the export holds, for the tests to compare."""

    folder: Path
    posts: list[int] = field(default_factory=list)  # ids of messages that become posts, in order
    dates: dict[int, int] = field(default_factory=dict)  # id → milliseconds
    bodies: dict[int, str] = field(default_factory=dict)  # id → a text the post's body contains
    photos: dict[int, bytes] = field(default_factory=dict)  # id → the image's bytes
    files: dict[int, bytes] = field(default_factory=dict)
    replies: dict[int, int] = field(default_factory=dict)  # id → the id it answers
    rich: int = 0
    persian: int = 0
    edited: int = 0
    poll: int = 0
    forwarded: int = 0
    missing: int = 0  # a photo left out, with a caption: imported without it
    pinned: int = 0  # the message a service message pins
    photo_only: int = 0
    unsupported: int = 0  # a message Telegram could not export: skipped
    reply_elsewhere: int = 0  # a reply to another chat's message (its id is also one of this channel's)


def _message(message_id: int, when: int, parts: list[str | dict[str, Any]] | str, **extra: Any) -> dict[str, Any]:
    text: Any = parts if isinstance(parts, str) else list(parts)
    if isinstance(text, list) and all(isinstance(p, str) for p in text):
        text = "".join(text)
    entities = _entities([parts] if isinstance(parts, str) else parts) if parts else []
    local = datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return {
        "id": message_id,
        "type": "message",
        "date": local,
        "date_unixtime": str(when),
        "from": CHANNEL_NAME,
        "from_id": f"channel{CHAT_ID}",
        **extra,
        "text": text,
        "text_entities": entities,
    }


def build_export(folder: Path, posts: int = 300, *, name: str = CHANNEL_NAME) -> Expected:
    """Write the export into `folder`: `posts` ordinary messages around the special ones."""
    (folder / "photos").mkdir(parents=True, exist_ok=True)
    (folder / "files").mkdir(exist_ok=True)
    expected = Expected(folder)
    messages: list[dict[str, Any]] = []
    next_id = 1
    when = START

    def add(raw: dict[str, Any], *, post: bool = True, body: str | None = None) -> int:
        nonlocal next_id, when
        messages.append(raw)
        if post:
            expected.posts.append(raw["id"])
            expected.dates[raw["id"]] = int(raw["date_unixtime"]) * 1000
            if body is not None:
                expected.bodies[raw["id"]] = body
        next_id += 1
        when += 3600
        return int(raw["id"])

    add(
        {
            "id": next_id, "type": "service", "date": "2020-09-13T12:26:40", "date_unixtime": str(when),
            "actor": name, "actor_id": f"channel{CHAT_ID}", "action": "create_channel", "title": name,
            "text": "", "text_entities": [],
        },
        post=False,
    )
    photo = png(4, 3, (200, 30, 30))
    (folder / "photos" / "channel.png").write_bytes(photo)
    add(
        {
            "id": next_id, "type": "service", "date": "2020-09-13T13:26:40", "date_unixtime": str(when),
            "actor": name, "actor_id": f"channel{CHAT_ID}", "action": "edit_group_photo",
            "photo": "photos/channel.png", "width": 4, "height": 3, "text": "", "text_entities": [],
        },
        post=False,
    )
    expected.rich = add(_message(next_id, when, RICH_TEXT), body="Start bold")
    expected.persian = add(_message(next_id, when, PERSIAN), body=PERSIAN)
    image = png(8, 6, (10, 120, 200))
    (folder / "photos" / "photo_1@13-09-2020.png").write_bytes(image)
    first_photo = add(
        _message(next_id, when, ["A photo with ", {"type": "bold", "text": "a caption"}],
                 photo="photos/photo_1@13-09-2020.png", width=8, height=6),
        body="A photo with a caption",
    )
    expected.photos[first_photo] = image
    bare = png(5, 5, (0, 200, 0))
    (folder / "photos" / "photo_2@13-09-2020.png").write_bytes(bare)
    expected.photo_only = add(
        _message(next_id, when, "", photo="photos/photo_2@13-09-2020.png", width=5, height=5)
    )
    expected.photos[expected.photo_only] = bare
    document = b"%PDF-1.4\n% a tiny file\n"
    (folder / "files" / "report.pdf").write_bytes(document)
    doc = add(
        _message(next_id, when, "The report", file="files/report.pdf", file_name="report.pdf",
                 mime_type="application/pdf"),
        body="The report",
    )
    expected.files[doc] = document
    expected.missing = add(
        _message(next_id, when, "A video that was too large to export", file=NOT_INCLUDED,
                 media_type="video_file", mime_type="video/mp4", duration_seconds=300, width=1280, height=720),
        body="A video that was too large",
    )
    add(_message(next_id, when, "", photo=NOT_INCLUDED, width=10, height=10), post=False)  # nothing left
    expected.edited = add(
        _message(next_id, when, "Corrected text", edited="2020-09-14T10:00:00", edited_unixtime=str(START + 86400)),
        body="Corrected text",
    )
    target = expected.rich
    reply = add(_message(next_id, when, "An answer to the rich post", reply_to_message_id=target),
                body="An answer to the rich post")
    expected.replies[reply] = target
    expected.forwarded = add(
        _message(next_id, when, "Shared from elsewhere", forwarded_from="Other Channel"),
        body="Forwarded from Other Channel",
    )
    expected.poll = add(
        _message(
            next_id, when, "",
            poll={
                "question": "Tea or coffee?", "closed": True, "total_voters": 7,
                "answers": [{"text": "Tea", "voters": 4, "chosen": False},
                            {"text": "Coffee", "voters": 3, "chosen": False}],
            },
        )
    )
    expected.pinned = expected.persian
    add(
        {
            "id": next_id, "type": "service", "date": "2020-09-14T00:00:00", "date_unixtime": str(when),
            "actor": name, "actor_id": f"channel{CHAT_ID}", "action": "pin_message",
            "message_id": expected.persian, "text": "", "text_entities": [],
        },
        post=False,
    )
    add(
        {
            "id": next_id, "type": "service", "date": "2020-09-14T01:00:00", "date_unixtime": str(when),
            "actor": name, "actor_id": f"channel{CHAT_ID}", "action": "edit_group_title",
            "title": name, "text": "", "text_entities": [],
        },
        post=False,
    )
    reacted = _message(next_id, when, "A post with reactions")
    reacted["reactions"] = [{"type": "emoji", "count": 12, "emoji": "👍"}]
    add(reacted, body="A post with reactions")
    expected.unsupported = add({"id": next_id, "type": "unsupported"}, post=False)
    expected.reply_elsewhere = add(
        _message(next_id, when, "About their post", reply_to_message_id=target, reply_to_peer_id="channel1111"),
        body="In reply to a message in another chat",
    )
    for n in range(posts):
        parts: list[str | dict[str, Any]] = [f"Post {n} ", {"type": "italic", "text": "of many"}]
        if n % 3 == 0:
            parts = [f"پست {n} با متن راست‌به‌چپ و LTR word "]
        add(_message(next_id, when, parts), body=f"{n} ")
    result = {"name": name, "type": "public_channel", "id": CHAT_ID, "messages": messages}
    (folder / "result.json").write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")
    return expected
