"""The publishing API (issue 5): bots post to their channel with a token, through the gate and the outbox.

    Authorization: Bearer kanal_api_…  ─▶ tokens.authenticate ─▶ rate limit per token (else 429)
                                        ─▶ the token's own channel only (else 403), active (else 404/423)
    POST   /api/v1/channels/{handle}/posts       JSON, or multipart with a file (stored as the ghost)
             ├─ Idempotency-Key seen before ─▶ the stored answer again (409 when the body differs)
             ├─ restricted ─▶ 423
             ├─ hooks: hold ─▶ HeldPost, 202 │ reject ─▶ decision with its statement, 422
             └─ outbox `send` as the ghost + Post row + audit entry ─▶ 201
    PATCH  /api/v1/channels/{handle}/posts/{id}  the same checks, then an `m.replace` of the relayed copy
    DELETE /api/v1/channels/{handle}/posts/{id}  an outbox `redact` of the relayed copy ─▶ 204
    GET    /api/v1/channels/{handle}/posts[/{id}] what the channel shows, newest first
    GET    /api/v1/openapi.json                  bridge/web/publishing-api.openapi.json, as committed

As for backstage posts, the decision, the outbox entries, the Post row and the audit entry are written
in one database transaction; the outbox sends afterwards, so a new post's `event_id` is null until it
is delivered. Network calls (the media upload, webhook hooks) happen before that transaction opens.
Errors are `ApiError`s, rendered as `{"error": {"code", "message", …}}` by one middleware; anything
unexpected is logged and answered with a 500. Tokens are never logged.

This module is the application: routes, who is asking, the handlers. The rest is beside it:
    api_errors       ApiError and the middleware that renders errors
    api_answers      a post as JSON, the receipt of a write
    api_limits       RateLimit, a token bucket per API token
    api_requests     reading and validating requests: ids, JSON fields, multipart uploads, Draft
    api_content      the Matrix content a post becomes (sanitised HTML, edits), the size check
    api_idempotency  Idempotency-Key: the stored answer replayed
    api_media        files stored in the homeserver's media repository as the ghost
    api_gate         the compliance gate for API posts: hooks, hold or reject
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiohttp import hdrs, web
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.audience.views import views_of
from bridge.broadcast import seam
from bridge.moderation.gate import restriction
from bridge.moderation.hooks import Verdict
from bridge.publishing import posts
from bridge.publishing.posts import API_SOURCE_PREFIX
from bridge.runtime.context import Context
from bridge.store.models import (
    ApiToken,
    Channel,
    ChannelStatus,
    Post,
)
from bridge.web.api_answers import iso, post_json, receipt
from bridge.web.api_content import check_size, edited
from bridge.web.api_errors import ApiError, render_errors
from bridge.web.api_gate import hold_or_reject, post_info, rejection, screen
from bridge.web.api_idempotency import idempotency_key, remember, replay
from bridge.web.api_limits import RateLimit, TokenBuckets
from bridge.web.api_media import UPLOAD_TIMEOUT_S, store_upload
from bridge.web.api_requests import (
    MAX_HTML_CHARS,
    MAX_TEXT_CHARS,
    media_content,
    only_fields,
    optional_string,
    path_post_id,
    positive_id,
    read_draft,
    read_json,
    required_string,
)
from bridge.web.tokens import authenticate, bearer_token

log = logging.getLogger(__name__)

API_PREFIX: Final = "/api/v1"
OPENAPI_FILE: Final = Path(__file__).resolve().parent / "publishing-api.openapi.json"
DEFAULT_PAGE_SIZE: Final = 20
MAX_PAGE_SIZE: Final = 100
_CHALLENGE: Final = {"WWW-Authenticate": 'Bearer realm="kanal"'}


@dataclass
class _Api:
    ctx: Context
    buckets: TokenBuckets
    openapi: bytes | None
    http: aiohttp.ClientSession | None = field(default=None)

    def uploads(self) -> aiohttp.ClientSession:
        if self.http is None:
            raise RuntimeError("the publishing API's HTTP session is used outside the app's lifetime")
        return self.http


STATE: Final = web.AppKey("kanal_publishing_api", _Api)


def add_api_routes(app: web.Application, ctx: Context, *, rate_limit: RateLimit | None = None) -> None:
    """Mount the publishing API at /api/v1 on the web app."""
    try:
        document: bytes | None = OPENAPI_FILE.read_bytes()
    except OSError:
        log.warning(
            "The publishing API's OpenAPI document is missing (%s); /api/v1/openapi.json answers 404",
            OPENAPI_FILE,
        )
        document = None
    api = web.Application(middlewares=[render_errors])
    api[STATE] = _Api(ctx, TokenBuckets(rate_limit or RateLimit()), document)
    api.cleanup_ctx.append(_http_session)
    api.router.add_get("/openapi.json", _openapi)
    api.router.add_post("/channels/{handle}/posts", _create_post)
    api.router.add_get("/channels/{handle}/posts", _list_posts)
    api.router.add_get("/channels/{handle}/posts/{post_id}", _get_post)
    api.router.add_patch("/channels/{handle}/posts/{post_id}", _edit_post)
    api.router.add_delete("/channels/{handle}/posts/{post_id}", _delete_post)
    app.add_subapp(API_PREFIX, api)


async def _http_session(api: web.Application) -> AsyncIterator[None]:
    """The session media uploads go through, open for the app's lifetime."""
    state = api[STATE]
    state.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=UPLOAD_TIMEOUT_S))
    yield
    await state.http.close()
    state.http = None


