"""Hosting policy as pure decisions: server ACLs for every federation policy, retention, creation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.channels.hosting import (
    DAY_MS,
    ApplyResult,
    Change,
    creation_content,
    describe,
    effective_retention_days,
    lacks_topic,
    retention_content,
    server_acl_content,
    server_allowed,
    with_hosting_policy,
)
from bridge.runtime.config import Config, parse


def config(domain: str = "example.org", **hosting: Any) -> Config:
    data = {
        "homeserver": {"url": "https://matrix.example.org", "domain": domain},
        "appservice": {"as_token": "as-token-0123456789abcdef", "hs_token": "hs-token-0123456789abcdef"},
        "hosting": hosting,
    }
    return parse(data, Path("/etc/kanal/config.yaml"))


# --- server ACL -----------------------------------------------------------------------------------


def test_open_allows_every_server_but_no_ip_literals() -> None:
    acl = server_acl_content(config())
    assert acl == {"allow": ["*"], "deny": [], "allow_ip_literals": False}
    assert server_allowed(acl, "example.org") and server_allowed(acl, "matrix.org")
    assert not server_allowed(acl, "10.0.0.1") and not server_allowed(acl, "[::1]")


def test_allowlist_is_the_own_server_and_the_listed_ones() -> None:
    acl = server_acl_content(
        config(federation="allowlist", allowed_servers=["partner.example", "*.gov.example"])
    )
    assert acl == {
        "allow": ["example.org", "partner.example", "*.gov.example"],
        "deny": [],
        "allow_ip_literals": False,
    }
    assert server_allowed(acl, "example.org") and server_allowed(acl, "partner.example")
    assert server_allowed(acl, "tax.gov.example") and server_allowed(acl, "PARTNER.example")
    assert not server_allowed(acl, "matrix.org") and not server_allowed(acl, "partner.example.evil")


def test_allowlist_names_are_not_escaped_and_ports_are_dropped() -> None:
    acl = server_acl_content(
        config(federation="allowlist", allowed_servers=["a.example:8448", "example.org", "b?.example"])
    )
    assert acl["allow"] == ["example.org", "a.example", "b?.example"]  # own server once, first
    assert server_allowed(acl, "b1.example") and not server_allowed(acl, "b12.example")


def test_a_server_name_is_matched_by_its_host_as_synapse_does() -> None:
    # Users and rooms name their server with its port (`@reader:partner.example:8448`); the ACL holds hosts.
    acl = server_acl_content(config(federation="allowlist", allowed_servers=["partner.example"]))
    assert server_allowed(acl, "partner.example:8448") and server_allowed(acl, "example.org:443")
    assert not server_allowed(acl, "matrix.org:8448")
    assert not server_allowed(server_acl_content(config()), "10.0.0.1:8448")
    banned = server_acl_content(config(), banned=["evil.example"])
    assert not server_allowed(banned, "evil.example:8448") and server_allowed(banned, "good.example:8448")


def test_closed_allows_only_the_own_server() -> None:
    acl = server_acl_content(config(federation="closed"))
    assert acl == {"allow": ["example.org"], "deny": [], "allow_ip_literals": False}
    assert not server_allowed(acl, "matrix.org") and not server_allowed(acl, "sub.example.org")


def test_own_server_with_a_port_is_allowed_both_ways() -> None:
    acl = server_acl_content(config(domain="example.org:8448", federation="closed"))
    # Federation compares the host; Synapse checks a new ACL against its full server_name.
    assert acl["allow"] == ["example.org", "example.org:8448"]
    assert server_allowed(acl, "example.org") and server_allowed(acl, "example.org:8448")


def test_an_own_server_named_by_an_ip_literal_stays_allowed() -> None:
    acl = server_acl_content(config(domain="192.0.2.7", federation="closed"))
    assert acl["allow_ip_literals"] is True and server_allowed(acl, "192.0.2.7")


_NAMES = st.from_regex(r"[a-z0-9*?][a-z0-9.*?\-]{0,20}(:[0-9]{1,5})?", fullmatch=True)


@given(
    domain=st.sampled_from(["example.org", "localhost", "example.org:8448", "[::1]:8448", "10.1.2.3"]),
    federation=st.sampled_from(["open", "allowlist", "closed"]),
    servers=st.lists(_NAMES, min_size=1, max_size=5),
)
def test_the_own_server_is_never_denied(domain: str, federation: str, servers: list[str]) -> None:
    cfg = config(domain=domain, federation=federation, allowed_servers=servers)
    acl = server_acl_content(cfg)
    assert acl["deny"] == []
    host = domain.rsplit(":", 1)[0] if not domain.startswith("[") else domain.split("]")[0] + "]"
    assert server_allowed(acl, domain) and server_allowed(acl, host)


def test_server_allowed_follows_the_spec_order_deny_then_allow() -> None:
    acl = {"allow": ["*"], "deny": ["bad.example", "*.bad.example"]}
    assert not server_allowed(acl, "bad.example") and not server_allowed(acl, "x.bad.example")
    assert server_allowed(acl, "good.example")
    assert server_allowed(acl, "10.0.0.1")  # allow_ip_literals defaults to true
    assert not server_allowed({"deny": []}, "any.example")  # no allow list: nobody


# --- retention ------------------------------------------------------------------------------------


def test_retention_is_max_lifetime_in_milliseconds() -> None:
    assert retention_content(7) == {"max_lifetime": 7 * 86_400_000} == {"max_lifetime": 7 * DAY_MS}
    assert retention_content(None) is None and retention_content(0) is None


@pytest.mark.parametrize(
    ("deployment", "channel", "expected"),
    [
        (None, None, None),  # nothing configured: history is kept
        (30, None, 30),  # the deployment's default
        (30, 7, 7),  # the channel's own value wins
        (None, 7, 7),
        (30, 0, None),  # 0 on the channel: keep everything despite the default
    ],
)
def test_channel_retention_overrides_the_deployment(
    deployment: int | None, channel: int | None, expected: int | None
) -> None:
    assert effective_retention_days(deployment, channel) == expected


# --- new rooms ------------------------------------------------------------------------------------


def test_only_a_closed_deployment_makes_non_federating_rooms() -> None:
    assert creation_content(config(federation="closed")) == {"m.federate": False}
    assert creation_content(config()) == {}
    assert creation_content(config(federation="allowlist", allowed_servers=["a.example"])) == {}


def test_room_requests_get_the_acl_and_retention_as_initial_state() -> None:
    request = {"preset": "public_chat", "initial_state": [{"type": "x", "state_key": "", "content": {}}]}
    closed = with_hosting_policy(request, config(federation="closed", retention_days=30), 7)
    assert closed["creation_content"] == {"m.federate": False}
    assert closed["initial_state"] == [
        {"type": "x", "state_key": "", "content": {}},
        {
            "type": "m.room.server_acl",
            "state_key": "",
            "content": {"allow": ["example.org"], "deny": [], "allow_ip_literals": False},
        },
        {"type": "m.room.retention", "state_key": "", "content": {"max_lifetime": 7 * DAY_MS}},
    ]
    assert len(request["initial_state"]) == 1  # the caller's body is left alone

    opened = with_hosting_policy(request, config(), None)
    assert "creation_content" not in opened
    assert [e["type"] for e in opened["initial_state"]] == ["x", "m.room.server_acl"]


# --- a public room's missing topic ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "missing"),
    [
        (None, True),  # no topic event
        ({}, True),
        ({"topic": ""}, True),  # what channels made before the default line have
        ({"topic": "  "}, True),
        ({"topic": " — ✓ verified"}, True),  # a verified one of them: the mark alone
        ({"topic": 7}, True),
        ({"topic": "A channel: join to follow its posts. Only the channel posts here."}, False),
        ({"topic": "Our own words"}, False),  # the owner's description stays
        ({"topic": "Our own words — ✓ verified"}, False),
    ],
)
def test_a_topic_is_missing_only_when_there_is_no_text_but_the_verified_mark(
    content: dict[str, Any] | None, missing: bool
) -> None:
    assert lacks_topic(config(), content) is missing


# --- what `kanal hosting apply` prints ------------------------------------------------------------


def test_describe_lists_rooms_and_what_is_left() -> None:
    cfg = config(federation="allowlist", allowed_servers=["a.example"], retention_days=7)
    changes = [
        Change("news", "broadcast", "!b:example.org", "m.room.server_acl", 1),
        Change("news", "broadcast", "!b:example.org", "m.room.retention", 2),
        Change("news", "backstage", "!s:example.org", "m.room.server_acl", 3),
    ]
    lines = describe(cfg, ApplyResult(changes, {3: "403 M_FORBIDDEN: no"}, 0), 120)
    assert lines[0] == "Hosting policy: federation allowlist (example.org, a.example); retention 7 days."
    assert "Updated 2 rooms:" in lines
    assert "  #news broadcast !b:example.org: m.room.server_acl, m.room.retention" in lines
    assert any("403 M_FORBIDDEN" in line for line in lines)

    quiet = describe(config(), ApplyResult([], {}, 0), 120)
    assert quiet[1].startswith("Nothing to change")
    stuck = describe(config(), ApplyResult(changes[:1], {}, 1), 120)
    assert "still waiting after 120 s" in stuck[-1]
