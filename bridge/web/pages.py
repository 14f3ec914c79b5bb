"""Kanal's public pages: directory, channel pages, permalinks, embeds, feeds, media and stylesheet.

URL map (GET, and HEAD with it):

    /                                 the directory of public channels; ?q= searches titles and handles
    /c/{handle}                       a channel's latest posts; ?before=<post id> pages back
    /c/{handle}/{post_id}             one post (post_id: the Post row id)
    /c/{handle}/{post_id}/embed       one post for an <iframe> (the only pages that may be framed)
    /c/{handle}/feed.atom             Atom 1.0
    /c/{handle}/feed.json             JSON Feed 1.1
    /media/{server}/{media_id}        media that a visible post (or a channel's avatar) shows
    /static/kanal.css                 the stylesheet

Only public `active` channels exist here; private channels and anything else (suspended, deleted, still being created) is a 404,
as are redacted posts and posts not yet published. Every response carries a strict
Content-Security-Policy: pages load nothing but this origin's stylesheet and images, and run no
script. Caching and its invalidation are described in cache.py.

Polls show their votes, counted from the poll's `m.reference` relations in the broadcast room (read
as the bot, cached a minute per poll like the subscriber counts). A page that shows polls has their
tallies in its version: `_poll_pages` remembers which polls each such page showed at which channel
version, so a request can tell, before touching the posts, that a vote changed the page.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, Final

from aiohttp import web
from sqlalchemy import Integer, Row, Text, bindparam, case, cast, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from appservice.ids import RoomID
from bridge.broadcast.shards import subscriber_count
from bridge.matrix.media import MEDIA_ID, SERVER_NAME, parse_mxc
from bridge.matrix.polls import PollTally, parse_poll, tally_poll
from bridge.matrix.relations import related_events_in
from bridge.runtime.context import Context
from bridge.store.models import Channel, ChannelStatus, HandleHold, Post, PostCopy
from bridge.text.names import title_key
from bridge.web.cache import MAX_CACHED_PAGES, FreshReads, Page, PageCache, Reader, RefreshingCache
from bridge.web.feeds import ATOM_TYPE, JSON_FEED_TYPE, atom, json_feed
from bridge.web.media import MEDIA_CACHE_DIR, MediaProxy, MediaStore, referenced_by_visible_post
from bridge.web.render import (
    DIRECTORY_LIMIT,
    FEED_SIZE,
    PAGE_SIZE,
    ChannelInfo,
    LinkStyle,
    PostRecord,
    Renderer,
)

log = logging.getLogger(__name__)

PAGE_CSP: Final = (
    "default-src 'none'; img-src 'self'; style-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
EMBED_CSP: Final = (
    "default-src 'none'; img-src 'self'; style-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors *"
)
_COMMON_HEADERS: Final = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
PAGE_HEADERS: Final = {"Content-Security-Policy": PAGE_CSP, "X-Frame-Options": "DENY", **_COMMON_HEADERS}
EMBED_HEADERS: Final = {"Content-Security-Policy": EMBED_CSP, **_COMMON_HEADERS}
# Readers may keep a copy but must ask again (cheaply: ETag) before showing it: takedowns are immediate.
PAGE_CACHE_CONTROL: Final = "public, no-cache"
STYLESHEET_CACHE_CONTROL: Final = "public, max-age=86400"
HTML_TYPE: Final = "text/html; charset=utf-8"
CSS_TYPE: Final = "text/css; charset=utf-8"

SUBSCRIBERS_TTL_S: Final = 60.0
SUBSCRIBERS_WAIT_S: Final = 2.0  # how long a page waits for a count it has never had
SUBSCRIBERS_RETRY_S: Final = 15.0
SUBSCRIBERS_FETCH_TIMEOUT_S: Final = 20.0
DIRECTORY_FACTS_CHECK_S: Final = 5.0
# Poll tallies are cached like subscriber counts: a minute, served stale while refreshing.
POLL_TTL_S: Final = SUBSCRIBERS_TTL_S
POLL_WAIT_S: Final = SUBSCRIBERS_WAIT_S
POLL_RETRY_S: Final = SUBSCRIBERS_RETRY_S
POLL_FETCH_TIMEOUT_S: Final = SUBSCRIBERS_FETCH_TIMEOUT_S
POLL_RELATIONS_LIMIT: Final = 100  # relations per request
POLL_RELATIONS_PAGES: Final = 20  # requests per tally: the newest 2,000 relations count
MAX_QUERY_LENGTH: Final = 100
MAX_HANDLE_LENGTH: Final = 64
POST_ID: Final = r"[0-9]{1,18}"

RoomKey = tuple[str, str, tuple[str, ...]]  # (first room id, ghost user id, the rooms opened after it)


@dataclass(frozen=True)
class RoomFacts:
    """What the homeserver knows about a channel's rooms: cached, never asked for per page view."""

    subscribers: int | None


