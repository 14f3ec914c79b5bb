"""The publishing API against a real loopback server, a migrated SQLite database and a fake media repository.

    test ──HTTP──▶ web.Application with only add_api_routes() ──▶ SQLite (outbox, posts, audit log)
                        └── multipart uploads ──HTTP──▶ MediaRepository (the homeserver's upload endpoint)

Tokens are made the way an owner makes them, with `!token new <name>` (`token_command`); what the API
queues is read back from the outbox, as the outbox worker would find it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient, AiohttpServer
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from appservice.client import HomeserverClient
from appservice.events import Event
from appservice.ids import EventID, RoomID, UserID
from bridge.matrix.relay import REF_PLACEHOLDER, SOURCE_KEY
from bridge.moderation.hooks import Pipeline
from bridge.publishing.posts import is_held_api_post, publish_held
from bridge.runtime.config import parse
from bridge.runtime.context import Context
from bridge.runtime.dispatch import CommandCall
from bridge.runtime.outbox import OutboxWorker
from bridge.store.db import create_engine, migrate, sessionmaker
from bridge.store.hashing import hash_token
from bridge.store.models import (
    ApiIdempotency,
    ApiToken,
    AuditEntry,
    Channel,
    ChannelMember,
    CommentThread,
    Decision,
    HeldPost,
    OutboxEntry,
    Post,
    Room,
)
from bridge.text.commands import parse_command
from bridge.web.api import OPENAPI_FILE, add_api_routes
from bridge.web.api_limits import RateLimit
from bridge.web.tokens import token_command

DOMAIN = "example.org"
ALICE = f"@alice:{DOMAIN}"  # owns both channels
BOB = f"@bob:{DOMAIN}"  # an admin of news
PUBLIC_URL = "https://channels.example.org"
AS_TOKEN = "as-secret-0123456789"
HOOKS = [
    {"type": "terms", "name": "review", "terms": ["needs review"], "action": "hold"},
    {"type": "terms", "name": "banned", "terms": ["forbidden word"], "action": "reject"},
]
UNLIMITED = RateLimit(per_minute=1_000_000, burst=1_000_000)
TOKEN = re.compile(r"kanal_api_[A-Za-z0-9_-]+")
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def broadcast(handle: str) -> str:
    return f"!{handle}-broadcast:{DOMAIN}"


def backstage(handle: str) -> str:
    return f"!{handle}-backstage:{DOMAIN}"


def ghost(handle: str) -> str:
    return f"@kanal_{handle}:{DOMAIN}"


# -- the world the API runs in (shared with test_publishing_api_schema.py) ------------------------------


@dataclass
class MediaRepository:
    """The homeserver's `POST /_matrix/media/v3/upload`, recording what it was sent."""

    url: str = ""  # where it listens, once started
    uploads: list[dict[str, Any]] = field(default_factory=list)

    async def upload(self, request: web.Request) -> web.Response:
        self.uploads.append(
            {
                "user_id": request.query.get("user_id"),
                "filename": request.query.get("filename"),
                "content_type": request.content_type,
                "authorization": request.headers.get("Authorization"),
                "body": await request.read(),
            }
        )
        return web.json_response({"content_uri": f"mxc://{DOMAIN}/media{len(self.uploads)}"})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/_matrix/media/v3/upload", self.upload)
        return app


async def build_context(
    tmp_path: Path, homeserver_url: str, hooks: list[Any] | None = None
) -> tuple[Context, AsyncEngine]:
    """A Context as `kanal run` builds one, on a new migrated SQLite database; nothing is sent."""
    config = parse(
        {
            "homeserver": {"url": homeserver_url, "domain": DOMAIN},
            "appservice": {"as_token": AS_TOKEN, "hs_token": "hs-secret-0123456789"},
            "database": {"url": f"sqlite:///{tmp_path / 'kanal.db'}"},
            "web": {"public_url": PUBLIC_URL},
            "compliance": {"hooks": hooks or []},
        },
        tmp_path / "config.yaml",
    )
    engine = create_engine(config.database_url)
    await migrate(engine)
    sessions = sessionmaker(engine)
    client = HomeserverClient(config.homeserver_url, config.as_token, attempts=1)
    ctx = Context(config, client, sessions, OutboxWorker(sessions, client))
    ctx.pipeline = Pipeline(config)
    return ctx, engine


async def close_context(ctx: Context, engine: AsyncEngine) -> None:
    await ctx.pipeline.close()
    await ctx.client.close()
    await engine.dispose()


