"""The reader's address behind a reverse proxy: X-Forwarded-For, believed only from a trusted peer.

Behind a proxy every connection to the web listener comes from the proxy, which writes the address it
saw in X-Forwarded-For (nginx's `$remote_addr` replaces the header, Caddy sets it; a proxy may also
append to it). Anything left of what a trusted proxy wrote came from the client, who can put anything
there; so the header is read from the right, and the first address that is not a trusted proxy's is
the client's. A peer outside `web.trusted_proxies` is the client itself, whatever its headers say.

    peer 127.0.0.1 (trusted), X-Forwarded-For: 6.6.6.6, 203.0.113.9   → 203.0.113.9
    peer 198.51.100.4 (not trusted), X-Forwarded-For: 203.0.113.9     → 198.51.100.4

The middleware gives every handler (the /join rate limits, the throttled log of dropped connections)
the request with that address as `request.remote`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from bridge.runtime.config import Network

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_address(text: str) -> Address | None:
    """An address as a peer or an X-Forwarded-For hop gives it (`192.0.2.1`, `192.0.2.1:443`,
    `2001:db8::1`, `[2001:db8::1]:443`); an IPv4-mapped IPv6 address as IPv4. None: not an address."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_trusted(address: Address, trusted: Iterable[Network]) -> bool:
    return any(address in network for network in trusted)


def client_address(peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> str:
    """The client's address: the peer's, or, when the peer is a trusted proxy, the right-most address of
    X-Forwarded-For (its header lines in order) that is not a trusted proxy. When every hop is trusted,
    the farthest; a hop that is no address ends the reading (what lies left of it is not believed)."""
    nearest = parse_address(peer) if peer else None
    if nearest is None:
        return peer or "?"  # a Unix socket, say: nothing to believe a header about
    if not is_trusted(nearest, trusted):
        return str(nearest)
    hops = [hop for line in forwarded_for for hop in line.split(",") if hop.strip()]
    for hop in reversed(hops):
        address = parse_address(hop)
        if address is None:
            break
        nearest = address
        if not is_trusted(address, trusted):
            break
    return str(nearest)


def client_addresses(trusted: Sequence[Network]) -> Middleware:
    """A middleware that hands the handlers the request with the client's address as `remote`."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if trusted:
            address = client_address(request.remote, request.headers.getall("X-Forwarded-For", []), trusted)
            if address != request.remote:
                request = request.clone(remote=address)
        return await handler(request)

    return middleware
