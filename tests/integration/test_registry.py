"""Channel and handle registration, as requesters and operators use it from a Matrix client.

Each test that needs operators or another creation policy restarts the shared Kanal with a changed
config.yaml (fresh operator account per test) and puts the original back afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import nio
import pytest

from tests.support import Env, User, create_channel, reconfigured

pytestmark = pytest.mark.integration

OPERATOR_ROOM = "Kanal operators"


def with_operators(
    *operators: User, policy: str = "open", **channels: Any
) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        data["operators"] = {"users": [op.user_id for op in operators]}
        data.setdefault("channels", {}).update({"creation_policy": policy, **channels})

    return change


async def join_operator_room(env: Env, operator: User) -> str:
    room_id = await operator.wait_invite(lambda _rid, room: (room.name or "") == OPERATOR_ROOM, timeout=30)
    await operator.join(room_id)
    return room_id


async def test_approval_requests_are_rejected_with_a_reason_or_approved(env: Env) -> None:
    operator, alice = await env.user("ops"), await env.user("alice")
    async with reconfigured(env, with_operators(operator, policy="approval", max_channels_per_user=2)):
        ops_room = await join_operator_room(env, operator)
        management = await alice.open_management_room()

        first, second = env.handle("req"), env.handle("req")
        answer = await alice.ask(management, f"create {first} First Try", "is number")
        number = re.search(r"is number (\d+)", answer)
        assert number is not None, answer
        request = number.group(1)
        announced = await operator.wait_for(
            ops_room, lambda e: f"Request #{request}:" in e.get("content", {}).get("body", "")
        )
        assert alice.user_id in announced["content"]["body"] and first in announced["content"]["body"]
        # Nothing exists yet: the handle is not an alias.
        assert isinstance(
            await alice.client.room_resolve_alias(f"#{first}:{env.domain}"), nio.RoomResolveAliasError
        )

        await operator.ask(ops_room, f"reject {request} not a news organisation", "has been told the reason")
        rejected = await alice.wait_for(
            management, lambda e: "was rejected" in e.get("content", {}).get("body", "")
        )
        assert "Their reason: not a news organisation" in rejected["content"]["body"]
        # A refusal is a decision: it has a statement of reasons and can be appealed to a person.
        decision = re.search(r"decision #(\d+)", rejected["content"]["body"])
        assert decision is not None, rejected
        mod_room = await operator.wait_invite(lambda _rid, room: (room.name or "") == "Kanal moderation")
        await operator.join(mod_room)
        appealed = await alice.ask(
            management, f"appeal {decision.group(1)} we are a registered newspaper", "is received"
        )
        appeal = re.search(r"appeal #(\d+)", appealed).group(1)  # type: ignore[union-attr]
        await operator.wait_for(
            mod_room, lambda e: f"Appeal a{appeal}" in e.get("content", {}).get("body", "")
        )
        await operator.ask(mod_room, f"grant a{appeal} registration papers checked", "granted")
        await alice.wait_for(
            management,
            lambda e: f"#{first}:{env.domain} is ready" in e.get("content", {}).get("body", ""),
            timeout=30,
        )

        answer = await alice.ask(management, f"create {second} Second Try", "is number")
        request = re.search(r"is number (\d+)", answer).group(1)  # type: ignore[union-attr]
        # The channel from the appeal and the pending request use up the quota of two.
        assert "the most this server allows" in await alice.ask(
            management, f"create {env.handle('req')} Third", "allows"
        )
        await operator.ask(ops_room, f"approve {request}", f"creating #{second}")
        await alice.wait_for(management, lambda e: "was approved" in e.get("content", {}).get("body", ""))
        await alice.wait_for(
            management, lambda e: "is ready" in e.get("content", {}).get("body", ""), timeout=30
        )
        resolved = await alice.client.room_resolve_alias(f"#{second}:{env.domain}")
        assert isinstance(resolved, nio.RoomResolveAliasResponse)
        assert "No requests are waiting" in await operator.ask(ops_room, "requests", "requests")

        # Operators' commands do not exist in a requester's chat with the bot.
        assert "I don't know the command “approve”" in await alice.ask(management, "approve 1", "approve")


async def test_registration_tokens_from_the_bot_and_from_the_cli(env: Env) -> None:
    operator, alice, bob = await env.user("ops"), await env.user("alice"), await env.user("bob")
    async with reconfigured(env, with_operators(operator, policy="token")):
        ops_room = await join_operator_room(env, operator)
        created = await operator.ask(
            ops_room, "token new --uses 1 --expires 1d launch week", "shown only now"
        )
        token = re.search(r"kanal_rt_\S+", created)
        assert token is not None, created
        assert "uses 0/1" in created and "launch week" in created

        management = await alice.open_management_room()
        handle = env.handle("tok")
        assert "needs a registration token" in await alice.ask(management, f"create {handle} Tokens", "token")
        assert "not valid" in await alice.ask(
            management, f"create {handle} Tokens --token kanal_rt_bogus", "token"
        )
        await alice.ask(
            management, f"create {handle} Tokens --token {token.group(0)}", "is ready", timeout=30
        )

        bob_room = await bob.open_management_room()
        used_up = await bob.ask(bob_room, f"create {env.handle('tok')} --token {token.group(0)}", "token")
        assert "used as many times as it allows" in used_up

        listed = await operator.ask(ops_room, "tokens", "Registration tokens")
        assert "uses 1/1" in listed and "used up" in listed
        assert token.group(0) not in listed  # only ever shown once

        cli = await env.run_cli("token", "create", "--uses", "2", "--label", "from the cli")
        cli_token = re.search(r"kanal_rt_\S+", cli)
        assert cli_token is not None, cli
        await bob.ask(
            bob_room, f"create {env.handle('tok')} --token {cli_token.group(0)}", "is ready", timeout=30
        )
        assert "revoked" in await env.run_cli("token", "revoke", cli_token.group(0)[len("kanal_rt_") :][:6])
        revoked = await bob.ask(bob_room, f"create {env.handle('tok')} --token {cli_token.group(0)}", "token")
        assert "revoked by the operators" in revoked


async def test_verified_channels_show_it_and_cannot_be_impersonated(env: Env) -> None:
    operator, alice, mallory = await env.user("ops"), await env.user("alice"), await env.user("mallory")
    async with reconfigured(env, with_operators(operator)):
        ops_room = await join_operator_room(env, operator)
        title = f"Daily Planet {env.handle('x')}"
        channel = await create_channel(env, alice, env.handle("planet"), title)
        await operator.ask(ops_room, f"verify {channel.handle}", "is verified")

        async def verified_state() -> Any:
            try:
                return (await alice.state(channel.broadcast, "net.kanal.verification")).get("verified")
            except AssertionError:
                return None

        await _eventually(lambda: verified_state(), True)
        await _eventually(
            lambda: _topic(alice, channel.broadcast), lambda topic: topic.endswith("✓ verified")
        )
        assert "Verified ✓" in await alice.ask(channel.management, f"info {channel.handle}", "Owner")

        mallory_room = await mallory.open_management_room()
        # Same title in capitals, a digit 1 for an l: it reads the same, so it is refused.
        look_alike = title.upper().replace("L", "1")
        refused = await mallory.ask(mallory_room, f"create {env.handle('fake')} {look_alike}", "title")
        assert f"verified channel #{channel.handle}" in refused

        await operator.ask(ops_room, f"unverify {channel.handle}", "no longer verified")
        await _eventually(lambda: verified_state(), False)


async def _topic(user: User, room_id: str) -> str:
    try:
        return str((await user.state(room_id, "m.room.topic")).get("topic", ""))
    except AssertionError:
        return ""


async def _eventually(read: Callable[[], Any], expected: Any, timeout: float = 20) -> None:
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = await read()
        if expected(value) if callable(expected) else value == expected:
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"still {value!r} after {timeout} s")


async def test_reserved_and_confusable_handles_are_refused(env: Env) -> None:
    alice, bob = await env.user("alice"), await env.user("bob")
    management = await alice.open_management_room()
    assert "is reserved" in await alice.ask(management, "create support Help Desk", "reserved")

    suffix = env.handle("")
    channel = await create_channel(env, alice, f"mail{suffix}", "Mail")
    bob_room = await bob.open_management_room()
    refused = await bob.ask(bob_room, f"create rnail{suffix} Not Mail", "looks too much like")
    assert f"mail{suffix}" in refused
    assert channel.handle == f"mail{suffix}"


async def test_rename_keeps_the_old_address_and_holds_it(env: Env) -> None:
    alice, bob = await env.user("alice"), await env.user("bob")
    old = env.handle("old")
    channel = await create_channel(env, alice, old, "Renamed Desk")
    new = env.handle("new")
    await alice.ask(channel.management, f"rename {old} {new}", f"is now #{new}")

    async def resolves(alias: str) -> str | None:
        response = await alice.client.room_resolve_alias(alias)
        return str(response.room_id) if isinstance(response, nio.RoomResolveAliasResponse) else None

    await _eventually(lambda: resolves(f"#{new}:{env.domain}"), channel.broadcast)
    assert await resolves(f"#{old}:{env.domain}") == channel.broadcast  # the grace period
    await _eventually(
        lambda: alice.state(channel.broadcast, "m.room.canonical_alias"),
        {"alias": f"#{new}:{env.domain}", "alt_aliases": [f"#{old}:{env.domain}"]},
    )
    bob_room = await bob.open_management_room()
    assert "held back until" in await bob.ask(bob_room, f"create {old} Squatter", "held back")
    assert f"#{new}:" in await alice.ask(channel.management, f"info {new}", "Owner")


async def test_transfer_needs_the_new_owner_to_accept(env: Env) -> None:
    alice, bob = await env.user("alice"), await env.user("bob")
    channel = await create_channel(env, alice, env.handle("give"), "Given Away")
    bob_room = await bob.open_management_room()

    await alice.ask(channel.management, f"transfer {channel.handle} {bob.user_id}", "I offered")
    await bob.wait_for(bob_room, lambda e: "offers you the channel" in e.get("content", {}).get("body", ""))
    assert "Nobody has offered you" in await alice.ask(
        channel.management, f"accept {channel.handle}", "offered"
    )

    await bob.ask(bob_room, f"accept {channel.handle}", "You are now the owner")
    await alice.wait_for(channel.management, lambda e: "accepted" in e.get("content", {}).get("body", ""))
    backstage = await bob.wait_invite(lambda _rid, room: f"(#{channel.handle})" in (room.name or ""))
    await bob.join(backstage)
    await _eventually(
        lambda: alice.state(channel.backstage, "m.room.power_levels"),
        lambda levels: (
            levels.get("users", {}).get(bob.user_id) == 100 and levels["users"].get(alice.user_id) == 50
        ),  # the previous owner is an editor now
    )
    # Alice stays an admin, but the owner's commands are Bob's now.
    refused = await alice.ask(channel.management, f"delete {channel.handle}", "Only the owner")
    assert f"({bob.user_id})" in refused


async def test_owner_sets_the_channels_retention(env: Env) -> None:
    alice = await env.user("alice")
    channel = await create_channel(env, alice, env.handle("keep"), "Short Memory")
    await alice.ask(channel.management, f"retention {channel.handle} 30", "for 30 days")
    day_ms = 24 * 3600 * 1000
    for room in (channel.broadcast, channel.backstage):
        await _eventually(
            lambda room=room: alice.state(room, "m.room.retention"),  # type: ignore[misc]
            lambda content: content.get("max_lifetime") == 30 * day_ms,
        )
    assert "Usage" in await alice.ask(channel.management, f"retention {channel.handle} forever", "Usage")
