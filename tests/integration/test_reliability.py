"""Nothing lost, nothing doubled: SIGKILL mid-burst, homeserver outages, Kanal down, SIGTERM."""

from __future__ import annotations

import asyncio
import bisect
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
import yaml

from tests.support import Channel, Env, User, create_channel, reconfigured

pytestmark = pytest.mark.integration

# Posts sent after the last SIGKILL's restart: the burst goes on through every kill and past it.
AFTER_THE_KILLS = 50
# One sender, as an admin posting a burst: with concurrent senders the homeserver's delivery order and
# its timeline order may legitimately differ for simultaneous posts, and "in order" has no single meaning.
SEND_CONCURRENCY = 1


def _relayed_late(relayed: list[str], expected: list[str]) -> list[str]:
    """The fewest posts whose removal leaves `relayed` in `expected` order (n − longest increasing run)."""
    position = {body: i for i, body in enumerate(expected)}
    tails: list[int] = []  # patience sorting: tails[k] = smallest tail of an increasing run of length k+1

    chains: list[list[int]] = []
    for body in relayed:
        p = position[body]
        k = bisect.bisect_left(tails, p)
        chain = [*chains[k - 1], p] if k else [p]
        if k == len(tails):
            tails.append(p)
            chains.append(chain)
        else:
            tails[k] = p
            chains[k] = chain
    keep = set(chains[-1]) if chains else set()
    return [body for body in relayed if position[body] not in keep]


async def _burst(user: User, room: str, bodies: list[str]) -> None:
    """Post as fast as one client can; the homeserver's order in backstage is the order to keep."""
    queue = list(bodies)

    async def worker() -> None:
        while queue:
            body = queue.pop(0)
            await user.text(room, body)

    await asyncio.gather(*(worker() for _ in range(SEND_CONCURRENCY)))


def _posts(events: list[dict[str, Any]], sender: str, prefix: str) -> list[str]:
    return [
        e["content"]["body"]
        for e in events
        if e.get("sender") == sender
        and e["type"] == "m.room.message"
        and e["content"].get("body", "").startswith(prefix)
        and "m.relates_to" not in e["content"]
    ]


async def _wait_count(
    user: User, room: str, sender: str, prefix: str, count: int, timeout: float
) -> list[str]:
    deadline = time.monotonic() + timeout
    posts: list[str] = []
    while time.monotonic() < deadline:
        posts = _posts(await user.all_messages(room), sender, prefix)
        if len(posts) >= count:
            await asyncio.sleep(2)  # anything doubled would arrive now
            return _posts(await user.all_messages(room), sender, prefix)
        await asyncio.sleep(1)
    return posts


def _ghost(env: Env, channel: Channel) -> str:
    return f"@kanal_{channel.handle}:{env.domain}"


async def _kill_and_restart_at_random(env: Env, times: int, window: float) -> None:
    for _ in range(times):
        await asyncio.sleep(random.uniform(0.5, window / times))
        env.kanal.kill()
        await env.kanal.start()


async def test_sigkill_during_a_burst_loses_and_doubles_nothing(env: Env) -> None:
    alice = await env.user("alice")
    channel = await create_channel(env, alice, env.handle("crash"), "Crash Desk")
    # Posting as fast as one client can while Kanal is killed three times at random moments, and on
    # after the last restart: every kill lands mid-burst, however fast this machine posts.
    bodies: list[str] = []
    killing = asyncio.create_task(_kill_and_restart_at_random(env, 3, 12))
    while not killing.done():
        bodies.append(f"crash-post {len(bodies):04d}")
        await alice.text(channel.backstage, bodies[-1])
    await killing
    tail = [f"crash-post {i:04d}" for i in range(len(bodies), len(bodies) + AFTER_THE_KILLS)]
    await _burst(alice, channel.backstage, tail)
    bodies += tail

    backstage_order = _posts(await alice.all_messages(channel.backstage), alice.user_id, "crash-post ")
    assert sorted(backstage_order) == bodies
    relayed = await _wait_count(alice, channel.broadcast, _ghost(env, channel), "crash-post ", len(bodies), 240)
    duplicates = [body for body, n in Counter(relayed).items() if n > 1]
    assert not duplicates, f"doubled: {duplicates[:5]}"
    assert len(relayed) == len(bodies), f"lost {sorted(set(bodies) - set(relayed))[:5]}"
    # Order: Synapse can strand a transaction while it recovers from the failed deliveries a SIGKILL
    # causes, and deliver an earlier post after later ones, or never; Kanal must put it in its place.
    late = _relayed_late(relayed, backstage_order)
    assert not late, f"relayed after later posts: {late}"
    assert relayed == backstage_order