async def seed_channel(ctx: Context, handle: str, admins: tuple[str, ...] = ()) -> int:
    """An active channel owned by Alice, with its rooms."""
    async with ctx.sessions.begin() as session:
        channel = Channel(
            handle=handle,
            title=handle.title(),
            owner=ALICE,
            ghost_user_id=ghost(handle),
            broadcast_room_id=broadcast(handle),
            backstage_room_id=backstage(handle),
            status="active",
        )
        session.add(channel)
        await session.flush()
        session.add(ChannelMember(channel_id=channel.id, user_id=ALICE, role="owner"))
        session.add_all(ChannelMember(channel_id=channel.id, user_id=a, role="admin") for a in admins)
        session.add(Room(room_id=backstage(handle), kind="backstage", channel_id=channel.id))
        session.add(Room(room_id=broadcast(handle), kind="broadcast", channel_id=channel.id))
        return channel.id


def command_event(sender: str, room_id: str, body: str) -> Event:
    return Event(
        event_id=EventID(f"$cmd-{hashlib.sha256(body.encode()).hexdigest()[:8]}"),
        room_id=RoomID(room_id),
        sender=UserID(sender),
        type="m.room.message",
        content={"msgtype": "m.text", "body": body},
    )


async def backstage_command(ctx: Context, handle: str, sender: str, *args: str, lang: str = "en") -> str:
    """Run `!token <args>` in a channel's backstage as `sender`, answered in `lang`; the bot's answer."""
    async with ctx.sessions.begin() as session:
        channel = await session.scalar(select(Channel).where(Channel.handle == handle))
        assert channel is not None
        room = await session.get(Room, backstage(handle))
        assert room is not None
        event = command_event(sender, room.room_id, "!token " + " ".join(args))
        command = parse_command(event.content["body"], require_bang=True)
        assert command is not None
        await token_command(CommandCall(ctx, session, room, event, command, lang, channel))
    async with ctx.sessions() as session:
        answer = await session.scalar(
            select(OutboxEntry)
            .where(OutboxEntry.queue == f"room:{backstage(handle)}")
            .order_by(OutboxEntry.id.desc())
        )
    assert answer is not None
    # A reply that shows a token is sealed: what is sent is in the outbox's memory, not in the row.
    sealed = answer.payload.get("sealed")
    content = ctx.outbox.sealed.get(sealed) if sealed else answer.payload["content"]
    assert content is not None
    body: str = content["body"]
    return body


async def make_token(ctx: Context, handle: str, name: str) -> str:
    answer = await backstage_command(ctx, handle, ALICE, "new", name)
    found = TOKEN.search(answer)
    assert found is not None, answer
    return found.group(0)


def make_api_app(ctx: Context, rate_limit: RateLimit = UNLIMITED) -> web.Application:
    app = web.Application()
    add_api_routes(app, ctx, rate_limit=rate_limit)
    return app


# -- the harness ----------------------------------------------------------------------------------------


@dataclass
class Harness:
    ctx: Context
    client: TestClient[web.Request, web.Application]
    media: MediaRepository
    token: str  # news's token `rss_bot`
    sport_token: str  # sport's token `scores`

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}

    async def post(self, body: Any, **headers: str) -> aiohttp.ClientResponse:
        return await self.client.post("/api/v1/channels/news/posts", json=body, headers=self.auth() | headers)

    async def sends(self, room_id: str | None = None) -> list[OutboxEntry]:
        room_id = room_id or broadcast("news")
        async with self.ctx.sessions() as session:
            rows = await session.scalars(
                select(OutboxEntry).where(OutboxEntry.queue == f"room:{room_id}").order_by(OutboxEntry.id)
            )
            return list(rows.all())

    async def posts(self) -> list[Post]:
        async with self.ctx.sessions() as session:
            return list((await session.scalars(select(Post).order_by(Post.id))).all())

    async def audit(self, kind: str) -> list[dict[str, Any]]:
        async with self.ctx.sessions() as session:
            bodies = await session.scalars(
                select(AuditEntry.body).where(AuditEntry.kind == kind).order_by(AuditEntry.seq)
            )
            return [json.loads(body) for body in bodies.all()]


@pytest.fixture
async def media(aiohttp_server: AiohttpServer) -> MediaRepository:
    repository = MediaRepository()
    repository.url = str((await aiohttp_server(repository.app())).make_url("")).rstrip("/")
    return repository


