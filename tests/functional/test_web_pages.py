"""The public pages (bridge/web/pages.py) against a real database and a scripted homeserver.

test ──HTTP──▶ web.Application + add_page_routes ──SQL──▶ SQLite (migrated, seeded below)
                                                 ──HTTP──▶ FakeHomeserver (joined_members, media,
                                                                   poll relations)

Each test gets a fresh application (empty caches); the database and the homeserver live for the
module. Tests that change the database use channels of their own.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import feedparser  # type: ignore[import-untyped]
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pytest_aiohttp import AiohttpClient
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from appservice.client import HomeserverClient
from appservice.ids import RoomID
from bridge.runtime.config import parse
from bridge.runtime.context import Context
from bridge.runtime.outbox import OutboxWorker
from bridge.store.db import create_engine, migrate, sessionmaker
from bridge.store.models import Channel, HandleHold, Post, PostCopy
from bridge.text.names import title_key
from bridge.web.pages import EMBED_CSP, PAGE_CSP, PAGES, PollKey, add_page_routes

DOMAIN = "example.org"
BOT = f"@kanal:{DOMAIN}"
AS_TOKEN = "as-secret-0123456789"
PUBLIC_URL = "https://kanal.example"
T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)

# Every string here would run script, load a third party, or break out of its context if it
# reached the page unescaped or unsanitised.
XSS_HTML = (
    "<p>fine <b>bold</b></p>"
    "<script>alert('script-tag')</script>"
    '<img src=x onerror="alert(1)">'
    '<img src="https://tracker.example/pixel.png">'
    '<img src="data:image/png;base64,AAAA">'
    '<a href="javascript:alert(2)">js-link</a>'
    '<a href="JaVaScRiPt&colon;alert(3)">js-entity</a>'
    '<a href="jav&#x09;ascript:alert(4)">js-tab</a>'
    '<a href="data:text/html,<script>alert(5)</script>">data-link</a>'
    '<svg onload="alert(6)"><circle/></svg>'
    "<style>body{background:url(https://tracker.example/css)}</style>"
    '<p style="background:url(https://tracker.example/style)">styled</p>'
    '<iframe src="https://evil.example/"></iframe>'
    '<form action="https://evil.example/"><input name=x></form>'
    '<math><mi xlink:href="javascript:alert(7)">m</mi></math>'
    '<a href="https://ok.example/path" onclick="alert(8)">good-link</a>'
    "<details open ontoggle=alert(9)><summary>more</summary>inside</details>"
    "&lt;script&gt;alert('entity')&lt;/script&gt;"
    "<!-- <script>alert('comment')</script> -->"
)
XSS_TITLE = '"><script>alert("title")</script><img src=x onerror=alert(10)>'
XSS_BODY = "<script>alert('body')</script> & \"quotes\" 'single'"
# Elements that run script, style the page or load something (none of Kanal's pages has any).
FORBIDDEN_ELEMENTS = frozenset(
    {"script", "style", "iframe", "frame", "object", "embed", "svg", "math", "form", "input", "base", "meta"}
)
ALLOWED_FORMS = frozenset({"form", "input", "meta"})  # the directory's search form; <meta charset> and co.
URL_ATTRIBUTES = frozenset({"href", "src", "action", "formaction", "poster", "srcset", "xlink:href"})
LINK_PREFIXES = ("/", "https://", "http://", "mailto:", "#")


class MarkupAudit(HTMLParser):
    """Collects what a browser would treat as markup (text, escaped or not, is just text)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self.in_body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            self.in_body = True
        if tag in FORBIDDEN_ELEMENTS and (self.in_body or tag not in ALLOWED_FORMS):
            if not (tag in ("form", "input") and dict(attrs).get("action", "/") == "/"):
                self.problems.append(f"<{tag}>")
        for name, value in attrs:
            value = (value or "").strip().lower()
            if name.startswith("on") or name == "style":
                self.problems.append(f"{tag}[{name}]")
            if name in URL_ATTRIBUTES:
                if not value.startswith(LINK_PREFIXES) or value.startswith("//"):
                    self.problems.append(f"{tag}[{name}={value}]")
                if name == "src" and not value.startswith("/"):
                    self.problems.append(f"{tag}[src={value}] (not this origin)")
                if "tracker.example" in value or "evil.example" in value:
                    self.problems.append(f"{tag}[{name}={value}] (third party)")


# A poll as Element sends it (MSC3381, unstable names), and one in the stable form.
ELEMENT_POLL = {
    "org.matrix.msc3381.poll.start": {
        "kind": "org.matrix.msc3381.poll.disclosed",
        "max_selections": 1,
        "question": {"org.matrix.msc1767.text": "Which day?"},
        "answers": [
            {"id": "sat-id", "org.matrix.msc1767.text": "Saturday"},
            {"id": "sun-id", "org.matrix.msc1767.text": "Sunday"},
        ],
    },
    "org.matrix.msc1767.text": "Which day?\n1. Saturday\n2. Sunday",
}
CLOSING_POLL = {
    "m.poll": {
        "kind": "m.disclosed",
        "max_selections": 2,
        "question": {"m.text": [{"body": "Which fruit?"}]},
        "answers": [
            {"m.id": "apple", "m.text": [{"body": "Apple"}]},
            {"m.id": "pear", "m.text": [{"body": "Pear"}]},
            {"m.id": "plum", "m.text": [{"body": "Plum"}]},
        ],
    },
    "m.text": [{"body": "Which fruit?"}],
}
POLLS_GHOST = f"@kanal_polls_ch:{DOMAIN}"


def poll_event(kind: str, poll: str, sender: str, ts: int, **content: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "event_id": f"${kind}-{sender}-{ts}",
        "room_id": f"!polls_ch:{DOMAIN}",
        "sender": sender,
        "origin_server_ts": ts,
        "content": {"m.relates_to": {"rel_type": "m.reference", "event_id": poll}, **content},
    }


def element_vote(poll: str, sender: str, ts: int, answer: str) -> dict[str, Any]:
    response = {"org.matrix.msc3381.poll.response": {"answers": [answer]}}
    return poll_event("org.matrix.msc3381.poll.response", poll, sender, ts, **response)


