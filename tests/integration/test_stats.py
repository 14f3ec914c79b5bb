"""`!stats`, `!views-in-posts` and `!poll results` as an owner and readers see them (real Synapse, matrix-nio).

Views come from real read receipts that Synapse pushes to Kanal; the chart is downloaded from the
homeserver's media repository and read back as a PNG.
"""

from __future__ import annotations

import asyncio
import io
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import nio
import pytest
from PIL import Image

from tests.support import Env, User, create_channel, reconfigured

pytestmark = pytest.mark.integration

TIMEOUT = 30.0


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"{what} did not happen within {timeout} s")


async def read(user: User, room_id: str, event_id: str) -> None:
    """A public read receipt, as a client sends when its user has seen the event."""
    response = await user.client.room_read_markers(room_id, event_id, event_id)
    assert isinstance(response, nio.RoomReadMarkersResponse), response


async def download(env: Env, user: User, mxc: str) -> bytes:
    server, media_id = mxc.removeprefix("mxc://").split("/", 1)
    url = f"{env.homeserver}/_matrix/client/v1/media/download/{server}/{media_id}"
    async with (
        aiohttp.ClientSession() as http,
        http.get(url, headers={"Authorization": f"Bearer {user.client.access_token}"}) as response,
    ):
        assert response.status == 200, await response.text()
        return await response.read()


async def published(reader: User, room_id: str, ghost: str, body: str) -> dict[str, Any]:
    return await reader.wait_for(
        room_id, lambda e: e.get("sender") == ghost and e.get("content", {}).get("body") == body
    )


async def test_stats_counts_subscribers_views_from_receipts_reactions_and_sends_a_chart(env: Env) -> None:
    alice, bob, carol = await env.user("alice"), await env.user("bob"), await env.user("carol")
    channel = await create_channel(env, alice, env.handle("stats"), "Counted")
    bs, room = channel.backstage, channel.broadcast
    ghost = f"@{env.ghost_prefix}{channel.handle}:{env.domain}"
    await bob.join(room)
    await carol.join(room)
    await alice.text(bs, "the first post")
    first = await published(bob, room, ghost, "the first post")
    await alice.text(bs, "the second post")
    second = await published(bob, room, ghost, "the second post")

    # Bob has read everything (a receipt on the second post counts the first too), Carol the first.
    await read(bob, room, second["event_id"])
    await read(carol, room, first["event_id"])
    reaction = {"m.relates_to": {"rel_type": "m.annotation", "event_id": first["event_id"], "key": "👍"}}
    await bob.send(room, reaction, "m.reaction")

    answer = ""

    async def counted() -> bool:
        nonlocal answer
        answer = await alice.ask(bs, "!stats", "Recent posts")
        return "the first post — 👁 2 · 1 reactions" in answer and "the second post — 👁 1" in answer

    await eventually(counted, "views counted from both receipts")
    assert "Subscribers: 2 " in answer, answer
    assert "Views: 3 today, 3 in all, on 2 posts" in answer, answer
    assert answer.index("the second post") < answer.index("the first post")  # newest first

    # The chart follows the answer as an image in backstage, stored on the homeserver.
    def is_chart(e: dict[str, Any]) -> bool:
        return e.get("sender") == env.bot and e.get("content", {}).get("msgtype") == "m.image"

    events = await alice.messages(bs)
    notice = max(i for i, e in enumerate(events) if e.get("content", {}).get("body") == answer)
    image = next((e for e in events[notice:] if is_chart(e)), None) or await alice.wait_for(bs, is_chart)
    content = image["content"]
    assert content["info"]["mimetype"] == "image/png"
    data = await download(env, alice, content["url"])
    assert len(data) == content["info"]["size"]
    png = Image.open(io.BytesIO(data))
    png.load()
    assert png.format == "PNG"
    assert png.size == (content["info"]["w"], content["info"]["h"])
    text = png.text  # type: ignore[attr-defined]
    today = datetime.now(UTC).date().isoformat()
    assert text["kanal:days"].split(",")[-1] == today
    assert text["kanal:subscribers"].split(",")[-1] == "2"
    assert text["kanal:views"].split(",")[-1] == "3"

    # In Persian (her choice): the answer and the chart's words are Persian, the numbers in Persian digits.
    await alice.ask(bs, "!language fa", "از این پس")
    persian = await alice.ask(bs, "!stats", "بازدیدها:")
    assert "مشترکان: ۲ " in persian and "· ۱ واکنش" in persian, persian
    events = await alice.messages(bs)
    notice = max(i for i, e in enumerate(events) if e.get("content", {}).get("body") == persian)
    shown = next((e for e in events[notice:] if is_chart(e)), None)
    image = shown or await alice.wait_for(
        bs, lambda e: is_chart(e) and "روز گذشته" in e["content"].get("body", "")
    )
    assert "روز گذشته" in image["content"]["body"]
    persian_data = await download(env, alice, image["content"]["url"])
    assert persian_data != data
    persian_png = Image.open(io.BytesIO(persian_data))
    persian_png.load()
    assert persian_png.format == "PNG" and persian_png.size == png.size
    persian_text = persian_png.text  # type: ignore[attr-defined]
    assert persian_text["kanal:days"].split(",")[-1] == today
    assert persian_text["kanal:subscribers"].split(",")[-1] == "2"
    assert persian_text["kanal:views"].split(",")[-1] == "3"