async def _openapi(request: web.Request) -> web.Response:
    document = request.app[STATE].openapi
    if document is None:
        raise ApiError(404, "not_found", "This installation has no copy of the OpenAPI document.")
    return web.Response(body=document, content_type="application/json")


# -- who is asking ----------------------------------------------------------------------------------------


async def _caller(request: web.Request, *, write: bool) -> tuple[ApiToken, Channel]:
    """The token and its channel, once the token, the rate limit and the channel in the path allow it."""
    state = request.app[STATE]
    header = request.headers.get(hdrs.AUTHORIZATION)
    if bearer_token(header) is None:
        raise ApiError(
            401,
            "missing_token",
            "Send the channel's API token as the header Authorization: Bearer <token>.",
            headers=_CHALLENGE,
        )
    async with state.ctx.sessions() as session:
        token = await authenticate(session, header)
        channel = await session.get(Channel, token.channel_id) if token is not None else None
    if token is None:
        raise ApiError(
            401,
            "invalid_token",
            "The token is unknown or was revoked; the channel's owner makes a new one with !token new <name>.",
            headers={"WWW-Authenticate": 'Bearer realm="kanal", error="invalid_token"'},
        )
    wait = state.buckets.take(token.id)
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        raise ApiError(
            429,
            "rate_limited",
            f"Too many requests with this token; try again in {seconds} s.",
            headers={"Retry-After": str(seconds)},
            retry_after=seconds,
        )
    gone = (ChannelStatus.DELETING, ChannelStatus.DELETED)
    if channel is None or channel.handle is None or channel.status in gone:
        raise ApiError(404, "channel_not_found", "The token's channel no longer exists.")
    if request.match_info["handle"].lower() != channel.handle.lower():
        raise ApiError(403, "wrong_channel", f"This token publishes to #{channel.handle} only.")
    if write and (channel.status != ChannelStatus.ACTIVE or channel.broadcast_room_id is None):
        raise ApiError(
            423,
            "channel_unavailable",
            f"#{channel.handle} is {channel.status}: nothing can be published or changed now.",
        )
    return token, channel