def element_votes(poll: str) -> list[dict[str, Any]]:
    """130 readers vote (more than one page of relations): 86 for Saturday, 44 for Sunday."""
    votes = [
        element_vote(poll, f"@reader{n}:{DOMAIN}", 1000 + n, "sat-id" if n < 88 else "sun-id")
        for n in range(130)
    ]
    votes.append(element_vote(poll, f"@reader0:{DOMAIN}", 5000, "sun-id"))  # changed their mind
    votes.append(element_vote(poll, f"@reader1:{DOMAIN}", 5000, "nonsense"))  # spoiled
    votes.append(poll_event("m.room.message", poll, f"@reader2:{DOMAIN}", 5000, body="a reference, no vote"))
    return sorted(votes, key=lambda event: -event["origin_server_ts"])


PERSIAN_TITLE = "کانال خبری ۱۴۰۲"  # Persian keheh (ک) and yeh (ی), Persian digits
PERSIAN_QUERY = "كانال خبري 1402"  # the same typed on an Arabic keyboard: kaf (ك), yeh (ي), ASCII digits
PERSIAN_TEXT = "سلام دنیا! این یک پست فارسی است."


@dataclass
class FakeHomeserver:
    members: dict[str, int]
    media: dict[str, tuple[bytes, str]]
    member_requests: list[str] = field(default_factory=list)
    media_requests: list[str] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)
    # poll event id -> the events relating to it, newest first (as /relations answers, dir=b)
    relations: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    relation_requests: list[dict[str, str]] = field(default_factory=list)  # path ids and query of each

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/_matrix/client/v3/rooms/{room}/joined_members", self.joined_members)
        app.router.add_get(
            "/_matrix/client/v1/rooms/{room}/relations/{event_id}/{rel_type}", self.relations_of
        )
        app.router.add_get("/_matrix/client/v1/media/download/{server}/{media_id}", self.download)
        return app

    async def joined_members(self, request: web.Request) -> web.Response:
        room = request.match_info["room"]
        self.member_requests.append(room)
        self.authorizations.append(request.headers.get("Authorization"))
        ghost = "@kanal_" + room.strip("!").split(":")[0] + f":{DOMAIN}"
        readers = [f"@reader{n}:{DOMAIN}" for n in range(self.members.get(room, 0))]
        joined: dict[str, dict[str, str]] = {user: {} for user in (BOT, ghost, *readers)}
        return web.json_response({"joined": joined})

    async def relations_of(self, request: web.Request) -> web.Response:
        event_id, rel_type = request.match_info["event_id"], request.match_info["rel_type"]
        self.relation_requests.append({**request.match_info, **request.query})
        self.authorizations.append(request.headers.get("Authorization"))
        events = self.relations.get(event_id)
        if events is None or rel_type != "m.reference":
            return web.json_response({"errcode": "M_NOT_FOUND", "error": "no such event"}, status=404)
        start, limit = int(request.query.get("from", "0")), int(request.query.get("limit", "5"))
        answer: dict[str, Any] = {"chunk": events[start : start + limit]}
        if start + limit < len(events):
            answer["next_batch"] = str(start + limit)
        return web.json_response(answer)

    async def download(self, request: web.Request) -> web.Response:
        mxc = f"mxc://{request.match_info['server']}/{request.match_info['media_id']}"
        self.media_requests.append(mxc)
        self.authorizations.append(request.headers.get("Authorization"))
        if mxc not in self.media:
            return web.json_response({"errcode": "M_NOT_FOUND", "error": "no media"}, status=404)
        body, content_type = self.media[mxc]
        return web.Response(body=body, content_type=content_type)


@dataclass
class World:
    ctx: Context
    sessions: async_sessionmaker[AsyncSession]
    homeserver: FakeHomeserver
    ids: dict[str, int]  # post label -> Post.id
    config_dir: Path
    relayed: dict[str, str]  # post label -> its event id in the broadcast room


def message(body: str, **extra: Any) -> dict[str, Any]:
    return {"msgtype": "m.text", "body": body, **extra}