NO_FACTS: Final = RoomFacts(None)


@dataclass(frozen=True)
class PollKey:
    """A poll to count: its event in each room of the channel, its sender (the ghost) and what may
    be chosen."""

    copies: tuple[tuple[RoomID, str], ...]
    sender: str
    answer_ids: tuple[str, ...]
    max_selections: int


# The polls a page shows with their tallies (None: not known), in page order; part of its version.
ShownPolls = tuple[tuple[PollKey, PollTally | None], ...]


class FactsUnavailable(Exception):
    """The homeserver did not answer; the previous facts stay."""


@dataclass(frozen=True)
class ChannelState:
    """A public channel as the database has it now; `version` changes with anything a page shows,
    `changed` is when the channel or any of its posts last changed (their Last-Modified)."""

    info: ChannelInfo
    room: RoomKey
    version: Hashable
    changed: datetime


@dataclass(frozen=True)
class DirectoryState:
    channels: tuple[ChannelInfo, ...]
    rooms: tuple[RoomKey, ...]
    keys: tuple[str, ...]  # title_key of each channel
    version: bytes
    changed: datetime  # when any channel last changed (one that left the list included)


Built = tuple[int, bytes, str]  # status, body, content type
Build = Callable[[ChannelInfo, RoomKey], Awaitable[tuple[Built, ShownPolls]]]


# The statements, built once (building a SELECT costs more than running this one on SQLite).

# A channel and a stamp of its posts: anything a page shows changes one of these columns. Sums of
# ids, not counts: redacting one post while another is published must still change the stamp.
CHANNEL_STATE: Final = (
    select(
        Channel.id,
        Channel.handle,
        Channel.title,
        Channel.about,
        Channel.verified,
        Channel.status,
        Channel.broadcast_room_id,
        Channel.ghost_user_id,
        Channel.shard_rooms,
        Channel.created_at,
        Channel.private,
        Channel.avatar_url,
        Channel.changed_at,
        func.count(Post.id),
        func.max(Post.id),
        func.sum(case((Post.redacted.is_(True), Post.id), else_=0)),
        func.sum(case((Post.relayed_event_id.is_not(None), Post.id), else_=0)),
        func.max(Post.edited_at),
        func.count(Post.edited_at),
        func.max(Post.changed_at).label("posts_changed_at"),
    )
    .outerjoin(Post, Post.channel_id == Channel.id)
    .where(Channel.handle == bindparam("handle"))
    .group_by(Channel.id)
)
PUBLIC_CHANNELS: Final = (
    select(
        Channel.id,
        Channel.handle,
        Channel.title,
        Channel.about,
        Channel.verified,
        Channel.title_key,
        Channel.broadcast_room_id,
        Channel.ghost_user_id,
        Channel.shard_rooms,
        Channel.created_at,
        Channel.avatar_url,
    )
    .where(
        Channel.status == ChannelStatus.ACTIVE,
        Channel.private.is_(False),
        Channel.handle.is_not(None),
        Channel.broadcast_room_id.is_not(None),
    )
    .order_by(Channel.id)
)
_VISIBLE_POSTS: Final = select(
    Post.id, Post.event_type, Post.content, Post.relayed_event_id, Post.created_at, Post.edited_at
).where(
    Post.channel_id == bindparam("channel_id"),
    Post.redacted.is_(False),
    Post.relayed_event_id.is_not(None),
    # Posts from before contents were kept: SQL NULL, or JSON null (how the JSON type stores None).
    Post.content.is_not(None),
    cast(Post.content, Text) != "null",
)
NO_POST_ID_LIMIT: Final = 2**62
LATEST_POSTS: Final = (
    _VISIBLE_POSTS.where(Post.id < bindparam("before"))
    .order_by(Post.id.desc())
    .limit(bindparam("limit", type_=Integer))
)
ONE_POST: Final = _VISIBLE_POSTS.where(Post.id == bindparam("post_id"))
RENAMED: Final = (
    select(Channel.handle)
    .join(HandleHold, HandleHold.channel_id == Channel.id)
    .where(
        HandleHold.handle == bindparam("handle"),
        HandleHold.kind == "grace",
        HandleHold.until > bindparam("now"),
        Channel.private.is_(False),
    )
)
COPIES: Final = select(PostCopy.post_id, PostCopy.room_id, PostCopy.event_id).where(
    PostCopy.post_id.in_(bindparam("posts", expanding=True))
)
CHANNELS_CHANGED: Final = select(func.max(Channel.changed_at), func.max(Channel.created_at))
PUBLIC_AVATAR: Final = (
    select(Channel.id)
    .where(
        Channel.avatar_url == bindparam("mxc"),
        Channel.status == ChannelStatus.ACTIVE,
        Channel.private.is_(False),
        Channel.handle.is_not(None),
        Channel.broadcast_room_id.is_not(None),
    )
    .limit(1)
)
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _room_key(row: Any) -> RoomKey:
    return (row.broadcast_room_id, row.ghost_user_id, tuple(row.shard_rooms or ()))