async def test_views_in_posts_edits_the_post_when_its_views_reach_ten(env: Env) -> None:
    def change(config: dict[str, Any]) -> None:
        config.setdefault("channels", {})["views_edit_interval"] = 1

    async with reconfigured(env, change):
        alice, editor = await env.user("alice"), await env.user("bob")
        channel = await create_channel(env, alice, env.handle("views"), "Seen")
        bs, room = channel.backstage, channel.broadcast
        ghost = f"@{env.ghost_prefix}{channel.handle}:{env.domain}"
        readers = [await env.user(f"reader{i}") for i in range(10)]
        for reader in readers:
            await reader.join(room)
        answer = await alice.ask(bs, "!views-in-posts on", "now show their views")
        assert "10, 100, 1K" in answer
        await alice.text(bs, "count me")
        post = await published(readers[0], room, ghost, "count me")

        def edits(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [
                e
                for e in events
                if e.get("sender") == ghost
                and e.get("content", {}).get("m.relates_to", {}).get("event_id") == post["event_id"]
            ]

        for reader in readers[:9]:
            await read(reader, room, post["event_id"])
        await asyncio.sleep(2)  # nine readers: below the first threshold, nothing is edited
        assert edits(await alice.messages(room)) == []

        await read(readers[9], room, post["event_id"])

        async def edited() -> bool:
            return bool(edits(await alice.messages(room)))

        await eventually(edited, "the post edited to show 10 views")
        [edit] = edits(await alice.messages(room))
        new = edit["content"]["m.new_content"]
        assert edit["content"]["m.relates_to"]["rel_type"] == "m.replace"
        assert new["body"] == "count me\n\n👁 10"
        assert "👁 10" in new["formatted_body"]

        # The owner's setting: an editor may not change it.
        await alice.ask(channel.management, f"promote {channel.handle} {editor.user_id} editor", "editor")
        invite = await editor.wait_invite(lambda rid, _room: rid == bs)
        await editor.join(invite)
        refusal = await editor.ask(bs, "!views-in-posts off", "may do that: owner.")
        assert channel.handle in refusal


POLL = {
    "org.matrix.msc3381.poll.start": {
        "question": {"org.matrix.msc1767.text": "Tea or coffee?"},
        "kind": "org.matrix.msc3381.poll.undisclosed",
        "max_selections": 1,
        "answers": [
            {"id": "tea", "org.matrix.msc1767.text": "Tea"},
            {"id": "coffee", "org.matrix.msc1767.text": "Coffee"},
        ],
    },
    "org.matrix.msc1767.text": "Tea or coffee?\n1. Tea\n2. Coffee",
}


def vote(poll_event: str, answer: str) -> dict[str, Any]:
    return {
        "m.relates_to": {"rel_type": "m.reference", "event_id": poll_event},
        "org.matrix.msc3381.poll.response": {"answers": [answer]},
    }


async def test_poll_results_show_the_tally_of_the_latest_or_the_replied_poll(env: Env) -> None:
    alice, bob, carol = await env.user("alice"), await env.user("bob"), await env.user("carol")
    channel = await create_channel(env, alice, env.handle("polls"), "Asked")
    bs, room = channel.backstage, channel.broadcast
    ghost = f"@{env.ghost_prefix}{channel.handle}:{env.domain}"
    await bob.join(room)
    await carol.join(room)
    assert "No poll" in await alice.ask(bs, "!poll results", "poll")

    source = await alice.send(bs, POLL, event_type="org.matrix.msc3381.poll.start")
    copy = await bob.wait_for(
        room, lambda e: e.get("sender") == ghost and e["type"] == "org.matrix.msc3381.poll.start"
    )
    response = "org.matrix.msc3381.poll.response"
    await bob.send(room, vote(copy["event_id"], "tea"), event_type=response)
    await carol.send(room, vote(copy["event_id"], "coffee"), event_type=response)
    await carol.send(room, vote(copy["event_id"], "tea"), event_type=response)  # the latest vote counts

    answer = await alice.ask(bs, "!poll results", "Tea or coffee?")
    assert "• Tea: 2 (100%)" in answer, answer
    assert "• Coffee: 0 (0%)" in answer, answer
    assert "2 voters · open" in answer, answer

    # A newer text post does not hide the poll; a reply names the poll to count.
    other = await alice.text(bs, "and now something else")
    reply = {
        "msgtype": "m.text",
        "body": "!poll results",
        "m.relates_to": {"m.in_reply_to": {"event_id": source}},
    }
    before = {e["event_id"] for e in await alice.messages(bs)}
    await alice.send(bs, reply)
    answered = await alice.wait_for(
        bs,
        lambda e: (
            e["event_id"] not in before
            and e.get("sender") == env.bot
            and "Tea or coffee?" in e.get("content", {}).get("body", "")
        ),
    )
    assert "• Tea: 2 (100%)" in answered["content"]["body"]

    # A reply to something that is not a poll says so.
    not_poll = {
        "msgtype": "m.text",
        "body": "!poll results",
        "m.relates_to": {"m.in_reply_to": {"event_id": other}},
    }
    await alice.send(bs, not_poll)
    await alice.wait_for(
        bs,
        lambda e: (
            e.get("sender") == env.bot and "is not a published poll" in e.get("content", {}).get("body", "")
        ),
    )
    # A vote after the end does not count.
    end = {
        "m.relates_to": {"rel_type": "m.reference", "event_id": source},
        "org.matrix.msc1767.text": "Ended",
    }
    await alice.send(bs, end, event_type="org.matrix.msc3381.poll.end")
    await bob.wait_for(
        room, lambda e: e.get("sender") == ghost and e["type"] == "org.matrix.msc3381.poll.end"
    )
    await bob.send(room, vote(copy["event_id"], "coffee"), event_type=response)
    final = await alice.ask(bs, "!poll results", "voters · ended")
    assert re.search(r"• Tea: 2 \(100%\)", final), final
