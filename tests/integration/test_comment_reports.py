"""Reports on comments, as readers, commenters, moderators and flaggers use them (real Synapse, matrix-nio).

A reader reports a comment in a channel's discussion room like a post (`report <link>`, the client's
*Report*, a trusted flagger's notice); moderators take it down or leave it up in the moderation room;
the commenter receives the statement of reasons and appeals; a granted appeal brings the comment back.
"""

from __future__ import annotations

import json
import re
from typing import Any

import aiohttp
import nio
import pytest

from tests.integration.test_comments import body, eventually, fetch, in_thread
from tests.integration.test_compliance import body_has, compliance, join_moderation_room
from tests.support import Env, User, create_channel, reconfigured

pytestmark = pytest.mark.integration

TIMEOUT = 30.0


async def discussion_with_comment(env: Env, owner: User, commenter: User, text: str) -> tuple[str, str, str]:
    """A channel with comments on, one post and `commenter`'s comment on it: (room, root, comment)."""
    handle = env.handle("talk")
    ghost = f"@{env.ghost_prefix}{handle}:{env.domain}"
    channel = await create_channel(env, owner, handle, "Talk")
    ready = await owner.ask(channel.backstage, "!comments on", "is ready:", timeout=TIMEOUT)
    found = re.search(r"\((![^)\s]+)\)", ready)
    assert found is not None, ready
    discussion = await commenter.join(found.group(1))
    await owner.text(channel.backstage, "a post to discuss")
    root = await commenter.wait_for(
        discussion, lambda e: e.get("sender") == ghost and body(e) == "a post to discuss"
    )
    comment = await commenter.send(discussion, in_thread(root["event_id"], text))
    return discussion, root["event_id"], comment


def number(pattern: str, text: str) -> str:
    found = re.search(pattern, text)
    assert found is not None, (pattern, text)
    return found.group(1)


async def test_a_reported_comment_is_taken_down_and_restored_on_appeal(env: Env) -> None:
    first, second = await env.user("mod"), await env.user("mod")
    alice, bob, carol = await env.user("alice"), await env.user("bob"), await env.user("carol")
    async with reconfigured(env, compliance(first, second)):
        mod_room = await join_moderation_room(first)
        await join_moderation_room(second)
        discussion, _root, comment = await discussion_with_comment(
            env, alice, bob, "buy followers at example.com"
        )
        await carol.join(discussion)
        await carol.wait_for(discussion, lambda e: e["event_id"] == comment)

        # A reader reports the comment in their chat with the bot, as they would a post.
        carol_room = await carol.open_management_room()
        link = f"https://matrix.to/#/{discussion}/{comment}?via={env.domain}"
        ack = await carol.ask(carol_room, f"report {link} spam: selling followers", "is received")
        notice = number(r"notice #(\d+)", ack)
        announced = await first.wait_for(mod_room, body_has(f"Notice n{notice} [command]"))
        assert f"a comment by {bob.user_id}" in body(announced)
        assert f"https://matrix.to/#/{discussion}/{comment}" in body(announced)
        listed = await first.ask(mod_room, "notices", "Open notices")
        assert f"n{notice} [command] " in listed and f"💬 {comment} spam: selling followers" in listed

        # Restricting or suspending is for channels; a comment is taken down or left up.
        refused = await first.ask(mod_room, f"suspend n{notice} terms:3 spam", "applies to a whole channel")
        assert f"takedown n{notice}" in refused and "noaction" in refused

        answer = await first.ask(
            mod_room, f"takedown n{notice} terms:3.1 advertising in comments", "Removing the comment"
        )
        decision = number(r"decision d(\d+)", answer)

        async def removed() -> bool:
            return not (await fetch(carol, discussion, comment)).get("content")

        await eventually(removed, "the redaction of the reported comment")
        redacted = await fetch(carol, discussion, comment)
        assert redacted["unsigned"]["redacted_because"]["sender"] == env.bot
        told = await carol.wait_for(
            discussion, lambda e: e.get("sender") == env.bot and "removed by the moderators" in body(e)
        )
        assert bob.user_id in body(told) and f"decision #{decision}" in body(told)
        again = await first.ask(mod_room, f"takedown {comment} terms:3.1 again", "already removed")
        assert "comment" in again

        # The notifier hears the decision with its reasons; the commenter gets the statement privately.
        outcome = await carol.wait_for(carol_room, body_has(f"Your notice #{notice} was decided"))
        assert "The comment was removed" in body(outcome)
        dm = await bob.wait_invite(lambda _rid, _room: True, timeout=TIMEOUT)
        await bob.join(dm)
        statement = body(await bob.wait_for(dm, body_has("Statement of reasons")))
        for element in (
            f"decision #{decision}",
            "The comment was removed",
            "Started by: a user's report",
            "Ground: the terms of service: 3.1",
            f"appeal {decision}",
        ):
            assert element in statement, (element, statement)

        # The commenter appeals; another moderator than the one who decided grants it.
        appealed = await bob.ask(dm, f"appeal {decision} it was a joke among friends", "is received")
        appeal = number(r"appeal #(\d+)", appealed)
        await first.wait_for(mod_room, body_has(f"Appeal a{appeal}"))
        await first.ask(mod_room, f"grant a{appeal} fine", "another moderator")
        await second.ask(mod_room, f"grant a{appeal} a joke, not an advert", "granted")
        restored = await carol.wait_for(
            discussion,
            lambda e: e.get("sender") == env.bot and "buy followers at example.com" in body(e),
        )
        assert "Restored after an appeal" in body(restored) and bob.user_id in body(restored)
        await bob.wait_for(dm, body_has(f"Your appeal a{appeal} was granted"))


