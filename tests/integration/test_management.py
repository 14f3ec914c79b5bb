"""The management room, as Alice, Bob and a stranger use it from a Matrix client (matrix-nio)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import nio
import pytest

from bridge.text.i18n import t
from tests.support import Env, User, create_channel

pytestmark = pytest.mark.integration


def from_bot(env: Env, text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("sender") == env.bot and text in e.get("content", {}).get("body", "")


async def test_create_makes_a_public_read_only_channel(env: Env) -> None:
    alice = await env.user("alice")
    handle = env.handle("news")
    channel = await create_channel(env, alice, handle, "Daily News")
    ghost = f"@kanal_{handle}:{env.domain}"

    assert (await alice.state(channel.broadcast, "m.room.name"))["name"] == "Daily News"
    assert (await alice.state(channel.broadcast, "m.room.join_rules"))["join_rule"] == "public"
    history = await alice.state(channel.broadcast, "m.room.history_visibility")
    assert history["history_visibility"] == "world_readable"
    assert (await alice.state(channel.broadcast, "m.room.canonical_alias"))[
        "alias"
    ] == f"#{handle}:{env.domain}"
    levels = await alice.state(channel.broadcast, "m.room.power_levels")
    assert levels["users"] == {ghost: 100}
    assert levels["users_default"] == 0 and levels["events_default"] == 50 and levels["state_default"] == 100
    assert levels["events"]["m.reaction"] == 0

    profile = await alice.client.get_displayname(ghost)
    assert isinstance(profile, nio.ProfileGetDisplayNameResponse) and profile.displayname == "Daily News"

    directory = await alice.client.room_get_state_event(channel.broadcast, "m.room.create")
    assert isinstance(directory, nio.RoomGetStateEventResponse)
    public = await alice.client.room_resolve_alias(f"#{handle}:{env.domain}")
    assert isinstance(public, nio.RoomResolveAliasResponse)
    listed = await _public_rooms(alice, handle)
    assert channel.broadcast in listed


async def _public_rooms(user: User, term: str) -> set[str]:
    response = await user.client.send(
        "POST",
        "/_matrix/client/v3/publicRooms",
        data=json.dumps({"filter": {"generic_search_term": term}, "limit": 50}),
        headers={"Authorization": f"Bearer {user.client.access_token}", "Content-Type": "application/json"},
    )
    data = await response.json()
    return {room["room_id"] for room in data.get("chunk", [])}


async def test_subscriber_can_react_but_not_post_or_change_state(env: Env) -> None:
    alice, bob = await env.user("alice"), await env.user("bob")
    channel = await create_channel(env, alice, env.handle(), "Readers welcome")
    await alice.text(channel.backstage, "first post")
    post = await alice.wait_for(channel.broadcast, lambda e: e.get("content", {}).get("body") == "first post")

    assert await bob.join(f"#{channel.handle}:{env.domain}") == channel.broadcast
    refused = await bob.client.room_send(
        channel.broadcast, "m.room.message", {"msgtype": "m.text", "body": "hi"}
    )
    assert isinstance(refused, nio.RoomSendError) and refused.status_code == "M_FORBIDDEN"
    topic = await bob.client.room_put_state(channel.broadcast, "m.room.topic", {"topic": "mine now"})
    assert isinstance(topic, nio.RoomPutStateError) and topic.status_code == "M_FORBIDDEN"
    reaction = {"m.relates_to": {"rel_type": "m.annotation", "event_id": post["event_id"], "key": "👍"}}
    reaction_id = await bob.send(channel.broadcast, reaction, "m.reaction")
    taken_back = await bob.client.room_redact(channel.broadcast, reaction_id)
    assert isinstance(taken_back, nio.RoomRedactResponse)


async def test_help_list_info_title_about(env: Env) -> None:
    alice = await env.user("alice")
    channel = await create_channel(env, alice, env.handle(), "Old title")
    room = channel.management
    assert "create <handle>" in await alice.ask(room, "help", "create <handle>")
    assert f"#{channel.handle}:{env.domain}" in await alice.ask(room, "!list", "Your channels")

    await alice.ask(room, f"title {channel.handle} New  shiny title", "is now titled")
    assert (await alice.state(channel.broadcast, "m.room.name"))["name"] == "New shiny title"
    ghost = f"@kanal_{channel.handle}:{env.domain}"
    for _ in range(50):
        profile = await alice.client.get_displayname(ghost)
        if (
            isinstance(profile, nio.ProfileGetDisplayNameResponse)
            and profile.displayname == "New shiny title"
        ):
            break
    else:
        raise AssertionError("the ghost kept its old display name")

    await alice.ask(room, f"about {channel.handle} All the news that fits", "description")
    await alice.wait_for(
        channel.broadcast,
        lambda e: e["type"] == "m.room.topic" and e["content"].get("topic") == "All the news that fits",
    )

    info = await alice.ask(room, f"info {channel.handle.upper()}", f"#{channel.handle}:")
    assert "New shiny title" in info and "All the news that fits" in info and alice.user_id in info
    assert "Subscribers: 0" in info


async def test_no_room_of_a_channel_ever_shows_its_topic_removed(env: Env) -> None:
    # An empty m.room.topic reads as "kanal removed the topic" in clients, and as no description in
    # the room directory: a new channel says what it is until its owner describes it.
    alice = await env.user("alice")
    channel = await create_channel(env, alice, env.handle("topic"), "Topical")
    default = "A channel: join to follow its posts. Only the channel posts here."
    assert (await alice.state(channel.broadcast, "m.room.topic"))["topic"] == default
    assert (await alice.state(channel.backstage, "m.room.topic"))["topic"]

    await alice.ask(channel.management, f"about {channel.handle} Topics, daily", "description")
    await alice.wait_for(
        channel.broadcast,
        lambda e: e["type"] == "m.room.topic" and e["content"].get("topic") == "Topics, daily",
    )
    for room in (channel.broadcast, channel.backstage):
        topics = [e["content"].get("topic") for e in await alice.all_messages(room) if e["type"] == "m.room.topic"]
        assert topics and all(topics), (room, topics)


async def test_create_refusals(env: Env) -> None:
    alice, carol = await env.user("alice"), await env.user("carol")
    room = await alice.open_management_room()
    assert "5" in await alice.ask(room, "create abc", "not a valid handle")
    # One sentence each, said once: no "letter.. Instead of …" after it.
    refused = await alice.ask(room, "create 1abcdef", "not a valid handle")
    assert refused == t("en", "name_handle_start", handle="'1abcdef'", min=5, max=32)
    assert ".." not in refused and refused.count("a letter") == 1
    refused = await alice.ask(room, "create goodhandle \u202eevil", "title")
    assert refused == t("en", "name_title_bidi", char="U+202E (RIGHT-TO-LEFT OVERRIDE)")
    assert "Usage" in await alice.ask(room, "create", "Usage")
    assert "help" in await alice.ask(room, "frobnicate now", "don't know")

    channel = await create_channel(env, alice, env.handle(), "Taken")
    carol_room = await carol.open_management_room()
    await carol.ask(carol_room, f"create {channel.handle.upper()} Mine", "already taken")


async def test_strangers_and_admins_are_refused_with_reasons(env: Env) -> None:
    alice, bob, mallory = await env.user("alice"), await env.user("bob"), await env.user("mallory")
    channel = await create_channel(env, alice, env.handle(), "Guarded")
    room = await mallory.open_management_room()
    for command in (
        f"title {channel.handle} Pwned",
        f"about {channel.handle} Pwned",
        f"promote {channel.handle} {mallory.user_id}",
        f"demote {channel.handle} {alice.user_id}",
        f"delete {channel.handle}",
    ):
        answer = await mallory.ask(room, command, "You have no role in")
        assert alice.user_id in answer  # says whom to ask instead
        assert "admin" not in answer and " it it" not in answer
    assert (await alice.state(channel.broadcast, "m.room.name"))["name"] == "Guarded"
    assert "no channel" in (await mallory.ask(room, "info nosuchchannel", "no channel")).lower()

    await alice.ask(channel.management, f"promote {channel.handle} {bob.user_id}", "is now editor of")
    bob_room = await bob.open_management_room()
    refused = await bob.ask(bob_room, f"promote {channel.handle} {mallory.user_id}", "Only the owner")
    assert refused == f"Only the owner of #{channel.handle} ({alice.user_id}) can give roles in it."
    info = await bob.ask(bob_room, f"info {channel.handle}", "Editors and moderators:")
    assert f"Editors and moderators: {bob.user_id} (editor)" in info and "Admins" not in info
    await bob.ask(bob_room, f"delete {channel.handle}", "Only the owner")
    await bob.ask(bob_room, f"title {channel.handle} Co-edited", "is now titled")


async def test_promote_and_demote_manage_backstage(env: Env) -> None:
    alice, bob = await env.user("alice"), await env.user("bob")
    channel = await create_channel(env, alice, env.handle(), "Team")
    room = channel.management
    await alice.ask(room, f"promote {channel.handle} not-a-user", "not a Matrix user id")
    await alice.ask(room, f"promote {channel.handle} {bob.user_id}", "is now editor of")
    await alice.ask(room, f"promote {channel.handle} {bob.user_id}", "already editor of")
    backstage = await bob.wait_invite(lambda rid, _room: rid == channel.backstage)
    await bob.join(backstage)
    await bob.text(backstage, "bob's first post")
    relayed = await alice.wait_for(
        channel.broadcast, lambda e: e["content"].get("body") == "bob's first post"
    )
    assert relayed["sender"] == f"@kanal_{channel.handle}:{env.domain}"

    await alice.ask(room, f"demote {channel.handle} {alice.user_id}", "cannot be demoted")
    await alice.ask(room, f"demote {channel.handle} {bob.user_id}", "no longer has a role in")
    await alice.wait_for(
        backstage,
        lambda e: (
            e["type"] == "m.room.member"
            and e.get("state_key") == bob.user_id
            and e["content"].get("membership") == "leave"
        ),
    )
    await alice.ask(room, f"demote {channel.handle} {bob.user_id}", "has no role in")


async def test_delete_asks_for_confirmation_then_archives_and_frees_the_handle(env: Env) -> None:
    alice = await env.user("alice")
    channel = await create_channel(env, alice, env.handle(), "Short-lived")
    room = channel.management
    await alice.ask(room, f"delete {channel.handle}", "confirm delete")
    await alice.ask(room, "cancel", "Cancelled")
    await alice.ask(room, f"confirm delete {channel.handle}", "nothing waiting")
    resolved = await alice.client.room_resolve_alias(f"#{channel.handle}:{env.domain}")
    assert isinstance(resolved, nio.RoomResolveAliasResponse)  # still there after the cancel

    await alice.ask(room, f"delete {channel.handle}", "confirm delete")
    await alice.ask(room, f"confirm delete {channel.handle}", "is deleted", timeout=30)
    gone = await alice.client.room_resolve_alias(f"#{channel.handle}:{env.domain}")
    assert isinstance(gone, nio.RoomResolveAliasError)
    assert (await alice.state(channel.broadcast, "m.room.join_rules"))["join_rule"] == "invite"
    assert channel.broadcast not in await _public_rooms(alice, channel.handle)
    await alice.wait_for(
        channel.backstage,
        lambda e: (
            e["type"] == "m.room.member"
            and e.get("state_key") == alice.user_id
            and e["content"].get("membership") == "leave"
        ),
    )

    # The alias is free in Matrix, but the handle cools down (channels.handle_cooldown_days) before
    # anyone, its former owner included, may register it again: nobody can pose as the old channel.
    held = await alice.ask(room, f"create {channel.handle} Reborn", "held back")
    assert "held back until" in held


async def test_encrypted_management_room_gets_a_plain_explanation(env: Env) -> None:
    dave = await env.user("dave")
    response = await dave.client.room_create(
        is_direct=True,
        invite=[env.bot],
        initial_state=[
            {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}
        ],
    )
    assert isinstance(response, nio.RoomCreateResponse)
    room = str(response.room_id)
    await dave.wait_for(
        room,
        lambda e: (
            e["type"] == "m.room.member"
            and e.get("state_key") == env.bot
            and e["content"].get("membership") == "join"
        ),
    )
    # What a client with encryption sends: the bot cannot read it and must say so, unencrypted.
    await dave.send(
        room,
        {
            "algorithm": "m.megolm.v1.aes-sha2",
            "ciphertext": "AwgAEn...",
            "sender_key": "x",
            "device_id": "DEV",
            "session_id": "s",
        },
        "m.room.encrypted",
    )
    notice = await dave.wait_for(room, from_bot(env, "end-to-end encrypted"))
    assert notice["type"] == "m.room.message" and notice["content"]["msgtype"] == "m.notice"
    assert "encryption" in notice["content"]["body"]
    # A server that encrypts every new chat makes that advice fail: the notice says whom to ask, and
    # names both ways out: Kanal's own encryption, or the homeserver's default turned off.
    assert "encryption_enabled_by_default_for_room_type" in notice["content"]["body"]
    assert "encryption.enabled" in notice["content"]["body"]
    assert "never reads encrypted" not in notice["content"]["body"]


async def test_a_command_typed_before_the_bot_joined_is_answered_once(env: Env) -> None:
    # The homeserver never delivers what is written in a room before the bot is in it. Kanal is down
    # while the chat is opened and the command typed, so the bot cannot have joined before it, whatever
    # the timing; the invite waits for Kanal at the homeserver.
    dana = await env.user("dana")
    handle = env.handle("first")
    await env.kanal.stop()
    try:
        response = await dana.client.room_create(is_direct=True, invite=[env.bot])
        assert isinstance(response, nio.RoomCreateResponse), response
        room = str(response.room_id)
        command = await dana.text(room, f"create {handle} First Things")
    finally:
        await env.kanal.start()

    await dana.wait_for(room, from_bot(env, f"#{handle}:{env.domain} is ready"), timeout=30)
    resolved = await dana.client.room_resolve_alias(f"#{handle}:{env.domain}")
    assert isinstance(resolved, nio.RoomResolveAliasResponse), resolved

    # Not again after a restart: `list` answered after it shows the restarted Kanal has caught up.
    await env.kanal.stop()
    await env.kanal.start()
    await dana.ask(room, "list", "Your channels")
    said = [e for e in await dana.messages(room) if e.get("sender") == env.bot and e["type"] == "m.room.message"]
    bodies = [e["content"]["body"] for e in said]
    assert sum(f"Creating #{handle}:" in b for b in bodies) == 1, bodies
    assert sum(f"#{handle}:{env.domain} is ready" in b for b in bodies) == 1, bodies
    # The command was answered instead of a greeting (each message the user wrote gets its answer).
    assert not any(b.startswith("I manage Kanal channels") for b in bodies), bodies
    timeline = [e["event_id"] for e in await dana.messages(room)]
    assert timeline.index(command) < timeline.index(said[0]["event_id"])


async def test_persian_commands_get_persian_replies(env: Env) -> None:
    sara = await env.user("sara")
    room = await sara.open_management_room()
    answer = await sara.ask(room, f"create {env.handle('akhbar')} اخبار روز", "کانال")
    assert "اخبار روز" in answer or "ساختن" in answer


async def test_remote_style_invite_to_group_room_is_declined(env: Env) -> None:
    erin = await env.user("erin")
    response = await erin.client.room_create(is_direct=False, invite=[env.bot])
    assert isinstance(response, nio.RoomCreateResponse)
    await erin.wait_for(
        str(response.room_id),
        lambda e: (
            e["type"] == "m.room.member"
            and e.get("state_key") == env.bot
            and e["content"].get("membership") == "leave"
        ),
    )
