"""The media proxy: the images, video posters and files that posts show, served by Kanal.

Readers' browsers never talk to the homeserver: pages make no third-party requests, and the
homeserver's authenticated media endpoints (`/_matrix/client/v1/media/download`) need a token that
readers do not have. Kanal fetches with its own token and keeps a copy on disk
(`<state directory>/media-cache`, folder 0700, files 0600, least recently used dropped past 512 MiB).

Only media that something public shows may be fetched (pages.py decides: a visible post of an active
channel, or an active channel's photo): never an arbitrary mxc, never a private room's media. That is
asked on every request, and browsers and proxies may keep a file only MEDIA_MAX_AGE_S before they ask
again (a cheap 304: the ETag and Last-Modified of a cached file never change), so a takedown reaches
their caches within minutes: the URL then answers 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import quote

import aiohttp
from aiohttp import web
from sqlalchemy import Text, bindparam, cast, select

from bridge.store.models import Channel, ChannelStatus, Post
from bridge.web.cache import Reader
from bridge.web.render import media_refs

log = logging.getLogger(__name__)

MEDIA_CACHE_DIR: Final = "media-cache"
MAX_CACHE_BYTES: Final = 512 * 1024 * 1024
# Larger files are passed through without being cached (and without range requests).
MAX_CACHED_ITEM_BYTES: Final = 64 * 1024 * 1024
CHUNK_BYTES: Final = 64 * 1024
MAX_PARALLEL_DOWNLOADS: Final = 4
UPSTREAM_TIMEOUT_S: Final = 60.0
MAX_CANDIDATE_POSTS: Final = 100
MEDIA_MAX_AGE_S: Final = 300  # how stale a taken-down file may stay in a reader's cache
DOWNLOAD_PATH: Final = "/_matrix/client/v1/media/download"
FALLBACK_TYPE: Final = "application/octet-stream"
MEDIA_HEADERS: Final = {
    "Cache-Control": f"public, max-age={MEDIA_MAX_AGE_S}, must-revalidate",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Opened on its own, a file is a sandboxed document that can run nothing.
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; media-src 'self'; sandbox",
}
_MIME: Final = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+\-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+\-]{0,63}")
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})


class MediaUnavailable(Exception):
    """The homeserver would not give us the file; `status` is what the reader gets."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class TooLarge(Exception):
    """Bigger than a cached item may be: the caller streams it through instead."""


def content_type_of(header: str | None) -> str:
    mime = (header or "").split(";", 1)[0].strip().lower()
    return mime if _MIME.fullmatch(mime) else FALLBACK_TYPE


def disposition_for(content_type: str) -> str:
    """Media a browser shows safely is inline; anything else (HTML, SVG, PDF, …) is a download."""
    major = content_type.split("/", 1)[0]
    inline = (
        major in ("image", "video", "audio") and content_type != "image/svg+xml"
    ) or content_type == FALLBACK_TYPE
    return "inline" if inline else "attachment"


def media_headers(content_type: str) -> dict[str, str]:
    return {
        **MEDIA_HEADERS,
        "Content-Type": content_type,
        "Content-Disposition": disposition_for(content_type),
    }


# Posts that may show a given mxc URI: the text match narrows, render.media_refs decides.
_CANDIDATE_POSTS: Final = (
    select(Post.event_type, Post.content)
    .join(Channel, Channel.id == Post.channel_id)
    .where(
        Channel.status == ChannelStatus.ACTIVE,
        Channel.private.is_(False),
        Channel.handle.is_not(None),
        Channel.broadcast_room_id.is_not(None),
        Post.redacted.is_(False),
        Post.relayed_event_id.is_not(None),
        cast(Post.content, Text).contains(bindparam("pattern"), escape="/"),
    )
    .order_by(Post.id.desc())
    .limit(MAX_CANDIDATE_POSTS)
)


async def referenced_by_visible_post(reader: Reader, mxc: str) -> bool:
    """Whether a visible post of an active channel shows `mxc` (see render.media_refs)."""
    pattern = mxc.replace("/", "//").replace("%", "/%").replace("_", "/_")
    rows = await reader.rows(_CANDIDATE_POSTS, {"pattern": pattern})
    return any(mxc in media_refs(row.event_type, row.content) for row in rows)


@dataclass(frozen=True)
class Cached:
    path: Path
    content_type: str