async def seed(session: AsyncSession) -> dict[str, int]:
    def channel(handle: str | None, title: str, *, status: str = "active", **extra: Any) -> Channel:
        name = handle or "gone"
        row = Channel(
            handle=handle,
            title=title,
            owner=f"@owner:{DOMAIN}",
            ghost_user_id=f"@kanal_{name}:{DOMAIN}",
            broadcast_room_id=f"!{name}:{DOMAIN}",
            status=status,
            title_key=title_key(title),
            created_at=T0,
            changed_at=T0,
            **extra,
        )
        session.add(row)
        return row

    news = channel("news_daily", "Daily News", about="All the news <b>fit</b> to print", verified=True)
    suspended = channel(
        "suspended_ch", "Suspended Channel", status="suspended", avatar_url="mxc://example.org/suspavatar"
    )
    deleted = channel("deleted_ch", "Deleted Channel", status="deleted")
    gone = channel(None, "Gone Channel", status="deleted", former_handle="gone_ch")
    channel("private_ch", "Private Channel", status="creating")
    persian = channel("persian_ch", PERSIAN_TITLE, about="اخبار روز", avatar_url="mxc://example.org/avatar1")
    evil = channel("evil_chan", XSS_TITLE, about=XSS_TITLE)
    mutable = channel("mutable_ch", "Mutable Channel")
    renamed = channel("renamed_ch", "Renamed Channel")
    polls = channel("polls_ch", "Poll Channel")
    await session.flush()
    session.add(
        HandleHold(
            handle="old_name",
            skeleton="old_name",
            kind="grace",
            channel_id=renamed.id,
            until=datetime.now(UTC) + timedelta(days=7),
        )
    )

    ids: dict[str, int] = {}
    counter = 0

    def post(
        label: str,
        target: Channel,
        content: dict[str, Any] | None,
        *,
        event_type: str = "m.room.message",
        relayed: bool = True,
        **extra: Any,
    ) -> None:
        nonlocal counter
        counter += 1
        row = Post(
            channel_id=target.id,
            source_event_id=f"$source{counter}",
            relayed_event_id=f"$relayed{counter}:{DOMAIN}" if relayed else None,
            author=f"@owner:{DOMAIN}",
            event_type=event_type,
            content=content,
            created_at=T0 + timedelta(minutes=counter),
            changed_at=extra.get("edited_at") or T0 + timedelta(minutes=counter),
            **extra,
        )
        session.add(row)
        labels.append((label, row))

    labels: list[tuple[str, Post]] = []
    for n in range(1, 26):
        post(f"filler{n}", news, message(f"filler number {n:02d}"))
    post("plain", news, message("Hello world\nsecond line"))
    post("evil", news, message("evil fallback", format="org.matrix.custom.html", formatted_body=XSS_HTML))
    post("evil_plain", news, message(XSS_BODY))
    post("persian", news, message(PERSIAN_TEXT))
    post(
        "image",
        news,
        {
            "msgtype": "m.image",
            "body": "a cat on a mat",
            "url": "mxc://example.org/img1",
            "info": {"w": 640, "h": 480},
        },
    )
    post(
        "edited",
        news,
        message("EDITED-NEW-TEXT"),
        edited_at=T0 + timedelta(hours=5),
    )
    post("redacted", news, message("REDACTED-SECRET"), redacted=True)
    post("legacy", news, None)
    post("unsent", news, message("NOT-YET-SENT"), relayed=False)
    post(
        "video",
        news,
        {
            "msgtype": "m.video",
            "body": "clip.mp4",
            "url": "mxc://example.org/vid1",
            "info": {"thumbnail_url": "mxc://example.org/thumb1", "size": 2_500_000},
        },
    )
    post(
        "file",
        news,
        {"msgtype": "m.file", "body": "report.pdf", "filename": "report.pdf", "url": "mxc://example.org/file1",
         "info": {"size": 12_345}},
    )  # fmt: skip
    post(
        "poll",
        news,
        {
            "m.poll": {
                "question": {"m.text": [{"body": "Tea or coffee?"}]},
                "answers": [
                    {"m.id": "a", "m.text": [{"body": "Tea"}]},
                    {"m.id": "b", "m.text": [{"body": "Coffee"}]},
                ],
            },
            "m.text": [{"body": "Tea or coffee?"}],
        },
        event_type="m.poll.start",
    )
    post(
        "inline",
        news,
        message(
            "reply fallback",
            format="org.matrix.custom.html",
            formatted_body="<mx-reply><blockquote>QUOTED-REPLY</blockquote></mx-reply>"
            '<p>look <img src="mxc://example.org/inline1" alt="inline pic"></p>',
        ),
    )
    post("redacted_image", news, {"msgtype": "m.image", "body": "gone", "url": "mxc://example.org/redacted1"},
         redacted=True)  # fmt: skip
    post("suspended_post", suspended, {"msgtype": "m.image", "body": "s", "url": "mxc://example.org/susp1"})
    post("deleted_post", deleted, message("DELETED-CHANNEL-POST"))
    post("gone_post", gone, message("GONE-CHANNEL-POST"))
    post("persian_post", persian, message(PERSIAN_TEXT))
    post("evil_chan_post", evil, message(XSS_BODY))
    post("mutable1", mutable, message("MUTABLE-ONE"))
    post("mutable2", mutable, message("MUTABLE-TWO-ORIGINAL"))
    post("renamed_post", renamed, message("RENAMED-POST"))
    post("element_poll", polls, ELEMENT_POLL, event_type="org.matrix.msc3381.poll.start")
    post("closing_poll", polls, CLOSING_POLL, event_type="m.poll.start")
    await session.flush()
    ids.update({label: row.id for label, row in labels})
    rooms = {c.id: c.broadcast_room_id for c in await session.scalars(select(Channel))}
    for _, row in labels:
        if row.relayed_event_id is not None:  # what the outbox records when it sends a post
            session.add(PostCopy(event_id=row.relayed_event_id, post_id=row.id, room_id=rooms[row.channel_id]))
    await session.flush()
    return ids


@pytest.fixture(scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    folder = tmp_path_factory.mktemp("web")
    homeserver = FakeHomeserver(
        members={"!news_daily:example.org": 5, "!persian_ch:example.org": 12, "!mutable_ch:example.org": 1},
        media={
            "mxc://example.org/img1": (b"\x89PNG fake image", "image/png"),
            "mxc://example.org/thumb1": (b"fake poster", "image/jpeg"),
            "mxc://example.org/vid1": (b"fake video", "video/mp4"),
            "mxc://example.org/file1": (b"<html><script>alert(1)</script></html>", "text/html"),
            "mxc://example.org/inline1": (b"<svg onload=alert(1)>", "image/svg+xml"),
            "mxc://example.org/avatar1": (b"fake avatar", "image/png"),
            "mxc://example.org/suspavatar": (b"should not be served", "image/png"),
            "mxc://example.org/redacted1": (b"should not be served", "image/png"),
            "mxc://example.org/susp1": (b"should not be served", "image/png"),
            "mxc://example.org/unrelated": (b"should not be served", "image/png"),
        },
    )
    server = TestServer(homeserver.app(), host="127.0.0.1")
    await server.start_server()
    config = parse(
        {
            "homeserver": {"url": str(server.make_url("")).rstrip("/"), "domain": DOMAIN},
            "appservice": {"as_token": AS_TOKEN, "hs_token": "hs-secret-0123456789"},
            "database": {"url": f"sqlite:///{folder / 'kanal.db'}"},
            "web": {"public_url": PUBLIC_URL},
        },
        folder / "config.yaml",
    )
    engine = create_engine(config.database_url)
    await migrate(engine)
    sessions = sessionmaker(engine)
    async with sessions.begin() as session:
        ids = await seed(session)
        rows = await session.execute(select(Post.id, Post.relayed_event_id))
        by_id = {post_id: event_id for post_id, event_id in rows.all()}
    relayed = {label: event_id for label, post_id in ids.items() if (event_id := by_id[post_id]) is not None}
    # news_daily's poll has no relations to hand out (404): it shows as polls did before tallies.
    homeserver.relations[relayed["element_poll"]] = element_votes(relayed["element_poll"])
    homeserver.relations[relayed["closing_poll"]] = []
    client = HomeserverClient(config.homeserver_url, config.as_token, attempts=1)
    ctx = Context(config, client, sessions, OutboxWorker(sessions, client))
    try:
        yield World(ctx, sessions, homeserver, ids, folder, relayed)
    finally:
        await client.close()
        await engine.dispose()
        await server.close()


Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, world: World) -> Client:
    app = web.Application()
    add_page_routes(app, world.ctx)
    return await aiohttp_client(app)


