"""Typed Matrix identifiers and the small pure helpers that inspect them."""

from __future__ import annotations

import re
from typing import NewType

UserID = NewType("UserID", str)
RoomID = NewType("RoomID", str)
RoomAlias = NewType("RoomAlias", str)
EventID = NewType("EventID", str)

# https://spec.matrix.org/v1.11/appendices/#user-identifiers (historical ids are allowed through)
_USER_ID = re.compile(r"^@(?P<local>[^:\s]+):(?P<server>[A-Za-z0-9.\-\[\]:]+)$")


def parse_user_id(value: str) -> tuple[str, str]:
    """Split `@local:server` into its parts; raise ValueError when it is not a user id."""
    match = _USER_ID.match(value)
    if match is None:
        raise ValueError(f"not a Matrix user id: {value!r}")
    return match.group("local"), match.group("server")


def is_user_id(value: str) -> bool:
    return _USER_ID.match(value) is not None


def server_of(identifier: str) -> str:
    """The server name part of any `sigil local:server` identifier."""
    return identifier.split(":", 1)[1] if ":" in identifier else ""