@pytest.fixture
async def ctx(tmp_path: Path, media: MediaRepository) -> AsyncIterator[Context]:
    context, engine = await build_context(tmp_path, media.url, HOOKS)
    yield context
    await close_context(context, engine)


@pytest.fixture
async def api(ctx: Context, media: MediaRepository, aiohttp_client: AiohttpClient) -> Harness:
    await seed_channel(ctx, "news", admins=(BOB,))
    await seed_channel(ctx, "sport")
    token = await make_token(ctx, "news", "rss_bot")
    sport_token = await make_token(ctx, "sport", "scores")
    client = await aiohttp_client(make_api_app(ctx))
    return Harness(ctx, client, media, token, sport_token)


# -- tokens ---------------------------------------------------------------------------------------------


async def test_a_new_token_is_shown_once_and_only_its_hash_is_stored(api: Harness) -> None:
    async with api.ctx.sessions() as session:
        row = await session.scalar(select(ApiToken).where(ApiToken.name == "rss_bot"))
    assert row is not None and row.created_by == ALICE and not row.revoked
    assert row.token_hash == hashlib.sha256(api.token.encode()).hexdigest() == hash_token(api.token)
    assert api.token not in (row.name, row.token_hash)
    assert len(api.token) == len("kanal_api_") + 43  # 32 random bytes, URL-safe base64
    assert {"channel": "news", "token": "rss_bot", "action": "create"} in await api.audit("api_token")
    listing = await backstage_command(api.ctx, "news", BOB, "list")
    assert "rss_bot — active" in listing and "kanal_api_" not in listing


async def test_only_the_owner_makes_and_revokes_tokens(api: Harness) -> None:
    refused = await backstage_command(api.ctx, "news", BOB, "new", "bobs_bot")
    assert "Only the owner" in refused and "kanal_api_" not in refused
    assert "Only the owner" in await backstage_command(api.ctx, "news", BOB, "revoke", "rss_bot")
    assert "already a token named rss_bot" in await backstage_command(
        api.ctx, "news", ALICE, "new", "rss_bot"
    )
    assert "token name" in await backstage_command(api.ctx, "news", ALICE, "new", "-bad")
    assert "!token new <name>" in await backstage_command(api.ctx, "news", ALICE, "rotate")

    assert "is revoked" in await backstage_command(api.ctx, "news", ALICE, "revoke", "rss_bot")
    response = await api.post({"text": "after revocation"})
    assert response.status == 401
    assert (await response.json())["error"]["code"] == "invalid_token"
    assert "rss_bot — revoked" in await backstage_command(api.ctx, "news", ALICE, "list")
    assert {"channel": "news", "token": "rss_bot", "action": "revoke"} in await api.audit("api_token")


async def test_token_replies_are_in_the_language_of_whoever_asks(api: Harness) -> None:
    created = await backstage_command(api.ctx, "news", ALICE, "new", "fa_bot", lang="fa")
    token = TOKEN.search(created)
    assert token is not None and "فقط همین یک بار نشان داده می‌شود" in created
    assert "/api/v1/channels/news/posts" in created and "!token revoke fa_bot" in created
    async with api.ctx.sessions() as session:
        stored = await session.scalar(select(OutboxEntry).order_by(OutboxEntry.id.desc()))
    assert stored is not None and "sealed" in stored.payload
    # The row keeps only the stand-in, in the same language, for a process that stops before sending.
    assert stored.payload["content"]["body"].startswith("توکن API fa_bot برای #news ساخته شد")
    assert token.group(0) not in str(stored.payload)
    listing = await backstage_command(api.ctx, "news", BOB, "list", lang="fa")
    assert listing.startswith("توکن‌های API #news:") and "• fa_bot — فعال، ساخته‌شده در" in listing
    assert "kanal_api_" not in listing
    refused = await backstage_command(api.ctx, "news", BOB, "revoke", "fa_bot", lang="fa")
    assert refused == f"فقط مالک #news ({ALICE}) می‌تواند توکن‌ها را باطل کند."
    usage = await backstage_command(api.ctx, "news", ALICE, "rotate", lang="fa")
    assert usage.startswith("توکن‌های API انتشار (فقط مالک):") and "!token new <نام>" in usage
    revoked = await backstage_command(api.ctx, "news", ALICE, "revoke", "fa_bot", lang="fa")
    assert revoked == "توکن fa_bot باطل شد: از این پس درخواست‌هایی که با آن فرستاده شوند پذیرفته نمی‌شوند."
    assert "• fa_bot — revoked" in await backstage_command(api.ctx, "news", ALICE, "list")