async def get_text(client: Client, path: str, status: int = 200) -> str:
    response = await client.get(path)
    assert response.status == status, (path, response.status)
    return await response.text()


def articles(page: str) -> list[str]:
    return re.findall(r'<article class="post[^"]*" id="post-(\d+)"', page)


def assert_safe(page: str) -> None:
    audit = MarkupAudit()
    audit.feed(page)
    audit.close()
    assert audit.problems == []
    lowered = page.lower()
    assert "<script" not in lowered and "<style" not in lowered and "<svg" not in lowered


# -- channel pages ----------------------------------------------------------------------------------


async def test_a_channel_page_shows_the_channel_and_its_latest_posts(client: Client, world: World) -> None:
    page = await get_text(client, "/c/news_daily")
    assert "<h1" in page and "Daily News" in page
    assert 'class="verified"' in page
    assert "5 subscribers" in page
    assert "All the news &lt;b&gt;fit&lt;/b&gt; to print" in page
    assert "#news_daily:example.org" in page
    assert 'href="https://matrix.to/#/%23news_daily%3Aexample.org"' in page
    assert '<html lang="en" dir="auto">' in page
    shown = articles(page)
    assert len(shown) == 20
    assert shown == sorted(shown, key=int, reverse=True)
    ids = world.ids
    assert str(ids["plain"]) in shown and "Hello world<br>\nsecond line" in page
    assert PERSIAN_TEXT in page
    for hidden in ("redacted", "legacy", "unsent", "redacted_image"):
        assert str(ids[hidden]) not in shown
    assert "REDACTED-SECRET" not in page and "NOT-YET-SENT" not in page
    # Every post is its own bidi island, with its time, permalink and matrix.to link.
    for post_id in shown:
        assert f'id="post-{post_id}" dir="auto"' in page
        assert f'href="/c/news_daily/{post_id}"' in page
    relayed = quote_event(f"$relayed{ids['plain']}:{DOMAIN}")
    assert f"https://matrix.to/#/%21news_daily%3Aexample.org/{relayed}?via=example.org" in page
    assert '<time datetime="2024-03-01T12:26:00Z">1 Mar 2024, 12:26 UTC</time>' in page


def quote_event(event_id: str) -> str:
    return event_id.replace("$", "%24").replace(":", "%3A")


async def test_media_posts_show_through_kanal(client: Client, world: World) -> None:
    page = await get_text(client, "/c/news_daily")
    assert '<img src="/media/example.org/img1" alt="a cat on a mat" width="640" height="480"' in page
    assert 'href="/media/example.org/vid1"' in page and '<img src="/media/example.org/thumb1"' in page
    assert "2.4 MB" in page
    assert 'href="/media/example.org/file1" download' in page and "report.pdf" in page
    assert '<img src="/media/example.org/inline1" alt="inline pic">' in page
    assert "QUOTED-REPLY" not in page  # the reply fallback is dropped
    assert "Tea or coffee?" in page and '<li dir="auto">Tea</li>' in page and "Results in Matrix" in page
    # Its relations cannot be read (404 here): the answers show without counts, as before.
    assert 'class="tally"' not in page and "voters" not in page


async def test_an_edited_post_shows_its_new_text_marked_edited(client: Client, world: World) -> None:
    page = await get_text(client, f"/c/news_daily/{world.ids['edited']}")
    assert "EDITED-NEW-TEXT" in page
    assert '<span class="edited" title="2024-03-01T17:00:00Z">edited</span>' in page
    plain = await get_text(client, f"/c/news_daily/{world.ids['plain']}")
    assert 'class="edited"' not in plain


async def test_older_posts_are_paged_with_before(client: Client, world: World) -> None:
    first = await get_text(client, "/c/news_daily")
    match = re.search(r'href="/c/news_daily\?before=(\d+)">Older posts', first)
    assert match is not None
    before = int(match.group(1))
    assert before == int(articles(first)[-1])
    second = await get_text(client, f"/c/news_daily?before={before}")
    older = articles(second)
    assert older and all(int(post_id) < before for post_id in older)
    assert set(older).isdisjoint(articles(first))
    assert "filler number 01" in second and "filler number 01" not in first
    assert 'href="/c/news_daily">Latest posts' in second
    assert "Older posts" not in second  # the oldest page
    await get_text(client, "/c/news_daily?before=abc", status=400)


async def test_persian_channels_read_right_to_left_with_persian_digits(client: Client) -> None:
    page = await get_text(client, "/c/persian_ch")
    assert '<html lang="fa" dir="auto">' in page
    assert "۱۲ مشترک" in page  # 12 subscribers, in Persian digits
    assert '<img class="avatar" src="/media/example.org/avatar1"' in page


@pytest.mark.parametrize("handle", ["suspended_ch", "deleted_ch", "gone_ch", "private_ch", "nobody_here"])
async def test_channels_that_are_not_public_are_never_shown(
    client: Client, world: World, handle: str
) -> None:
    for path in (f"/c/{handle}", f"/c/{handle}/feed.atom", f"/c/{handle}/feed.json"):
        page = await get_text(client, path, status=404)
        assert "Not found" in page
    post_id = world.ids["suspended_post"]
    await get_text(client, f"/c/{handle}/{post_id}", status=404)
    await get_text(client, f"/c/{handle}/{post_id}/embed", status=404)
    directory = await get_text(client, "/")
    assert f"@{handle}" not in directory


async def test_a_post_is_found_only_under_its_own_channel(client: Client, world: World) -> None:
    await get_text(client, f"/c/news_daily/{world.ids['persian_post']}", status=404)
    await get_text(client, f"/c/news_daily/{world.ids['redacted']}", status=404)
    await get_text(client, f"/c/news_daily/{world.ids['unsent']}", status=404)
    await get_text(client, f"/c/news_daily/{world.ids['legacy']}", status=404)
    await get_text(client, "/c/news_daily/999999999", status=404)


async def test_a_renamed_channel_redirects_from_its_old_handle(client: Client, world: World) -> None:
    response = await client.get(f"/c/old_name/{world.ids['renamed_post']}", allow_redirects=False)
    assert response.status == 301
    assert response.headers["Location"] == f"/c/renamed_ch/{world.ids['renamed_post']}"


