"""Compliance end to end, as channel admins, readers, moderators and flaggers use it (real Synapse).

Each test restarts the shared Kanal with moderators and hooks configured (fresh accounts per test)
and puts the original configuration back afterwards.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import nio
import pytest

from bridge.text.digits import ascii_digits, localise_digits
from tests.support import Env, User, create_channel, reconfigured

pytestmark = pytest.mark.integration

MODERATION_ROOM = "Kanal moderation"


def compliance(*moderators: User, **settings: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        data["operators"] = {"users": [m.user_id for m in moderators]}
        data["compliance"] = settings

    return change


async def join_moderation_room(moderator: User) -> str:
    room_id = await moderator.wait_invite(lambda _rid, room: (room.name or "") == MODERATION_ROOM, timeout=30)
    await moderator.join(room_id)
    return room_id


def body_has(text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: text in e.get("content", {}).get("body", "")


def ghost_of(env: Env, handle: str) -> str:
    return f"@kanal_{handle}:{env.domain}"


async def relayed(user: User, env: Env, room: str, handle: str, text: str) -> dict[str, Any]:
    return await user.wait_for(room, lambda e: e.get("sender") == ghost_of(env, handle) and body_has(text)(e))


async def test_held_posts_are_approved_and_rejected_posts_never_appear(env: Env) -> None:
    moderator, alice = await env.user("mod"), await env.user("alice")
    hooks = [
        {"type": "terms", "name": "watchlist", "terms": ["holdme"], "action": "hold", "category": "spam"},
        {
            "type": "terms",
            "name": "banned",
            "terms": ["forbiddenword"],
            "action": "reject",
            "category": "illegal_content",
        },
    ]
    async with reconfigured(env, compliance(moderator, hooks=hooks)):
        mod_room = await join_moderation_room(moderator)
        channel = await create_channel(env, alice, env.handle("mod"), "Moderated")

        await alice.text(channel.backstage, "please holdme for a moment")
        held = await alice.wait_for(channel.backstage, body_has("held for review"))
        number = re.search(r"\(h(\d+)\)", held["content"]["body"])
        assert number is not None, held
        await moderator.wait_for(mod_room, body_has(f"Held post h{number.group(1)}"))
        await moderator.ask(mod_room, f"approve h{number.group(1)}", "approved")
        await relayed(alice, env, channel.broadcast, channel.handle, "please holdme for a moment")

        await alice.text(channel.backstage, "this has a forbiddenword in it")
        statement = await alice.wait_for(channel.backstage, body_has("Statement of reasons"))
        text = statement["content"]["body"]
        assert "The post was not published" in text and "Automated means" in text and "appeal" in text

        # A scheduled post is judged when it is due, like any other.
        await alice.ask(channel.backstage, "!schedule +2s scheduled forbiddenword", "Scheduled")
        await alice.wait_for(
            channel.backstage,
            lambda e: e["event_id"] != statement["event_id"] and body_has("Statement of reasons")(e),
            timeout=40,
        )

        await alice.text(channel.backstage, "an ordinary post")
        await relayed(alice, env, channel.broadcast, channel.handle, "an ordinary post")
        published = [
            e.get("content", {}).get("body", "") for e in await alice.all_messages(channel.broadcast)
        ]
        assert not any("forbiddenword" in body for body in published)


async def held_figures(env: Env) -> dict[str, Any]:
    """The transparency report's held posts for today (UTC), as `kanal transparency` prints them."""
    today = datetime.now(UTC).date().isoformat()
    out = await env.run_cli("transparency", "--from", today, "--to", today, "--format", "json")
    figures: dict[str, Any] = json.loads(out)["held_posts"]
    return figures


async def test_the_transparency_report_counts_held_posts_not_rejected_ones(env: Env) -> None:
    """Two posts held for review and two a hook rejected: two more held, two more rejected
    automatically (the database is shared with the session's other tests: the report is compared
    with itself before)."""
    moderator, alice = await env.user("mod"), await env.user("alice")
    hooks = [
        {"type": "terms", "name": "watchlist", "terms": ["holdme"], "action": "hold", "category": "spam"},
        {"type": "terms", "name": "banned", "terms": ["forbiddenword"], "action": "reject"},
    ]
    async with reconfigured(env, compliance(moderator, hooks=hooks)):
        await join_moderation_room(moderator)
        channel = await create_channel(env, alice, env.handle("count"), "Counted")
        before = await held_figures(env)
        for n in range(2):
            await alice.ask(channel.backstage, f"holdme number {n}", "held for review")
            await alice.ask(channel.backstage, f"forbiddenword number {n}", "Statement of reasons")
        after = await held_figures(env)
    assert after["held"] - before["held"] == 2
    assert after["by_status"]["held"] - before["by_status"]["held"] == 2
    assert after["by_status"]["rejected"] == before["by_status"]["rejected"]
    assert after["rejected_automatically"] - before["rejected_automatically"] == 2