# -- publishing -----------------------------------------------------------------------------------------


async def test_a_post_is_queued_as_the_ghost_and_recorded_with_the_tokens_name(api: Harness) -> None:
    response = await api.post({"text": "Hello", "html": "<b>Hello</b><script>alert(1)</script><img src=x>"})
    assert response.status == 201
    receipt = await response.json()
    [post] = await api.posts()
    assert receipt == {
        "id": post.id,
        "status": "queued",
        "event_id": None,
        "url": f"{PUBLIC_URL}/c/news/{post.id}",
        "held_id": None,
    }
    [entry] = await api.sends()
    assert (entry.kind, entry.as_user, entry.ref_source) == ("send", ghost("news"), None)
    assert entry.payload == {
        "room_id": broadcast("news"),
        "event_type": "m.room.message",
        "content": {
            "msgtype": "m.text",
            "body": "Hello",
            "format": "org.matrix.custom.html",
            "formatted_body": "<b>Hello</b>",
            SOURCE_KEY: post.source_event_id,
        },
        "post_source": post.source_event_id,
    }
    assert post.source_event_id.startswith("api:")
    assert (post.via, post.author, post.outbox_id) == ("api:rss_bot", "api:rss_bot", entry.id)
    assert post.content == {
        "msgtype": "m.text",
        "body": "Hello",
        "format": "org.matrix.custom.html",
        "formatted_body": "<b>Hello</b>",
    }
    assert await api.audit("api_post") == [
        {"channel": "news", "token": "rss_bot", "post": post.id, "action": "create", "outcome": "queued"}
    ]


async def test_silent_posts_are_notices_and_replies_point_at_the_relayed_copy(api: Harness) -> None:
    first = await (await api.post({"text": "first", "silent": True})).json()
    response = await api.post({"text": "second", "reply_to": first["id"]})
    assert response.status == 201
    original, reply = await api.sends()
    assert original.payload["content"]["msgtype"] == "m.notice"
    first_post, _ = await api.posts()
    assert reply.ref_source == first_post.source_event_id
    assert reply.payload["content"]["m.relates_to"] == {"m.in_reply_to": {"event_id": REF_PLACEHOLDER}}

    missing = await api.post({"text": "third", "reply_to": 9999})
    assert missing.status == 400
    assert (await missing.json())["error"]["code"] == "unknown_reply_target"


async def test_an_idempotency_key_replays_the_first_answer_and_publishes_once(api: Harness) -> None:
    first = await api.post({"text": "once"}, **{"Idempotency-Key": "post-1"})
    again = await api.post({"text": "once"}, **{"Idempotency-Key": "post-1"})
    assert (first.status, again.status) == (201, 201)
    assert await first.json() == await again.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(await api.posts()) == 1 and len(await api.sends()) == 1

    conflict = await api.post({"text": "twice"}, **{"Idempotency-Key": "post-1"})
    assert conflict.status == 409
    assert (await conflict.json())["error"]["code"] == "idempotency_key_reused"
    # Keys belong to a token: another channel's token may use the same one.
    other = await api.client.post(
        "/api/v1/channels/sport/posts",
        json={"text": "once"},
        headers=api.auth(api.sport_token) | {"Idempotency-Key": "post-1"},
    )
    assert other.status == 201
    assert len(await api.posts()) == 2

    bad = await api.post({"text": "x"}, **{"Idempotency-Key": "x" * 256})
    assert bad.status == 400


async def test_an_expired_idempotency_key_starts_afresh(api: Harness) -> None:
    await api.post({"text": "old"}, **{"Idempotency-Key": "k"})
    async with api.ctx.sessions.begin() as session:
        await session.execute(update(ApiIdempotency).values(created_at=datetime.now(UTC) - timedelta(days=2)))
    again = await api.post({"text": "new"}, **{"Idempotency-Key": "k"})
    assert again.status == 201
    async with api.ctx.sessions() as session:
        rows = (await session.scalars(select(ApiIdempotency))).all()
    assert len(rows) == 1 and len(await api.posts()) == 2


