"""Federation with a real second homeserver: what a reader on another server does and sees, and how
Kanal's hosting policy holds against other servers (the `federation` fixture: two Synapses over TLS)."""

from __future__ import annotations

import nio
import pytest

from tests.federation import Federated
from tests.support import create_channel

pytestmark = pytest.mark.integration


async def test_a_remote_reader_finds_joins_and_reads_a_channel(federation: Federated) -> None:
    home = federation.home
    alice = await home.user("alice")
    channel = await create_channel(home, alice, home.handle("fed"), "Far and wide")
    reader = await federation.reader()
    resolved = await reader.client.room_resolve_alias(f"#{channel.handle}:{home.domain}")
    assert isinstance(resolved, nio.RoomResolveAliasResponse), resolved
    assert resolved.room_id == channel.broadcast
    await reader.join(f"#{channel.handle}:{home.domain}")
    await alice.text(channel.backstage, "hello other servers")
    await reader.wait_for(channel.broadcast, lambda e: e.get("content", {}).get("body") == "hello other servers")