async def test_a_persian_speaking_author_receives_the_statement_in_persian(env: Env) -> None:
    moderator, sara = await env.user("mod"), await env.user("sara")
    hooks = [{"type": "terms", "name": "banned", "terms": ["forbiddenword"], "action": "reject"}]
    async with reconfigured(env, compliance(moderator, hooks=hooks)):
        mod_room = await join_moderation_room(moderator)
        channel = await create_channel(env, sara, env.handle("fa"), "Akhbar")
        await sara.ask(channel.management, "language fa", "از این پس")

        await sara.text(channel.backstage, "this has a forbiddenword in it")
        statement = await sara.wait_for(channel.backstage, body_has("بیانیهٔ دلایل"))
        text = statement["content"]["body"]
        number = re.search(r"تصمیم #(\d+)", text)
        assert number is not None, text
        decision = ascii_digits(number.group(1))
        assert number.group(1) == localise_digits(decision, "fa")  # numbers in Persian digits
        assert "آنچه انجام شد: پست منتشر نشد." in text
        assert "ابزارهای خودکار این محتوا را تشخیص دادند؛ تصمیم به‌طور خودکار گرفته شد." in text
        assert f"#{channel.handle}:{env.domain}" in text and "publication rules (banned)" in text
        assert "appeal <شمارهٔ تصمیم> <دلایل شما>" in text and "Statement of reasons" not in text

        # The record stays in English: the moderators read it as it is stored.
        stored = await moderator.ask(mod_room, f"decision d{number.group(1)}", "Statement of reasons")
        assert f"decision #{decision}\nWhat: The post was not published." in stored


async def test_statements_and_the_moderation_room_speak_each_readers_language(env: Env) -> None:
    moderator, nima, reader = await env.user("mod"), await env.user("nima"), await env.user("reader")
    hooks = [
        {"type": "terms", "name": "banned", "terms": ["forbiddenword"], "action": "reject"},
        {"type": "terms", "name": "watch", "terms": ["holdme"], "action": "hold", "category": "spam"},
    ]
    async with reconfigured(env, compliance(moderator, hooks=hooks)):
        # The moderator chose Persian (in the direct chat): the room's announcements follow.
        await moderator.ask(await moderator.open_management_room(), "زبان fa", "از این پس")
        mod_room = await join_moderation_room(moderator)
        channel = await create_channel(env, nima, env.handle("nima"), "Nima")

        # Nima chose no language but writes Persian: his statement is in Persian, the record in English.
        await nima.text(channel.backstage, "این پست forbiddenword دارد")
        statement = await nima.wait_for(channel.backstage, body_has("بیانیهٔ دلایل"))
        assert "آنچه انجام شد: پست منتشر نشد." in statement["content"]["body"]
        number = re.search(r"تصمیم #(\d+)", statement["content"]["body"])
        assert number is not None
        # The moderator reads it in her language too (the stored record stays English: the test above).
        shown = await moderator.ask(mod_room, f"تصمیم d{number.group(1)}", "بیانیهٔ دلایل")
        assert statement["content"]["body"] in shown

        await nima.text(channel.backstage, "لطفاً holdme را بررسی کنید")
        held = await moderator.wait_for(mod_room, body_has("پست نگه‌داشتهٔ h"))
        ref = re.search(r"h(\S+) در #", held["content"]["body"])
        assert ref is not None, held
        await moderator.ask(mod_room, f"پذیرش h{ref.group(1)}", "تأیید شد")

        # A reader reports in Persian: the moderators read the notice in Persian, and so does he the decision.
        published = await relayed(nima, env, channel.broadcast, channel.handle, "holdme")
        reader_room = await reader.open_management_room()
        link = f"https://matrix.to/#/{channel.broadcast}/{published['event_id']}"
        ack = await reader.ask(reader_room, f"گزارش {link} spam: این پست هرزنامه است", "دریافت شد")
        notice = re.search(r"#(\S+)", ack)
        assert notice is not None, ack
        await moderator.wait_for(mod_room, body_has(f"گزارش n{notice.group(1)} [command]"))
        await moderator.ask(mod_room, f"بی‌اقدام n{notice.group(1)} هرزنامه نیست", "بدون اقدام")
        decided = await reader.wait_for(reader_room, body_has("بیانیهٔ دلایل"))
        assert "Statement of reasons" not in decided["content"]["body"]


