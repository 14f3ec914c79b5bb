"""Federation with a real second homeserver: what a reader on another server does and sees, and how
Kanal's hosting policy holds against other servers.

The `federation` fixture runs Kanal on `127.0.0.1:<port>` and the readers' homeserver on
`localhost:<port>`, federating over TLS (tests/federation.py). Every test makes its own users and
channels; tests that change Kanal's configuration restart that Kanal and put it back afterwards.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import nio
import pytest
import yaml

from tests.federation import Federated
from tests.integration.test_comments import body, eventually, fetch, in_thread
from tests.integration.test_compliance import body_has, compliance, join_moderation_room
from tests.integration.test_private_channels import new_link
from tests.integration.test_stats import POLL, read, vote
from tests.support import Channel, Env, User, create_channel, reconfigured

pytestmark = pytest.mark.integration

TIMEOUT = 40.0  # a few federation round trips (a join is make_join, send_join and the room's state)


def ghost_of(env: Env, channel: Channel) -> str:
    return f"@{env.ghost_prefix}{channel.handle}:{env.domain}"


def body_is(text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: body(e) == text


async def join_remote(reader: User, env: Env, channel: Channel) -> str:
    """The reader resolves `#handle:<Kanal's server>` on its own homeserver and joins."""
    alias = f"#{channel.handle}:{env.domain}"
    resolved = await reader.client.room_resolve_alias(alias)
    assert isinstance(resolved, nio.RoomResolveAliasResponse), resolved
    return await reader.join(alias)


async def join_when_invited(reader: User, room_id: str) -> None:
    """Join a room on Kanal's server the reader was invited to. Kanal's homeserver records an invite
    of a remote user after the remote server has signed it, so the reader may see it a moment before
    Kanal's homeserver lets them in ("You are not invited"): try again until it does."""

    async def joined() -> bool:
        response = await reader.client.join(room_id)
        return isinstance(response, nio.JoinResponse)

    await eventually(joined, f"{reader.user_id} joining {room_id}", TIMEOUT)
    reader.joined.add(room_id)


async def open_chat(reader: User) -> str:
    """A direct chat with Kanal's bot, created on the reader's own homeserver."""
    response = await reader.client.room_create(is_direct=True, invite=[reader.env.bot])
    assert isinstance(response, nio.RoomCreateResponse), response
    room_id = str(response.room_id)
    await reader.wait_for(
        room_id, lambda e: e.get("sender") == reader.env.bot and e["type"] == "m.room.message", TIMEOUT
    )
    return room_id


def doctor(env: Env, homeserver_config: Path, config: Path | None = None) -> dict[str, dict[str, str]]:
    """`kanal doctor` on Kanal's config (or `config`) and `homeserver_config`: its checks by name."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bridge.cli",
            "doctor",
            "-c",
            str(config or env.kanal.config_path),
            "--homeserver-config",
            str(homeserver_config),
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode in (0, 1, 3), result.stderr
    return {check["name"]: check for check in json.loads(result.stdout)["checks"]}


def as_bot(env: Env) -> dict[str, str]:
    """Request headers that speak as Kanal's bot (its application service token)."""
    config = yaml.safe_load(env.kanal.config_path.read_text())
    return {"Authorization": f"Bearer {config['appservice']['as_token']}"}


async def bot_state(env: Env, room_id: str, event_type: str) -> dict[str, Any]:
    """A state event of a room, read as Kanal's bot (who is in every channel room)."""
    url = f"{env.homeserver}/_matrix/client/v3/rooms/{quote(room_id)}/state/{event_type}/"
    async with aiohttp.ClientSession() as http, http.get(url, headers=as_bot(env)) as response:
        assert response.status == 200, await response.text()
        content: dict[str, Any] = await response.json()
        return content


async def local_aliases(env: Env, room_id: str) -> list[str]:
    """The aliases Kanal's homeserver holds for a room (its own table: no application service asked)."""
    url = f"{env.homeserver}/_matrix/client/v3/rooms/{quote(room_id)}/aliases"
    async with aiohttp.ClientSession() as http, http.get(url, headers=as_bot(env)) as response:
        assert response.status == 200, await response.text()
        return list((await response.json())["aliases"])


