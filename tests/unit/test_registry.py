"""Registration rules that need no database: durations, token states, token options, topics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge.channels.operators import _token_options
from bridge.channels.registry import (
    TOKEN_PREFIX,
    describe_token,
    new_token,
    token_problem,
    topic_for,
)
from bridge.runtime.config import ConfigError, parse
from bridge.store.hashing import hash_token
from bridge.store.models import Channel, RegistrationToken
from bridge.text.commands import parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", timedelta(minutes=30)),
        ("12h", timedelta(hours=12)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        (" 7D ", timedelta(days=7)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "7", "d", "0d", "-1d", "7y", "1.5h", "123456d"])
def test_bad_durations_say_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match="duration like 30m, 12h, 7d or 2w"):
        parse_duration(text)


def _token(**overrides: object) -> RegistrationToken:
    values: dict[str, object] = {
        "id": 3,
        "token_hash": hash_token("x"),
        "hint": "abcdef",
        "label": "",
        "uses_allowed": None,
        "uses": 0,
        "expires_at": None,
        "revoked": False,
        "created_by": "@ops:example.org",
    }
    values.update(overrides)
    return RegistrationToken(**values)


def test_token_states() -> None:
    now = datetime.now(UTC)
    assert token_problem(None).key == "token_unknown"  # type: ignore[union-attr]
    assert token_problem(_token()) is None
    assert token_problem(_token(revoked=True)).key == "token_revoked"  # type: ignore[union-attr]
    assert token_problem(_token(expires_at=now - timedelta(seconds=1))).key == "token_expired"  # type: ignore[union-attr]
    assert token_problem(_token(expires_at=now + timedelta(hours=1))) is None
    # SQLite hands back naive datetimes: they are UTC.
    naive_past = (now - timedelta(minutes=1)).replace(tzinfo=None)
    assert token_problem(_token(expires_at=naive_past)).key == "token_expired"  # type: ignore[union-attr]
    assert token_problem(_token(uses_allowed=2, uses=1)) is None
    assert token_problem(_token(uses_allowed=2, uses=2)).key == "token_used_up"  # type: ignore[union-attr]


def test_a_token_is_described_without_the_secret() -> None:
    text = describe_token(_token(label="launch", uses_allowed=5, uses=2))
    assert text.startswith(f"#3 {TOKEN_PREFIX}abcdef…")
    assert "“launch”" in text and "uses 2/5" in text and "expires never" in text and "valid" in text
    assert "used up" in describe_token(_token(uses_allowed=1, uses=1))
    assert "revoked" in describe_token(_token(revoked=True))


def test_hashes_ignore_surrounding_space() -> None:
    assert hash_token(" kanal_rt_abc\n") == hash_token("kanal_rt_abc")
    assert hash_token("kanal_rt_abc") != hash_token("kanal_rt_abd")


def test_token_options() -> None:
    assert _token_options(("--uses", "5", "--expires", "7d", "for", "the", "press")) == (
        {"uses": 5, "valid_for": timedelta(days=7)},
        "for the press",
    )
    assert _token_options(()) == ({}, "")
    for bad in (("--uses",), ("--uses", "0"), ("--uses", "many"), ("--expires", "soon")):
        with pytest.raises(ValueError):
            _token_options(bad)


def _config(tmp_path: Path, **channels: object) -> object:
    return parse(
        {
            "homeserver": {"url": "http://127.0.0.1:8008", "domain": "example.org"},
            "appservice": {"as_token": "a" * 20, "hs_token": "b" * 20},
            "channels": channels,
        },
        tmp_path / "config.yaml",
    )


def test_the_verified_mark_is_appended_to_the_topic(tmp_path: Path) -> None:
    config = _config(tmp_path, verified_topic_suffix=" [verified]")
    channel = Channel(about="News every day", verified=False)
    assert topic_for(config, channel) == "News every day"  # type: ignore[arg-type]
    channel.verified = True
    assert topic_for(config, channel) == "News every day [verified]"  # type: ignore[arg-type]


def test_a_channel_without_a_description_still_has_a_topic(tmp_path: Path) -> None:
    # An empty topic reads as "kanal removed the topic" in clients, and as nothing in the directory.
    config = _config(tmp_path, verified_topic_suffix=" [verified]")
    channel = Channel(about="", verified=False)
    default = topic_for(config, channel)  # type: ignore[arg-type]
    assert default == "A channel: join to follow its posts. Only the channel posts here."
    channel.verified = True
    assert topic_for(config, channel) == default + " [verified]"  # type: ignore[arg-type]
    persian = _config(tmp_path, default_language="fa")
    assert topic_for(persian, Channel(about="", verified=False)).startswith("یک کانال")  # type: ignore[arg-type]


def test_approval_needs_operators(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'operators\.users' is empty"):
        _config(tmp_path, creation_policy="approval")


def test_a_token_hint_never_reads_as_a_command_line_option() -> None:
    tokens = [new_token() for _ in range(3000)]  # about 47 would start with "-" by chance
    assert all(t.startswith("kanal_rt_") and not t[len("kanal_rt_") :].startswith("-") for t in tokens)
    assert len(set(tokens)) == len(tokens)