async def test_a_reported_post_is_taken_down_and_restored_on_appeal(env: Env) -> None:
    first, second = await env.user("mod"), await env.user("mod")
    alice, bob = await env.user("alice"), await env.user("bob")
    async with reconfigured(env, compliance(first, second)):
        mod_room = await join_moderation_room(first)
        await join_moderation_room(second)
        channel = await create_channel(env, alice, env.handle("news"), "Contested News")
        await alice.text(channel.backstage, "a contested post")
        copy = await relayed(alice, env, channel.broadcast, channel.handle, "a contested post")

        bob_room = await bob.open_management_room()
        link = f"https://matrix.to/#/{channel.broadcast}/{copy['event_id']}"
        ack = await bob.ask(bob_room, f"report {link} hate_speech: it insults a group", "is received")
        notice = re.search(r"notice #(\d+)", ack)
        assert notice is not None, ack
        await first.wait_for(mod_room, body_has(f"Notice n{notice.group(1)}"))
        answer = await first.ask(
            mod_room, f"takedown n{notice.group(1)} terms:4.2 insults a group of people", "decision d"
        )
        decision = re.search(r"decision d(\d+)", answer).group(1)  # type: ignore[union-attr]

        async def redacted() -> bool:
            event = await alice.client.room_get_event(channel.broadcast, copy["event_id"])
            return isinstance(event, nio.RoomGetEventResponse) and not event.event.source.get("content")

        await _eventually(redacted)
        statement = await alice.wait_for(channel.backstage, body_has(f"decision #{decision}"))
        for element in (
            "What:",
            "Facts and circumstances:",
            "Started by: a user's report",
            "Ground: the terms of service: 4.2",
            "Your options:",
        ):
            assert element in statement["content"]["body"], element
        await bob.wait_for(bob_room, body_has(f"Your notice #{notice.group(1)} was decided"))

        # Readers who are not the owner, an admin or the notifier cannot appeal.
        mallory = await env.user("mallory")
        mallory_room = await mallory.open_management_room()
        assert (
            "no decision"
            in (await mallory.ask(mallory_room, f"appeal {decision} unfair", "decision")).lower()
        )

        appealed = await alice.ask(
            channel.management, f"appeal {decision} it quotes the insult to report on it", "is received"
        )
        appeal = re.search(r"appeal #(\d+)", appealed).group(1)  # type: ignore[union-attr]
        await first.wait_for(mod_room, body_has(f"Appeal a{appeal}"))
        refused = await first.ask(mod_room, f"grant a{appeal} fine", "another moderator")
        assert f"d{decision}" in refused
        await second.ask(mod_room, f"grant a{appeal} quoted in a news report", "granted")
        restored = await relayed(alice, env, channel.broadcast, channel.handle, "a contested post")
        assert restored["event_id"] != copy["event_id"]
        await alice.wait_for(channel.management, body_has(f"Your appeal a{appeal} was granted"))


async def test_trusted_flaggers_send_notices_over_http(env: Env) -> None:
    moderator, alice = await env.user("mod"), await env.user("alice")
    async with reconfigured(env, compliance(moderator)):
        mod_room = await join_moderation_room(moderator)
        channel = await create_channel(env, alice, env.handle("flag"), "Flagged")
        await alice.text(channel.backstage, "flag this one")
        copy = await relayed(alice, env, channel.broadcast, channel.handle, "flag this one")
        name = f"Hotline {env.handle('')}"
        token = (await env.run_cli("flagger", "add", name)).splitlines()[0]
        url = f"http://127.0.0.1:{env.kanal.port}/_kanal/flagger/v1/notices"
        notice = {"event_id": copy["event_id"], "category": "scam_fraud", "explanation": "a known scam"}
        async with aiohttp.ClientSession() as http:
            async with http.post(url, json=notice, headers={"Authorization": f"Bearer {token}"}) as response:
                assert response.status == 202, await response.text()
                number = (await response.json())["notice_id"]
            async with http.post(url, json=notice, headers={"Authorization": "Bearer wrong"}) as response:
                assert response.status == 403
                assert (await response.json())["errcode"] == "M_FORBIDDEN"
            elsewhere = {**notice, "event_id": "$not-a-channel-post"}
            async with http.post(
                url, json=elsewhere, headers={"Authorization": f"Bearer {token}"}
            ) as response:
                assert response.status == 404
            async with http.post(url, data="{", headers={"Authorization": f"Bearer {token}"}) as response:
                assert response.status == 400
        await moderator.wait_for(mod_room, body_has(f"Notice n{number} ★ trusted flagger"))
        listed = await moderator.ask(mod_room, "notices", "Open notices")
        assert listed.splitlines()[1].startswith(f"n{number} ★ trusted")


