"""Power levels and createRoom bodies: read-only broadcast rooms, private backstage rooms."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.matrix.powerlevels import (
    CHANNEL_STATE_TYPE,
    POLL_RESPONSE_TYPES,
    backstage_name,
    backstage_power_levels,
    backstage_room_request,
    broadcast_power_levels,
    broadcast_room_request,
)

GHOST = "@kanal_news:example.org"
BOT = "@kanal:example.org"
OWNER = "@alice:example.org"
READER = "@reader:other.org"


def level_of(power_levels: dict[str, Any], user: str) -> int:
    level: int = power_levels["users"].get(user, power_levels["users_default"])
    return level


def needed_to_send(power_levels: dict[str, Any], event_type: str, *, state: bool) -> int:
    """The spec's rule: the `events` entry, else `state_default` or `events_default`."""
    if event_type in power_levels.get("events", {}):
        level: int = power_levels["events"][event_type]
        return level
    return int(power_levels["state_default" if state else "events_default"])


def can_send(power_levels: dict[str, Any], user: str, event_type: str, *, state: bool = False) -> bool:
    return level_of(power_levels, user) >= needed_to_send(power_levels, event_type, state=state)


# --- broadcast power levels -----------------------------------------------------------------------


def test_broadcast_defaults() -> None:
    pl = broadcast_power_levels(GHOST)

    assert pl["users_default"] == 0
    assert pl["events_default"] == 50
    assert pl["state_default"] == 100
    assert (pl["invite"], pl["kick"], pl["ban"], pl["redact"]) == (50, 50, 50, 50)
    assert pl["notifications"] == {"room": 50}


def test_only_the_ghost_is_listed_not_the_bot() -> None:
    # Room version 12: the creator (the bot) is privileged for good and must not appear in `users`.
    pl = broadcast_power_levels(GHOST)

    assert pl["users"] == {GHOST: 100}
    assert BOT not in pl["users"]


@pytest.mark.parametrize(
    ("event_type", "state"),
    [
        ("m.room.message", False),
        ("m.sticker", False),
        ("m.poll.start", False),
        ("org.matrix.msc3381.poll.start", False),
        ("m.call.invite", False),
        ("com.example.custom", False),
        ("m.room.encrypted", False),
        ("m.room.name", True),
        ("m.room.topic", True),
        ("m.room.avatar", True),
        ("m.room.power_levels", True),
        ("m.room.pinned_events", True),
        ("m.room.encryption", True),
        ("m.room.server_acl", True),
        ("m.room.history_visibility", True),
        ("m.room.canonical_alias", True),
        ("m.room.tombstone", True),
        ("m.room.join_rules", True),
        ("m.widget", True),
        (CHANNEL_STATE_TYPE, True),
    ],
)
@pytest.mark.parametrize("reactions", [True, False])
def test_subscribers_cannot_post_or_change_the_room(event_type: str, state: bool, reactions: bool) -> None:
    pl = broadcast_power_levels(GHOST, reactions=reactions)

    assert not can_send(pl, READER, event_type, state=state)
    assert can_send(pl, GHOST, event_type, state=state)


def test_subscribers_cannot_moderate() -> None:
    pl = broadcast_power_levels(GHOST)

    for action in ("invite", "kick", "ban", "redact"):
        assert level_of(pl, READER) < pl[action]
        assert level_of(pl, GHOST) >= pl[action]
    assert level_of(pl, READER) < pl["notifications"]["room"]


@pytest.mark.parametrize("event_type", ["m.reaction", "m.room.redaction", *POLL_RESPONSE_TYPES])
def test_reactions_poll_votes_and_taking_them_back_are_open_when_allowed(event_type: str) -> None:
    pl = broadcast_power_levels(GHOST, reactions=True)

    assert pl["events"][event_type] == 0
    assert can_send(pl, READER, event_type, state=False)


@pytest.mark.parametrize("event_type", ["m.reaction", "m.room.redaction", *POLL_RESPONSE_TYPES])
def test_reactions_and_poll_votes_are_closed_when_disallowed(event_type: str) -> None:
    pl = broadcast_power_levels(GHOST, reactions=False)

    assert pl["events"][event_type] == 50
    assert not can_send(pl, READER, event_type, state=False)
    assert can_send(pl, GHOST, event_type, state=False)


def test_both_poll_response_types_are_covered() -> None:
    assert set(POLL_RESPONSE_TYPES) == {"m.poll.response", "org.matrix.msc3381.poll.response"}


def test_reactions_only_change_the_reaction_entries() -> None:
    allowed, closed = broadcast_power_levels(GHOST), broadcast_power_levels(GHOST, reactions=False)

    changed = {k for k in allowed["events"] if allowed["events"][k] != closed["events"][k]}
    assert changed == {"m.reaction", "m.room.redaction", *POLL_RESPONSE_TYPES}
    assert {k: v for k, v in allowed.items() if k != "events"} == {
        k: v for k, v in closed.items() if k != "events"
    }


