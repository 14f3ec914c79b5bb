"""`kanal doctor`'s check that Synapse's per-member caches hold a full shard (channels.shard_size)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bridge.ops.doctor import Status, check_large_room_caches
from bridge.ops.synapse import LARGE_ROOM_CACHES, LocalSynapse, large_room_cache_factors
from bridge.runtime.config import Config, parse


def kanal(shard_size: int | None = None) -> Config:
    channels: dict[str, Any] = {} if shard_size is None else {"shard_size": shard_size}
    return parse(
        {
            "homeserver": {"url": "http://127.0.0.1:8008", "domain": "example.org"},
            "appservice": {"as_token": "a" * 20, "hs_token": "h" * 20},
            "channels": channels,
        },
        Path("/srv/kanal/config.yaml"),
    )


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Synapse's imports (Twisted, jsonschema)
def test_the_caches_checked_are_synapses_own_with_their_sizes() -> None:
    from synapse.storage.databases.main.push_rule import PushRulesWorkerStore
    from synapse.storage.databases.main.roommember import RoomMemberWorkerStore

    stores = {
        "get_push_rules_for_user": PushRulesWorkerStore,
        "get_user_in_room_with_profile": RoomMemberWorkerStore,
    }
    assert {name for name, _base, _what in LARGE_ROOM_CACHES} == set(stores)
    for name, base, _what in LARGE_ROOM_CACHES:
        descriptor = stores[name].__dict__[name]
        assert descriptor.max_entries == base, name


def test_synapses_defaults_do_not_hold_the_default_shard() -> None:
    check = check_large_room_caches({}, kanal())
    assert check.status is Status.WARN
    assert "channels.shard_size is 10,000" in check.detail
    # 5,000 × 0.5 and 1,000 × 0.5
    assert "get_push_rules_for_user holds 2,500" in check.detail
    assert "get_user_in_room_with_profile holds 500" in check.detail
    assert (
        "caches: {per_cache_factors: {get_push_rules_for_user: 2, get_user_in_room_with_profile: 10}}"
        in check.fix
    )
    assert "lower channels.shard_size to 500" in check.fix


def test_factors_that_hold_the_shard_pass() -> None:
    hs = {
        "caches": {"per_cache_factors": {"get_push_rules_for_user": 2, "get_user_in_room_with_profile": 10}}
    }
    check = check_large_room_caches(hs, kanal())
    assert check.status is Status.PASS, check
    assert "get_push_rules_for_user holds 10,000" in check.detail


def test_a_global_factor_counts_and_per_cache_names_are_case_insensitive() -> None:
    assert check_large_room_caches({"caches": {"global_factor": 10}}, kanal(5000)).status is Status.PASS
    hs = {"caches": {"global_factor": 1, "per_cache_factors": {"GET_USER_IN_ROOM_WITH_PROFILE": 5}}}
    assert check_large_room_caches(hs, kanal(5000)).status is Status.PASS
    check = check_large_room_caches(hs, kanal(5001))
    assert check.status is Status.WARN
    assert "get_push_rules_for_user: 1.01" in check.fix and "get_user_in_room_with_profile: 5.01" in check.fix


def test_a_small_shard_passes_with_the_defaults() -> None:
    assert check_large_room_caches({}, kanal(500)).status is Status.PASS
    check = check_large_room_caches({}, kanal(2000))
    assert check.status is Status.WARN
    assert "get_push_rules_for_user" not in check.fix and "get_user_in_room_with_profile: 2" in check.fix


def test_never_sharding_is_a_warning_naming_the_largest_room_the_caches_hold() -> None:
    check = check_large_room_caches({}, kanal(0))
    assert check.status is Status.WARN
    assert "channels.shard_size is 0" in check.detail and "past 500 members" in check.detail
    assert "set channels.shard_size (at most 500" in check.fix


@pytest.mark.parametrize(
    "caches",
    [
        "big",
        {"global_factor": "2"},
        {"global_factor": True},
        {"per_cache_factors": ["get_push_rules_for_user"]},
        {"per_cache_factors": {"get_push_rules_for_user": "2"}},
    ],
)
def test_a_malformed_caches_section_fails(caches: Any) -> None:
    check = check_large_room_caches({"caches": caches}, kanal())
    assert check.status is Status.FAIL
    assert "Synapse refuses to start" in check.detail


def test_the_synapse_kanal_starts_holds_a_full_shard_of_the_default_size(tmp_path: Path) -> None:
    # `kanal up` and the tests start this Synapse; doctor must find nothing to warn about in it.
    hs = LocalSynapse(tmp_path / "synapse").config()
    assert hs["caches"]["per_cache_factors"] == large_room_cache_factors(10_000)
    assert check_large_room_caches(hs, kanal()).status == Status.PASS
    assert "caches" not in LocalSynapse(tmp_path / "other", large_rooms=None).config()