async def test_sigkill_during_edits_and_redactions(env: Env) -> None:
    alice = await env.user("alice")
    channel = await create_channel(env, alice, env.handle("edits"), "Edit Desk")
    ghost = _ghost(env, channel)
    count = 100
    originals = {}
    for i in range(count):
        originals[i] = await alice.text(channel.backstage, f"edit-post {i:03d}")
    await _wait_count(alice, channel.broadcast, ghost, "edit-post ", count, 120)

    async def edits_and_redactions(killing: asyncio.Task[None]) -> None:
        for i in range(count):
            if i == count * 3 // 4:
                await killing  # the last quarter after the last restart: every kill lands mid-stream
            await alice.send(
                channel.backstage,
                {
                    "msgtype": "m.text",
                    "body": f"* edited {i:03d}",
                    "m.new_content": {"msgtype": "m.text", "body": f"edited {i:03d}"},
                    "m.relates_to": {"rel_type": "m.replace", "event_id": originals[i]},
                },
            )
            if i % 2 == 0:
                await alice.client.room_redact(channel.backstage, originals[i], reason="burst")

    killing = asyncio.create_task(_kill_and_restart_at_random(env, 3, 8))
    await asyncio.gather(edits_and_redactions(killing), killing)

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        events = await alice.all_messages(channel.broadcast)
        edits = [
            e
            for e in events
            if e.get("sender") == ghost
            and e["content"].get("m.relates_to", {}).get("rel_type") == "m.replace"
        ]
        redactions = [e for e in events if e.get("sender") == ghost and e["type"] == "m.room.redaction"]
        if len(edits) >= count and len(redactions) >= count // 2:
            break
        await asyncio.sleep(1)
    await asyncio.sleep(2)
    events = await alice.all_messages(channel.broadcast)
    edit_counts = Counter(
        e["content"]["m.new_content"]["body"]
        for e in events
        if e.get("sender") == ghost and e["content"].get("m.relates_to", {}).get("rel_type") == "m.replace"
    )
    redaction_counts = Counter(
        e.get("redacts") or e["content"].get("redacts")
        for e in events
        if e.get("sender") == ghost and e["type"] == "m.room.redaction"
    )
    assert sorted(edit_counts) == [f"edited {i:03d}" for i in range(count)]
    assert set(edit_counts.values()) == {1}, "an edit was mirrored twice"
    assert len(redaction_counts) == count // 2 and set(redaction_counts.values()) == {1}, (
        "a redaction was lost or doubled"
    )
    # In order: the channel shows the edits and redactions in the order backstage has them.
    relayed_copies = [
        e["event_id"]
        for e in events
        if e.get("sender") == ghost
        and e["type"] == "m.room.message"
        and e["content"].get("m.relates_to", {}).get("rel_type") != "m.replace"
    ]
    assert len(relayed_copies) == count
    backstage = await alice.all_messages(channel.backstage)
    expected = _changes(backstage, alice.user_id, {originals[i]: i for i in range(count)})
    assert len(expected) == count + count // 2
    assert _changes(events, ghost, {eid: i for i, eid in enumerate(relayed_copies)}) == expected


def _changes(events: list[dict[str, Any]], sender: str, post_number: dict[str, int]) -> list[str]:
    """The edits and redactions `sender` made, in timeline order, named by the post they change."""
    changes = []
    for e in events:
        if e.get("sender") != sender:
            continue
        relation = e["content"].get("m.relates_to", {})
        if relation.get("rel_type") == "m.replace":
            changes.append(f"edit {post_number[relation['event_id']]}")
        elif e["type"] == "m.room.redaction":
            changes.append(f"redact {post_number[e.get('redacts') or e['content']['redacts']]}")
    return changes


async def test_kanal_down_while_posting_then_everything_relayed_once(env: Env) -> None:
    alice = await env.user("alice")
    channel = await create_channel(env, alice, env.handle("down"), "Down Desk")
    assert await env.kanal.stop() == 0  # SIGTERM: a clean exit
    bodies = [f"offline-post {i:03d}" for i in range(50)]
    for body in bodies:
        await alice.text(channel.backstage, body)
    started = time.monotonic()
    await env.kanal.start()
    await alice.wait_for(channel.broadcast, lambda e: e["content"].get("body") == bodies[0], timeout=30)
    first_after = time.monotonic() - started
    relayed = await _wait_count(alice, channel.broadcast, _ghost(env, channel), "offline-post ", 50, 60)
    assert relayed == bodies
    print(f"\nrestart → first backlog post relayed: {first_after:.2f} s (includes process start)")


async def test_sigterm_mid_burst_exits_zero_promptly_and_resumes(env: Env) -> None:
    alice = await env.user("alice")
    channel = await create_channel(env, alice, env.handle("term"), "Term Desk")
    bodies = [f"term-post {i:03d}" for i in range(100)]
    await _burst(alice, channel.backstage, bodies)
    began = time.monotonic()
    assert await env.kanal.stop(timeout=30) == 0
    assert time.monotonic() - began < 25
    await env.kanal.start()
    relayed = await _wait_count(alice, channel.broadcast, _ghost(env, channel), "term-post ", len(bodies), 90)
    assert relayed == _posts(await alice.all_messages(channel.backstage), alice.user_id, "term-post ")


