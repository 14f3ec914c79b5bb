"""Telegram's export format, pure: streamed reading, checks naming the message, entities ⇄ Matrix HTML,
and what each kind of message becomes in a channel."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from bridge.matrix.imported import IMPORTED_KEY, POLL_END, POLL_START, plan_message, with_media
from bridge.matrix.polls import PollTally, parse_poll
from bridge.matrix.relay import REF_PLACEHOLDER, SOURCE_KEY
from bridge.text import telegram
from bridge.text.names import InvalidTitle, clean_title, salvage_title
from bridge.text.telegram import (
    Entity,
    ExportError,
    entities_from_html,
    parse_entities,
    parse_message,
    read_export,
    render_entities,
)
from bridge.transfer.export import imported_poll, poll_json
from bridge.transfer.telegram_import import check_export
from tests.telegram_export import RICH_HTML, RICH_TEXT, build_export


def _read(text: str) -> tuple[telegram.ExportHeader, list[telegram.ExportMessage]]:
    header, messages = read_export(io.StringIO(text))
    return header, list(messages)


def _message(**fields: Any) -> telegram.ExportMessage:
    raw = {"id": 7, "type": "message", "date": "2021-01-02T03:04:05", "date_unixtime": "1609556645", "text": ""}
    return parse_message({**raw, **fields})


def test_every_entity_type_becomes_matrix_html_and_a_plain_body() -> None:
    plain, rich = render_entities(parse_entities(1, RICH_TEXT))
    assert rich == RICH_HTML
    assert plain.startswith("Start bold italic under struck x < y\nprint('hi')\n")
    assert "docs (https://example.org/docs)" in plain  # a text link's target, for plain clients
    assert "javascript" not in rich and "javascript" not in plain  # an unsafe link stays text


def test_text_entities_win_over_text_and_strings_are_plain() -> None:
    entities = parse_entities(1, "ignored", [{"type": "bold", "text": "b"}])
    assert entities == [Entity("bold", "b")]
    assert parse_entities(1, ["a", {"type": "italic", "text": "i"}]) == [Entity("plain", "a"), Entity("italic", "i")]


def test_html_back_to_entities_round_trips_what_kanal_writes() -> None:
    entities = parse_entities(1, RICH_TEXT)
    again = entities_from_html(render_entities(entities)[1])
    assert render_entities(again)[1] == RICH_HTML


def test_the_export_is_read_in_small_pieces(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    expected = build_export(tmp_path, posts=30)
    monkeypatch.setattr(telegram, "READ_CHUNK", 5)
    with (tmp_path / "result.json").open(encoding="utf-8") as source:
        header, messages = read_export(source)
        ids = [m.id for m in messages if m.type == "message"]
    assert header.type == "public_channel" and header.name
    assert [i for i in ids if i in set(expected.posts)] == expected.posts


def test_a_truncated_export_names_the_last_message_read() -> None:
    text = json.dumps({"name": "c", "type": "public_channel", "id": 1, "messages": [
        {"id": 1, "type": "message", "date_unixtime": "1", "text": "a"},
        {"id": 2, "type": "message", "date_unixtime": "2", "text": "b"},
    ]})
    with pytest.raises(ExportError, match="ends after message 1"):
        _read(text[: text.rindex('"b"')])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"width": "wide"}, "message 7: 'width' should be a whole number, not a string"),
        ({"text": 5}, "message 7: 'text' should be a string or a list, not a number"),
        ({"photo": "../outside.jpg"}, "message 7: the media path '../outside.jpg' leaves the export's folder"),
        ({"photo": "/etc/passwd"}, "message 7: the media path '/etc/passwd' leaves"),
        ({"reply_to_message_id": "3"}, "message 7: 'reply_to_message_id' should be a whole number"),
        ({"poll": {"question": "q", "answers": "yes"}}, "message 7: the poll's 'answers' should be a list"),
    ],
)
def test_wrong_types_and_escaping_paths_name_the_message(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ExportError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _message(**change)


def test_only_a_channel_export_is_taken() -> None:
    with pytest.raises(ExportError, match="personal_chat, not a channel"):
        _read(json.dumps({"name": "x", "type": "personal_chat", "id": 1, "messages": []}))
    with pytest.raises(ExportError, match="whole account's export"):
        _read(json.dumps({"personal_information": {}, "chats": {"list": []}}))
    with pytest.raises(ExportError, match="not a JSON object"):
        _read("[1, 2]")


def _plan(**fields: Any) -> Any:
    return plan_message(_message(**fields), chat_id=99, chat_name="Old", source="telegram:1:99:7", lang="en")


def test_a_photo_with_a_caption_is_an_image_with_its_caption_msc2530() -> None:
    planned = _plan(photo="photos/p.jpg", width=8, height=6, text=["see ", {"type": "bold", "text": "this"}])
    assert planned.media.path == "photos/p.jpg" and planned.media.mimetype == "image/jpeg"
    content = with_media(planned.content, "mxc://hs/abc", 123)
    assert content["msgtype"] == "m.image" and content["url"] == "mxc://hs/abc"
    assert content["info"] == {"mimetype": "image/jpeg", "w": 8, "h": 6, "size": 123}
    assert (content["body"], content["filename"]) == ("see this", "p.jpg")
    assert content["formatted_body"] == "see <strong>this</strong>"
    assert content[SOURCE_KEY] == "telegram:1:99:7"
    assert content[IMPORTED_KEY] == {
        "from": "telegram", "channel": "Old", "channel_id": 99, "message_id": 7, "date": 1609556645000
    }


@pytest.mark.parametrize(
    ("fields", "event_type", "msgtype"),
    [
        ({"file": "s.webp", "media_type": "sticker", "mime_type": "image/webp", "sticker_emoji": "😀"}, "m.sticker", None),
        ({"file": "a.mp4", "media_type": "animation", "mime_type": "video/mp4"}, "m.room.message", "m.video"),
        ({"file": "v.ogg", "media_type": "voice_message", "mime_type": "audio/ogg", "duration_seconds": 3}, "m.room.message", "m.audio"),
        ({"file": "s.mp3", "media_type": "audio_file", "mime_type": "audio/mpeg"}, "m.room.message", "m.audio"),
        ({"file": "v.mp4", "media_type": "video_file", "mime_type": "video/mp4"}, "m.room.message", "m.video"),
        ({"file": "x.zip", "mime_type": "application/zip"}, "m.room.message", "m.file"),
    ],
)
def test_media_become_the_nearest_matrix_type(fields: dict[str, Any], event_type: str, msgtype: str | None) -> None:
    planned = _plan(**fields)
    assert planned.event_type == event_type
    assert planned.content.get("msgtype") == msgtype
    if fields.get("media_type") == "voice_message":
        assert "org.matrix.msc3245.voice" in planned.content and planned.content["info"]["duration"] == 3000


def test_a_missing_file_is_reported_and_its_text_kept() -> None:
    planned = _plan(file=telegram.NOT_INCLUDED_PREFIX + "not included)", text="words")
    assert planned.media is None and planned.content["body"] == "words"
    assert planned.problem is not None and "message 7" in planned.problem
    nothing = _plan(photo=telegram.NOT_INCLUDED_PREFIX + "not included)")
    assert nothing.content is None and nothing.problem is not None


def test_a_closed_poll_has_its_totals_and_an_end() -> None:
    planned = _plan(poll={"question": "Q?", "closed": True, "total_voters": 3,
                          "answers": [{"text": "A", "voters": 2}, {"text": "B", "voters": 1}]})
    assert planned.event_type == POLL_START
    assert planned.content[POLL_START]["answers"][1] == {"id": "2", "org.matrix.msc1767.text": "B"}
    assert "(3 voters): A: 2, B: 1" in planned.content["org.matrix.msc1767.text"]
    assert planned.end is not None and POLL_END in planned.end
    assert planned.end["m.relates_to"] == {"rel_type": "m.reference", "event_id": REF_PLACEHOLDER}
    assert _plan(poll={"question": "Q?", "closed": False, "answers": []}).end is None


def test_edits_forwards_and_persian_notes() -> None:
    planned = _plan(text="fixed", edited_unixtime="1609560000", forwarded_from="Elsewhere")
    body = planned.content["body"]
    assert body.startswith("Forwarded from Elsewhere\n\nfixed") and "(edited 2021-01-02 04:00 UTC)" in body
    assert planned.content[IMPORTED_KEY]["edited"] == 1609560000000
    persian = plan_message(
        _message(text="نیم‌فاصله", edited_unixtime="1609560000"), chat_id=1, chat_name="c", source="s", lang="fa"
    )
    assert persian.content is not None
    assert "نیم\u200cفاصله" in persian.content["body"] and "ویرایش" in persian.content["body"]


def test_a_channels_photo_change_is_read_under_telegrams_own_names(tmp_path: Path) -> None:
    """Telegram Desktop writes a channel's photo change as `edit_group_photo` (no `_channel_` name)."""
    build_export(tmp_path, posts=3)
    result = tmp_path / "result.json"
    assert '"action": "edit_group_photo"' in result.read_text(encoding="utf-8")
    checked = check_export(tmp_path, max_media=1 << 20)
    assert checked.photo == "photos/channel.png"
    assert checked.service["edit_group_photo"] == 1 and checked.service["edit_group_title"] == 1

    data = json.loads(result.read_text(encoding="utf-8"))
    change = next(m for m in data["messages"] if m.get("action") == "edit_group_photo")
    change["action"] = "edit_channel_photo"  # the spelling taken before, kept as an alias
    removal = {**change, "id": data["messages"][-1]["id"] + 1, "action": "delete_group_photo"}
    removal.pop("photo")
    result.write_text(json.dumps(data), encoding="utf-8")
    assert check_export(tmp_path, max_media=1 << 20).photo == "photos/channel.png"
    data["messages"].append(removal)
    result.write_text(json.dumps(data), encoding="utf-8")
    assert check_export(tmp_path, max_media=1 << 20).photo is None