async def _refuse_if_restricted(session: AsyncSession, channel: Channel) -> None:
    suspended = await restriction(session, channel)
    if suspended is None:
        return
    until, decision = suspended
    shown = until.strftime("%Y-%m-%d %H:%M UTC")
    raise ApiError(
        423,
        "restricted",
        f"Posting in #{channel.handle} is suspended until {shown}"
        + (f" by decision #{decision}." if decision else "."),
        until=iso(until),
        decision=decision,
    )


# -- the handlers -----------------------------------------------------------------------------------------


async def _create_post(request: web.Request) -> web.Response:
    state = request.app[STATE]
    ctx = state.ctx
    token, channel = await _caller(request, write=True)
    key = idempotency_key(request)
    draft = await read_draft(request)
    if key is not None:
        async with ctx.sessions() as session:
            replayed = await replay(session, token.id, key, draft.fingerprint)
        if replayed is not None:
            return replayed
    async with ctx.sessions() as session:
        await _refuse_if_restricted(session, channel)
        reply_source = None
        if draft.reply_to is not None:
            target = await session.get(Post, draft.reply_to)
            if target is None or target.channel_id != channel.id or target.redacted:
                raise ApiError(400, "unknown_reply_target", f"There is no post {draft.reply_to} to reply to.")
            reply_source = target.source_event_id
    content = draft.content
    if draft.upload is not None:
        content = media_content(
            draft.upload, await store_upload(state.uploads(), ctx.config, channel, draft.upload)
        )
    check_size(content)
    source = f"{API_SOURCE_PREFIX}{uuid.uuid4()}"
    verdicts, deciding = await screen(ctx, channel, post_info(channel, token.name, source, content))
    try:
        async with ctx.sessions.begin() as session:
            current = await session.get(Channel, channel.id)
            assert current is not None
            status, body = await _store_new(
                ctx, session, current, token.name, source, content, reply_source, verdicts, deciding
            )
            if key is not None:
                await remember(session, token.id, key, draft.fingerprint, status, body)
    except IntegrityError:
        if key is None:
            raise
        async with ctx.sessions() as session:  # the same key, sent twice at once: the first one won
            replayed = await replay(session, token.id, key, draft.fingerprint)
        if replayed is None:
            raise
        return replayed
    ctx.outbox.wake()
    return web.json_response(body, status=status)


async def _store_new(
    ctx: Context,
    session: AsyncSession,
    channel: Channel,
    token_name: str,
    source: str,
    content: dict[str, Any],
    reply_source: str | None,
    verdicts: list[Verdict],
    deciding: Verdict | None,
) -> tuple[int, dict[str, Any]]:
    """Publish, hold or reject a new post; the status and body of the answer."""
    if deciding is None:
        post = await posts.publish_api_post(session, channel, token_name, source, content, reply_source)
        await posts.audit_api_post(ctx, session, channel, token_name, post.id, "create", "queued")
        return 201, receipt(ctx, channel, post, "queued")
    event_content = dict(content)
    if reply_source is not None:
        event_content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_source}}
    held, decision = await hold_or_reject(
        ctx, session, channel, token_name, source, event_content, verdicts, deciding
    )
    if decision is None:
        await posts.audit_api_post(ctx, session, channel, token_name, None, "create", "held", held=held.id)
        return 202, receipt(ctx, channel, None, "held", held)
    await posts.audit_api_post(ctx, session, channel, token_name, None, "create", "rejected", decision=decision.id)
    return 422, rejection(deciding, decision).body()


async def _own_post(session: AsyncSession, channel: Channel, post_id: int, *, change: bool) -> Post:
    post = await session.get(Post, post_id)
    if post is None or post.channel_id != channel.id or post.redacted:
        raise ApiError(404, "post_not_found", f"There is no post {post_id} in this channel.")
    if change and not post.via.startswith(API_SOURCE_PREFIX):
        raise ApiError(403, "not_an_api_post", "Only posts made through the API can be changed through it.")
    return post