def _hashable(value: Any) -> Hashable:
    return tuple(value) if isinstance(value, list) else value


def _latest(*moments: datetime | None) -> datetime:
    """The latest of the given times (stored as UTC; SQLite hands them back naive), EPOCH if none."""
    known = [m.replace(tzinfo=UTC) if m.tzinfo is None else m.astimezone(UTC) for m in moments if m is not None]
    return max(known, default=EPOCH)


class Pages:
    """The handlers and what they share: caches, the renderer, the media proxy."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        config = ctx.config
        self.renderer = Renderer(
            public_url=config.web_public_url, domain=config.domain, default_language=config.default_language
        )
        self.cache = PageCache()
        engine = ctx.sessions.kw.get("bind")
        if not isinstance(engine, AsyncEngine):
            raise TypeError("the web pages need Context.sessions bound to an AsyncEngine")
        self.reader = Reader(engine)
        self.facts: RefreshingCache[RoomKey, RoomFacts] = RefreshingCache(
            self._fetch_facts,
            fallback=NO_FACTS,
            ttl=SUBSCRIBERS_TTL_S,
            wait=SUBSCRIBERS_WAIT_S,
            retry=SUBSCRIBERS_RETRY_S,
            fetch_timeout=SUBSCRIBERS_FETCH_TIMEOUT_S,
        )
        self.polls: RefreshingCache[PollKey, PollTally | None] = RefreshingCache(
            self._fetch_tally,
            fallback=None,
            ttl=POLL_TTL_S,
            wait=POLL_WAIT_S,
            retry=POLL_RETRY_S,
            fetch_timeout=POLL_FETCH_TIMEOUT_S,
        )
        # page key -> (channel version, the polls the page showed at it); only pages with polls.
        self._poll_pages: OrderedDict[Hashable, tuple[Hashable, tuple[PollKey, ...]]] = OrderedDict()
        self._channels: FreshReads[str, ChannelState | None] = FreshReads(self._load_channel)
        self._directory: FreshReads[str, DirectoryState] = FreshReads(self._load_directory)
        self._directory_checked = 0.0
        self.proxy = MediaProxy(
            config.homeserver_url,
            config.as_token,
            MediaStore(config.writable_dir / MEDIA_CACHE_DIR),
            self._media_allowed,
        )
        self._not_found = self._error_response(404)
        self._bad_request = self._error_response(400)

    async def close(self) -> None:
        await self.proxy.close()
        await self.facts.close()
        await self.polls.close()
        await self.reader.close()

    # -- what the database says --------------------------------------------------------------------

    async def _load_channel(self, handle: str) -> ChannelState | None:
        """The channel row and a stamp of its posts, in one query: the version a page is valid for."""
        rows = await self.reader.rows(CHANNEL_STATE, {"handle": handle})
        row = rows[0] if rows else None
        if (
            row is None
            or row.status != ChannelStatus.ACTIVE
            or row.private
            or row.broadcast_room_id is None
            or row.handle is None
        ):
            return None  # private channels are as unknown here as deleted ones
        info = _channel_info(row, self.ctx.config.domain)
        changed = _latest(row.created_at, row.changed_at, row.posts_changed_at)
        return ChannelState(info, _room_key(row), tuple(_hashable(v) for v in row), changed)

    async def _load_directory(self, _key: str) -> DirectoryState:
        rows = await self.reader.rows(PUBLIC_CHANNELS)
        changed = (await self.reader.rows(CHANNELS_CHANGED))[0]
        domain = self.ctx.config.domain
        return DirectoryState(
            channels=tuple(_channel_info(r, domain) for r in rows),
            rooms=tuple(_room_key(r) for r in rows),
            keys=tuple(r.title_key or title_key(r.title) for r in rows),
            version=hashlib.blake2b(repr([tuple(r) for r in rows]).encode(), digest_size=16).digest(),
            changed=_latest(*changed),
        )

    async def _posts(self, channel_id: int, *, before: int | None = None, limit: int) -> list[PostRecord]:
        """The newest visible posts (older than `before`), newest first."""
        parameters = {"channel_id": channel_id, "before": before or NO_POST_ID_LIMIT, "limit": limit}
        return [_record(row) for row in await self.reader.rows(LATEST_POSTS, parameters)]

    async def _post(self, channel_id: int, post_id: int) -> PostRecord | None:
        rows = await self.reader.rows(ONE_POST, {"channel_id": channel_id, "post_id": post_id})
        return _record(rows[0]) if rows else None

    async def _renamed(self, handle: str) -> str | None:
        """The current handle of a channel renamed from `handle` (during the old alias's grace period)."""
        rows = await self.reader.rows(RENAMED, {"handle": handle, "now": datetime.now(UTC)})
        return str(rows[0].handle) if rows else None

    # -- what the homeserver says ------------------------------------------------------------------

    async def _fetch_facts(self, room: RoomKey) -> RoomFacts:
        room_id, ghost, shards = room
        channel = Channel(broadcast_room_id=room_id, ghost_user_id=ghost, shard_rooms=list(shards))
        count = await subscriber_count(self.ctx, channel)
        if count is None:
            raise FactsUnavailable(room_id)
        return RoomFacts(count)

    async def _fetch_tally(self, poll: PollKey) -> PollTally:
        """Count the votes from the poll's reference relations, newest first, as the bot."""
        events, _ = await related_events_in(
            self.ctx.client,
            self.ctx.bot,
            dict(poll.copies),
            "m.reference",
            pages=POLL_RELATIONS_PAGES,
            limit=POLL_RELATIONS_LIMIT,
        )
        return tally_poll(poll.answer_ids, poll.max_selections, poll.sender, events)

    async def _tallies(
        self, records: Sequence[PostRecord], room: RoomKey
    ) -> tuple[dict[int, PollTally | None], ShownPolls]:
        """The tallies of the polls among `records` (waiting at most POLL_WAIT_S for new ones)."""
        ghost = room[1]
        polls = {
            record.id: poll
            for record in records
            if record.content is not None
            and record.relayed_event_id is not None
            and (poll := parse_poll(record.event_type, record.content)) is not None
        }
        copies: dict[int, list[tuple[RoomID, str]]] = {}
        if polls:
            for row in await self.reader.rows(COPIES, {"posts": list(polls)}):
                copies.setdefault(row.post_id, []).append((RoomID(row.room_id), row.event_id))
        found: list[tuple[int, PollKey]] = [
            (post_id, PollKey(tuple(sorted(copies[post_id])), ghost, poll.answer_ids, poll.max_selections))
            for post_id, poll in polls.items()
            if post_id in copies
        ]
        if not found:
            return {}, ()
        tallies = await self.polls.get_many(key for _, key in found)
        shown = tuple((key, tallies[key]) for _, key in found)
        return {post_id: tallies[key] for post_id, key in found}, shown

    async def _current_polls(self, key: Hashable, channel_version: Hashable) -> ShownPolls:
        """The polls page `key` showed when last built at this channel version, with their tallies now.

        Nothing known (never built, built at another version, forgotten): (), which matches only a
        cached page that shows no polls; any other is rebuilt.
        """
        entry = self._poll_pages.get(key)
        if entry is None or entry[0] != channel_version:
            return ()
        self._poll_pages.move_to_end(key)
        tallies = await self.polls.get_many(entry[1])
        return tuple((poll, tallies[poll]) for poll in entry[1])

    def _remember_polls(self, key: Hashable, channel_version: Hashable, shown: ShownPolls) -> None:
        if not shown:
            self._poll_pages.pop(key, None)
            return
        self._poll_pages[key] = (channel_version, tuple(poll for poll, _ in shown))
        self._poll_pages.move_to_end(key)
        while len(self._poll_pages) > MAX_CACHED_PAGES:
            self._poll_pages.popitem(last=False)

    async def _media_allowed(self, mxc: str) -> bool:
        """A visible post shows it, or it is a public channel's photo (asked anew on every request,
        so a takedown or a changed photo closes the old URL at once)."""
        if await referenced_by_visible_post(self.reader, mxc):
            return True
        return bool(await self.reader.rows(PUBLIC_AVATAR, {"mxc": mxc}))

    # -- responses ---------------------------------------------------------------------------------

    def _page(
        self, key: Hashable, version: Hashable, changed: datetime, built: Built, security: Mapping[str, str]
    ) -> Page:
        status, body, content_type = built
        etag = (
            '"'
            + hashlib.blake2b(
                repr((self.renderer.fingerprint, key, version)).encode(), digest_size=16
            ).hexdigest()
            + '"'
        )
        last_modified = self.cache.last_modified(key, changed)
        headers = {
            **security,
            "Content-Type": content_type,
            "Cache-Control": PAGE_CACHE_CONTROL,
            "ETag": etag,
            "Last-Modified": format_datetime(last_modified, usegmt=True),
        }
        return Page(status, body, headers, etag, last_modified, version)

    def _error_response(self, status: int) -> Callable[[], web.Response]:
        body = self.renderer.error(status)
        headers = {**PAGE_HEADERS, "Content-Type": HTML_TYPE, "Cache-Control": PAGE_CACHE_CONTROL}
        return lambda: web.Response(status=status, body=body, headers=headers)

    @staticmethod
    def _respond(request: web.Request, page: Page) -> web.Response:
        if page.status == 200 and _not_modified(request, page.etag, page.last_modified):
            headers = {k: v for k, v in page.headers.items() if k != "Content-Type"}
            return web.Response(status=304, headers=headers)
        return web.Response(status=page.status, body=page.body, headers=page.headers)

    async def _serve_channel(
        self,
        request: web.Request,
        what: Hashable,
        build: Build,
        security: Mapping[str, str] = PAGE_HEADERS,
        *,
        shows_facts: bool = True,
    ) -> web.StreamResponse:
        """A page of one channel, from the cache while nothing it shows changed (`shows_facts`: it
        shows the subscriber count, so that count is part of its version)."""
        handle = request.match_info["handle"].lower()
        state = await self._channels.get(handle) if len(handle) <= MAX_HANDLE_LENGTH else None
        if state is None:
            current = await self._renamed(handle) if len(handle) <= MAX_HANDLE_LENGTH else None
            if current is not None and current != handle:
                rest = request.path[len(f"/c/{request.match_info['handle']}") :]
                query = f"?{request.query_string}" if request.query_string else ""
                raise web.HTTPMovedPermanently(f"/c/{current}{rest}{query}", headers=PAGE_HEADERS)
            return self._not_found()
        facts = await self.facts.get(state.room) if shows_facts else NO_FACTS
        key = (handle, what)
        page = self.cache.get(key, (state.version, facts, await self._current_polls(key, state.version)))
        if page is None:
            channel = replace(state.info, subscribers=facts.subscribers)
            built, polls = await build(channel, state.room)
            page = self._page(key, (state.version, facts, polls), state.changed, built, security)
            self.cache.put(key, page)
            self._remember_polls(key, state.version, polls)
        return self._respond(request, page)

    # -- handlers ----------------------------------------------------------------------------------

    async def directory(self, request: web.Request) -> web.StreamResponse:
        query = request.query.get("q", "").strip()[:MAX_QUERY_LENGTH]
        state = await self._directory.get("")
        now = time.monotonic()
        if now - self._directory_checked >= DIRECTORY_FACTS_CHECK_S:
            self._directory_checked = now
            self.facts.refresh_stale(state.rooms)
        key = ("directory", query)
        page = self.cache.get(key, (state.version, self.facts.generation))
        if page is None:
            wanted = title_key(query) if query else ""
            handle_part = query.lower().lstrip("@#").split(":", 1)[0]
            matches = [
                (channel, room, channel_key)
                for channel, room, channel_key in zip(state.channels, state.rooms, state.keys, strict=True)
                if not query
                or (wanted and wanted in channel_key)
                or (handle_part and handle_part in channel.handle)
            ]
            facts = await self.facts.get_many(room for _, room, _ in matches)
            ranked = sorted(matches, key=lambda m: (-(facts[m[1]].subscribers or 0), m[2], m[0].handle))[
                :DIRECTORY_LIMIT
            ]
            shown = [replace(c, subscribers=facts[r].subscribers) for c, r, _ in ranked]
            built = (200, self.renderer.directory(shown, query), HTML_TYPE)
            version = (state.version, self.facts.generation)
            page = self._page(key, version, state.changed, built, PAGE_HEADERS)
            self.cache.put(key, page)
        return self._respond(request, page)

    async def channel(self, request: web.Request) -> web.StreamResponse:
        raw = request.query.get("before")
        before: int | None = None
        if raw is not None:
            if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
                return self._bad_request()
            before = int(raw)

        async def build(channel: ChannelInfo, room: RoomKey) -> tuple[Built, ShownPolls]:
            records = await self._posts(channel.id, before=before, limit=PAGE_SIZE + 1)
            older = records[PAGE_SIZE - 1].id if len(records) > PAGE_SIZE else None
            tallies, polls = await self._tallies(records[:PAGE_SIZE], room)
            views = self.renderer.post_views(records[:PAGE_SIZE], channel, LinkStyle.PAGE, tallies)
            page = self.renderer.channel_page(channel, views, older=older, paged=before is not None)
            return (200, page, HTML_TYPE), polls

        return await self._serve_channel(request, ("page", before), build)

    async def post(self, request: web.Request) -> web.StreamResponse:
        return await self._single_post(request, LinkStyle.PAGE)

    async def embed(self, request: web.Request) -> web.StreamResponse:
        return await self._single_post(request, LinkStyle.EMBED)

    async def _single_post(self, request: web.Request, style: LinkStyle) -> web.StreamResponse:
        post_id = int(request.match_info["post_id"])

        async def build(channel: ChannelInfo, room: RoomKey) -> tuple[Built, ShownPolls]:
            record = await self._post(channel.id, post_id)
            if record is None:
                return (404, self.renderer.error(404, channel.lang), HTML_TYPE), ()
            tallies, polls = await self._tallies([record], room)
            view = self.renderer.post_view(record, channel, style, tallies.get(record.id))
            if view is None:
                return (404, self.renderer.error(404, channel.lang), HTML_TYPE), ()
            if style is LinkStyle.EMBED:
                return (200, self.renderer.embed(channel, view), HTML_TYPE), polls
            return (200, self.renderer.post_page(channel, view), HTML_TYPE), polls

        security = EMBED_HEADERS if style is LinkStyle.EMBED else PAGE_HEADERS
        return await self._serve_channel(request, (style.value, post_id), build, security)

    async def atom(self, request: web.Request) -> web.StreamResponse:
        return await self._feed(request, "atom")

    async def json_feed(self, request: web.Request) -> web.StreamResponse:
        return await self._feed(request, "json")

    async def _feed(self, request: web.Request, kind: str) -> web.StreamResponse:
        async def build(channel: ChannelInfo, room: RoomKey) -> tuple[Built, ShownPolls]:
            # Feeds show polls without their votes (feed readers keep entries; counts would go stale).
            records = await self._posts(channel.id, limit=FEED_SIZE)
            views = self.renderer.post_views(records, channel, LinkStyle.FEED)
            public_url = self.renderer.public_url
            if kind == "atom":
                return (200, atom(channel, views, public_url), ATOM_TYPE), ()
            return (200, json_feed(channel, views, public_url), JSON_FEED_TYPE), ()

        # A feed shows no subscriber count: it changes only when the channel or its posts do.
        return await self._serve_channel(request, ("feed", kind), build, shows_facts=False)

    async def media(self, request: web.Request) -> web.StreamResponse:
        response = await self.proxy.serve(
            request, request.match_info["server"], request.match_info["media_id"]
        )
        return response if response is not None else self._not_found()

    async def stylesheet(self, request: web.Request) -> web.StreamResponse:
        etag = f'"{self.renderer.fingerprint}"'
        headers = {
            **PAGE_HEADERS,
            "Content-Type": CSS_TYPE,
            "Cache-Control": STYLESHEET_CACHE_CONTROL,
            "ETag": etag,
        }
        if _not_modified(request, etag, None):
            del headers["Content-Type"]
            return web.Response(status=304, headers=headers)
        return web.Response(body=self.renderer.stylesheet, headers=headers)


def _channel_info(row: Row[Any], domain: str) -> ChannelInfo:
    """A channel as pages show it, from a row of CHANNEL_STATE or PUBLIC_CHANNELS."""
    return ChannelInfo(
        id=row.id,
        handle=row.handle,
        title=row.title,
        about=row.about or "",
        verified=bool(row.verified),
        room_id=row.broadcast_room_id,
        created_at=row.created_at,
        domain=domain,
        avatar=row.avatar_url if parse_mxc(row.avatar_url) else None,
    )


def _record(row: Row[Any]) -> PostRecord:
    content = row.content if isinstance(row.content, dict) else None
    return PostRecord(row.id, row.event_type, content, row.relayed_event_id, row.created_at, row.edited_at)


def _not_modified(request: web.Request, etag: str, last_modified: datetime | None) -> bool:
    """RFC 9110 §13.2.2: If-None-Match wins over If-Modified-Since."""
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None:
        tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
        return "*" in tags or etag in tags
    since = request.if_modified_since
    return since is not None and last_modified is not None and last_modified <= since


PAGES: Final = web.AppKey("kanal_pages", Pages)


def add_page_routes(app: web.Application, ctx: Context) -> None:
    """Register the public pages on `app` (see the URL map above); `app[PAGES]` holds their state."""
    pages = Pages(ctx)
    app[PAGES] = pages
    router = app.router
    router.add_get("/", pages.directory)
    router.add_get("/static/kanal.css", pages.stylesheet)
    router.add_get("/c/{handle}", pages.channel)
    router.add_get("/c/{handle}/feed.atom", pages.atom)
    router.add_get("/c/{handle}/feed.json", pages.json_feed)
    router.add_get(f"/c/{{handle}}/{{post_id:{POST_ID}}}", pages.post)
    router.add_get(f"/c/{{handle}}/{{post_id:{POST_ID}}}/embed", pages.embed)
    router.add_get(f"/media/{{server:{SERVER_NAME}}}/{{media_id:{MEDIA_ID}}}", pages.media)

    async def close(_app: web.Application) -> None:
        await pages.close()

    app.on_cleanup.append(close)