# -- permalinks and embeds --------------------------------------------------------------------------


async def test_permalink_and_embed_show_one_post(client: Client, world: World) -> None:
    post_id = world.ids["plain"]
    response = await client.get(f"/c/news_daily/{post_id}")
    assert response.status == 200
    page = await response.text()
    assert articles(page) == [str(post_id)]
    assert response.headers["Content-Security-Policy"] == PAGE_CSP
    assert response.headers["X-Frame-Options"] == "DENY"

    response = await client.get(f"/c/news_daily/{post_id}/embed")
    assert response.status == 200
    embed = await response.text()
    assert articles(embed) == [str(post_id)]
    assert response.headers["Content-Security-Policy"] == EMBED_CSP
    assert "frame-ancestors *" in response.headers["Content-Security-Policy"]
    assert "X-Frame-Options" not in response.headers
    assert 'target="_blank"' in embed
    assert f'href="{PUBLIC_URL}/c/news_daily"' in embed
    # An embed never frames anything itself and never loads anything from elsewhere.
    assert "<iframe" not in embed and "<script" not in embed


# -- security ---------------------------------------------------------------------------------------


async def test_hostile_html_never_reaches_a_page(client: Client, world: World) -> None:
    pages = [
        await get_text(client, "/c/news_daily"),
        await get_text(client, f"/c/news_daily/{world.ids['evil']}"),
        await get_text(client, f"/c/news_daily/{world.ids['evil']}/embed"),
        await get_text(client, f"/c/news_daily/{world.ids['evil_plain']}"),
        await get_text(client, "/c/evil_chan"),
        await get_text(client, f"/c/evil_chan/{world.ids['evil_chan_post']}/embed"),
        await get_text(client, "/"),
        await get_text(client, "/?q=" + XSS_TITLE),
    ]
    for page in pages:
        assert_safe(page)
    evil = pages[1]
    assert "<p>fine <b>bold</b></p>" in evil
    assert '<a href="https://ok.example/path" rel="noopener nofollow ugc">good-link</a>' in evil
    assert "<details><summary>more</summary>inside</details>" in evil
    assert "&lt;script&gt;alert('entity')&lt;/script&gt;" in evil
    assert "js-link" in evil and "js-entity" in evil  # the text stays, the link goes
    assert "&lt;script&gt;alert(&#39;body&#39;)&lt;/script&gt; &amp; &#34;quotes&#34;" in pages[3]
    assert "&#34;&gt;&lt;script&gt;alert(&#34;title&#34;)" in pages[4]
    feed = (await (await client.get("/c/evil_chan/feed.atom")).read()).decode()
    assert "<script" not in feed


@pytest.mark.parametrize(
    "path",
    ["/", "/?q=news", "/c/news_daily", "/c/news_daily/feed.atom", "/c/news_daily/feed.json", "/c/nope",
     "/static/kanal.css", "/media/example.org/unrelated", "/c/polls_ch"],
)  # fmt: skip
async def test_every_response_carries_the_security_headers(client: Client, path: str) -> None:
    response = await client.get(path)
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    if response.content_type == "text/html":
        assert response.headers["Content-Security-Policy"] == PAGE_CSP
        page = await response.text()
        # Nothing inline, nothing from elsewhere: one same-origin stylesheet, same-origin images.
        assert "<script" not in page and "<style" not in page and " style=" not in page
        assert re.findall(r'<link rel="stylesheet" href="([^"]+)"', page)[0].startswith("/static/kanal.css")
        assert all(src.startswith("/media/") for src in re.findall(r'<img[^>]* src="([^"]+)"', page))


# -- caching ----------------------------------------------------------------------------------------


async def test_etag_and_last_modified_answer_304(client: Client) -> None:
    first = await client.get("/c/news_daily")
    etag, last_modified = first.headers["ETag"], first.headers["Last-Modified"]
    assert first.headers["Cache-Control"] == "public, no-cache"
    again = await client.get("/c/news_daily", headers={"If-None-Match": etag})
    assert again.status == 304 and again.headers["ETag"] == etag
    assert await again.read() == b""
    since = await client.get("/c/news_daily", headers={"If-Modified-Since": last_modified})
    assert since.status == 304
    other = await client.get("/c/news_daily", headers={"If-None-Match": '"something-else"'})
    assert other.status == 200
    # Another page has another ETag.
    assert (await client.get("/c/news_daily/feed.atom")).headers["ETag"] != etag


def pages_app(world: World) -> web.Application:
    """The pages of another process: the same database, empty caches."""
    app = web.Application()
    add_page_routes(app, world.ctx)
    return app


async def news_changed(world: World) -> datetime:
    """When news_daily or one of its posts last changed, as the database has it."""
    async with world.sessions() as session:
        channel = await session.scalar(select(Channel).where(Channel.handle == "news_daily"))
        assert channel is not None and channel.changed_at is not None
        posts = await session.scalars(select(Post.changed_at).where(Post.channel_id == channel.id))
        return max([channel.changed_at, *(p for p in posts if p is not None)]).replace(tzinfo=UTC)


@pytest.mark.parametrize("path", ["/c/news_daily", "/c/news_daily/feed.atom", "/c/news_daily/feed.json"])
async def test_last_modified_is_when_the_content_changed_not_when_it_was_rendered(
    client: Client, world: World, path: str
) -> None:
    changed = await news_changed(world)
    assert changed < datetime.now(UTC) - timedelta(days=1)  # seeded in 2024
    response = await client.get(path)
    assert response.headers["Last-Modified"] == format_datetime(changed, usegmt=True)
    # A new process (empty caches) dates the same content the same way.
    async with TestClient(TestServer(pages_app(world))) as fresh:
        again = await fresh.get(path, headers={"If-Modified-Since": response.headers["Last-Modified"]})
        assert again.status == 304


