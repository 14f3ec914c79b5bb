"""Parsing the events inside a transaction into typed values; raw dicts stop here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .ids import EventID, RoomID, UserID

# Bounds that keep one hostile event from costing more than a normal one.
MAX_ID_LENGTH = 255
MAX_TYPE_LENGTH = 255


class EventParseError(ValueError):
    """An event is missing required keys or has keys of the wrong type."""


@dataclass(frozen=True)
class Event:
    event_id: EventID
    room_id: RoomID
    sender: UserID
    type: str
    content: dict[str, Any]
    origin_server_ts: int = 0
    state_key: str | None = None
    redacts: EventID | None = None
    unsigned: dict[str, Any] = field(default_factory=dict)

    @property
    def is_state(self) -> bool:
        return self.state_key is not None

    def as_dict(self) -> dict[str, Any]:
        """The event as a plain dict, which `parse_event` reads back (to store it). Shallow: its
        content is the event's own, not a copy (an event's content is never changed)."""
        return {
            "event_id": self.event_id,
            "room_id": self.room_id,
            "sender": self.sender,
            "type": self.type,
            "content": self.content,
            "origin_server_ts": self.origin_server_ts,
            "state_key": self.state_key,
            "redacts": self.redacts,
            "unsigned": self.unsigned,
        }

    @property
    def relates_to(self) -> dict[str, Any]:
        value = self.content.get("m.relates_to")
        return value if isinstance(value, dict) else {}

    @property
    def rel_type(self) -> str | None:
        value = self.relates_to.get("rel_type")
        return value if isinstance(value, str) else None

    @property
    def relates_to_event(self) -> EventID | None:
        value = self.relates_to.get("event_id")
        return EventID(value) if isinstance(value, str) else None

    @property
    def reply_to(self) -> EventID | None:
        reply = self.relates_to.get("m.in_reply_to")
        if isinstance(reply, dict) and isinstance(reply.get("event_id"), str):
            return EventID(reply["event_id"])
        return None

    @property
    def redacted_event(self) -> EventID | None:
        """The target of an `m.room.redaction`, from `redacts` (v1–v10) or `content.redacts` (v11+)."""
        if self.redacts:
            return self.redacts
        value = self.content.get("redacts")
        return EventID(value) if isinstance(value, str) else None


def storable(value: str) -> bool:
    """No NUL and no lone surrogate: what UTF-8 text columns (SQLite, PostgreSQL) can hold."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _identifier(raw: dict[str, Any], key: str, sigil: str) -> str:
    value = raw.get(key)
    if (
        not isinstance(value, str)
        or not value.startswith(sigil)
        or len(value) > MAX_ID_LENGTH
        or not storable(value)
    ):
        raise EventParseError(
            f"'{key}' must be a string starting with {sigil!r}, at most {MAX_ID_LENGTH} characters, "
            "without NUL or unpaired surrogates"
        )
    return value


def parse_event(raw: Any) -> Event:
    """Build an `Event` from one transaction entry, or raise `EventParseError`."""
    if not isinstance(raw, dict):
        raise EventParseError("an event must be a JSON object")
    event_type = raw.get("type")
    if not isinstance(event_type, str) or not event_type or len(event_type) > MAX_TYPE_LENGTH:
        raise EventParseError("'type' must be a non-empty string")
    content = raw.get("content")
    if not isinstance(content, dict):
        raise EventParseError("'content' must be an object")
    state_key = raw.get("state_key")
    if state_key is not None and not isinstance(state_key, str):
        raise EventParseError("'state_key' must be a string")
    ts = raw.get("origin_server_ts", 0)
    if not isinstance(ts, int) or isinstance(ts, bool):
        raise EventParseError("'origin_server_ts' must be an integer")
    redacts = raw.get("redacts")
    if redacts is not None and (not isinstance(redacts, str) or not storable(redacts)):
        raise EventParseError("'redacts' must be a string without NUL or unpaired surrogates")
    unsigned = raw.get("unsigned")
    return Event(
        event_id=EventID(_identifier(raw, "event_id", "$")),
        room_id=RoomID(_identifier(raw, "room_id", "!")),
        sender=UserID(_identifier(raw, "sender", "@")),
        type=event_type,
        content=content,
        origin_server_ts=ts,
        state_key=state_key,
        redacts=EventID(redacts) if redacts else None,
        unsigned=unsigned if isinstance(unsigned, dict) else {},
    )