async def _edit_post(request: web.Request) -> web.Response:
    ctx = request.app[STATE].ctx
    token, channel = await _caller(request, write=True)
    post_id = path_post_id(request)
    data = await read_json(request)
    only_fields(data, ("text", "html"))
    text = required_string(data, "text", MAX_TEXT_CHARS)
    html = optional_string(data, "html", MAX_HTML_CHARS)
    async with ctx.sessions() as session:
        await _refuse_if_restricted(session, channel)
        post = await _own_post(session, channel, post_id, change=True)
    new_content = edited(post.content or {}, text, html)
    check_size(seam.edit_event_content(new_content, post.source_event_id))
    source = f"{API_SOURCE_PREFIX}{uuid.uuid4()}"
    verdicts, deciding = await screen(ctx, channel, post_info(channel, token.name, source, new_content))
    async with ctx.sessions.begin() as session:
        current = await session.get(Channel, channel.id)
        assert current is not None
        post = await _own_post(session, current, post_id, change=True)
        if deciding is None:
            await seam.edit(session, current, post, new_content)
            await posts.audit_api_post(ctx, session, current, token.name, post.id, "edit", "queued")
            status, body = 200, receipt(ctx, current, post, "queued")
        else:
            held, decision = await hold_or_reject(
                ctx,
                session,
                current,
                token.name,
                source,
                seam.edit_event_content(new_content, post.source_event_id),
                verdicts,
                deciding,
            )
            if decision is None:
                await posts.audit_api_post(ctx, session, current, token.name, post.id, "edit", "held", held=held.id)
                status, body = 202, receipt(ctx, current, post, "held", held)
            else:
                await posts.audit_api_post(
                    ctx, session, current, token.name, post.id, "edit", "rejected", decision=decision.id
                )
                status, body = 422, rejection(deciding, decision).body()
    ctx.outbox.wake()
    return web.json_response(body, status=status)


async def _delete_post(request: web.Request) -> web.Response:
    ctx = request.app[STATE].ctx
    token, channel = await _caller(request, write=True)
    post_id = path_post_id(request)
    async with ctx.sessions.begin() as session:
        post = await _own_post(session, channel, post_id, change=True)
        await seam.retract(session, channel, post, None)
        await posts.audit_api_post(ctx, session, channel, token.name, post.id, "delete", "queued")
    ctx.outbox.wake()
    return web.Response(status=204)


async def _list_posts(request: web.Request) -> web.Response:
    ctx = request.app[STATE].ctx
    _token, channel = await _caller(request, write=False)
    limit = DEFAULT_PAGE_SIZE
    if "limit" in request.query:
        limit = positive_id(request.query["limit"], "'limit'")
        if limit > MAX_PAGE_SIZE:
            raise ApiError(400, "invalid_parameter", f"'limit' is at most {MAX_PAGE_SIZE}.")
    before = positive_id(request.query["before"], "'before'") if "before" in request.query else None
    query = select(Post).where(Post.channel_id == channel.id, Post.redacted.is_(False))
    if before is not None:
        query = query.where(Post.id < before)
    async with ctx.sessions() as session:
        posts = (await session.scalars(query.order_by(Post.id.desc()).limit(limit))).all()
        views = await views_of(session, channel.id, [post.id for post in posts])
    return web.json_response(
        {
            "posts": [post_json(ctx, channel, post, views[post.id]) for post in posts],
            "next_before": posts[-1].id if len(posts) == limit else None,
        }
    )


async def _get_post(request: web.Request) -> web.Response:
    ctx = request.app[STATE].ctx
    _token, channel = await _caller(request, write=False)
    post_id = path_post_id(request)
    async with ctx.sessions() as session:
        post = await _own_post(session, channel, post_id, change=False)
        views = await views_of(session, channel.id, [post.id])
    return web.json_response(post_json(ctx, channel, post, views[post.id]))