async def test_an_edit_moves_last_modified_and_if_modified_since_sees_it(client: Client, world: World) -> None:
    post_id = world.ids["mutable2"]
    first = await client.get("/c/mutable_ch/feed.json")
    before = first.headers["Last-Modified"]
    async with world.sessions.begin() as session:
        await session.execute(
            update(Post).where(Post.id == post_id).values(content=message("MUTABLE-TWO-LAST-MODIFIED"))
        )
    try:
        changed = await client.get("/c/mutable_ch/feed.json", headers={"If-Modified-Since": before})
        assert changed.status == 200 and "MUTABLE-TWO-LAST-MODIFIED" in await changed.text()
        after = changed.headers["Last-Modified"]
        assert parsedate_to_datetime(after) > parsedate_to_datetime(before)
        assert parsedate_to_datetime(after) <= datetime.now(UTC)
        unchanged = await client.get("/c/mutable_ch/feed.json", headers={"If-Modified-Since": after})
        assert unchanged.status == 304
    finally:
        async with world.sessions.begin() as session:
            original = message("MUTABLE-TWO-ORIGINAL")
            await session.execute(update(Post).where(Post.id == post_id).values(content=original))


async def test_a_redaction_shows_on_the_next_request(client: Client, world: World) -> None:
    post_id = world.ids["mutable1"]
    page = await get_text(client, "/c/mutable_ch")
    assert "MUTABLE-ONE" in page
    etag = (await client.get("/c/mutable_ch")).headers["ETag"]
    assert len(client.app[PAGES].cache) > 0
    async with world.sessions.begin() as session:
        await session.execute(update(Post).where(Post.id == post_id).values(redacted=True))
    response = await client.get("/c/mutable_ch", headers={"If-None-Match": etag})
    assert response.status == 200 and response.headers["ETag"] != etag
    assert "MUTABLE-ONE" not in await response.text()
    await get_text(client, f"/c/mutable_ch/{post_id}", status=404)
    feed = await get_text(client, "/c/mutable_ch/feed.json")
    assert "MUTABLE-ONE" not in feed


async def test_an_edit_shows_on_the_next_request(client: Client, world: World) -> None:
    post_id = world.ids["mutable2"]
    assert "MUTABLE-TWO-ORIGINAL" in await get_text(client, f"/c/mutable_ch/{post_id}")
    assert "MUTABLE-TWO-ORIGINAL" in await get_text(client, "/c/mutable_ch/feed.atom")
    async with world.sessions.begin() as session:
        await session.execute(
            update(Post)
            .where(Post.id == post_id)
            .values(content=message("MUTABLE-TWO-EDITED"), edited_at=datetime.now(UTC))
        )
    page = await get_text(client, f"/c/mutable_ch/{post_id}")
    assert "MUTABLE-TWO-EDITED" in page and "MUTABLE-TWO-ORIGINAL" not in page
    assert 'class="edited"' in page
    feed = await get_text(client, "/c/mutable_ch/feed.atom")
    assert "MUTABLE-TWO-EDITED" in feed and "MUTABLE-TWO-ORIGINAL" not in feed


async def test_a_suspension_takes_the_channel_down_at_once(client: Client, world: World) -> None:
    assert "Mutable Channel" in await get_text(client, "/")
    await get_text(client, "/c/mutable_ch")
    async with world.sessions.begin() as session:
        await session.execute(
            update(Channel).where(Channel.handle == "mutable_ch").values(status="suspended")
        )
    try:
        await get_text(client, "/c/mutable_ch", status=404)
        await get_text(client, "/c/mutable_ch/feed.atom", status=404)
        assert "Mutable Channel" not in await get_text(client, "/")
    finally:
        async with world.sessions.begin() as session:
            await session.execute(
                update(Channel).where(Channel.handle == "mutable_ch").values(status="active")
            )


async def test_subscriber_counts_are_cached(client: Client, world: World) -> None:
    before = world.homeserver.member_requests.count("!news_daily:example.org")
    for _ in range(3):
        await get_text(client, "/c/news_daily")
        await get_text(client, f"/c/news_daily/{world.ids['plain']}")
    assert world.homeserver.member_requests.count("!news_daily:example.org") == before + 1


# -- polls ------------------------------------------------------------------------------------------


def poll_article(page: str, post_id: int) -> str:
    start = page.index(f'id="post-{post_id}"')
    return page[start : page.index("</article>", start)]


async def test_a_poll_shows_its_votes(client: Client, world: World) -> None:
    poll = world.relayed["element_poll"]
    homeserver = world.homeserver
    before = len(homeserver.relation_requests)
    page = await get_text(client, "/c/polls_ch")
    article = poll_article(page, world.ids["element_poll"])
    # 130 readers, minus one spoiled vote; reader0 moved from Saturday to Sunday.
    assert '<span class="answer">Saturday</span> <span class="votes">86</span>' in article
    assert '<span class="answer">Sunday</span> <span class="votes">43</span>' in article
    assert '<span class="fill w-65"></span>' in article and '<span class="fill w-35"></span>' in article
    assert '<span class="voters">129 voters</span>' in article
    assert "ended" not in article and "Results in Matrix" not in article
    # Read as the bot, one page of relations after another.
    requests = [r for r in homeserver.relation_requests[before:] if r["event_id"] == poll]
    assert [r.get("from") for r in requests] == [None, "100"]
    assert all(r["room"] == f"!polls_ch:{DOMAIN}" and r["rel_type"] == "m.reference" for r in requests)
    assert all(r["user_id"] == BOT and r["limit"] == "100" for r in requests)
    # The tally is cached: the page again, the permalink and the embed ask the homeserver nothing.
    asked = len(homeserver.relation_requests)
    assert await get_text(client, "/c/polls_ch") == page
    post = await get_text(client, f"/c/polls_ch/{world.ids['element_poll']}")
    embed = await get_text(client, f"/c/polls_ch/{world.ids['element_poll']}/embed")
    for shown in (post, embed):
        assert '<span class="votes">86</span>' in shown and "129 voters" in shown
    feed = await get_text(client, "/c/polls_ch/feed.atom")
    assert "Saturday" in feed and "129" not in feed  # feeds list the answers without counts
    assert len(homeserver.relation_requests) == asked