def test_a_message_telegram_could_not_export_is_skipped_and_reported() -> None:
    """Telegram Desktop writes such a message as its id and type only: no date, no text."""
    _header, messages = _read(json.dumps({"name": "c", "type": "public_channel", "id": 1, "messages": [
        {"id": 1, "type": "message", "date_unixtime": "1", "text": "a"},
        {"id": 2, "type": "unsupported"},
        {"id": 3, "type": "message", "date_unixtime": "3", "text": "c"},
    ]}))
    assert [(m.id, m.type) for m in messages] == [(1, "message"), (2, "unsupported"), (3, "message")]
    planned = plan_message(messages[1], chat_id=1, chat_name="c", source="telegram:1:1:2", lang="en")
    assert planned.content is None
    assert planned.problem == "message 2: skipped: Telegram could not export it"


def _export_text(count: int, *, text: str = "x") -> str:
    messages = [{"id": i, "type": "message", "date_unixtime": str(i), "text": text} for i in range(1, count + 1)]
    return json.dumps({"name": "c", "type": "public_channel", "id": 1, "messages": messages})


def test_a_broken_message_is_called_broken_and_named_however_much_follows() -> None:
    small = _export_text(20)
    at = small.index('"id": 12,')
    with pytest.raises(ExportError, match=r"result.json is broken after message 11 \(Expecting ',' delimiter\)"):
        _read(small[:at] + '"id": 12 "oops": 1,' + small[at + len('"id": 12,'):])

    # More than the reader ever holds for one message (MAX_MESSAGE_CHARS) follows the break.
    big = _export_text(50_000, text="x" * 100)
    assert len(big) - big.index('"id": 1000,') > 2 * telegram.MAX_MESSAGE_CHARS
    at = big.index('"id": 1000,')
    with pytest.raises(ExportError, match=r"result.json is broken after message 999 \(Expecting"):
        _read(big[:at] + '"id": 1000 "oops": 1,' + big[at + len('"id": 1000,'):])
    # A value that never ends (a quote lost, or a file cut inside a huge text) names its place too.
    with pytest.raises(ExportError, match=r"result\.json is broken after message 999: a value runs on"):
        _read(big[:at] + '"id": 1000, "text": "' + "y" * (telegram.MAX_MESSAGE_CHARS + 10))


