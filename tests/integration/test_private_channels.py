"""Private channels over a real Synapse: unlisted, joined by invite link (web page) or by knocking,
join requests approved or declined in backstage; readers are real matrix-nio clients."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any
from urllib.parse import quote

import aiohttp
import nio
import pytest
import yaml
from nio.responses import PublicRoomsResponse

from tests.support import DEFAULT_TIMEOUT, Channel, Env, User, create_channel, reconfigured

pytestmark = pytest.mark.integration

LINK = re.compile(r"https?://\S+/join/(kanal_inv_[A-Za-z0-9_-]{24})")
STAMP = re.compile(r'name="form" value="([^"]+)"')


def web_base(env: Env) -> str:
    config = yaml.safe_load(env.kanal.config_path.read_text())
    return f"http://{config['web']['listen']}"


async def join_rule(env: Env, room_id: str) -> str:
    """The room's join rule, read as Kanal's bot (the channel's owner is not in the broadcast room)."""
    config = yaml.safe_load(env.kanal.config_path.read_text())
    headers = {"Authorization": f"Bearer {config['appservice']['as_token']}"}
    url = f"{env.homeserver}/_matrix/client/v3/rooms/{quote(room_id)}/state/m.room.join_rules/"
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as response:
        assert response.status == 200, await response.text()
        rule: str = (await response.json())["join_rule"]
        return rule


async def private_channel(env: Env, owner: User, title: str) -> Channel:
    channel = await create_channel(env, owner, env.handle("priv"), f"{title} --private")
    return channel


async def new_link(owner: User, channel: Channel, options: str = "") -> tuple[int, str]:
    answer = await owner.ask(channel.backstage, f"!link new {options}".strip(), "shown only this once")
    match = LINK.search(answer)
    assert match is not None, answer
    number = re.search(r"Invite link (\d+)", answer)
    assert number is not None, answer
    return int(number.group(1)), match.group(1)


async def fetch_page(env: Env, token: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(f"{web_base(env)}/join/{token}") as response:
        return response.status, await response.text()


async def submit(env: Env, token: str, user_id: str) -> tuple[int, str]:
    status, page = await fetch_page(env, token)
    stamp = STAMP.search(page)
    assert status == 200 and stamp is not None, (status, page)
    base = web_base(env)
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{base}/join/{token}",
            data={"user_id": user_id, "form": stamp.group(1)},
            headers={"Origin": base},
        ) as response,
    ):
        return response.status, await response.text()


async def wait_invited(user: User, room_id: str) -> None:
    await user.wait_invite(lambda rid, _room: rid == room_id)


async def member_state(reader: User, room_id: str, user_id: str) -> dict[str, Any]:
    return await reader.state(room_id, "m.room.member", user_id)


async def eventually_membership(reader: User, room_id: str, user_id: str, membership: str) -> dict[str, Any]:
    deadline = time.monotonic() + DEFAULT_TIMEOUT
    content: dict[str, Any] = {}
    while time.monotonic() < deadline:
        content = await member_state(reader, room_id, user_id)
        if content.get("membership") == membership:
            return content
        await asyncio.sleep(0.2)
    raise AssertionError(f"{user_id} is not {membership} in {room_id}: {content}")