async def test_a_vote_or_the_end_of_a_poll_changes_the_page(client: Client, world: World) -> None:
    pages = client.app[PAGES]
    pages.polls.ttl = 0.0  # every tally is stale at once: served, and refreshed behind the page
    poll = world.relayed["closing_poll"]
    path = f"/c/polls_ch/{world.ids['closing_poll']}"
    relations = world.homeserver.relations
    vote = "m.poll.response"
    relations[poll] = [
        poll_event(vote, poll, f"@ann:{DOMAIN}", 100, **{"m.selections": ["apple", "pear", "plum"]}),
    ]
    try:
        first = await client.get(path)
        etag = first.headers["ETag"]
        article = poll_article(await first.text(), world.ids["closing_poll"])
        assert '<span class="answer">Plum</span> <span class="votes">0</span>' in article  # two at most
        assert '<span class="answer">Pear</span> <span class="votes">1</span>' in article
        assert "1 voter" in article
        assert (await client.get(path, headers={"If-None-Match": etag})).status == 304

        relations[poll] = [
            poll_event(vote, poll, f"@cat:{DOMAIN}", 400, **{"m.selections": ["apple"]}),  # too late
            poll_event("m.poll.end", poll, POLLS_GHOST, 300, **{"m.text": [{"body": "The poll has ended."}]}),
            poll_event("m.poll.end", poll, f"@bob:{DOMAIN}", 150),  # not the poll's sender
            poll_event(vote, poll, f"@bob:{DOMAIN}", 200, **{"m.selections": ["plum"]}),
            *relations[poll],
        ]
        # The stale tally answers at once while the new one is fetched; then the page changes.
        for _ in range(200):
            response = await client.get(path, headers={"If-None-Match": etag})
            if response.status == 200:
                break
            assert response.status == 304
            await asyncio.sleep(0.01)
        assert response.status == 200 and response.headers["ETag"] != etag
        article = poll_article(await response.text(), world.ids["closing_poll"])
        assert '<span class="answer">Apple</span> <span class="votes">1</span>' in article
        assert '<span class="answer">Plum</span> <span class="votes">1</span>' in article
        assert '<span class="voters">2 voters</span> · <span class="ended">ended</span>' in article
        assert (await client.get(path, headers={"If-None-Match": response.headers["ETag"]})).status == 304
    finally:
        relations[poll] = []


async def test_a_poll_that_cannot_be_counted_keeps_its_answers(client: Client, world: World) -> None:
    pages = client.app[PAGES]
    poll = world.relayed["closing_poll"]
    relations = world.homeserver.relations
    saved = relations.pop(poll)
    try:
        page = await get_text(client, "/c/polls_ch")
        article = poll_article(page, world.ids["closing_poll"])
        assert '<li dir="auto">Apple</li>' in article and "Results in Matrix" in article
        keys = [key for key, _ in pages.polls.items() if (f"!polls_ch:{DOMAIN}", poll) in key.copies]
        assert keys == [PollKey(((RoomID(f"!polls_ch:{DOMAIN}"), poll),), POLLS_GHOST, ("apple", "pear", "plum"), 2)]
        assert pages.polls.peek(keys[0]) is None
    finally:
        relations[poll] = saved


# -- media ------------------------------------------------------------------------------------------


async def test_media_of_a_visible_post_is_served_and_cached(client: Client, world: World) -> None:
    homeserver = world.homeserver
    response = await client.get("/media/example.org/img1")
    assert response.status == 200
    assert await response.read() == b"\x89PNG fake image"
    assert response.headers["Content-Type"] == "image/png"
    assert response.headers["Content-Disposition"] == "inline"
    assert response.headers["Cache-Control"] == "public, max-age=300, must-revalidate"
    assert homeserver.authorizations[-1] == f"Bearer {AS_TOKEN}"
    fetched = homeserver.media_requests.count("mxc://example.org/img1")
    # A fresh application (empty memory) still finds it on disk: the homeserver is not asked again.
    app = web.Application()
    add_page_routes(app, world.ctx)
    async with TestClient(TestServer(app)) as second:
        again = await second.get("/media/example.org/img1")
        assert again.status == 200 and await again.read() == b"\x89PNG fake image"
    assert homeserver.media_requests.count("mxc://example.org/img1") == fetched
    cache = world.config_dir / "media-cache"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    for entry in os.scandir(cache):
        assert stat.S_IMODE(entry.stat().st_mode) == 0o600


async def test_media_revalidates_cheaply_and_a_takedown_closes_it(client: Client, world: World) -> None:
    first = await client.get("/media/example.org/img1")
    assert first.status == 200
    # A reader's cache may keep it five minutes, then must ask again; the answer is a 304.
    assert first.headers["Cache-Control"] == "public, max-age=300, must-revalidate"
    etag, last_modified = first.headers["ETag"], first.headers["Last-Modified"]
    second = await client.get("/media/example.org/img1")
    assert second.headers["ETag"] == etag and second.headers["Last-Modified"] == last_modified
    again = await client.get("/media/example.org/img1", headers={"If-None-Match": etag})
    assert again.status == 304 and await again.read() == b""
    assert again.headers["Cache-Control"] == "public, max-age=300, must-revalidate"
    since = await client.get("/media/example.org/img1", headers={"If-Modified-Since": last_modified})
    assert since.status == 304
    # Taken down: the next revalidation gets a 404, never the file or a 304.
    async with world.sessions.begin() as session:
        await session.execute(update(Post).where(Post.id == world.ids["image"]).values(redacted=True))
    try:
        gone = await client.get("/media/example.org/img1", headers={"If-None-Match": etag})
        assert gone.status == 404 and b"PNG" not in await gone.read()
        assert gone.headers["Cache-Control"] == "public, no-cache"
    finally:
        async with world.sessions.begin() as session:
            await session.execute(update(Post).where(Post.id == world.ids["image"]).values(redacted=False))


async def test_a_new_channel_photo_shows_at_once_and_the_old_one_is_closed(client: Client, world: World) -> None:
    assert '<span class="avatar' in await get_text(client, "/c/mutable_ch")  # the letter
    etag = (await client.get("/c/mutable_ch")).headers["ETag"]
    world.homeserver.media["mxc://example.org/mutable_photo"] = (b"mutable photo", "image/png")
    world.homeserver.media["mxc://example.org/mutable_photo2"] = (b"second photo", "image/png")

    async def photo(url: str | None) -> None:
        async with world.sessions.begin() as session:
            await session.execute(update(Channel).where(Channel.handle == "mutable_ch").values(avatar_url=url))

    try:
        await photo("mxc://example.org/mutable_photo")
        response = await client.get("/c/mutable_ch", headers={"If-None-Match": etag})
        assert response.status == 200
        assert '<img class="avatar" src="/media/example.org/mutable_photo"' in await response.text()
        feed = json.loads(await get_text(client, "/c/mutable_ch/feed.json"))
        assert feed["icon"] == f"{PUBLIC_URL}/media/example.org/mutable_photo"
        assert (await client.get("/media/example.org/mutable_photo")).status == 200
        await photo("mxc://example.org/mutable_photo2")
        assert "/media/example.org/mutable_photo2" in await get_text(client, "/c/mutable_ch")
        assert (await client.get("/media/example.org/mutable_photo")).status == 404
    finally:
        await photo(None)