async def test_a_policy_list_server_ban_reaches_every_channel_rooms_acl(env: Env) -> None:
    moderator, alice = await env.user("mod"), await env.user("alice")
    channel = await create_channel(env, alice, env.handle("acl"), "Policy")
    alias_name = env.handle("bans")
    created = await moderator.client.room_create(
        alias=alias_name,
        name="Ban list",
        visibility=nio.RoomVisibility.public,
        initial_state=[
            {
                "type": "m.policy.rule.server",
                "state_key": "rule:evil",
                "content": {"entity": "*.evil.example", "recommendation": "m.ban", "reason": "spam network"},
            }
        ],
    )
    assert isinstance(created, nio.RoomCreateResponse), created
    alias = f"#{alias_name}:{env.domain}"

    async def denied() -> list[str]:
        acl = await alice.state(channel.broadcast, "m.room.server_acl")
        return list(acl.get("deny", []))

    async with reconfigured(env, compliance(moderator, policy_rooms=[alias])):
        await _eventually(lambda: _contains(denied(), "*.evil.example"), timeout=40)
        # The rule is withdrawn in the policy room: the ban is lifted, again as a logged decision.
        await moderator.client.room_put_state(
            created.room_id, "m.policy.rule.server", {}, state_key="rule:evil"
        )
        await _eventually(lambda: _lacks(denied(), "*.evil.example"), timeout=40)


async def _contains(values: Any, item: str) -> bool:
    return item in await values


async def _lacks(values: Any, item: str) -> bool:
    return item not in await values


async def _eventually(check: Callable[[], Any], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"not true within {timeout} s")


async def test_reports_made_to_the_homeserver_become_notices(env: Env) -> None:
    moderator, alice, bob = await env.user("mod"), await env.user("alice"), await env.user("bob")
    localpart, password = f"admin{env.handle('')}", "admin-password-123"
    admin_id = await env.synapse.register_user(localpart, password, admin=True)
    admin = nio.AsyncClient(env.homeserver, admin_id)
    env.users.append(admin)
    assert isinstance(await admin.login(password), nio.LoginResponse)
    token_file = env.workdir / f"{localpart}.token"
    token_file.write_text(admin.access_token)
    token_file.chmod(0o600)
    channel = await create_channel(env, alice, env.handle("hs"), "Reported")
    await alice.text(channel.backstage, "report me to the homeserver")
    copy = await relayed(alice, env, channel.broadcast, channel.handle, "report me to the homeserver")
    await bob.join(channel.broadcast)
    response = await bob.client.send(
        "POST",
        f"/_matrix/client/v3/rooms/{channel.broadcast}/report/{copy['event_id']}",
        data=json.dumps({"reason": "spam: the same advert again"}),
        headers={"Authorization": f"Bearer {bob.client.access_token}", "Content-Type": "application/json"},
    )
    assert response.status == 200, await response.text()
    settings = {"homeserver_admin_token_file": str(token_file), "report_poll_seconds": 5}
    async with reconfigured(env, compliance(moderator, **settings)):
        mod_room = await join_moderation_room(moderator)
        # Announced as it arrives, or (when it came before the room existed) in the start-up reminder.
        await moderator.wait_for(
            mod_room, lambda e: body_has("1 open notices")(e) or body_has("[homeserver]")(e), timeout=40
        )
        listed = await moderator.ask(mod_room, "notices", "Open notices")
        assert f"[homeserver] #{channel.handle} {copy['event_id']} spam: the same advert again" in listed
    assert admin.access_token not in (env.kanal.log_path.read_text(errors="replace"))