async def test_a_private_channel_is_unlisted_hidden_and_closed(env: Env) -> None:
    alice, bob = await env.user("alice"), await env.user("bob")
    channel = await private_channel(env, alice, "Hidden Desk")

    assert await join_rule(env, channel.broadcast) == "knock"
    visibility = await bob.client.room_get_visibility(channel.broadcast)
    assert isinstance(visibility, nio.RoomGetVisibilityResponse), visibility
    assert visibility.visibility == "private"
    public = await bob.client.list_public_rooms(filter_generic_search_term=channel.handle)
    assert isinstance(public, PublicRoomsResponse), public
    assert all(room.room_id != channel.broadcast for room in public.public_rooms)

    async with aiohttp.ClientSession() as http:
        for path in (f"/c/{channel.handle}", f"/c/{channel.handle}/feed.atom", f"/?q={channel.handle}"):
            async with http.get(web_base(env) + path) as response:
                text = await response.text()
                assert response.status == (200 if path.startswith("/?") else 404), path
                assert "Hidden Desk" not in text, path

    refused = await bob.client.join(f"#{channel.handle}:{env.domain}")
    assert isinstance(refused, nio.JoinError), refused

    # Public again, then private again: the owner decides, nobody else.
    bobs_chat = await bob.open_management_room()
    assert "may do that: owner." in await bob.ask(bobs_chat, f"private {channel.handle} off", "owner")
    await alice.ask(channel.management, f"private {channel.handle} off", "public again")
    deadline = time.monotonic() + DEFAULT_TIMEOUT
    while await join_rule(env, channel.broadcast) != "public":
        assert time.monotonic() < deadline, "join rule not public"
        await asyncio.sleep(0.2)
    assert await bob.join(f"#{channel.handle}:{env.domain}") == channel.broadcast
    await alice.ask(channel.management, f"private {channel.handle} on", "now private")


async def test_an_invite_link_lets_a_reader_in_until_used_up_or_revoked(env: Env) -> None:
    alice, bob, carol = await env.user("alice"), await env.user("bob"), await env.user("carol")
    channel = await private_channel(env, alice, "Link Desk")
    number, token = await new_link(alice, channel, "--uses 1 --expires 7d")

    status, page = await fetch_page(env, token)
    assert status == 200 and "Link Desk" in page and 'name="user_id"' in page
    status, page = await submit(env, token, "not a user id")
    assert status == 400 and "is not a Matrix id" in page
    status, page = await submit(env, token, bob.user_id)
    assert status == 200 and "invited" in page.lower(), page

    await wait_invited(bob, channel.broadcast)
    assert await bob.join(channel.broadcast) == channel.broadcast
    await alice.text(channel.backstage, "for members only")
    await bob.wait_for(channel.broadcast, lambda e: e.get("content", {}).get("body") == "for members only")

    # One use only: the link is used up now.
    status, page = await fetch_page(env, token)
    assert status == 410 and "used as often" in page
    listing = await alice.ask(channel.backstage, "!link list", "Invite links of")
    assert f"{number} — used up" in listing and "used 1 of 1 times" in listing and token not in listing

    other, other_token = await new_link(alice, channel)
    await alice.ask(channel.backstage, f"!link revoke {other}", "is revoked")
    status, page = await fetch_page(env, other_token)
    assert status == 410 and "withdrawn" in page
    status, _ = await fetch_page(env, "kanal_inv_" + "x" * 24)
    assert status == 404
    # A cross-site form post is refused.
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{web_base(env)}/join/{token}",
            data={"user_id": carol.user_id, "form": "1.x"},
            headers={"Origin": "https://evil.example"},
        ) as response,
    ):
        assert response.status == 403
    assert token not in env.kanal.log_path.read_text()  # tokens are never logged


async def test_a_knock_with_the_link_as_reason_is_let_in(env: Env) -> None:
    alice, dave = await env.user("alice"), await env.user("dave")
    channel = await private_channel(env, alice, "Knock Desk")
    _, token = await new_link(alice, channel)

    knocked = await dave.client.room_knock(
        f"#{channel.handle}:{env.domain}", reason=f"hello, my link: {web_base(env)}/join/{token}"
    )
    assert isinstance(knocked, nio.RoomKnockResponse), knocked

    await wait_invited(dave, channel.broadcast)
    assert await dave.join(channel.broadcast) == channel.broadcast


