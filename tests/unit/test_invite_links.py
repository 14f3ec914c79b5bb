"""Invite links, the pure parts: tokens, `!link new` options, link states, private room state, rate limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from bridge.channels.invites import (
    LinkOptionError,
    LinkOptions,
    Rate,
    RateLimiter,
    is_link_token,
    join_url,
    link_state,
    new_link_token,
    parse_link_options,
    tokens_in,
    without_tokens,
)
from bridge.matrix.powerlevels import access_state, broadcast_room_request, private_room_request
from bridge.store.hashing import hash_token

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def test_tokens_are_random_recognisable_and_stored_only_as_hashes() -> None:
    first, second = new_link_token(), new_link_token()

    assert first != second
    assert is_link_token(first) and is_link_token(second)
    assert len(hash_token(first)) == 64 and first not in hash_token(first)
    assert not is_link_token(first + "x") and not is_link_token("kanal_inv_short")


def test_a_token_is_found_in_a_knock_reason_alone_or_inside_its_link() -> None:
    token = new_link_token()

    assert tokens_in(f"hi! {join_url('https://kanal.example/', token)} thanks") == [token]
    assert tokens_in(token) == [token]
    assert tokens_in("let me in please") == []
    assert join_url("https://kanal.example/", token) == f"https://kanal.example/join/{token}"


def test_the_reason_shown_in_backstage_has_no_token() -> None:
    token = new_link_token()

    shown = without_tokens(f"I am Bob  from the newsroom https://k.example/join/{token} see you")

    assert token not in shown and "join/" not in shown
    assert shown == "I am Bob from the newsroom … see you"
    assert len(without_tokens("x" * 1000)) == 300


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), LinkOptions()),
        (("--expires", "7d"), LinkOptions(expires_in=timedelta(days=7))),
        (("--expires=12h", "--uses=100"), LinkOptions(timedelta(hours=12), 100)),
        (("--uses", "1", "--approve"), LinkOptions(None, 1, True)),
        (("--APPROVE", "--expires", "2w"), LinkOptions(timedelta(weeks=2), None, True)),
    ],
)
def test_link_options(args: tuple[str, ...], expected: LinkOptions) -> None:
    assert parse_link_options(args) == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--expires",), "--expires needs a value"),
        (("--expires", "soon"), "not a duration"),
        (("--expires", "0d"), "not a duration"),
        (("--expires", "9999d"), "at most 3650d"),
        (("--uses", "0"), "--uses takes a number"),
        (("--uses", "-3"), "--uses takes a number"),
        (("--uses", "١٠"), "--uses takes a number"),
        (("--forever",), "unknown option"),
        (("--approve=yes",), "unknown option"),
    ],
)
def test_link_options_that_cannot_be_used_say_why(args: tuple[str, ...], message: str) -> None:
    with pytest.raises(LinkOptionError, match=message):
        parse_link_options(args)


def link(**values: object) -> SimpleNamespace:
    defaults: dict[str, object] = {"revoked": False, "expires_at": None, "uses": 0, "uses_allowed": None}
    return SimpleNamespace(**{**defaults, **values})


@pytest.mark.parametrize(
    ("row", "state"),
    [
        (link(), "active"),
        (link(uses=99, uses_allowed=100), "active"),
        (link(uses=100, uses_allowed=100), "used_up"),
        (link(expires_at=NOW + timedelta(seconds=1)), "active"),
        (link(expires_at=NOW), "expired"),
        (link(expires_at=(NOW - timedelta(hours=1)).replace(tzinfo=None)), "expired"),  # SQLite: naive UTC
        (link(revoked=True, expires_at=NOW - timedelta(days=1), uses=5, uses_allowed=5), "revoked"),
    ],
)
def test_link_state(row: SimpleNamespace, state: str) -> None:
    assert link_state(row, NOW) == state


def test_a_private_broadcast_room_is_unlisted_knock_only_and_not_world_readable() -> None:
    public = broadcast_room_request(handle="news1", title="News", topic="", ghost="@g:x", domain="x")

    private = private_room_request(public)

    state = {e["type"]: e["content"] for e in private["initial_state"]}
    assert private["visibility"] == "private" and private["preset"] == "private_chat"
    assert state["m.room.join_rules"] == {"join_rule": "knock"}
    assert state["m.room.history_visibility"] == {"history_visibility": "shared"}
    assert state["m.room.guest_access"] == {"guest_access": "forbidden"}
    assert state["net.kanal.channel"] == {"handle": "news1", "role": "broadcast"}
    assert len(private["initial_state"]) == len({e["type"] for e in private["initial_state"]})
    assert private["power_level_content_override"] == public["power_level_content_override"]
    # invite power (50) is below the bot's (the creator's) and the ghost's (100)
    assert public["power_level_content_override"]["invite"] == 50


def test_switching_back_restores_the_public_state() -> None:
    public = dict(access_state(False))
    creation = {
        e["type"]: e["content"]
        for e in broadcast_room_request(handle="news1", title="News", topic="", ghost="@g:x", domain="x")[
            "initial_state"
        ]
    }

    assert public["m.room.join_rules"] == {"join_rule": "public"}
    assert public["m.room.history_visibility"] == creation["m.room.history_visibility"]
    assert public["m.room.guest_access"] == creation["m.room.guest_access"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_rate_limiter_allows_a_burst_then_the_average() -> None:
    clock = Clock()
    limiter = RateLimiter(Rate(per_minute=6, burst=3), clock=clock)

    assert [limiter.take("1.2.3.4") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("1.2.3.4") == pytest.approx(10.0)
    assert limiter.take("5.6.7.8") == 0.0  # keys are independent
    clock.now += 10
    assert limiter.take("1.2.3.4") == 0.0
    assert limiter.take("1.2.3.4") > 0


def test_a_rate_limiter_forgets_the_least_recently_used_keys() -> None:
    clock = Clock()
    limiter = RateLimiter(Rate(per_minute=1, burst=1), max_keys=2, clock=clock)

    limiter.take("a")
    limiter.take("b")
    assert limiter.take("a") > 0  # "a" is now the most recent
    limiter.take("c")  # forgets "b"

    assert len(limiter) == 2
    assert limiter.take("b") == 0.0
    assert limiter.take("c") > 0