async def flag(env: Env, token: str, notice: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{env.kanal.port}/_kanal/flagger/v1/notices"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=notice, headers={"Authorization": f"Bearer {token}"}) as response:
            return response.status, await response.json()


async def test_homeserver_reports_and_flaggers_reach_comments_and_only_comments(env: Env) -> None:
    moderator, alice, bob, dave = (
        await env.user("mod"),
        await env.user("alice"),
        await env.user("bob"),
        await env.user("dave"),
    )
    localpart, password = f"admin{env.handle('')}", "admin-password-123"
    admin_id = await env.synapse.register_user(localpart, password, admin=True)
    admin = nio.AsyncClient(env.homeserver, admin_id)
    env.users.append(admin)
    assert isinstance(await admin.login(password), nio.LoginResponse)
    token_file = env.workdir / f"{localpart}.token"
    token_file.write_text(admin.access_token)
    token_file.chmod(0o600)
    settings = {"homeserver_admin_token_file": str(token_file), "report_poll_seconds": 5}
    async with reconfigured(env, compliance(moderator, **settings)):
        mod_room = await join_moderation_room(moderator)
        discussion, root, comment = await discussion_with_comment(env, alice, bob, "an ordinary opinion")

        # The client's "Report" on the comment: the poller files it; dave hears back in his chat.
        dave_room = await dave.open_management_room()
        await dave.join(discussion)
        response = await dave.client.send(
            "POST",
            f"/_matrix/client/v3/rooms/{discussion}/report/{comment}",
            data=json.dumps({"reason": "hate_speech: I dislike it"}),
            headers={
                "Authorization": f"Bearer {dave.client.access_token}",
                "Content-Type": "application/json",
            },
        )
        assert response.status == 200, await response.text()
        received = await dave.wait_for(dave_room, body_has("is received"), timeout=TIMEOUT)
        notice = number(r"notice #(\d+)", body(received))
        announced = await moderator.wait_for(mod_room, body_has(f"Notice n{notice} [homeserver]"))
        assert f"a comment by {bob.user_id}" in body(announced)

        # Left up: the notifier is answered, the comment stays.
        await moderator.ask(mod_room, f"noaction n{notice} an opinion, not hate speech", "decision d")
        await dave.wait_for(dave_room, body_has(f"Your notice #{notice} was decided"))
        assert body(await fetch(dave, discussion, comment)) == "an ordinary opinion"

        # A trusted flagger names the comment by its event id; a thread root stands for its post.
        token = (await env.run_cli("flagger", "add", f"Hotline {env.handle('')}")).splitlines()[0]
        status, data = await flag(env, token, {"event_id": comment, "category": "spam", "explanation": "bot"})
        assert status == 202, data
        flagged = data["notice_id"]
        await moderator.wait_for(
            mod_room, body_has(f"Notice n{flagged} ★ trusted flagger [flagger] about a comment")
        )
        status, data = await flag(env, token, {"event_id": root, "category": "spam", "explanation": "ad"})
        assert status == 202, data
        about_post = await moderator.wait_for(mod_room, body_has(f"Notice n{data['notice_id']} ★"))
        assert "about a comment" not in body(about_post) and root not in body(about_post)
        # Decided, so that other tests' flaggers find theirs first among the open notices.
        for decided in (flagged, data["notice_id"]):
            await moderator.ask(mod_room, f"noaction n{decided} not spam", "decision d")

        # Anything else is still refused unread: here, a message in a private chat with the bot.
        private = await dave.text(dave_room, "a private message")
        status, _ = await flag(env, token, {"event_id": private, "explanation": "not ours"})
        assert status == 404
