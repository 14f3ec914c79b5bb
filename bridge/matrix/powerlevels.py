"""Power levels and initial state of channel rooms: pure functions, no I/O."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

ADMIN_LEVEL = 100
POSTER_LEVEL = 50
READER_LEVEL = 0

# Poll responses, stable and unstable (MSC3381), as Element sends them.
POLL_RESPONSE_TYPES = ("m.poll.response", "org.matrix.msc3381.poll.response")
CHANNEL_STATE_TYPE = "net.kanal.channel"

# The room's identity, access and settings: only the bot and the ghost (100) change them, in every
# room Kanal keeps for a channel's readers.
ADMIN_STATE_EVENTS: dict[str, int] = {
    "m.room.name": ADMIN_LEVEL,
    "m.room.topic": ADMIN_LEVEL,
    "m.room.avatar": ADMIN_LEVEL,
    "m.room.power_levels": ADMIN_LEVEL,
    "m.room.history_visibility": ADMIN_LEVEL,
    "m.room.canonical_alias": ADMIN_LEVEL,
    "m.room.server_acl": ADMIN_LEVEL,
    "m.room.encryption": ADMIN_LEVEL,
    "m.room.tombstone": ADMIN_LEVEL,
}


def broadcast_power_levels(ghost: str, *, reactions: bool = True) -> dict[str, Any]:
    """Read-only for subscribers: everything needs 50 except reactions (and taking them back).

    The bot creates the room; in room version 12 the creator is privileged for good and must not be
    listed in `users` (Synapse answers 400 otherwise). The ghost posts, so it gets 100.
    `events` replaces the whole default map, so every type below `state_default` is listed.
    """
    events: dict[str, int] = {
        **ADMIN_STATE_EVENTS,
        "m.room.pinned_events": POSTER_LEVEL,
        "m.room.message": POSTER_LEVEL,
        "m.room.redaction": READER_LEVEL if reactions else POSTER_LEVEL,
        "m.reaction": READER_LEVEL if reactions else POSTER_LEVEL,
    }
    for poll_type in POLL_RESPONSE_TYPES:
        events[poll_type] = READER_LEVEL if reactions else POSTER_LEVEL
    return {
        "users": {ghost: ADMIN_LEVEL},
        "users_default": READER_LEVEL,
        "events": events,
        "events_default": POSTER_LEVEL,
        "state_default": ADMIN_LEVEL,
        "ban": POSTER_LEVEL,
        "kick": POSTER_LEVEL,
        "redact": POSTER_LEVEL,
        "invite": POSTER_LEVEL,
        "notifications": {"room": POSTER_LEVEL},
    }


def backstage_power_levels(owner: str, editors: Iterable[str] = ()) -> dict[str, Any]:
    """Backstage is a working room: the team posts freely; only the bot (creator) and owner change
    state; editors (50) may delete anyone's message there, which deletes the published copy."""
    users = {editor: POSTER_LEVEL for editor in editors if editor != owner}
    users[owner] = ADMIN_LEVEL
    return {
        "users": users,
        "users_default": READER_LEVEL,
        "events_default": READER_LEVEL,
        "state_default": ADMIN_LEVEL,
        "ban": ADMIN_LEVEL,
        "kick": ADMIN_LEVEL,
        "redact": POSTER_LEVEL,
        "invite": ADMIN_LEVEL,
    }


def broadcast_room_request(
    *, handle: str, title: str, topic: str, ghost: str, domain: str, reactions: bool = True
) -> dict[str, Any]:
    """The `createRoom` body of a channel's public broadcast room. An empty `topic` is left out:
    Synapse would send it as a topic event, which clients show as "removed the topic"."""
    request: dict[str, Any] = {
        "preset": "public_chat",
        "visibility": "public",
        "room_alias_name": handle,
        "name": title,
        "invite": [ghost],
        "power_level_content_override": broadcast_power_levels(ghost, reactions=reactions),
        "initial_state": [
            {
                "type": "m.room.history_visibility",
                "state_key": "",
                "content": {"history_visibility": "world_readable"},
            },
            {"type": "m.room.guest_access", "state_key": "", "content": {"guest_access": "can_join"}},
            {"type": CHANNEL_STATE_TYPE, "state_key": "", "content": {"handle": handle, "role": "broadcast"}},
        ],
    }
    if topic:
        request["topic"] = topic
    return request


def backstage_room_request(*, handle: str, title: str, owner: str) -> dict[str, Any]:
    """The `createRoom` body of a channel's private backstage room (never encrypted by us)."""
    return {
        "preset": "private_chat",
        "visibility": "private",
        "name": backstage_name(title, handle),
        "topic": f"What you post here is published in #{handle} as {title}. Commands start with ! (try !help).",
        "invite": [owner],
        "power_level_content_override": backstage_power_levels(owner),
        "initial_state": [
            {"type": CHANNEL_STATE_TYPE, "state_key": "", "content": {"handle": handle, "role": "backstage"}},
        ],
    }


def backstage_name(title: str, handle: str) -> str:
    return f"{title} — backstage (#{handle})"


def access_state(private: bool) -> list[tuple[str, dict[str, Any]]]:
    """The broadcast room's state for a private (knock, members-only history) or public channel.

    A private room is not world-readable: anyone who learns its id could otherwise read it without
    joining. Room versions 7 and later understand `knock` (Synapse's default is 12); in older rooms
    it simply admits nobody without an invite, and links still work.
    """
    if private:
        return [
            ("m.room.join_rules", {"join_rule": "knock"}),
            ("m.room.history_visibility", {"history_visibility": "shared"}),
            ("m.room.guest_access", {"guest_access": "forbidden"}),
        ]
    return [
        ("m.room.join_rules", {"join_rule": "public"}),
        ("m.room.history_visibility", {"history_visibility": "world_readable"}),
        ("m.room.guest_access", {"guest_access": "can_join"}),
    ]


def private_room_request(request: dict[str, Any]) -> dict[str, Any]:
    """A broadcast room's `createRoom` body made private: out of the directory, knock to join."""
    replaced = {event_type for event_type, _ in access_state(True)}
    initial = [e for e in request.get("initial_state", []) if e.get("type") not in replaced]
    initial += [{"type": t, "state_key": "", "content": c} for t, c in access_state(True)]
    return {**request, "preset": "private_chat", "visibility": "private", "initial_state": initial}