class MediaStore:
    """Files on disk, named by a hash of their mxc URI, evicted least recently used first.

    A file's access time records its use (and orders eviction, also after a restart); its
    modification time stays the download's, so the ETag and Last-Modified that aiohttp derives from
    it are stable and a reader's cache revalidates with a 304."""

    def __init__(self, root: Path, max_bytes: int = MAX_CACHE_BYTES) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._index: OrderedDict[str, int] | None = None  # name -> bytes on disk, oldest first
        self._loading = asyncio.Lock()
        self._bytes = 0

    @staticmethod
    def name_for(mxc: str) -> str:
        return hashlib.sha256(mxc.encode()).hexdigest()

    async def _ready(self) -> OrderedDict[str, int]:
        async with self._loading:
            if self._index is None:
                self._index = await asyncio.to_thread(self._scan)
                self._bytes = sum(self._index.values())
            return self._index

    def _scan(self) -> OrderedDict[str, int]:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        found: list[tuple[float, str, int]] = []
        for entry in os.scandir(self.root):
            if entry.name.startswith(".tmp-"):
                os.unlink(entry.path)  # left by a crash mid-write
            elif entry.is_file() and len(entry.name) == 64:
                stat = entry.stat()
                found.append((max(stat.st_atime, stat.st_mtime), entry.name, stat.st_size))
        return OrderedDict((name, size) for _, name, size in sorted(found))

    async def lookup(self, mxc: str) -> Cached | None:
        index = await self._ready()
        name = self.name_for(mxc)
        if name not in index:
            return None
        try:
            content_type = await asyncio.to_thread(self._touch, name)
        except OSError:
            self._bytes -= index.pop(name, 0)
            return None
        index.move_to_end(name)
        return Cached(self.root / name, content_type)

    def _touch(self, name: str) -> str:
        path = self.root / name
        # The LRU order survives a restart; the modification time (the ETag) does not change.
        os.utime(path, ns=(time.time_ns(), path.stat().st_mtime_ns))
        return (self.root / f"{name}.type").read_text(encoding="ascii")

    async def store(self, mxc: str, body: bytes, content_type: str) -> Cached:
        index = await self._ready()
        name = self.name_for(mxc)
        await asyncio.to_thread(self._write, name, body, content_type)
        self._bytes += len(body) - index.pop(name, 0)
        index[name] = len(body)
        evicted: list[str] = []
        while self._bytes > self.max_bytes and len(index) > 1:
            old, size = index.popitem(last=False)
            self._bytes -= size
            evicted.append(old)
        if evicted:
            await asyncio.to_thread(self._remove, evicted)
        return Cached(self.root / name, content_type)

    def _write(self, name: str, body: bytes, content_type: str) -> None:
        for final, data in ((f"{name}.type", content_type.encode("ascii")), (name, body)):
            temporary = self.root / f".tmp-{secrets.token_hex(8)}"
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
            os.replace(temporary, self.root / final)

    def _remove(self, names: list[str]) -> None:
        for name in names:
            for path in (self.root / name, self.root / f"{name}.type"):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


class MediaProxy:
    """Serves `/media/<server>/<id>` for the media `allowed` admits."""

    def __init__(
        self,
        homeserver_url: str,
        as_token: str,
        store: MediaStore,
        allowed: Callable[[str], Awaitable[bool]],
    ) -> None:
        self._base = homeserver_url.rstrip("/")
        self._token = as_token
        self.store = store
        self._allowed = allowed
        self._http: aiohttp.ClientSession | None = None
        self._downloads: dict[str, asyncio.Task[Cached]] = {}
        self._parallel = asyncio.Semaphore(MAX_PARALLEL_DOWNLOADS)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=UPSTREAM_TIMEOUT_S))
        return self._http

    async def serve(self, request: web.Request, server: str, media_id: str) -> web.StreamResponse | None:
        """The file, or None when it may not or cannot be served (the caller answers 404)."""
        mxc = f"mxc://{server}/{media_id}"
        if not await self._allowed(mxc):
            return None
        cached = await self.store.lookup(mxc)
        if cached is None:
            try:
                cached = await self._download_once(mxc, server, media_id)
            except TooLarge:
                return await self._stream(request, server, media_id)
            except MediaUnavailable as exc:
                log.info("media %s unavailable: %s", mxc, exc)
                return None
        return web.FileResponse(cached.path, headers=media_headers(cached.content_type))

    async def _download_once(self, mxc: str, server: str, media_id: str) -> Cached:
        task = self._downloads.get(mxc)
        if task is None:
            task = asyncio.ensure_future(self._download(mxc, server, media_id))
            self._downloads[mxc] = task
            task.add_done_callback(lambda _: self._downloads.pop(mxc, None))
        return await asyncio.shield(task)

    def _url(self, server: str, media_id: str) -> str:
        return f"{self._base}{DOWNLOAD_PATH}/{quote(server, safe='')}/{quote(media_id, safe='')}"

    async def _get(self, server: str, media_id: str) -> aiohttp.ClientResponse:
        """The homeserver's answer (status 200), following one redirect without our token."""
        headers = {"Authorization": f"Bearer {self._token}"}
        try:
            response = await self._session().get(
                self._url(server, media_id), headers=headers, allow_redirects=False
            )
            location = response.headers.get("Location", "")
            if response.status in _REDIRECTS and location.startswith(("https://", "http://")):
                response.release()
                response = await self._session().get(location, allow_redirects=False)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise MediaUnavailable(502, f"cannot reach the homeserver: {exc!r}") from exc
        if response.status != 200:
            response.release()
            raise MediaUnavailable(
                404 if response.status == 404 else 502, f"homeserver answered {response.status}"
            )
        return response

    async def _download(self, mxc: str, server: str, media_id: str) -> Cached:
        async with self._parallel:
            response = await self._get(server, media_id)
            try:
                if (response.content_length or 0) > MAX_CACHED_ITEM_BYTES:
                    raise TooLarge
                body = bytearray()
                async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                    body += chunk
                    if len(body) > MAX_CACHED_ITEM_BYTES:
                        raise TooLarge
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise MediaUnavailable(502, f"download interrupted: {exc!r}") from exc
            finally:
                response.release()
            content_type = content_type_of(response.headers.get("Content-Type"))
        return await self.store.store(mxc, bytes(body), content_type)

    async def _stream(self, request: web.Request, server: str, media_id: str) -> web.StreamResponse | None:
        try:
            upstream = await self._get(server, media_id)
        except MediaUnavailable:
            return None
        try:
            response = web.StreamResponse(
                headers=media_headers(content_type_of(upstream.headers.get("Content-Type")))
            )
            if upstream.content_length is not None:
                response.content_length = upstream.content_length
            await response.prepare(request)
            async for chunk in upstream.content.iter_chunked(CHUNK_BYTES):
                await response.write(chunk)
            await response.write_eof()
            return response
        finally:
            upstream.release()
