"""parse_event: the typed boundary between a transaction's raw JSON and the rest of Kanal."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appservice.events import MAX_ID_LENGTH, MAX_TYPE_LENGTH, Event, EventParseError, parse_event
from appservice.ids import EventID, RoomID, UserID


def raw_event(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": "$abc:example.org",
        "room_id": "!room:example.org",
        "sender": "@alice:example.org",
        "type": "m.room.message",
        "content": {"msgtype": "m.text", "body": "hello"},
        "origin_server_ts": 1_700_000_000_000,
    }
    for key, value in overrides.items():
        if value is _MISSING:
            event.pop(key, None)
        else:
            event[key] = value
    return event


_MISSING = object()


# --- valid events ---------------------------------------------------------------------------------


def test_parses_a_message_event() -> None:
    event = parse_event(raw_event(unsigned={"age": 12}))

    assert event == Event(
        event_id=EventID("$abc:example.org"),
        room_id=RoomID("!room:example.org"),
        sender=UserID("@alice:example.org"),
        type="m.room.message",
        content={"msgtype": "m.text", "body": "hello"},
        origin_server_ts=1_700_000_000_000,
        state_key=None,
        redacts=None,
        unsigned={"age": 12},
    )
    assert not event.is_state


def test_parses_a_state_event_with_an_empty_state_key() -> None:
    event = parse_event(raw_event(type="m.room.name", content={"name": "News"}, state_key=""))

    assert event.state_key == ""
    assert event.is_state


def test_optional_keys_take_their_defaults() -> None:
    event = parse_event(raw_event(origin_server_ts=_MISSING))

    assert event.origin_server_ts == 0
    assert event.state_key is None
    assert event.redacts is None
    assert event.unsigned == {}


def test_unsigned_that_is_not_an_object_is_dropped_rather_than_refused() -> None:
    assert parse_event(raw_event(unsigned=["not", "an", "object"])).unsigned == {}


def test_unknown_top_level_keys_are_ignored() -> None:
    event = parse_event(raw_event(age=5, hashes={"sha256": "x"}, depth=3))

    assert event.event_id == "$abc:example.org"


def test_identifiers_at_the_length_limit_are_accepted() -> None:
    event_id = "$" + "e" * (MAX_ID_LENGTH - 1)
    event_type = "t" * MAX_TYPE_LENGTH

    event = parse_event(raw_event(event_id=event_id, type=event_type))

    assert event.event_id == event_id
    assert event.type == event_type


# --- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [None, [], "event", 3, 1.5, True])
def test_non_objects_are_refused(raw: Any) -> None:
    with pytest.raises(EventParseError, match="JSON object"):
        parse_event(raw)


@pytest.mark.parametrize("key", ["event_id", "room_id", "sender", "type", "content"])
def test_each_required_key_missing_is_refused_and_named(key: str) -> None:
    with pytest.raises(EventParseError, match=f"'{key}'"):
        parse_event(raw_event(**{key: _MISSING}))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("event_id", 7),
        ("event_id", "abc:example.org"),  # no $ sigil
        ("event_id", "!abc:example.org"),  # wrong sigil
        ("event_id", "$" + "e" * MAX_ID_LENGTH),  # one too long
        ("room_id", None),
        ("room_id", "#alias:example.org"),
        ("room_id", ["!room:example.org"]),
        ("sender", {"user": "@alice:example.org"}),
        ("sender", "alice"),
        ("sender", "@" + "a" * MAX_ID_LENGTH),
        ("type", ""),
        ("type", 1),
        ("type", None),
        ("type", "t" * (MAX_TYPE_LENGTH + 1)),
        ("content", None),
        ("content", "body"),
        ("content", ["body"]),
        ("state_key", 0),
        ("state_key", False),
        ("state_key", {"": ""}),
        ("origin_server_ts", "1700000000000"),
        ("origin_server_ts", 1.5),
        ("origin_server_ts", True),
        ("origin_server_ts", None),
        ("redacts", 5),
        ("redacts", {"event_id": "$x"}),
    ],
)
def test_each_key_of_the_wrong_type_is_refused_and_named(key: str, value: Any) -> None:
    with pytest.raises(EventParseError, match=f"'{key}'"):
        parse_event(raw_event(**{key: value}))


def test_event_parse_error_is_a_value_error() -> None:
    # Callers that only know ValueError (e.g. generic JSON handling) still catch it.
    assert issubclass(EventParseError, ValueError)


# --- redactions -----------------------------------------------------------------------------------


def test_redaction_target_from_the_top_level_redacts_key() -> None:
    event = parse_event(raw_event(type="m.room.redaction", content={}, redacts="$target"))

    assert event.redacts == "$target"
    assert event.redacted_event == "$target"


def test_redaction_target_from_content_in_room_version_11() -> None:
    event = parse_event(raw_event(type="m.room.redaction", content={"redacts": "$target"}))

    assert event.redacts is None
    assert event.redacted_event == "$target"


def test_top_level_redacts_wins_over_content() -> None:
    event = parse_event(raw_event(type="m.room.redaction", content={"redacts": "$inner"}, redacts="$outer"))

    assert event.redacted_event == "$outer"


def test_empty_top_level_redacts_falls_back_to_content() -> None:
    event = parse_event(raw_event(type="m.room.redaction", content={"redacts": "$inner"}, redacts=""))

    assert event.redacts is None
    assert event.redacted_event == "$inner"


@pytest.mark.parametrize("content", [{}, {"redacts": 5}, {"redacts": None}, {"redacts": ["$x"]}])
def test_redaction_without_a_usable_target(content: dict[str, Any]) -> None:
    event = parse_event(raw_event(type="m.room.redaction", content=content))

    assert event.redacted_event is None


# --- relation helpers -----------------------------------------------------------------------------


def test_edit_relation_helpers() -> None:
    content = {
        "msgtype": "m.text",
        "body": "* fixed",
        "m.new_content": {"msgtype": "m.text", "body": "fixed"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": "$original"},
    }
    event = parse_event(raw_event(content=content))

    assert event.relates_to == {"rel_type": "m.replace", "event_id": "$original"}
    assert event.rel_type == "m.replace"
    assert event.relates_to_event == "$original"
    assert event.reply_to is None


def test_reply_relation_helpers() -> None:
    content = {"msgtype": "m.text", "body": "yes", "m.relates_to": {"m.in_reply_to": {"event_id": "$q"}}}
    event = parse_event(raw_event(content=content))

    assert event.reply_to == "$q"
    assert event.rel_type is None
    assert event.relates_to_event is None


def test_thread_reply_has_both_relation_and_reply_target() -> None:
    content = {
        "body": "in thread",
        "m.relates_to": {
            "rel_type": "m.thread",
            "event_id": "$root",
            "is_falling_back": True,
            "m.in_reply_to": {"event_id": "$last"},
        },
    }
    event = parse_event(raw_event(content=content))

    assert event.rel_type == "m.thread"
    assert event.relates_to_event == "$root"
    assert event.reply_to == "$last"


@pytest.mark.parametrize(
    "relates_to",
    [
        None,
        "m.replace",
        ["$x"],
        {"rel_type": 5, "event_id": 6},
        {"m.in_reply_to": "$x"},
        {"m.in_reply_to": {"event_id": 9}},
        {"m.in_reply_to": None},
    ],
)
def test_malformed_relations_read_as_absent(relates_to: Any) -> None:
    event = parse_event(raw_event(content={"body": "x", "m.relates_to": relates_to}))

    assert event.rel_type is None
    assert event.relates_to_event is None
    assert event.reply_to is None
    if not isinstance(relates_to, dict):
        assert event.relates_to == {}


def test_event_is_frozen() -> None:
    event = parse_event(raw_event())

    with pytest.raises(dataclasses.FrozenInstanceError):
        event.type = "m.room.member"  # type: ignore[misc]


# --- properties -----------------------------------------------------------------------------------

# Every code point, lone surrogates included (a Python str can hold them even if UTF-8 cannot).
_ANY_CHAR = st.one_of(st.characters(), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF))
_TEXT = st.text(alphabet=_ANY_CHAR, max_size=40)
_HUGE_TEXT = st.builds(lambda ch, n: ch * n, _ANY_CHAR, st.integers(min_value=256, max_value=200_000))
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**100), max_value=2**100),
    st.floats(allow_nan=False),
    _TEXT,
    _HUGE_TEXT,
)


def _json(scalars: st.SearchStrategy[Any], keys: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=5), st.dictionaries(keys, children, max_size=5)
        ),
        max_leaves=30,
    )


JSON = _json(_SCALARS, st.one_of(_TEXT, _HUGE_TEXT))
# Without the huge strings: what a homeserver really sends, cheap enough for the round trip.
PLAIN_JSON = _json(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), _TEXT), _TEXT
)


def _nest(value: Any, depth: int, as_list: bool) -> Any:
    for _ in range(depth):
        value = [value] if as_list else {"k": value}
    return value


DEEP_JSON = st.builds(_nest, JSON, st.integers(min_value=50, max_value=3000), st.booleans())

_EVENT_KEYS = st.sampled_from(
    [
        "event_id",
        "room_id",
        "sender",
        "type",
        "content",
        "state_key",
        "origin_server_ts",
        "redacts",
        "unsigned",
    ]
)
_ID_LIKE = st.builds(lambda sigil, rest: sigil + rest, st.sampled_from(["$", "!", "@", "#", ""]), _TEXT)

# Objects that look like events, with any subset of the keys holding any JSON value, so the parser
# gets past its first checks often.
EVENT_LIKE = st.dictionaries(st.one_of(_EVENT_KEYS, _TEXT), st.one_of(JSON, DEEP_JSON, _ID_LIKE), max_size=12)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example])
@given(st.one_of(JSON, DEEP_JSON, EVENT_LIKE))
def test_arbitrary_json_only_ever_raises_event_parse_error(raw: Any) -> None:
    try:
        event = parse_event(raw)
    except EventParseError:
        return
    assert isinstance(event, Event)
    assert isinstance(raw, dict)


# What a database text column can store: no NUL, no lone surrogate (ids with those are refused).
_STORABLE_CHAR = st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00")


def _id(sigil: str) -> st.SearchStrategy[str]:
    return st.text(alphabet=_STORABLE_CHAR, max_size=MAX_ID_LENGTH - 1).map(lambda s: sigil + s)


VALID_EVENT = st.fixed_dictionaries(
    {
        "event_id": _id("$"),
        "room_id": _id("!"),
        "sender": _id("@"),
        "type": st.text(alphabet=_ANY_CHAR, min_size=1, max_size=MAX_TYPE_LENGTH),
        "content": st.dictionaries(_TEXT, PLAIN_JSON, max_size=6),
    },
    optional={
        "origin_server_ts": st.integers(),
        "state_key": _TEXT,
        "redacts": st.text(alphabet=_STORABLE_CHAR, max_size=40),  # an id: unstorable ones are refused
        "unsigned": st.dictionaries(_TEXT, PLAIN_JSON, max_size=4),
    },
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example])
@given(VALID_EVENT)
def test_valid_events_round_trip_through_asdict(raw: dict[str, Any]) -> None:
    event = parse_event(raw)

    assert event.event_id == raw["event_id"]
    assert event.room_id == raw["room_id"]
    assert event.sender == raw["sender"]
    assert event.type == raw["type"]
    assert event.content == raw["content"]
    assert event.state_key == raw.get("state_key")
    assert event.origin_server_ts == raw.get("origin_server_ts", 0)
    assert parse_event(dataclasses.asdict(event)) == event


@pytest.mark.parametrize("key", ["event_id", "room_id", "sender"])
@pytest.mark.parametrize("bad", ["\x00", "\ud800"])
def test_ids_no_database_can_store_are_refused(key: str, bad: str) -> None:
    raw: dict[str, Any] = {
        "event_id": "$e",
        "room_id": "!r:x",
        "sender": "@u:x",
        "type": "m.room.message",
        "content": {},
    }
    raw[key] = raw[key] + bad
    with pytest.raises(EventParseError, match=key):
        parse_event(raw)


def test_an_event_as_a_dict_reads_back_as_itself() -> None:
    raw = {
        "event_id": "$a",
        "room_id": "!r:x",
        "sender": "@a:x",
        "type": "m.room.message",
        "origin_server_ts": 5,
        "content": {"body": "x", "m.relates_to": {"rel_type": "m.thread", "event_id": "$t"}},
        "unsigned": {"age": 1},
    }
    for extra in ({}, {"state_key": "", "redacts": "$b"}):
        event = parse_event({**raw, **extra})
        assert event.as_dict() == dataclasses.asdict(event)
        assert parse_event(event.as_dict()) == event