async def join_via(user: User, room_id: str, server: str) -> tuple[int, dict[str, Any]]:
    """A join by room id through `server` (nio's join takes no server name): status and answer."""
    client = user.client
    url = f"{client.homeserver}/_matrix/client/v3/join/{quote(room_id)}"
    headers = {"Authorization": f"Bearer {client.access_token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, params={"server_name": server}, json={}, headers=headers) as response,
    ):
        answer: dict[str, Any] = await response.json()
        return response.status, answer


def homeserver_config_with(env: Env, path: Path, **settings: Any) -> Path:
    """Kanal's homeserver's real homeserver.yaml, with `settings` changed, written to `path`."""
    data = yaml.safe_load(env.synapse.config_path.read_text())
    data.update(settings)
    path.write_text(yaml.safe_dump(data))
    return path


def hosting(**settings: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        data["hosting"] = settings

    return change


# Why Kanal's homeserver refuses a remote join (Synapse's make_join answer, passed on to the reader).
NOT_INVITED = "You are not invited to this room."  # the join rule (a private channel)
SERVER_REFUSED = "Server is banned from room"  # the room's server ACL (allowlist, closed, a server ban)


async def refused_join(reader: User, room: str, reason: str) -> None:
    """The reader's join is refused as forbidden, for `reason` (not for a federation fault)."""
    response = await reader.client.join(room)
    assert isinstance(response, nio.JoinError), response
    assert response.status_code == "M_FORBIDDEN" and response.message == reason, response


# -- what a remote reader does -------------------------------------------------------------------------


async def test_a_remote_reader_reads_reacts_votes_and_is_counted(federation: Federated) -> None:
    env = federation.home
    alice, reader = await env.user("alice"), await federation.reader()
    channel = await create_channel(env, alice, env.handle("fed"), "Far and wide")
    bs, room, ghost = channel.backstage, channel.broadcast, ghost_of(env, channel)
    assert await join_remote(reader, env, channel) == room

    def from_ghost(text: str) -> Callable[[dict[str, Any]], bool]:
        return lambda e: e.get("sender") == ghost and body(e) == text

    # Posts, edits and deletions reach the remote server.
    source = await alice.text(bs, "hello other servers")
    post = await reader.wait_for(room, from_ghost("hello other servers"), TIMEOUT)
    edit = {
        "msgtype": "m.text",
        "body": "* hello, other servers",
        "m.new_content": {"msgtype": "m.text", "body": "hello, other servers"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": source},
    }
    await alice.send(bs, edit)
    edited = await reader.wait_for(
        room,
        lambda e: e.get("sender") == ghost
        and e["content"].get("m.relates_to", {}).get("event_id") == post["event_id"]
        and e["content"].get("m.new_content", {}).get("body") == "hello, other servers",
        TIMEOUT,
    )
    assert edited["content"]["m.relates_to"]["rel_type"] == "m.replace"
    doomed = await alice.text(bs, "a mistake")
    mistake = await reader.wait_for(room, from_ghost("a mistake"), TIMEOUT)
    await alice.client.room_redact(bs, doomed, reason="wrong")

    async def redacted() -> bool:
        return not (await fetch(reader, room, mistake["event_id"])).get("content")

    await eventually(redacted, "the deletion over federation", TIMEOUT)

    # A pin.
    pin = {"msgtype": "m.text", "body": "!pin", "m.relates_to": {"m.in_reply_to": {"event_id": source}}}
    await alice.send(bs, pin)

    async def pinned() -> bool:
        response = await reader.client.room_get_state_event(room, "m.room.pinned_events")
        return isinstance(response, nio.RoomGetStateEventResponse) and response.content.get("pinned") == [
            post["event_id"]
        ]

    await eventually(pinned, "the pin over federation", TIMEOUT)

    # Power levels hold across federation: the reader's own server refuses a post or a state change.
    refused = await reader.client.room_send(room, "m.room.message", {"msgtype": "m.text", "body": "me too"})
    assert isinstance(refused, nio.RoomSendError) and refused.status_code == "M_FORBIDDEN", refused
    renamed = await reader.client.room_put_state(room, "m.room.name", {"name": "mine now"})
    assert isinstance(renamed, nio.RoomPutStateError) and renamed.status_code == "M_FORBIDDEN", renamed

    # The reader reacts, votes in a poll and reads: Kanal counts all three, and the reader as a subscriber.
    reaction = {"m.relates_to": {"rel_type": "m.annotation", "event_id": post["event_id"], "key": "👍"}}
    await reader.send(room, reaction, "m.reaction")
    await alice.send(bs, POLL, event_type="org.matrix.msc3381.poll.start")
    poll = await reader.wait_for(
        room, lambda e: e.get("sender") == ghost and e["type"] == "org.matrix.msc3381.poll.start", TIMEOUT
    )
    await reader.send(room, vote(poll["event_id"], "tea"), event_type="org.matrix.msc3381.poll.response")
    await read(reader, room, post["event_id"])

    answer = ""

    async def tallied() -> bool:
        nonlocal answer
        answer = await alice.ask(bs, "!poll results", "Tea or coffee?")
        return "• Tea: 1 (100%)" in answer

    await eventually(tallied, "the remote vote counted", TIMEOUT)
    assert "1 voters · open" in answer, answer

    async def counted() -> bool:
        nonlocal answer
        answer = await alice.ask(bs, "!stats", "Recent posts")
        return "hello, other servers — 👁 1 · 1 reactions" in answer

    await eventually(counted, "the remote receipt and reaction counted", TIMEOUT)
    assert "Subscribers: 1 " in answer, answer


async def test_a_remote_reader_chats_with_the_bot(federation: Federated) -> None:
    env = federation.home
    alice, reader = await env.user("alice"), await federation.reader()
    channel = await create_channel(env, alice, env.handle("chat"), "Chatty")
    await join_remote(reader, env, channel)
    await alice.text(channel.backstage, "something to report")
    post = await reader.wait_for(channel.broadcast, body_is("something to report"), TIMEOUT)

    chat = await open_chat(reader)  # the bot greets with `help`
    assert "info <handle>" in await reader.ask(chat, "help", "info <handle>", TIMEOUT)
    info = await reader.ask(chat, f"info {channel.handle}", f"#{channel.handle}:{env.domain}", TIMEOUT)
    assert "Chatty" in info and "Subscribers: 1" in info, info
    link = f"https://matrix.to/#/{channel.broadcast}/{post['event_id']}?via={env.domain}"
    ack = await reader.ask(chat, f"report {link} spam: not really", "is received", TIMEOUT)
    assert re.search(r"notice #\d+", ack), ack
    # Channels are made and managed by the server's own users only.
    refusal = await reader.ask(chat, f"create {env.handle('mine')} Mine", "Only users of", TIMEOUT)
    assert env.domain in refusal
    # The other reader's commands: the bot answers in the language chosen, from then on.
    chosen = await reader.ask(chat, "language fa", "از این پس", TIMEOUT)
    assert "فارسی" in chosen, chosen
    usage = await reader.ask(chat, "appeal", "روش استفاده", TIMEOUT)
    assert "اعتراض (appeal)" in usage, usage


async def test_a_remote_reader_knocks_with_a_code_and_is_let_in(federation: Federated) -> None:
    env = federation.home
    alice, reader = await env.user("alice"), await federation.reader()
    channel = await create_channel(env, alice, env.handle("priv"), "Private Desk --private")
    alias = f"#{channel.handle}:{env.domain}"
    # The join rule keeps the remote reader out …
    await refused_join(reader, alias, NOT_INVITED)
    # … until they knock with an invite link's code (the code alone, as a link's page shows it).
    _, code = await new_link(alice, channel)
    knocked = await reader.client.room_knock(alias, reason=code)
    assert isinstance(knocked, nio.RoomKnockResponse), knocked
    await reader.wait_invite(lambda rid, _room: rid == channel.broadcast, TIMEOUT)
    await join_when_invited(reader, channel.broadcast)
    await alice.text(channel.backstage, "for members, wherever they are")
    await reader.wait_for(channel.broadcast, body_is("for members, wherever they are"), TIMEOUT)


async def test_a_remote_reader_lands_in_the_open_shard(federation: Federated) -> None:
    env = federation.home

    def one_reader_a_room(data: dict[str, Any]) -> None:
        data.setdefault("channels", {})["shard_size"] = 1

    async with reconfigured(env, one_reader_a_room):
        alice, bob, reader = await env.user("alice"), await env.user("bob"), await federation.reader()
        channel = await create_channel(env, alice, env.handle("shard"), "Sharded")
        await bob.join(channel.broadcast)  # the first room is full: Kanal opens the next

        async def moved() -> bool:
            resolved = await bob.client.room_resolve_alias(f"#{channel.handle}:{env.domain}")
            return isinstance(resolved, nio.RoomResolveAliasResponse) and resolved.room_id != channel.broadcast

        await eventually(moved, "#handle moved to the second room", TIMEOUT)
        second = await join_remote(reader, env, channel)
        assert second != channel.broadcast
        await alice.text(channel.backstage, "to every room")
        await reader.wait_for(second, body_is("to every room"), TIMEOUT)
        await bob.wait_for(channel.broadcast, body_is("to every room"), TIMEOUT)


async def test_a_missing_alias_is_pointed_again_when_another_server_asks(federation: Federated) -> None:
    """`#handle` gone from Kanal's homeserver: a remote reader's directory query reaches Kanal's own alias
    query (the homeserver asks the application service whose namespace the alias is in), and Kanal
    points the alias at the channel's open room again, port-bearing server name and all."""
    env = federation.home
    alice, reader = await env.user("alice"), await federation.reader()
    channel = await create_channel(env, alice, env.handle("lost"), "Lost and found")
    alias = f"#{channel.handle}:{env.domain}"
    assert alias in await local_aliases(env, channel.broadcast)
    url = f"{env.homeserver}/_matrix/client/v3/directory/room/{quote(alias)}"
    async with aiohttp.ClientSession() as http, http.delete(url, headers=as_bot(env)) as response:
        assert response.status == 200, await response.text()
    assert alias not in await local_aliases(env, channel.broadcast)

    assert await join_remote(reader, env, channel) == channel.broadcast
    assert alias in await local_aliases(env, channel.broadcast)
    await alice.text(channel.backstage, "found again")
    await reader.wait_for(channel.broadcast, body_is("found again"), TIMEOUT)


# -- hosting policy against other servers ---------------------------------------------------------------


async def test_allowlist_and_closed_keep_the_other_server_out(federation: Federated, tmp_path: Path) -> None:
    env = federation.home
    alice, reader = await env.user("alice"), await federation.reader()
    remote_host = federation.remote_domain.split(":")[0]
    own_host = env.domain.split(":")[0]

    async with reconfigured(env, hosting(federation="allowlist", allowed_servers=["partner.example"])):
        channel = await create_channel(env, alice, env.handle("allow"), "Allowlisted")
        acl = await alice.state(channel.backstage, "m.room.server_acl")
        assert remote_host not in acl["allow"] and "partner.example" in acl["allow"]
        await refused_join(reader, f"#{channel.handle}:{env.domain}", SERVER_REFUSED)
        # The homeserver still federates with everyone: doctor says so, and what would agree.
        checks = doctor(env, env.synapse.config_path)
        assert checks["federation"]["status"] == "fail", checks["federation"]
        assert "federation_domain_whitelist is not set" in checks["federation"]["detail"]
        agreeing = homeserver_config_with(
            env, tmp_path / "allowlist.yaml", federation_domain_whitelist=[env.domain, "partner.example"]
        )
        assert doctor(env, agreeing)["federation"]["status"] == "pass"
        leaky = homeserver_config_with(
            env, tmp_path / "leaky.yaml", federation_domain_whitelist=[env.domain, federation.remote_domain]
        )
        leak = doctor(env, leaky)["federation"]
        assert leak["status"] == "fail", leak
        assert f"federation_domain_whitelist also allows {federation.remote_domain}" in leak["detail"], leak

    async with reconfigured(env, hosting(federation="closed")):
        closed = await create_channel(env, alice, env.handle("closed"), "Closed")
        create = await alice.state(closed.backstage, "m.room.create")
        assert create.get("m.federate") is False
        await refused_join(reader, f"#{closed.handle}:{env.domain}", SERVER_REFUSED)
        # Rooms made before: their ACL now allows Kanal's own server only.
        acl = await alice.state(channel.backstage, "m.room.server_acl")
        assert acl["allow"] == [own_host, env.domain], acl
        checks = doctor(env, env.synapse.config_path)
        assert checks["federation"]["status"] == "fail", checks["federation"]
        sealed = homeserver_config_with(env, tmp_path / "closed.yaml", federation_domain_whitelist=[])
        assert doctor(env, sealed)["federation"]["status"] == "pass"

    # Open again (the session's configuration): once the ACL says so, the remote reader joins.
    # (Joining only then: Synapse 1.163 drops a room's cached ACL before it stores the new ACL event
    # (handlers/message.py), so a request from the other server in between caches the old one, which
    # refuses that server until it expires or Synapse restarts: README, *Federation*.)
    async def reopened() -> bool:
        return (await bot_state(env, channel.broadcast, "m.room.server_acl")).get("allow") == ["*"]

    await eventually(reopened, "the open ACL back on the channel room", TIMEOUT)
    await join_remote(reader, env, channel)
    checks = doctor(env, env.synapse.config_path)
    assert checks["federation"]["status"] == "pass", checks["federation"]


async def test_the_homeserver_whitelist_admits_exact_server_names_only(
    federation: Federated, tmp_path: Path
) -> None:
    """Synapse's `federation_domain_whitelist`, really applied, does what `kanal doctor` says of it: a
    homeserver whose whitelist names Kanal's server exactly and the readers' server by its host only
    (`localhost`, without the port its server name has) lets Kanal's users in and refuses the readers',
    though Kanal's server ACL (hosts, ports ignored) would admit both."""
    env = federation.home
    remote_host = federation.remote_domain.split(":")[0]
    alice, reader = await env.user("alice"), await federation.reader()
    async with federation.gated(tmp_path / "gated", [env.domain, remote_host]) as gated:
        # Kanal on that homeserver, letting in Kanal's stack server and the readers' server by name.
        data = yaml.safe_load(env.kanal.config_path.read_text())
        data["homeserver"]["domain"] = gated.server_name
        data["hosting"] = {"federation": "allowlist", "allowed_servers": [env.domain, federation.remote_domain]}
        config = tmp_path / "gated-kanal.yaml"
        config.write_text(yaml.safe_dump(data))
        verdict = (await asyncio.to_thread(doctor, env, gated.config_path, config))["federation"]
        assert verdict["status"] == "warn", verdict
        assert verdict["detail"] == (
            f"hosting.allowed_servers lists {federation.remote_domain}, which federation_domain_whitelist "
            f"blocks (it lists {remote_host}: Synapse compares the whole server name, port included)"
        ), verdict
        assert f"{env.domain}, {federation.remote_domain}]" in verdict["fix"], verdict

        # What that homeserver really does: a public room on it, joined from each of the other two.
        password = secrets.token_urlsafe(12)
        owner = nio.AsyncClient(gated.base_url, await gated.register_user("owner", password))
        env.users.append(owner)
        assert isinstance(await owner.login(password), nio.LoginResponse)
        created = await owner.room_create(visibility=nio.RoomVisibility.public, name="Gated")
        assert isinstance(created, nio.RoomCreateResponse), created
        status, answer = await join_via(alice, created.room_id, gated.server_name)
        assert status == 200 and answer.get("room_id") == created.room_id, (status, answer)
        status, answer = await join_via(reader, created.room_id, gated.server_name)
        assert (status, answer.get("errcode")) == (403, "M_FORBIDDEN"), (status, answer)
        assert answer.get("error") == f"Federation denied with {federation.remote_domain}.", answer


async def test_a_policy_list_server_ban_shuts_out_a_joined_server_until_lifted(federation: Federated) -> None:
    env = federation.home
    moderator, alice, bob = await env.user("mod"), await env.user("alice"), await env.user("bob")
    reader = await federation.reader()
    remote_host = federation.remote_domain.split(":")[0]
    channel = await create_channel(env, alice, env.handle("ban"), "Banned or not")
    room = channel.broadcast
    await bob.join(room)
    await join_remote(reader, env, channel)
    await alice.text(channel.backstage, "before the ban")
    post = await reader.wait_for(room, body_is("before the ban"), TIMEOUT)
    alias_name = env.handle("bans")
    created = await moderator.client.room_create(
        alias=alias_name, name="Ban list", visibility=nio.RoomVisibility.public
    )
    assert isinstance(created, nio.RoomCreateResponse), created
    alias = f"#{alias_name}:{env.domain}"

    async def denied() -> list[str]:
        acl = await bob.state(room, "m.room.server_acl")
        return list(acl.get("deny", []))

    def react(key: str) -> dict[str, Any]:
        return {"m.relates_to": {"rel_type": "m.annotation", "event_id": post["event_id"], "key": key}}

    async with reconfigured(env, compliance(moderator, policy_rooms=[alias])):
        rule = {"entity": remote_host, "recommendation": "m.ban", "reason": "spam network"}
        await moderator.client.room_put_state(created.room_id, "m.policy.rule.server", rule, state_key="r1")
        try:

            async def banned() -> bool:
                return remote_host in await denied()

            await eventually(banned, "the server ban in the ACL", TIMEOUT)
            # From now on Kanal's homeserver refuses what the banned server sends in the room (the
            # reader's own server still takes the reaction; Kanal's drops it and says so in its log).
            log = env.synapse.log_path
            offset = log.stat().st_size
            await reader.send(room, react("👎"), "m.reaction")
            refusal = f"Ignoring PDUs for room {room} from banned server"

            async def refused() -> bool:
                with log.open("rb") as f:
                    f.seek(offset)
                    return refusal in f.read().decode("utf-8", "replace")

            await eventually(refused, "Kanal's homeserver refusing the banned server's event", TIMEOUT)
        finally:
            # The rule is withdrawn: the server is welcome again.
            await moderator.client.room_put_state(created.room_id, "m.policy.rule.server", {}, state_key="r1")

        async def lifted() -> bool:
            return remote_host not in await denied()

        await eventually(lifted, "the ban lifted from the ACL", TIMEOUT)
        sent = await reader.send(room, react("🎉"), "m.reaction")
        await bob.wait_for(room, lambda e: e["event_id"] == sent, TIMEOUT)


# -- what crosses the border ------------------------------------------------------------------------------


async def test_a_forward_from_a_channel_on_another_server_has_no_header(federation: Federated) -> None:
    env = federation.home
    alice, far = await env.user("alice"), await federation.reader("farowner")
    channel = await create_channel(env, alice, env.handle("fwd"), "Forwarder")
    # A channel on the other server: its post carries the marker a Kanal there adds to what it relays.
    far_alias = env.handle("far")
    created = await far.client.room_create(
        visibility=nio.RoomVisibility.public, alias=far_alias, name="Far channel"
    )
    assert isinstance(created, nio.RoomCreateResponse), created
    original = {"msgtype": "m.text", "body": "news from afar", "net.kanal.source": "$elsewhere:far"}
    await far.send(created.room_id, original)
    await alice.join(f"#{far_alias}:{federation.remote_domain}")
    seen = await alice.wait_for(created.room_id, body_is("news from afar"), TIMEOUT)
    await alice.send(channel.backstage, dict(seen["content"]))  # a forward copies the content
    reader = await env.user("bob")
    await reader.join(channel.broadcast)
    copy = await reader.wait_for(
        channel.broadcast,
        lambda e: e.get("sender") == ghost_of(env, channel) and e["type"] == "m.room.message",
        TIMEOUT,
    )
    assert body(copy) == "news from afar"
    assert "net.kanal.forwarded" not in copy["content"] and "Forwarded from" not in body(copy)


async def test_reports_and_statements_cross_the_border(federation: Federated) -> None:
    env = federation.home
    moderator, alice = await env.user("mod"), await env.user("alice")
    commenter, notifier = await federation.reader("commenter"), await federation.reader("notifier")
    async with reconfigured(env, compliance(moderator)):
        mod_room = await join_moderation_room(moderator)
        channel = await create_channel(env, alice, env.handle("talk"), "Talk")
        ready = await alice.ask(channel.backstage, "!comments on", "is ready:", timeout=TIMEOUT)
        found = re.search(r"\((![^)\s]+)\)", ready)
        assert found is not None, ready
        discussion = found.group(1)
        for reader in (commenter, notifier):  # by its alias: a room id alone names no server to ask
            await join_when_invited(reader, f"#{channel.handle}_comments:{env.domain}")
        await alice.text(channel.backstage, "a post to discuss")
        root = await commenter.wait_for(
            discussion, lambda e: e.get("sender") == ghost_of(env, channel) and body(e) == "a post to discuss",
            TIMEOUT,
        )
        comment = await commenter.send(discussion, in_thread(root["event_id"], "buy followers at example.com"))

        # A reader of the other server reports the remote comment from their chat with the bot.
        chat = await open_chat(notifier)
        link = f"https://matrix.to/#/{discussion}/{comment}?via={env.domain}"
        ack = await notifier.ask(chat, f"report {link} spam: selling followers", "is received", TIMEOUT)
        found = re.search(r"notice #(\d+)", ack)
        assert found is not None, ack
        notice = found.group(1)
        announced = await moderator.wait_for(mod_room, body_has(f"Notice n{notice} [command]"), TIMEOUT)
        assert f"a comment by {commenter.user_id}" in body(announced)
        answer = await moderator.ask(
            mod_room, f"takedown n{notice} terms:3.1 advertising in comments", "Removing the comment", TIMEOUT
        )
        decision = re.search(r"decision d(\d+)", answer)
        assert decision is not None, answer

        async def removed() -> bool:
            return not (await fetch(notifier, discussion, comment)).get("content")

        await eventually(removed, "the remote comment's removal", TIMEOUT)
        # The notifier hears the decision in their chat; the commenter gets the statement in one the bot opens.
        outcome = await notifier.wait_for(chat, body_has(f"Your notice #{notice} was decided"), TIMEOUT)
        assert "The comment was removed" in body(outcome)
        dm = await commenter.wait_invite(lambda _rid, _room: True, timeout=TIMEOUT)
        await join_when_invited(commenter, dm)
        statement = body(await commenter.wait_for(dm, body_has("Statement of reasons"), TIMEOUT))
        assert f"decision #{decision.group(1)}" in statement and "Ground: the terms of service: 3.1" in statement
        # … and appeals it from that chat: the appeal reaches the moderators like a local one.
        appealed = await commenter.ask(
            dm, f"appeal {decision.group(1)} I quoted the advert to warn people", "is received", TIMEOUT
        )
        found = re.search(rf"Your appeal #(\d+) against decision #{decision.group(1)} ", appealed)
        assert found is not None, appealed
        heard = await moderator.wait_for(mod_room, body_has(f"Appeal a{found.group(1)}"), TIMEOUT)
        assert f"by {commenter.user_id}: I quoted the advert to warn people" in body(heard), body(heard)