async def test_without_web_pages_the_code_works_as_a_knock_reason(env: Env) -> None:
    def no_web(data: dict[str, Any]) -> None:
        data.pop("web", None)

    async with reconfigured(env, no_web):
        alice, erin = await env.user("alice"), await env.user("erin")
        channel = await private_channel(env, alice, "Quiet Desk")
        answer = await alice.ask(channel.backstage, "!link new --uses 1", "shown only this once")
        assert "/join/" not in answer and "no web pages" in answer
        code = re.search(r"kanal_inv_[A-Za-z0-9_-]{24}", answer)
        assert code is not None, answer
        knocked = await erin.client.room_knock(f"#{channel.handle}:{env.domain}", reason=code.group(0))
        assert isinstance(knocked, nio.RoomKnockResponse), knocked
        await wait_invited(erin, channel.broadcast)


async def test_join_requests_are_approved_or_declined_in_backstage(env: Env) -> None:
    alice, erin, frank = await env.user("alice"), await env.user("erin"), await env.user("frank")
    channel = await private_channel(env, alice, "Gate Desk")
    _, token = await new_link(alice, channel, "--approve")

    knocked = await frank.client.room_knock(channel.broadcast, reason="please let me read")
    assert isinstance(knocked, nio.RoomKnockResponse), knocked
    frank_request = await alice.wait_for(
        channel.backstage,
        lambda e: (
            frank.user_id in e.get("content", {}).get("body", "") and "Join request" in e["content"]["body"]
        ),
    )
    assert "please let me read" in frank_request["content"]["body"]
    frank_number = re.search(r"Join request (\d+)", frank_request["content"]["body"])
    assert frank_number is not None

    status, page = await submit(env, token, erin.user_id)
    assert status == 200 and "waiting" in page, page
    status, page = await submit(env, token, erin.user_id)
    assert status == 200 and "already waiting" in page, page
    erin_request = await alice.wait_for(
        channel.backstage,
        lambda e: (
            erin.user_id in e.get("content", {}).get("body", "") and "Join request" in e["content"]["body"]
        ),
    )
    erin_number = re.search(r"Join request (\d+)", erin_request["content"]["body"])
    assert erin_number is not None and "invite link" in erin_request["content"]["body"]

    listing = await alice.ask(channel.backstage, "!requests", "waiting for")
    assert erin.user_id in listing and frank.user_id in listing

    await alice.ask(channel.backstage, f"!approve {erin_number.group(1)}", "approved")
    await wait_invited(erin, channel.broadcast)
    assert await erin.join(channel.broadcast) == channel.broadcast

    await alice.ask(channel.backstage, f"!decline {frank_number.group(1)} not this time", "declined")
    refused = await eventually_membership(erin, channel.broadcast, frank.user_id, "leave")
    assert refused.get("reason") == "not this time"
    assert "No join requests" in await alice.ask(channel.backstage, "!requests", "join requests")
    again = await alice.ask(channel.backstage, f"!approve {frank_number.group(1)}", "No join request")
    assert "is waiting" in again

    # A knock taken back is a request withdrawn: approving it later invites nobody.
    gina = await env.user("gina")
    knocked = await gina.client.room_knock(channel.broadcast, reason="maybe")
    assert isinstance(knocked, nio.RoomKnockResponse), knocked
    gina_request = await alice.wait_for(
        channel.backstage,
        lambda e: (
            gina.user_id in e.get("content", {}).get("body", "") and "Join request" in e["content"]["body"]
        ),
    )
    gina_number = re.search(r"Join request (\d+)", gina_request["content"]["body"])
    assert gina_number is not None
    left = await gina.client.room_leave(channel.broadcast)
    assert isinstance(left, nio.RoomLeaveResponse), left
    await alice.wait_for(
        channel.backstage,
        lambda e: f"withdrew join request {gina_number.group(1)}" in e.get("content", {}).get("body", ""),
    )
    await alice.ask(channel.backstage, f"!approve {gina_number.group(1)}", "No join request")
    assert (await member_state(erin, channel.broadcast, gina.user_id))["membership"] == "leave"