async def test_an_edit_is_an_m_replace_of_the_relayed_copy(api: Harness) -> None:
    created = await (await api.post({"text": "tpyo"})).json()
    response = await api.client.patch(
        f"/api/v1/channels/news/posts/{created['id']}",
        json={"text": "typo", "html": "<i>typo</i>"},
        headers=api.auth(),
    )
    assert response.status == 200
    assert (await response.json())["status"] == "queued"
    [post] = await api.posts()
    _, edit = await api.sends()
    assert edit.ref_source == post.source_event_id
    assert edit.payload["content"] == {
        "msgtype": "m.text",
        "body": "* typo",
        "m.new_content": {
            "msgtype": "m.text",
            "body": "typo",
            "format": "org.matrix.custom.html",
            "formatted_body": "<i>typo</i>",
        },
        "m.relates_to": {"rel_type": "m.replace", "event_id": REF_PLACEHOLDER},
    }
    assert "post_source" not in edit.payload
    assert post.content is not None and post.content["body"] == "typo" and post.edited_at is not None
    assert {
        "channel": "news",
        "token": "rss_bot",
        "post": post.id,
        "action": "edit",
        "outcome": "queued",
    } in (await api.audit("api_post"))


async def test_an_edit_keeps_the_view_count_and_the_comments_link_the_post_shows(api: Harness) -> None:
    first = await (await api.post({"text": "counted"})).json()
    second = await (await api.post({"text": "discussed"})).json()
    async with api.ctx.sessions.begin() as session:
        channel = await session.scalar(select(Channel).where(Channel.handle == "news"))
        assert channel is not None
        channel.views_in_posts = True
        for post in await session.scalars(select(Post)):
            post.views_shown = 10
        session.add(CommentThread(post_id=second["id"], channel_id=channel.id, root_event_id="$root"))

    for created, text in ((first, "counted again"), (second, "discussed again")):
        response = await api.client.patch(
            f"/api/v1/channels/news/posts/{created['id']}", json={"text": text}, headers=api.auth()
        )
        assert response.status == 200
    async with api.ctx.sessions() as session:
        entries = list(await session.scalars(select(OutboxEntry).order_by(OutboxEntry.id)))
    plain_edit = next(e for e in entries if e.kind == "send" and e.ref_source is not None)
    assert plain_edit.payload["content"]["m.new_content"]["body"] == "counted again\n\n👁 10"
    # A post with a comments thread is edited by a `post_edit` entry (the channel-write seam's), which
    # puts the link and the count back when it is sent, and its root in the discussion room is edited too.
    link = next(e for e in entries if e.kind == "post_edit")
    assert link.payload == {"post_id": second["id"], "room_id": "!news-broadcast:example.org"}
    assert any(e.kind == "comments_thread" and e.payload["action"] == "edit" for e in entries)


async def test_a_deleted_post_is_redacted_and_gone_from_the_listing(api: Harness) -> None:
    kept = await (await api.post({"text": "kept"})).json()
    gone = await (await api.post({"text": "gone"})).json()
    response = await api.client.delete(f"/api/v1/channels/news/posts/{gone['id']}", headers=api.auth())
    assert response.status == 204
    redaction = (await api.sends())[-1]
    post = next(p for p in await api.posts() if p.id == gone["id"])
    assert (redaction.kind, redaction.as_user, redaction.ref_source) == (
        "redact",
        ghost("news"),
        post.source_event_id,
    )
    assert redaction.payload["event_id"] == REF_PLACEHOLDER and post.redacted

    listing = await (await api.client.get("/api/v1/channels/news/posts", headers=api.auth())).json()
    assert [p["id"] for p in listing["posts"]] == [kept["id"]]
    for method in ("GET", "DELETE", "PATCH"):
        again = await api.client.request(
            method, f"/api/v1/channels/news/posts/{gone['id']}", json={"text": "x"}, headers=api.auth()
        )
        assert again.status == 404, method
    assert {
        "channel": "news",
        "token": "rss_bot",
        "post": gone["id"],
        "action": "delete",
        "outcome": "queued",
    } in (await api.audit("api_post"))