def test_a_file_cut_anywhere_in_its_messages_ends_not_breaks(monkeypatch: pytest.MonkeyPatch) -> None:
    text = _export_text(3, text="é \\\" tru 1.5e3")
    text = text.replace('"text"', '"n": -1.5e3, "t": true, "z": null, "text"')
    monkeypatch.setattr(telegram, "READ_CHUNK", 7)
    first = text.index("[") + 1
    for cut in range(first, text.rindex("]")):
        with pytest.raises(ExportError, match=r"result\.json ends (after message|before its first)"):
            _read(text[:cut])


def test_an_export_that_is_not_utf8_is_refused_with_the_file_named(tmp_path: Path) -> None:
    result = tmp_path / "result.json"
    result.write_bytes(_export_text(3).replace('"x"', '"caf\u00e9"').encode("latin-1"))
    with pytest.raises(ExportError, match=r"^result.json is not UTF-8 text \(invalid continuation byte"):
        check_export(tmp_path, max_media=1 << 20)
    # Deep in a longer file, the error says how far the reading got.
    result.write_bytes(_export_text(5000).replace('"x"}]', '"caf\u00e9"}]').encode("latin-1"))
    with pytest.raises(ExportError, match=r"^result.json is not UTF-8 text after message 4\d\d\d \("):
        check_export(tmp_path, max_media=1 << 20)


