"""The public web face over a real Synapse: a real browser (Debian's Chromium, headless, through
Playwright) reads a channel page, and a post made through the publishing API reaches Matrix readers
and the page. Screenshots are kept in test-artifacts/ (see the printed paths).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.support import Env, User, create_channel

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
# Each payload, if it ever ran, would set window.__xss.
XSS = [
    "<script>window.__xss=1</script>",
    '<img src=x onerror="window.__xss=2">',
    '<a href="javascript:window.__xss=3">click</a>',
    '<svg onload="window.__xss=4"></svg>',
    '<iframe src="javascript:window.__xss=5"></iframe>',
    '<div style="background:url(javascript:window.__xss=6)">styled</div>',
    '<math><mtext><table><mglyph><style><img src=x onerror="window.__xss=7">',
    '<a href="&#106;avascript:window.__xss=8">entity</a>',
    '<details open ontoggle="window.__xss=9">d</details>',
    '"><script>window.__xss=10</script>',
]


def web_base(env: Env) -> str:
    config = yaml.safe_load(env.kanal.config_path.read_text())
    return f"http://{config['web']['listen']}"


def chromium_path() -> str:
    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(
                "chromium is missing: scripts/test installs it (apt-get install chromium chromium-driver)"
            )
        pytest.skip("chromium is not installed (apt-get install chromium chromium-driver)")
    return found


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    executable = chromium_path()
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            tempfile.mkdtemp(prefix="kanal-chromium-"),
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
        )
        try:
            yield context
        finally:
            await context.close()


async def relayed(
    user: User, env: Env, room: str, handle: str, text: str, timeout: float = 60
) -> dict[str, Any]:
    ghost = f"@kanal_{handle}:{env.domain}"
    return await user.wait_for(
        room,
        lambda e: e.get("sender") == ghost and text in e.get("content", {}).get("body", ""),
        timeout,
        limit=200,
    )


async def page_text(url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return await response.text()


async def test_a_browser_reads_the_channel_page(env: Env, browser: Any) -> None:
    alice = await env.user("alice")
    channel = await create_channel(env, alice, env.handle("web"), "Web Desk")
    for i in range(25):
        await alice.text(channel.backstage, f"numbered post {i:02d}")
    await alice.text(channel.backstage, "سلام دنیا، این پست فارسی است ۱۲۳")
    for payload in XSS:
        await alice.send(
            channel.backstage,
            {
                "msgtype": "m.text",
                "body": "xss test",
                "format": "org.matrix.custom.html",
                "formatted_body": payload,
            },
        )
    await alice.text(channel.backstage, "the last post")
    await relayed(alice, env, channel.broadcast, channel.handle, "the last post")

    url = f"{web_base(env)}/c/{channel.handle}"
    # Relayed copies become visible on the page once their sends are recorded: wait for the last one.
    deadline = time.monotonic() + 30
    while "the last post" not in await page_text(url) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)

    page = await browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    outside: list[str] = []
    page.on(
        "request",
        lambda request: None if request.url.startswith(web_base(env)) else outside.append(request.url),
    )
    response = await page.goto(url)
    assert response is not None and response.status == 200
    assert "Web Desk" in await page.title()
    texts = await page.locator("article.post .text").all_inner_texts()
    assert "the last post" in texts[0] or "the last post" in texts[-1]
    persian = page.locator("article.post", has_text="سلام دنیا")
    assert await persian.count() == 1
    direction = await persian.locator(".text").evaluate("element => getComputedStyle(element).direction")
    assert direction == "rtl"
    assert await page.evaluate("window.__xss") is None
    assert dialogs == [] and outside == []
    ARTIFACTS.mkdir(exist_ok=True)
    first = ARTIFACTS / "channel-page.png"
    await page.screenshot(path=str(first), full_page=True)

    older = page.locator("nav.pages a[rel=next], nav.pages a", has_text=re.compile("older|Older|قدیمی"))
    assert await older.count() >= 1, await page.locator("nav.pages").inner_html()
    await older.first.click()
    await page.wait_for_load_state()
    assert "before=" in page.url
    older_texts = await page.locator("article.post .text").all_inner_texts()
    assert any(text.startswith("numbered post 0") for text in older_texts)
    assert not set(older_texts) & {"the last post"}
    assert await page.evaluate("window.__xss") is None
    second = ARTIFACTS / "channel-page-older.png"
    await page.screenshot(path=str(second), full_page=True)
    print(f"\nscreenshots: {first} {second}")


async def test_a_post_made_through_the_api_reaches_readers_and_the_page(env: Env) -> None:
    alice, bob = await env.user("alice"), await env.user("bob")
    channel = await create_channel(env, alice, env.handle("api"), "Newsroom")
    await alice.text(channel.backstage, "!token new newsbot")
    notice = await alice.wait_for(
        channel.backstage, lambda e: "kanal_api_" in e.get("content", {}).get("body", "")
    )
    token = re.search(r"kanal_api_\S+", notice["content"]["body"]).group(0)  # type: ignore[union-attr]
    await bob.join(f"#{channel.handle}:{env.domain}")

    url = f"{web_base(env)}/api/v1/channels/{channel.handle}/posts"
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "story-1"}
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json={"text": "from the newsroom"}, headers=headers) as response:
            assert response.status == 201, await response.text()
            created = await response.json()
        async with http.post(url, json={"text": "from the newsroom"}, headers=headers) as response:
            assert (await response.json())["id"] == created["id"]  # the same key: replayed, not doubled

    copy = await relayed(bob, env, channel.broadcast, channel.handle, "from the newsroom")
    published = [
        e
        for e in await bob.all_messages(channel.broadcast)
        if "from the newsroom" in e.get("content", {}).get("body", "")
    ]
    assert len(published) == 1 and published[0]["event_id"] == copy["event_id"]
    deadline = time.monotonic() + 20
    while (
        "from the newsroom" not in await page_text(f"{web_base(env)}/c/{channel.handle}")
        and time.monotonic() < deadline
    ):
        await asyncio.sleep(0.3)
    assert "from the newsroom" in await page_text(f"{web_base(env)}/c/{channel.handle}")
    # Bob's read receipt on the post counts as a view (and would for every earlier post).
    receipt = await bob.client.room_read_markers(channel.broadcast, copy["event_id"], copy["event_id"])
    assert not hasattr(receipt, "status_code") or receipt.status_code is None, receipt
    views = None
    deadline = time.monotonic() + 20
    async with aiohttp.ClientSession() as http:
        while views != 1 and time.monotonic() < deadline:
            async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
                listed = (await response.json())["posts"]
            views = next(p["views"] for p in listed if p["id"] == created["id"])
            await asyncio.sleep(0.5)
    assert views == 1
    # The token itself is not kept once the notice showing it was sent.
    assert token not in env.kanal.log_path.read_text(errors="replace")


POLL = {
    "org.matrix.msc3381.poll.start": {
        "question": {"org.matrix.msc1767.text": "Tea or coffee?"},
        "kind": "org.matrix.msc3381.poll.disclosed",
        "max_selections": 1,
        "answers": [
            {"id": "tea", "org.matrix.msc1767.text": "Tea"},
            {"id": "coffee", "org.matrix.msc1767.text": "Coffee"},
        ],
    },
    "org.matrix.msc1767.text": "Tea or coffee?\n1. Tea\n2. Coffee",
}


async def test_a_poll_is_relayed_voted_on_ended_and_shown_with_its_results(env: Env) -> None:
    alice, bob = await env.user("alice"), await env.user("bob")
    channel = await create_channel(env, alice, env.handle("poll"), "Poll Desk")
    await bob.join(f"#{channel.handle}:{env.domain}")
    source = await alice.send(channel.backstage, POLL, event_type="org.matrix.msc3381.poll.start")
    ghost = f"@kanal_{channel.handle}:{env.domain}"
    copy = await bob.wait_for(
        channel.broadcast, lambda e: e.get("sender") == ghost and e["type"] == "org.matrix.msc3381.poll.start"
    )
    vote = {
        "m.relates_to": {"rel_type": "m.reference", "event_id": copy["event_id"]},
        "org.matrix.msc3381.poll.response": {"answers": ["coffee"]},
    }
    await bob.send(channel.broadcast, vote, event_type="org.matrix.msc3381.poll.response")  # readers may vote
    end = {
        "m.relates_to": {"rel_type": "m.reference", "event_id": source},
        "org.matrix.msc1767.text": "Ended",
    }
    await alice.send(channel.backstage, end, event_type="org.matrix.msc3381.poll.end")
    ended = await bob.wait_for(
        channel.broadcast, lambda e: e.get("sender") == ghost and e["type"] == "org.matrix.msc3381.poll.end"
    )
    assert ended["content"]["m.relates_to"]["event_id"] == copy["event_id"]

    # The page shows the results (tallies are cached for a minute and refreshed in the background).
    url = f"{web_base(env)}/c/{channel.handle}"
    deadline = time.monotonic() + 90
    page = await page_text(url)
    while not ("1 voter" in page and ">ended<" in page) and time.monotonic() < deadline:
        await asyncio.sleep(2)
        page = await page_text(url)
    assert "Tea or coffee?" in page and "Coffee" in page
    assert "1 voter" in page and ">ended<" in page, page[page.find('class="poll"') :][:800]


async def test_a_reader_joins_a_private_channel_from_the_link_in_a_browser(env: Env, browser: Any) -> None:
    alice, reader = await env.user("alice"), await env.user("reader")
    channel = await create_channel(env, alice, env.handle("door"), "Door Desk --private")
    answer = await alice.ask(channel.backstage, "!link new --uses 1", "shown only this once")
    link = re.search(r"https?://\S+/join/kanal_inv_[A-Za-z0-9_-]{24}", answer)
    assert link is not None, answer
    url = link.group(0).replace(re.match(r"https?://[^/]+", link.group(0)).group(0), web_base(env))  # type: ignore[union-attr]

    page = await browser.new_page()
    outside: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(web_base(env)) else outside.append(r.url))
    response = await page.goto(url)
    assert response is not None and response.status == 200
    assert "Door Desk" in await page.locator("main.join h1").inner_text()
    await page.fill("#user_id", reader.user_id)
    await page.click("button[type=submit]")
    await page.wait_for_load_state()
    done = await page.locator("main.join").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "join-page.png"), full_page=True)
    assert reader.user_id in done or "invite" in done.lower(), done
    assert not outside, outside

    await reader.wait_invite(lambda rid, _room: rid == channel.broadcast)
    assert await reader.join(channel.broadcast) == channel.broadcast
    # The link allowed one use: a second visit says so.
    again = await page.goto(url)
    assert again is not None and again.status == 410

    # Browsers send `Origin: null` under the page's no-referrer policy; only Sec-Fetch-Site then tells
    # the page's own form from another site's.
    async with aiohttp.ClientSession() as http:
        for fetch_site, expected in (("cross-site", 403), (None, 403)):
            headers = {"Origin": "null"} | ({"Sec-Fetch-Site": fetch_site} if fetch_site else {})
            async with http.post(url, data={"user_id": reader.user_id, "form": "x"}, headers=headers) as sent:
                assert sent.status == expected, (fetch_site, sent.status)