async def test_the_listing_pages_newest_first_with_the_published_event(api: Harness) -> None:
    ids = [(await (await api.post({"text": f"post {n}"})).json())["id"] for n in range(5)]
    async with api.ctx.sessions.begin() as session:  # the outbox delivered the first one
        await session.execute(update(Post).where(Post.id == ids[0]).values(relayed_event_id="$published"))
    page = await (await api.client.get("/api/v1/channels/news/posts?limit=3", headers=api.auth())).json()
    assert [p["id"] for p in page["posts"]] == ids[:1:-1][:3] and page["next_before"] == ids[2]
    rest = await (
        await api.client.get(f"/api/v1/channels/news/posts?limit=3&before={ids[2]}", headers=api.auth())
    ).json()
    assert [p["id"] for p in rest["posts"]] == [ids[1], ids[0]] and rest["next_before"] is None
    first = rest["posts"][1]
    assert first["event_id"] == "$published" and first["views"] == 0
    assert (first["text"], first["msgtype"], first["via"], first["html"], first["media"]) == (
        "post 0",
        "m.text",
        "api:rss_bot",
        None,
        None,
    )
    assert first["url"] == f"{PUBLIC_URL}/c/news/{ids[0]}" and first["created_at"].endswith("Z")
    one = await api.client.get(f"/api/v1/channels/news/posts/{ids[0]}", headers=api.auth())
    assert await one.json() == first
    for query in ("limit=0", "limit=101", "limit=x", "before=-1"):
        bad = await api.client.get(f"/api/v1/channels/news/posts?{query}", headers=api.auth())
        assert bad.status == 400, query


async def test_a_file_is_uploaded_as_the_ghost_and_published_as_an_image(api: Harness) -> None:
    form = aiohttp.FormData(quote_fields=False)  # names as curl and browsers send them, unescaped
    form.add_field("file", PNG, filename="../../cat\u202egnp.png", content_type="image/png")
    form.add_field("caption", "A cat")
    response = await api.client.post("/api/v1/channels/news/posts", data=form, headers=api.auth())
    assert response.status == 201, await response.text()
    [upload] = api.media.uploads
    assert upload == {
        "user_id": ghost("news"),
        "filename": "catgnp.png",
        "content_type": "image/png",
        "authorization": f"Bearer {AS_TOKEN}",
        "body": PNG,
    }
    [entry] = await api.sends()
    content = entry.payload["content"]
    assert {k: v for k, v in content.items() if k != SOURCE_KEY} == {
        "msgtype": "m.image",
        "body": "A cat",
        "filename": "catgnp.png",
        "url": f"mxc://{DOMAIN}/media1",
        "info": {"mimetype": "image/png", "size": len(PNG)},
    }
    [post] = await api.posts()
    listed = await (await api.client.get(f"/api/v1/channels/news/posts/{post.id}", headers=api.auth())).json()
    assert listed["media"] == {
        "url": f"mxc://{DOMAIN}/media1",
        "mimetype": "image/png",
        "size": len(PNG),
        "filename": "catgnp.png",
    }
    caption = await api.client.patch(
        f"/api/v1/channels/news/posts/{post.id}", json={"text": "A black cat"}, headers=api.auth()
    )
    assert caption.status == 200
    new_content = (await api.sends())[-1].payload["content"]["m.new_content"]
    assert (new_content["msgtype"], new_content["body"], new_content["url"]) == (
        "m.image",
        "A black cat",
        f"mxc://{DOMAIN}/media1",
    )


async def test_files_without_a_type_are_files_and_oversized_ones_are_refused(api: Harness) -> None:
    form = aiohttp.FormData()
    form.add_field("file", b"%PDF-1.7", filename="report.pdf")
    response = await api.client.post("/api/v1/channels/news/posts", data=form, headers=api.auth())
    assert response.status == 201
    assert (await api.sends())[0].payload["content"]["msgtype"] == "m.file"

    big = aiohttp.FormData()
    big.add_field("file", b"\0" * (20 * 1024 * 1024 + 1), filename="big.bin")
    too_large = await api.client.post("/api/v1/channels/news/posts", data=big, headers=api.auth())
    assert too_large.status == 413
    no_file = aiohttp.FormData(default_to_multipart=True)
    no_file.add_field("caption", "nothing attached")
    missing = await api.client.post("/api/v1/channels/news/posts", data=no_file, headers=api.auth())
    assert missing.status == 400
    assert len(api.media.uploads) == 1


# -- the compliance gate --------------------------------------------------------------------------------