@pytest.mark.parametrize(
    ("media_id", "disposition"),
    [("thumb1", "inline"), ("vid1", "inline"), ("file1", "attachment"), ("inline1", "attachment")],
)
async def test_dangerous_media_types_are_downloads(client: Client, media_id: str, disposition: str) -> None:
    response = await client.get(f"/media/example.org/{media_id}")
    assert response.status == 200
    assert response.headers["Content-Disposition"] == disposition
    assert "sandbox" in response.headers["Content-Security-Policy"]


async def test_the_photo_of_a_public_channel_is_served(client: Client) -> None:
    # Straight from the database: no page has to be seen first.
    response = await client.get("/media/example.org/avatar1")
    assert response.status == 200 and await response.read() == b"fake avatar"


@pytest.mark.parametrize(
    "path",
    [
        "/media/example.org/unrelated",  # exists on the homeserver, shown by no post
        "/media/example.org/redacted1",  # a redacted post's
        "/media/example.org/susp1",  # a suspended channel's
        "/media/evil.example/img1",  # another server, same id
        "/media/example.org/img1%2F..",
        "/media/example.org/suspavatar",  # a suspended channel's photo
    ],
)
async def test_media_nobody_public_shows_is_refused(client: Client, world: World, path: str) -> None:
    before = list(world.homeserver.media_requests)
    response = await client.get(path)
    assert response.status == 404
    assert world.homeserver.media_requests == before


# -- directory --------------------------------------------------------------------------------------


async def test_the_directory_lists_public_channels_by_subscribers(client: Client) -> None:
    page = await get_text(client, "/")
    handles = re.findall(r'<p class="handle"><span dir="ltr">@(\w+)</span></p>', page)
    assert handles[:3] == ["persian_ch", "news_daily", "mutable_ch"]
    assert set(handles) == {"persian_ch", "news_daily", "mutable_ch", "evil_chan", "renamed_ch", "polls_ch"}
    assert "۱۲ مشترک" in page and "5 subscribers" in page  # each card counts in its channel's script


@pytest.mark.parametrize(
    ("query", "found"),
    [
        (PERSIAN_QUERY, "persian_ch"),
        ("خبري", "persian_ch"),
        ("۱۴۰۲", "persian_ch"),
        ("DAILY news", "news_daily"),
        ("@news_d", "news_daily"),
    ],
)
async def test_directory_search_folds_letter_variants(client: Client, query: str, found: str) -> None:
    page = await get_text(client, "/?q=" + query)
    assert re.findall(r'<p class="handle"><span dir="ltr">@(\w+)</span></p>', page) == [found]


async def test_directory_search_without_matches(client: Client) -> None:
    page = await get_text(client, "/?q=no-such-channel-anywhere")
    assert "No channels found." in page


# -- feeds ------------------------------------------------------------------------------------------


async def test_the_atom_feed_is_valid_and_holds_the_posts(client: Client, world: World) -> None:
    response = await client.get("/c/news_daily/feed.atom")
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/atom+xml; charset=utf-8"
    feed = feedparser.parse(await response.read())
    assert not feed.bozo, feed.get("bozo_exception")
    assert feed.version == "atom10"
    assert feed.feed.title == "Daily News"
    assert feed.feed.id.startswith("tag:example.org,2024-03-01:channel:")
    entries = {entry.link: entry for entry in feed.entries}
    ids = world.ids
    assert f"{PUBLIC_URL}/c/news_daily/{ids['plain']}" in entries
    assert f"{PUBLIC_URL}/c/news_daily/{ids['redacted']}" not in entries
    assert len({entry.id for entry in feed.entries}) == len(feed.entries)
    edited = entries[f"{PUBLIC_URL}/c/news_daily/{ids['edited']}"]
    assert "EDITED-NEW-TEXT" in edited.content[0].value
    assert edited.updated == "2024-03-01T17:00:00Z"
    image = entries[f"{PUBLIC_URL}/c/news_daily/{ids['image']}"]
    assert f'src="{PUBLIC_URL}/media/example.org/img1"' in image.content[0].value
    evil = entries[f"{PUBLIC_URL}/c/news_daily/{ids['evil']}"].content[0].value
    assert "<b>bold</b>" in evil
    assert_safe(evil.replace(f'src="{PUBLIC_URL}/', 'src="/'))


async def test_the_json_feed_holds_the_posts(client: Client, world: World) -> None:
    response = await client.get("/c/persian_ch/feed.json")
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/feed+json; charset=utf-8"
    feed = json.loads(await response.read())
    assert feed["version"] == "https://jsonfeed.org/version/1.1"
    assert feed["title"] == PERSIAN_TITLE and feed["language"] == "fa"
    assert feed["home_page_url"] == f"{PUBLIC_URL}/c/persian_ch"
    assert feed["icon"] == f"{PUBLIC_URL}/media/example.org/avatar1"
    [item] = feed["items"]
    assert item["url"] == f"{PUBLIC_URL}/c/persian_ch/{world.ids['persian_post']}"
    assert item["content_text"] == PERSIAN_TEXT
    assert PERSIAN_TEXT in item["content_html"]
    assert item["id"].startswith("tag:example.org,2024-03-01:channel:")


async def test_the_stylesheet_is_served_with_a_validator(client: Client) -> None:
    response = await client.get("/static/kanal.css")
    assert response.status == 200 and response.headers["Content-Type"] == "text/css; charset=utf-8"
    css = await response.text()
    assert '"Vazirmatn", "Noto Naskh Arabic", "Tahoma"' in css
    assert "@import" not in css and "url(" not in css  # no fonts or images from anywhere
    again = await client.get("/static/kanal.css", headers={"If-None-Match": response.headers["ETag"]})
    assert again.status == 304