def test_a_reply_to_another_chats_message_is_not_linked_to_this_channels() -> None:
    here = parse_message({"id": 9, "date_unixtime": "1", "text": "a", "reply_to_message_id": 3}, chat_id=55)
    assert (here.reply_to, here.reply_elsewhere) == (3, False)
    for peer in ("channel55", 55, "-10055"):  # this channel named as the peer: still a reply here
        raw = {"id": 9, "date_unixtime": "1", "text": "a", "reply_to_message_id": 3, "reply_to_peer_id": peer}
        assert parse_message(raw, chat_id=55).reply_to == 3
    raw = {"id": 9, "date_unixtime": "1", "text": "a", "reply_to_message_id": 3, "reply_to_peer_id": "channel77"}
    elsewhere = parse_message(raw, chat_id=55)
    assert (elsewhere.reply_to, elsewhere.reply_elsewhere) == (None, True)
    planned = plan_message(elsewhere, chat_id=55, chat_name="c", source="telegram:1:55:9", lang="en")
    assert planned.content is not None
    assert planned.content["body"] == "In reply to a message in another chat\n\na"
    assert "m.relates_to" not in planned.content


def test_an_imported_polls_telegram_counts_are_kept_and_exported_again() -> None:
    planned = _plan(poll={"question": "Q?", "closed": True, "total_voters": 3,
                          "answers": [{"text": "A", "voters": 2}, {"text": "B", "voters": 1}]})
    telegram_counts = planned.content[IMPORTED_KEY]["poll"]
    assert telegram_counts == {"closed": True, "total_voters": 3, "answers": [2, 1]}
    poll = parse_poll(planned.event_type, planned.content)
    assert poll is not None
    sent = {"content": planned.content}  # the outbox entry's payload, which keeps the marker
    # No votes in Matrix (a closed poll takes none): Telegram's counts, as the export had them.
    ended = PollTally(counts=(("1", 0), ("2", 0)), voters=0, ended=True)
    assert poll_json(poll, ended, imported_poll(sent)) == {
        "question": "Q?", "closed": True, "total_voters": 3,
        "answers": [{"text": "A", "voters": 2, "chosen": False}, {"text": "B", "voters": 1, "chosen": False}],
    }
    # An open poll voted on here as well: Matrix's voters are others than Telegram's, so they add up.
    voted = PollTally(counts=(("1", 0), ("2", 4)), voters=4, ended=False)
    exported = poll_json(poll, voted, imported_poll(sent))
    assert exported["total_voters"] == 7 and [a["voters"] for a in exported["answers"]] == [2, 5]
    assert not exported["closed"]
    # A poll made in Kanal: Matrix's counts only.
    assert poll_json(poll, voted, imported_poll({"content": {}}))["total_voters"] == 4


@pytest.mark.parametrize(
    ("name", "title"),
    [
        ("Plain name", "Plain name"),
        ("\u200fکانال\u200c‌ها\u200f خبری", "کانال\u200cها خبری"),  # RLM marks dropped, ZWNJ kept
        ("word " * 40, ("word " * 25).strip() + "…"),  # 200 characters: cut at a word
    ],
)
def test_a_name_from_elsewhere_becomes_a_title_kanal_takes(name: str, title: str) -> None:
    assert salvage_title(name, 128) == title
    assert clean_title(title, 128) == title


def test_a_name_of_nothing_but_controls_is_no_title() -> None:
    with pytest.raises(InvalidTitle):
        salvage_title("\u200f\u202e\u200e", 128)