async def test_a_hook_holds_an_api_post_for_the_moderators(api: Harness) -> None:
    response = await api.post({"text": "this needs review please"})
    assert response.status == 202
    receipt = await response.json()
    assert receipt["status"] == "held" and receipt["id"] is None
    async with api.ctx.sessions() as session:
        held = await session.get(HeldPost, receipt["held_id"])
    assert held is not None and held.status == "held" and held.author == "api:rss_bot"
    assert held.event["sender"] == "api:rss_bot" and held.event["event_id"] == held.source_event_id
    assert held.event["room_id"] == backstage("news") and held.event["type"] == "m.room.message"
    assert held.event["content"] == {"msgtype": "m.text", "body": "this needs review please"}
    assert held.verdicts[0]["hook"] == "review"
    assert await api.posts() == [] and await api.sends() == []
    notice = (await api.sends(backstage("news")))[-1]
    assert f"h{held.id}" in notice.payload["content"]["body"]
    assert any(e["held"] == held.id for e in await api.audit("post_held"))
    assert {
        "channel": "news",
        "token": "rss_bot",
        "post": None,
        "action": "create",
        "outcome": "held",
        "held": held.id,
    } in (await api.audit("api_post"))

    # A moderator approves it: it is published as the API would have published it.
    assert is_held_api_post(held)
    async with api.ctx.sessions.begin() as session:
        channel = await session.get(Channel, held.channel_id)
        current = await session.get(HeldPost, held.id)
        assert channel is not None and current is not None
        await publish_held(api.ctx, session, channel, current)
        current.status = "approved"
    [post] = await api.posts()
    [entry] = await api.sends()
    assert post.source_event_id == held.source_event_id and post.via == "api:rss_bot"
    assert entry.payload["post_source"] == held.source_event_id


async def test_a_hook_rejects_an_api_post_with_a_statement_of_reasons(api: Harness) -> None:
    response = await api.post({"text": "a forbidden word"})
    assert response.status == 422
    error = (await response.json())["error"]
    assert error["code"] == "rejected" and error["hook"] == "banned"
    assert "forbidden word" in error["message"] and "Statement of reasons" in error["statement"]
    async with api.ctx.sessions() as session:
        decision = await session.get(Decision, error["decision"])
        held = await session.scalar(select(HeldPost))
    assert decision is not None and decision.kind == "reject_post" and decision.decided_by == "hook:banned"
    assert held is not None and held.status == "rejected" and held.decision_id == decision.id
    assert decision.target == held.source_event_id
    assert await api.posts() == [] and await api.sends() == []

    # An edit passes the hooks too.
    created = await (await api.post({"text": "harmless"})).json()
    edit = await api.client.patch(
        f"/api/v1/channels/news/posts/{created['id']}", json={"text": "a forbidden word"}, headers=api.auth()
    )
    assert edit.status == 422
    assert len(await api.sends()) == 1


async def test_nothing_is_published_while_the_channel_is_restricted(api: Harness) -> None:
    until = datetime.now(UTC) + timedelta(hours=1)
    async with api.ctx.sessions.begin() as session:
        await session.execute(update(Channel).where(Channel.handle == "news").values(restricted_until=until))
    response = await api.post({"text": "during the restriction"})
    assert response.status == 423
    error = (await response.json())["error"]
    assert error["code"] == "restricted" and error["until"].startswith(until.strftime("%Y-%m-%dT%H:%M"))
    assert await api.posts() == []


# -- refusals -------------------------------------------------------------------------------------------


async def test_requests_without_a_valid_token_are_refused(api: Harness) -> None:
    path = "/api/v1/channels/news/posts"
    for headers, params in (
        ({}, {}),
        ({"Authorization": "Bearer "}, {}),
        ({"Authorization": f"Basic {api.token}"}, {}),
        ({}, {"access_token": api.token}),
        ({"Authorization": f"Bearer {api.token[:-1]}"}, {}),
        ({"Authorization": "Bearer kanal_api_" + "x" * 500}, {}),
    ):
        response = await api.client.get(path, headers=headers, params=params)
        assert response.status == 401, headers
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await response.json())["error"]["code"] in ("missing_token", "invalid_token")


async def test_a_token_reaches_its_own_channel_only(api: Harness) -> None:
    sport = await api.client.post(
        "/api/v1/channels/sport/posts", json={"text": "goal"}, headers=api.auth(api.sport_token)
    )
    sport_post = (await sport.json())["id"]
    for method, path in (
        ("POST", "/api/v1/channels/sport/posts"),
        ("GET", "/api/v1/channels/sport/posts"),
        ("GET", "/api/v1/channels/nobody/posts"),
        ("DELETE", f"/api/v1/channels/sport/posts/{sport_post}"),
    ):
        response = await api.client.request(method, path, json={"text": "x"}, headers=api.auth())
        assert response.status == 403, (method, path)
        assert (await response.json())["error"]["code"] == "wrong_channel"
    # Another channel's post, addressed through the token's own channel, does not exist there.
    response = await api.client.delete(f"/api/v1/channels/NEWS/posts/{sport_post}", headers=api.auth())
    assert response.status == 404