def test_every_level_is_an_integer() -> None:
    # Room versions 10+ refuse power levels given as strings or floats.
    pl = broadcast_power_levels(GHOST)
    values = [v for k, v in pl.items() if k not in ("users", "events", "notifications")]
    values += [*pl["users"].values(), *pl["events"].values(), *pl["notifications"].values()]

    assert all(type(v) is int for v in values)


# --- broadcast room request -----------------------------------------------------------------------


def broadcast_request(**overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "handle": "daily_news",
        "title": "Daily News",
        "topic": "News every morning",
        "ghost": GHOST,
        "domain": "example.org",
    }
    arguments.update(overrides)
    return broadcast_room_request(**arguments)


def initial_state(request: dict[str, Any], event_type: str) -> dict[str, Any]:
    found = [e for e in request["initial_state"] if e["type"] == event_type]
    assert len(found) == 1, event_type
    assert found[0]["state_key"] == ""
    content: dict[str, Any] = found[0]["content"]
    return content


def test_broadcast_room_is_public_and_world_readable() -> None:
    request = broadcast_request()

    assert request["preset"] == "public_chat"
    assert request["visibility"] == "public"  # published in the room directory
    assert initial_state(request, "m.room.history_visibility") == {"history_visibility": "world_readable"}


def test_broadcast_room_alias_name_is_the_handle() -> None:
    request = broadcast_request()

    assert request["room_alias_name"] == "daily_news"
    assert request["name"] == "Daily News"
    assert request["topic"] == "News every morning"


def test_broadcast_room_never_gets_an_empty_topic() -> None:
    assert "topic" not in broadcast_request(topic="")


def test_broadcast_room_invites_the_ghost_and_uses_the_channel_power_levels() -> None:
    request = broadcast_request()

    assert request["invite"] == [GHOST]
    assert request["power_level_content_override"] == broadcast_power_levels(GHOST)


def test_broadcast_room_passes_the_reaction_choice_on() -> None:
    request = broadcast_request(reactions=False)

    assert request["power_level_content_override"] == broadcast_power_levels(GHOST, reactions=False)


def test_broadcast_room_is_never_encrypted_and_marks_its_role() -> None:
    request = broadcast_request()

    assert all(e["type"] != "m.room.encryption" for e in request["initial_state"])
    assert initial_state(request, CHANNEL_STATE_TYPE) == {"handle": "daily_news", "role": "broadcast"}


def test_broadcast_room_let_guests_read() -> None:
    assert initial_state(broadcast_request(), "m.room.guest_access") == {"guest_access": "can_join"}


# --- backstage ------------------------------------------------------------------------------------


def test_backstage_room_is_private_and_invite_only() -> None:
    request = backstage_room_request(handle="daily_news", title="Daily News", owner=OWNER)

    assert request["preset"] == "private_chat"  # join_rules: invite
    assert request["visibility"] == "private"
    assert "room_alias_name" not in request
    assert all(e["type"] != "m.room.join_rules" for e in request.get("initial_state", []))


def test_backstage_room_invites_the_owner() -> None:
    request = backstage_room_request(handle="daily_news", title="Daily News", owner=OWNER)

    assert request["invite"] == [OWNER]
    assert request["power_level_content_override"] == backstage_power_levels(OWNER)


def test_backstage_room_is_never_encrypted_and_marks_its_role() -> None:
    request = backstage_room_request(handle="daily_news", title="Daily News", owner=OWNER)

    assert all(e["type"] != "m.room.encryption" for e in request["initial_state"])
    assert initial_state(request, CHANNEL_STATE_TYPE) == {"handle": "daily_news", "role": "backstage"}


def test_backstage_room_names_the_channel() -> None:
    request = backstage_room_request(handle="daily_news", title="Daily News", owner=OWNER)

    assert request["name"] == backstage_name("Daily News", "daily_news")
    assert "Daily News" in request["name"]
    assert "#daily_news" in request["name"]
    assert "#daily_news" in request["topic"]
    assert "!help" in request["topic"]


def test_backstage_power_levels_let_admins_post_but_not_change_state() -> None:
    pl = backstage_power_levels(OWNER)
    admin = "@bob:example.org"

    assert pl["users"] == {OWNER: 100}
    assert can_send(pl, admin, "m.room.message", state=False)
    assert can_send(pl, admin, "m.sticker", state=False)
    assert not can_send(pl, admin, "m.room.name", state=True)
    assert not can_send(pl, admin, "m.room.encryption", state=True)
    assert can_send(pl, OWNER, "m.room.power_levels", state=True)
    for action in ("invite", "kick", "ban"):
        assert level_of(pl, admin) < pl[action] <= level_of(pl, OWNER)
