"""The client-server API as the application service: the bot, or any ghost in our namespace.

One pooled aiohttp session; identity assertion with `?user_id=`; the token travels only in the
`Authorization` header. Transient failures (429 honouring `retry_after_ms`, 5xx, connection errors)
are retried with bounded exponential backoff; anything else raises the mapped `MatrixRequestError`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp

from .errors import (
    MatrixConnectionError,
    MatrixRequestError,
    MLimitExceeded,
    MRoomInUse,
    MUserInUse,
    error_from_response,
)
from .ids import EventID, RoomAlias, RoomID, UserID, server_of

log = logging.getLogger(__name__)

DEFAULT_ATTEMPTS = 5
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0
REQUEST_TIMEOUT_S = 60.0
RECENT_SCAN_LIMIT = 100

RequestObserver = Callable[[str, int | None, float], None]


def q(segment: str) -> str:
    """Quote one path segment (ids contain `!`, `#`, `:` and `$`)."""
    return quote(segment, safe="")


class HomeserverClient:
    """Low-level requests to the homeserver on behalf of the application service."""

    def __init__(
        self,
        base_url: str,
        as_token: str,
        *,
        attempts: int = DEFAULT_ATTEMPTS,
        observer: RequestObserver | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._as_token = as_token
        self._session: aiohttp.ClientSession | None = None
        self.attempts = attempts
        self._observer = observer
        self._registered: set[str] = set()

    async def __aenter__(self) -> HomeserverClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
                headers={"Authorization": f"Bearer {self._as_token}"},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        user_id: str | None = None,
        query: dict[str, str] | None = None,
        attempts: int | None = None,
        token: str | None = None,
        array: bool = False,
        raw: tuple[bytes, str] | None = None,
    ) -> Any:
        """Send one request, retrying transient failures; return the decoded JSON body.

        `token` replaces the as_token (e.g. an admin token for Synapse's admin API); never logged.
        `array`: the endpoint answers with a JSON array (e.g. a room's full state), not an object.
        `raw`: (bytes, content type) sent as the body instead of `body`'s JSON (media uploads).
        """
        params = dict(query or {})
        if user_id is not None:
            params["user_id"] = user_id
        attempts = attempts or self.attempts
        for attempt in range(1, attempts + 1):
            started = time.monotonic()
            try:
                return await self._once(method, path, body, params, token, array, raw)
            except MatrixRequestError as exc:
                self._observe(method, exc.status, started)
                if not exc.retryable or attempt == attempts:
                    raise
                delay = self._delay(attempt, exc)
                log.warning("%s %s → %s %s; retrying in %.1f s", method, path, exc.status, exc.errcode, delay)
            except MatrixConnectionError as exc:
                self._observe(method, None, started)
                if attempt == attempts:
                    raise
                delay = self._delay(attempt, None)
                log.warning("%s %s: %s; retrying in %.1f s", method, path, exc, delay)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def _observe(self, method: str, status: int | None, started: float) -> None:
        if self._observer is not None:
            self._observer(method, status, time.monotonic() - started)

    @staticmethod
    def _delay(attempt: int, exc: MatrixRequestError | None) -> float:
        if isinstance(exc, MLimitExceeded) and exc.retry_after_ms is not None:
            return float(min(exc.retry_after_ms / 1000, BACKOFF_MAX_S))
        base: float = min(BACKOFF_BASE_S * 2.0 ** (attempt - 1), BACKOFF_MAX_S)
        return base * (0.75 + random.random() / 2)  # jitter so many workers do not retry in step

    async def _once(
        self,
        method: str,
        path: str,
        body: Any,
        params: dict[str, str],
        token: str | None = None,
        array: bool = False,
        raw: tuple[bytes, str] | None = None,
    ) -> Any:
        url = self.base_url + path
        started = time.monotonic()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        payload: dict[str, Any] = {"json": body}
        if raw is not None:
            payload = {"data": raw[0]}
            headers["Content-Type"] = raw[1]
        try:
            async with self._http().request(
                method, url, params=params, headers=headers or None, **payload
            ) as response:
                try:
                    data = await response.json(content_type=None)
                except ValueError:
                    data = None
                if response.status >= 400:
                    raise error_from_response(
                        response.status,
                        data if data is not None else f"non-JSON response ({response.status})",
                    )
                if not isinstance(data, list if array else dict):
                    raise MatrixRequestError(
                        response.status, "M_NOT_JSON", "the homeserver's answer is not a JSON object"
                    )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise MatrixConnectionError(f"cannot reach the homeserver at {self.base_url}: {exc!r}") from exc
        self._observe(method, response.status, started)
        return data

    # -- calls that do not act as a particular user ------------------------------------------------

    async def versions(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", "/_matrix/client/versions", attempts=1)
        return result

    async def ping(self, as_id: str, transaction_id: str) -> dict[str, Any]:
        """Ask the homeserver to ping us back: proves both directions and flushes queued transactions."""
        result: dict[str, Any] = await self.request(
            "POST",
            f"/_matrix/client/v1/appservice/{q(as_id)}/ping",
            body={"transaction_id": transaction_id},
            attempts=1,
        )
        return result

    async def download(self, server: str, media_id: str, *, user_id: str) -> tuple[bytes, str]:
        """One file of the authenticated media repository: (its bytes, its content type). Not retried."""
        url = f"{self.base_url}/_matrix/client/v1/media/download/{q(server)}/{q(media_id)}"
        started = time.monotonic()
        try:
            async with self._http().get(url, params={"user_id": user_id}) as response:
                body = await response.read()
                if response.status >= 400:
                    try:
                        data: Any = json.loads(body)
                    except ValueError:
                        data = f"non-JSON response ({response.status})"
                    self._observe("GET", response.status, started)
                    raise error_from_response(response.status, data)
                content_type = response.headers.get("Content-Type", "application/octet-stream")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise MatrixConnectionError(f"cannot reach the homeserver at {self.base_url}: {exc!r}") from exc
        self._observe("GET", response.status, started)
        return body, content_type

    def intent(self, user_id: UserID) -> Intent:
        return Intent(self, user_id)


class Intent:
    """Acts on the homeserver as one user of our namespace (the bot or a ghost)."""

    def __init__(self, client: HomeserverClient, user_id: UserID) -> None:
        self.client = client
        self.user_id = user_id

    async def _call(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        return await self.client.request(method, path, body=body, user_id=self.user_id, **kw)

    async def whoami(self) -> str:
        data = await self._call("GET", "/_matrix/client/v3/account/whoami")
        return str(data["user_id"])

    async def ensure_registered(self) -> None:
        """Register the user once; `M_USER_IN_USE` means it already exists, which is success."""
        if self.user_id in self.client._registered:
            return
        localpart = self.user_id[1:].split(":", 1)[0]
        try:
            await self.client.request(
                "POST",
                "/_matrix/client/v3/register",
                body={"type": "m.login.application_service", "username": localpart, "inhibit_login": True},
            )
        except MUserInUse:
            pass
        self.client._registered.add(self.user_id)

    async def set_displayname(self, name: str) -> None:
        await self._call(
            "PUT", f"/_matrix/client/v3/profile/{q(self.user_id)}/displayname", {"displayname": name}
        )

    async def set_avatar_url(self, url: str) -> None:
        """The user's profile picture (an `mxc://` URI; "" removes it)."""
        await self._call(
            "PUT", f"/_matrix/client/v3/profile/{q(self.user_id)}/avatar_url", {"avatar_url": url}
        )

    async def get_displayname(self, user_id: str) -> str | None:
        try:
            data = await self._call("GET", f"/_matrix/client/v3/profile/{q(user_id)}/displayname")
        except MatrixRequestError:
            return None
        name = data.get("displayname")
        return name if isinstance(name, str) else None

    async def create_room(self, body: dict[str, Any]) -> RoomID:
        data = await self._call("POST", "/_matrix/client/v3/createRoom", body)
        return RoomID(data["room_id"])

    async def create_room_once(
        self, body: dict[str, Any], alias_localpart: str, *, canonical: bool = False
    ) -> RoomID:
        """`createRoom` that a retry cannot repeat: the room is made with the alias
        `#<alias_localpart>:<our server>`, so an attempt after a lost answer (the client's own retry, or
        a later one) meets M_ROOM_IN_USE and gets the room the first attempt made.

        Unless `canonical`, the alias is not announced as the room's address (clients would show it
        instead of a name). Raises MRoomInUse when the alias is a room this user did not create.
        """
        request = {**body, "room_alias_name": alias_localpart}
        if not canonical:
            hidden = {"type": "m.room.canonical_alias", "state_key": "", "content": {}}
            request["initial_state"] = [*body.get("initial_state", []), hidden]
        try:
            return await self.create_room(request)
        except MRoomInUse:
            room_id = await self.resolve_alias(RoomAlias(f"#{alias_localpart}:{server_of(self.user_id)}"))
            if not await self.created(room_id):
                raise
            log.info("Room %s was created before (its answer was lost); using it", room_id)
            return room_id

    async def created(self, room_id: RoomID) -> bool:
        """Whether this user created the room (the sender of its `m.room.create`)."""
        path = f"/_matrix/client/v3/rooms/{q(room_id)}/state/m.room.create/"
        try:
            event = await self._call("GET", path, query={"format": "event"})
        except MatrixRequestError:
            return False  # not in the room, or no such room: not ours
        # The event (`format=event`); a homeserver that ignores the parameter answers its content,
        # which names the creator up to room version 10.
        creator = event.get("sender", event.get("creator"))
        return bool(creator == self.user_id)

    async def join(self, room: str) -> RoomID:
        data = await self._call("POST", f"/_matrix/client/v3/join/{q(room)}", {})
        return RoomID(data["room_id"])

    async def leave(self, room_id: RoomID, reason: str | None = None) -> None:
        await self._call(
            "POST", f"/_matrix/client/v3/rooms/{q(room_id)}/leave", {"reason": reason} if reason else {}
        )

    async def invite(self, room_id: RoomID, user_id: str, reason: str | None = None) -> None:
        body: dict[str, Any] = {"user_id": user_id}
        if reason:
            body["reason"] = reason
        await self._call("POST", f"/_matrix/client/v3/rooms/{q(room_id)}/invite", body)

    async def kick(self, room_id: RoomID, user_id: str, reason: str | None = None) -> None:
        body: dict[str, Any] = {"user_id": user_id}
        if reason:
            body["reason"] = reason
        await self._call("POST", f"/_matrix/client/v3/rooms/{q(room_id)}/kick", body)

    async def send(
        self, room_id: RoomID, event_type: str, content: dict[str, Any], txn_id: str, *, ts: int | None = None
    ) -> EventID:
        """Send with the caller's deterministic transaction id, so a retried send never duplicates.

        `ts` (milliseconds since the epoch): the event's `origin_server_ts`, through the Application
        Service API's timestamp massaging (an imported post keeps the time it was first published)."""
        path = f"/_matrix/client/v3/rooms/{q(room_id)}/send/{q(event_type)}/{q(txn_id)}"
        data = await self._call("PUT", path, content, query={"ts": str(ts)} if ts is not None else None)
        return EventID(data["event_id"])

    async def send_state(
        self, room_id: RoomID, event_type: str, content: dict[str, Any], state_key: str = ""
    ) -> EventID:
        path = f"/_matrix/client/v3/rooms/{q(room_id)}/state/{q(event_type)}/{q(state_key)}"
        data = await self._call("PUT", path, content)
        return EventID(data["event_id"])

    async def get_state(self, room_id: RoomID, event_type: str, state_key: str = "") -> dict[str, Any]:
        path = f"/_matrix/client/v3/rooms/{q(room_id)}/state/{q(event_type)}/{q(state_key)}"
        data: dict[str, Any] = await self._call("GET", path)
        return data

    async def find_state(self, room_id: RoomID, event_type: str, state_key: str = "") -> dict[str, Any] | None:
        """The state event's content, or None when the room has none (404)."""
        try:
            return await self.get_state(room_id, event_type, state_key)
        except MatrixRequestError as exc:
            if exc.status == 404:
                return None
            raise

    async def redact(
        self, room_id: RoomID, event_id: EventID, txn_id: str, reason: str | None = None
    ) -> EventID:
        path = f"/_matrix/client/v3/rooms/{q(room_id)}/redact/{q(event_id)}/{q(txn_id)}"
        data = await self._call("PUT", path, {"reason": reason} if reason else {})
        return EventID(data["event_id"])

    async def get_event(self, room_id: RoomID, event_id: EventID) -> dict[str, Any]:
        data: dict[str, Any] = await self._call(
            "GET", f"/_matrix/client/v3/rooms/{q(room_id)}/event/{q(event_id)}"
        )
        return data

    async def find_recent_event(
        self, room_id: RoomID, key: str, value: str, limit: int = RECENT_SCAN_LIMIT
    ) -> EventID | None:
        """Our own recent event whose content has `key: value`, scanning back at most `limit` events."""
        query = {"dir": "b", "limit": str(limit), "filter": json.dumps({"senders": [self.user_id]})}
        data = await self._call("GET", f"/_matrix/client/v3/rooms/{q(room_id)}/messages", query=query)
        for event in data.get("chunk", []):
            content = event.get("content")
            if isinstance(content, dict) and content.get(key) == value:
                return EventID(event["event_id"])
        return None

    async def upload(self, data: bytes, content_type: str, filename: str) -> str:
        """Store a file in the homeserver's media repository as this user; its `mxc://` URI."""
        answer = await self._call(
            "POST", "/_matrix/media/v3/upload", query={"filename": filename}, raw=(data, content_type)
        )
        uri = answer.get("content_uri")
        if not isinstance(uri, str) or not uri.startswith("mxc://"):
            raise MatrixRequestError(200, "M_UNKNOWN", "the media repository returned no content_uri")
        return uri

    async def download(self, mxc: str) -> tuple[bytes, str]:
        """A file of the media repository (`mxc://server/id`), as this user: (its bytes, its content type)."""
        server, _, media_id = mxc.removeprefix("mxc://").partition("/")
        if not server or not media_id:
            raise MatrixRequestError(400, "M_INVALID_PARAM", f"not a media URI: {mxc[:100]}")
        return await self.client.download(server, media_id, user_id=self.user_id)

    async def room_state(self, room_id: RoomID) -> list[dict[str, Any]]:
        """Every current state event of a room."""
        data: list[dict[str, Any]] = await self._call(
            "GET", f"/_matrix/client/v3/rooms/{q(room_id)}/state", array=True
        )
        return data

    async def members(self, room_id: RoomID, membership: str) -> list[dict[str, Any]]:
        """The member events of a room whose membership is `membership` (join, ban, …)."""
        path = f"/_matrix/client/v3/rooms/{q(room_id)}/members"
        data: dict[str, Any] = await self._call("GET", path, query={"membership": membership})
        chunk: list[dict[str, Any]] = data.get("chunk", [])
        return chunk

    async def joined_members(self, room_id: RoomID) -> dict[str, Any]:
        data = await self._call("GET", f"/_matrix/client/v3/rooms/{q(room_id)}/joined_members")
        joined: dict[str, Any] = data.get("joined", {})
        return joined

    async def resolve_alias(self, alias: RoomAlias) -> RoomID:
        data = await self._call("GET", f"/_matrix/client/v3/directory/room/{q(alias)}")
        return RoomID(data["room_id"])

    async def set_alias(self, alias: RoomAlias, room_id: RoomID) -> None:
        await self._call("PUT", f"/_matrix/client/v3/directory/room/{q(alias)}", {"room_id": room_id})

    async def delete_alias(self, alias: RoomAlias) -> None:
        await self._call("DELETE", f"/_matrix/client/v3/directory/room/{q(alias)}")

    async def set_directory_visibility(self, room_id: RoomID, visibility: str) -> None:
        await self._call(
            "PUT", f"/_matrix/client/v3/directory/list/room/{q(room_id)}", {"visibility": visibility}
        )