async def test_backstage_posts_cannot_be_changed_through_the_api(api: Harness) -> None:
    async with api.ctx.sessions.begin() as session:
        channel = await session.scalar(select(Channel).where(Channel.handle == "news"))
        assert channel is not None
        post = Post(channel_id=channel.id, source_event_id="$human", author=ALICE, content={"body": "hi"})
        session.add(post)
    for method in ("PATCH", "DELETE"):
        response = await api.client.request(
            method, f"/api/v1/channels/news/posts/{post.id}", json={"text": "x"}, headers=api.auth()
        )
        assert response.status == 403
        assert (await response.json())["error"]["code"] == "not_an_api_post"


async def test_malformed_requests_get_json_errors(api: Harness) -> None:
    path = "/api/v1/channels/news/posts"
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"data": b"{not json", "headers": {"Content-Type": "application/json"}}, 400, "invalid_json"),
        ({"json": [1, 2]}, 400, "invalid_json"),
        ({"json": {"text": "x", "colour": "red"}}, 400, "unknown_field"),
        ({"json": {}}, 400, "invalid_field"),
        ({"json": {"text": ""}}, 400, "invalid_field"),
        ({"json": {"text": "a\u0000b"}}, 400, "invalid_field"),
        ({"json": {"text": "x" * 4097}}, 400, "invalid_field"),
        ({"json": {"text": "x", "silent": "yes"}}, 400, "invalid_field"),
        ({"json": {"text": "x", "reply_to": True}}, 400, "invalid_field"),
        ({"data": b"text=hi", "headers": {"Content-Type": "text/plain"}}, 415, "unsupported_media_type"),
        (
            {"data": b"{}" + b" " * 300_000, "headers": {"Content-Type": "application/json"}},
            413,
            "payload_too_large",
        ),
        (
            {"data": b"--x\r\nnonsense", "headers": {"Content-Type": "multipart/form-data; boundary=x"}},
            400,
            "invalid_multipart",
        ),
    ]
    for request, status, code in cases:
        headers = api.auth() | request.pop("headers", {})
        response = await api.client.post(path, headers=headers, **request)
        assert response.status == status, (request, await response.text())
        assert (await response.json())["error"]["code"] == code, request
    for post_id in ("abc", "0", "-1", "1.5"):
        response = await api.client.get(f"{path}/{post_id}", headers=api.auth())
        assert response.status == 400, post_id
    response = await api.client.get(f"{path}/{2**63}", headers=api.auth())
    assert response.status == 400
    response = await api.client.put(path, headers=api.auth())
    assert response.status == 405
    assert (await response.json())["error"]["code"] == "method_not_allowed"
    response = await api.client.get("/api/v1/nothing-here")
    assert response.status == 404 and (await response.json())["error"]["code"] == "not_found"
    assert await api.posts() == []


async def test_each_token_is_rate_limited(api: Harness, aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(make_api_app(api.ctx, RateLimit(per_minute=6, burst=3)))
    statuses = []
    for _ in range(4):
        response = await client.get("/api/v1/channels/news/posts", headers=api.auth())
        statuses.append(response.status)
    assert statuses == [200, 200, 200, 429]
    retry_after = int(response.headers["Retry-After"])
    assert 5 <= retry_after <= 10  # one request per 10 s; less the time the requests took
    assert (await response.json())["error"] == {
        "code": "rate_limited",
        "message": f"Too many requests with this token; try again in {retry_after} s.",
        "retry_after": retry_after,
    }
    # The other channel's token has its own bucket.
    other = await client.get("/api/v1/channels/sport/posts", headers=api.auth(api.sport_token))
    assert other.status == 200


async def test_the_openapi_document_served_is_the_committed_one(api: Harness) -> None:
    response = await api.client.get("/api/v1/openapi.json")
    assert response.status == 200 and response.content_type == "application/json"
    assert await response.read() == OPENAPI_FILE.read_bytes()
    document = json.loads(OPENAPI_FILE.read_text(encoding="utf-8"))
    assert document["openapi"].startswith("3.1")
    routes = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert routes == {
        ("GET", "/api/v1/openapi.json"),
        ("POST", "/api/v1/channels/{handle}/posts"),
        ("GET", "/api/v1/channels/{handle}/posts"),
        ("GET", "/api/v1/channels/{handle}/posts/{post_id}"),
        ("PATCH", "/api/v1/channels/{handle}/posts/{post_id}"),
        ("DELETE", "/api/v1/channels/{handle}/posts/{post_id}"),
    }
