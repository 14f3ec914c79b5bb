"""The reader's address behind a reverse proxy (bridge/web/forwarded.py): X-Forwarded-For is read from
the right, and only when the peer is a trusted proxy."""

from __future__ import annotations

import ipaddress

import pytest

from bridge.runtime.config import DEFAULT_TRUSTED_PROXIES, Network
from bridge.web.forwarded import client_address, parse_address

LOOPBACK: tuple[Network, ...] = tuple(ipaddress.ip_network(n) for n in DEFAULT_TRUSTED_PROXIES)
COMPOSE: tuple[Network, ...] = (*LOOPBACK, ipaddress.ip_network("172.16.0.0/12"))


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "trusted", "expected"),
    [
        # No proxy: the peer, whatever it says.
        ("203.0.113.9", [], LOOPBACK, "203.0.113.9"),
        ("203.0.113.9", ["198.51.100.1"], LOOPBACK, "203.0.113.9"),
        # nginx ($remote_addr) or Caddy on this machine: the one address it wrote.
        ("127.0.0.1", ["203.0.113.9"], LOOPBACK, "203.0.113.9"),
        ("::1", ["2001:db8::9"], LOOPBACK, "2001:db8::9"),
        # A proxy that appends: what the client wrote itself (left) is not believed.
        ("127.0.0.1", ["6.6.6.6, 203.0.113.9"], LOOPBACK, "203.0.113.9"),
        ("127.0.0.1", ["127.0.0.1, 203.0.113.9"], LOOPBACK, "203.0.113.9"),
        # Several header lines are one list, in order.
        ("127.0.0.1", ["6.6.6.6", "203.0.113.9"], LOOPBACK, "203.0.113.9"),
        # Two trusted proxies (a load balancer, then Caddy in compose): the first untrusted from the right.
        ("172.18.0.5", ["6.6.6.6, 203.0.113.9, 127.0.0.1"], COMPOSE, "203.0.113.9"),
        ("172.18.0.5", ["203.0.113.9"], COMPOSE, "203.0.113.9"),
        # Compose's Caddy is not trusted with the loopback default: it is the client then (one bucket).
        ("172.18.0.5", ["203.0.113.9"], LOOPBACK, "172.18.0.5"),
        # Every hop trusted: the farthest.
        ("127.0.0.1", ["127.0.0.2"], LOOPBACK, "127.0.0.2"),
        # A trusted peer without the header: the peer.
        ("127.0.0.1", [], LOOPBACK, "127.0.0.1"),
        ("127.0.0.1", [" , "], LOOPBACK, "127.0.0.1"),
        # A hop that is no address ends the reading: nothing left of it is believed.
        ("127.0.0.1", ["203.0.113.9, unknown"], LOOPBACK, "127.0.0.1"),
        ("127.0.0.1", ["unknown, 203.0.113.9"], LOOPBACK, "203.0.113.9"),
        ("127.0.0.1", ["6.6.6.6, garbage, 127.0.0.1"], LOOPBACK, "127.0.0.1"),
        # Ports and brackets, as some proxies write them; IPv4-mapped peers (a dual-stack listener).
        ("127.0.0.1", ["203.0.113.9:4711"], LOOPBACK, "203.0.113.9"),
        ("127.0.0.1", ["[2001:db8::9]:4711"], LOOPBACK, "2001:db8::9"),
        ("::ffff:127.0.0.1", ["203.0.113.9"], LOOPBACK, "203.0.113.9"),
        ("::ffff:203.0.113.9", ["6.6.6.6"], LOOPBACK, "203.0.113.9"),
        # Nobody trusted (web.trusted_proxies: []): the header is never read.
        ("127.0.0.1", ["203.0.113.9"], (), "127.0.0.1"),
        # No peer address (a Unix socket): as it is.
        (None, ["203.0.113.9"], LOOPBACK, "?"),
    ],
)
def test_client_address(peer: str | None, forwarded_for: list[str], trusted: tuple[Network, ...], expected: str) -> None:
    assert client_address(peer, forwarded_for, trusted) == expected


def test_a_client_cannot_choose_its_own_bucket_through_a_trusted_proxy() -> None:
    """Whatever a client writes in the header, a proxy that appends (or sets) its address has the last word."""
    for forged in ("127.0.0.1", "10.0.0.1", "::1", "203.0.113.1, 127.0.0.1", "x" * 300):
        assert client_address("127.0.0.1", [f"{forged}, 198.51.100.7"], LOOPBACK) == "198.51.100.7"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1", "192.0.2.1"),
        (" 192.0.2.1 ", "192.0.2.1"),
        ("192.0.2.1:80", "192.0.2.1"),
        ("2001:DB8::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("unknown", None),
        ("", None),
        ("192.0.2.256", None),
        ("example.org:80", None),
    ],
)
def test_parse_address(text: str, expected: str | None) -> None:
    address = parse_address(text)
    assert (str(address) if address is not None else None) == expected