async def test_homeserver_outage_mid_burst(env: Env) -> None:
    alice = await env.user("alice")
    channel = await create_channel(env, alice, env.handle("outage"), "Outage Desk")
    # Enough that the homeserver stops with a backlog still queued (Kanal relays ~10 posts/s here).
    first = [f"outage-post {i:03d}" for i in range(150)]
    second = [f"outage-post {i:03d}" for i in range(150, 200)]
    log_before = env.kanal.log_path.read_text(errors="replace")
    await _burst(alice, channel.backstage, first)
    await env.synapse.stop()
    await asyncio.sleep(15)  # several probe cycles (every 2 s) and retries with backoff, while it is down
    assert env.kanal.process is not None and env.kanal.process.poll() is None, "Kanal died during the outage"
    await env.synapse.start()
    await _burst(alice, channel.backstage, second)
    relayed = await _wait_count(alice, channel.broadcast, _ghost(env, channel), "outage-post ", 200, 180)
    assert relayed == _posts(await alice.all_messages(channel.backstage), alice.user_id, "outage-post ")
    log = env.kanal.log_path.read_text(errors="replace")[len(log_before) :]
    # Bounded backoff: a few clear lines per waiting queue, not a spin.
    waits = log.count("next try in") + log.count("waits: the homeserver is unavailable")
    assert 0 < waits < 200, waits
    assert "Traceback" not in log


async def _ready_until(http: aiohttp.ClientSession, env: Env, homeserver: str, timeout: float) -> list[int]:
    """Poll `/ready` until it says the homeserver is `homeserver`; the statuses it answered meanwhile."""
    statuses: list[int] = []
    deadline = time.monotonic() + timeout
    while True:
        async with http.get(f"http://127.0.0.1:{env.kanal.port}/ready") as response:
            statuses.append(response.status)
            body = await response.json()
        if body.get("homeserver") == homeserver or time.monotonic() > deadline:
            assert body.get("homeserver") == homeserver, body
            return statuses
        await asyncio.sleep(0.5)


async def test_ready_while_the_homeserver_is_down_keeps_routing_and_says_why(env: Env) -> None:
    """README (Monitoring): /ready stays 200 with "homeserver": "unreachable"; pages are still served and
    API posts taken, and what waits is sent once the homeserver is back."""
    alice = await env.user("alice")
    channel = await create_channel(env, alice, env.handle("ready"), "Ready Desk")
    async with reconfigured(env, _ping_every(READY_PING_INTERVAL_S)):
        await _ready_while_down(env, alice, channel)


# The test's Kanal pings the homeserver this often (homeserver.ping_interval; 30 s by default): how
# soon an idle Kanal notices an outage is that setting's business, not this test's.
READY_PING_INTERVAL_S = 2


def _ping_every(seconds: int) -> Callable[[dict[str, Any]], None]:
    def change(config: dict[str, Any]) -> None:
        config["homeserver"]["ping_interval"] = seconds

    return change


async def _ready_while_down(env: Env, alice: User, channel: Channel) -> None:
    await alice.text(channel.backstage, "!token new ready")
    notice = await alice.wait_for(
        channel.backstage, lambda e: "kanal_api_" in e.get("content", {}).get("body", "")
    )
    token = re.search(r"kanal_api_\S+", notice["content"]["body"]).group(0)  # type: ignore[union-attr]
    web = f"http://{yaml.safe_load(env.kanal.config_path.read_text())['web']['listen']}"
    kanal = f"http://127.0.0.1:{env.kanal.port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{kanal}/ready") as response:
            assert response.status == 200
            assert await response.json() == {"status": "ready", "homeserver": "reachable"}
        await env.synapse.stop()
        try:
            # Nothing is being sent: Kanal notices at its next keep-alive ping.
            statuses = await _ready_until(http, env, "unreachable", timeout=60)
            assert set(statuses) == {200}, statuses
            async with http.get(f"{kanal}/metrics") as response:
                assert "kanal_homeserver_up 0.0" in await response.text()
            async with http.get(f"{web}/c/{channel.handle}") as response:
                assert response.status == 200
                assert "Ready Desk" in await response.text()
            async with http.post(
                f"{web}/api/v1/channels/{channel.handle}/posts",
                json={"text": "posted while the homeserver was down"},
                headers={"Authorization": f"Bearer {token}"},
            ) as response:
                assert response.status == 201, await response.text()
            async with http.get(f"{kanal}/ready") as response:
                assert response.status == 200
        finally:
            await env.synapse.start()
        statuses = await _ready_until(http, env, "reachable", timeout=30)
        assert set(statuses) == {200}, statuses
        async with http.get(f"{kanal}/metrics") as response:
            assert "kanal_homeserver_up 1.0" in await response.text()
    await alice.wait_for(
        channel.broadcast,
        lambda e: e.get("content", {}).get("body") == "posted while the homeserver was down",
        timeout=60,
    )
