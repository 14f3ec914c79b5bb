"""The Application Service API (homeserver → us), served with aiohttp.

    homeserver ── PUT /_matrix/app/v1/transactions/{txnId} ──▶ auth ─▶ body limit ─▶ parse
        ─▶ dedupe (same id and same body: answer at once; in flight: wait for the first)
        ─▶ handler.handle_transaction(...)  (records or handles durably, or raises)
        ◀── 200 {} only after the handler returned; 500 otherwise, so the homeserver retries

Whenever the homeserver will count a delivery as failed (we answer an error, or cannot read the
body) or shows that it did (it sends again a transaction we already answered), the handler hears of
it first (`delivery_failed`): a homeserver recovering from a failed delivery may deliver later
transactions before an earlier one.

Every error, ours or aiohttp's, leaves as Matrix JSON from `_error_middleware`, the one place that
renders errors. Anything unexpected becomes a logged `500 M_UNKNOWN`. What a client does (a connection
dropped mid-body, malformed events) costs one short line, throttled per source (`clientlog`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from .clientlog import ThrottledLog, client_went_away, disconnects
from .errors import MatrixError
from .events import Event, EventParseError, parse_event
from .ids import RoomAlias, UserID
from .registration import Registration

log = logging.getLogger(__name__)

API_PREFIX = "/_matrix/app/v1"
# Transaction fields of the application-service extensions for end-to-end encryption (unstable names).
KEY_FIELDS = (
    "de.sorunome.msc2409.to_device",
    "org.matrix.msc3202.device_one_time_keys_count",
    "org.matrix.msc3202.device_unused_fallback_key_types",
    "org.matrix.msc3202.device_lists",
)
MAX_BODY_BYTES = 16 * 1024 * 1024  # Synapse sends ≤ 100 events of ≤ 64 KiB each, plus ephemeral data.
BODY_READ_TIMEOUT_S = 30.0  # a body trickled slower than this is abandoned, not waited on forever
MAX_REMEMBERED_TRANSACTIONS = 10_000
MAX_EPHEMERAL_PER_TRANSACTION = 10_000


@dataclass(frozen=True)
class Transaction:
    txn_id: str
    events: list[Event]
    """Events from other users, in the order the homeserver sent them."""
    echoes: list[Event]
    """Events sent by the service itself or its ghosts (useful to confirm our own writes)."""
    ephemeral: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0
    keys: dict[str, Any] = field(default_factory=dict)
    """What end-to-end encryption needs that is not an event: to-device messages (MSC2409),
    one-time-key counts, unused fallback keys and device-list changes (MSC3202), by their field names."""


def _content_digest(txn: Transaction) -> str:
    """What identifies a transaction's content across Synapse's retries.

    Synapse rebuilds a retried transaction (new `unsigned.age`, ephemeral data dropped), so the raw
    body differs; the event ids do not. Ids repeat after a Synapse restart with other events, so the
    id alone is not enough either.
    """
    event_ids = [e.event_id for e in (*txn.events, *txn.echoes)]
    basis: Any = event_ids if event_ids else (txn.ephemeral if not txn.keys else [txn.ephemeral, txn.keys])
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()


class TransactionHandler(Protocol):
    async def handle_transaction(self, txn: Transaction) -> None:
        """Record or handle the transaction durably; raise to make the homeserver retry it."""

    async def delivery_failed(self, why: str) -> None:
        """The homeserver counts (or counted) a delivery as failed: its recovery may reorder transactions."""

    async def query_user(self, user_id: UserID) -> bool:
        """True when the user exists (or now exists) in our namespace."""

    async def query_alias(self, alias: RoomAlias) -> bool:
        """True when a room for the alias exists (or now exists)."""


@dataclass
class ServerStats:
    transactions: int = 0
    duplicate_transactions: int = 0
    events: int = 0
    skipped_events: int = 0
    failed_transactions: int = 0


class TransactionDedupe:
    """Completed transactions keyed by (id, body digest), bounded, plus the ones in flight.

    The digest matters: Synapse on SQLite may reuse transaction ids after it restarts, so an id alone
    would make us drop new events. Handling is idempotent per event_id anyway; this is the fast path.
    """

    def __init__(self, limit: int = MAX_REMEMBERED_TRANSACTIONS) -> None:
        self._done: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._in_flight: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._limit = limit

    def is_done(self, key: tuple[str, str]) -> bool:
        return key in self._done

    def in_flight(self, key: tuple[str, str]) -> asyncio.Future[None] | None:
        return self._in_flight.get(key)

    def start(self, key: tuple[str, str]) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        return future

    def finish(self, key: tuple[str, str], error: BaseException | None) -> None:
        future = self._in_flight.pop(key)
        if error is None:
            self._done[key] = None
            while len(self._done) > self._limit:
                self._done.popitem(last=False)
            future.set_result(None)
        else:
            future.set_exception(error)
            future.exception()  # mark retrieved: nobody may be waiting


def _extract_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def _matrix_json(status: int, errcode: str, message: str) -> web.Response:
    return web.json_response({"errcode": errcode, "error": message}, status=status)


@web.middleware
async def _error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except MatrixError as exc:
        response = web.json_response(exc.to_json(), status=exc.status)
        if exc.status == 408:
            # The client is still trickling its body: answer, then drop the connection instead of
            # letting aiohttp read (and wait for) the rest.
            response.force_close()
            await response.prepare(request)
            await response.write_eof()
            if request.protocol is not None:
                request.protocol.force_close()
        return response
    except web.HTTPException as exc:
        if exc.status == 404:
            return _matrix_json(404, "M_UNRECOGNIZED", "Unrecognized request")
        if exc.status == 405:
            return _matrix_json(405, "M_UNRECOGNIZED", f"Method {request.method} is not allowed here")
        if exc.status == 413:
            return _matrix_json(413, "M_TOO_LARGE", exc.text or "Request body is too large")
        if exc.status < 400:
            raise
        return _matrix_json(exc.status, "M_UNKNOWN", exc.reason)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if client_went_away(request, exc):
            raise  # not our fault: `disconnects` notes it in one throttled line
        log.exception("Unexpected error while handling %s %s", request.method, request.path)
        return _matrix_json(500, "M_UNKNOWN", "Internal server error")


class AppServiceServer:
    """Routes, authentication and transaction dedupe for the Application Service API."""

    def __init__(self, registration: Registration, handler: TransactionHandler) -> None:
        self.registration = registration
        self.handler = handler
        self.stats = ServerStats()
        self._dedupe = TransactionDedupe()
        self._hs_token = registration.hs_token.encode()
        self.accepting = True
        self.clients = ThrottledLog(log)

    def make_app(self, *, client_max_size: int = MAX_BODY_BYTES) -> web.Application:
        middlewares: list[Middleware] = [disconnects(self.clients, logging.WARNING), _error_middleware]
        app = web.Application(client_max_size=client_max_size, middlewares=middlewares)
        app.add_routes(self.routes())
        return app

    def routes(self) -> list[web.RouteDef]:
        p = API_PREFIX
        return [
            web.put(p + "/transactions/{txn_id}", self._authed(self.on_transaction)),
            web.get(p + "/users/{user_id}", self._authed(self.on_query_user)),
            web.get(p + "/rooms/{alias}", self._authed(self.on_query_alias)),
            web.post(p + "/ping", self._authed(self.on_ping)),
            web.get(p + "/thirdparty/protocol/{protocol}", self._authed(self.on_thirdparty)),
            web.get(p + "/thirdparty/user/{protocol}", self._authed(self.on_thirdparty)),
            web.get(p + "/thirdparty/location/{protocol}", self._authed(self.on_thirdparty)),
            web.get(p + "/thirdparty/user", self._authed(self.on_thirdparty)),
            web.get(p + "/thirdparty/location", self._authed(self.on_thirdparty)),
        ]

    def _authed(
        self, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def wrapper(request: web.Request) -> web.StreamResponse:
            token = _extract_token(request)
            if token is None:
                # A token in the query string is deliberately not accepted: URLs end up in logs.
                raise MatrixError(401, "M_MISSING_TOKEN", "Missing access token")
            if not hmac.compare_digest(token.encode("utf-8", "surrogateescape"), self._hs_token):
                raise MatrixError(403, "M_FORBIDDEN", "Invalid access token")
            return await handler(request)

        return wrapper

    async def _read_json(self, request: web.Request, *, empty_is_object: bool = False) -> Any:
        try:
            async with asyncio.timeout(BODY_READ_TIMEOUT_S):
                body = await request.read()
        except TimeoutError:
            raise MatrixError(408, "M_UNKNOWN", "Request body was not received in time") from None
        if empty_is_object and not body.strip():
            return {}
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise MatrixError(400, "M_NOT_JSON", "Request body is not valid JSON") from None

    async def _delivery_failed(self, why: str) -> None:
        try:
            await self.handler.delivery_failed(why)
        except Exception:
            log.exception("Could not note a failed delivery (%s)", why)

    async def on_transaction(self, request: web.Request) -> web.Response:
        txn_id = request.match_info["txn_id"]
        if not self.accepting:
            await self._delivery_failed(f"transaction {txn_id} refused while shutting down")
            raise MatrixError(503, "M_UNKNOWN", "Shutting down; retry later")
        try:
            txn, problem = self._parse_transaction(txn_id, await self._read_json(request))
        except MatrixError as exc:
            await self._delivery_failed(f"transaction {txn_id} unreadable ({exc.errcode})")
            raise
        except ConnectionError:
            await self._delivery_failed(f"transaction {txn_id} cut off")
            raise
        if problem is not None:
            self.clients.log(
                logging.WARNING,
                request.remote or "?",
                "Transaction %s: skipped %d malformed event(s); the first: %s",
                txn_id,
                txn.skipped,
                problem,
            )
        key = (txn_id, _content_digest(txn))
        if self._dedupe.is_done(key):
            self.stats.duplicate_transactions += 1
            await self._delivery_failed(f"transaction {txn_id} sent again after it was answered")
            return web.json_response({})
        pending = self._dedupe.in_flight(key)
        if pending is not None:
            self.stats.duplicate_transactions += 1
            await self._delivery_failed(f"transaction {txn_id} sent again while being handled")
            await asyncio.shield(pending)
            return web.json_response({})
        self._dedupe.start(key)
        error: BaseException | None = None
        started = time.monotonic()
        try:
            await self.handler.handle_transaction(txn)
        except BaseException as exc:
            error = exc
            self.stats.failed_transactions += 1
            if isinstance(exc, Exception):
                log.exception("Transaction %s failed; the homeserver will retry it", txn_id)
                await self._delivery_failed(f"transaction {txn_id} failed")
                raise MatrixError(500, "M_UNKNOWN", "Transaction could not be handled; retry") from exc
            raise
        finally:
            self._dedupe.finish(key, error)
        self.stats.transactions += 1
        self.stats.events += len(txn.events) + len(txn.echoes)
        log.debug(
            "Transaction %s: %d events, %d echoes, %d skipped in %.1f ms",
            txn_id,
            len(txn.events),
            len(txn.echoes),
            txn.skipped,
            (time.monotonic() - started) * 1000,
        )
        return web.json_response({})

    def _parse_transaction(self, txn_id: str, data: Any) -> tuple[Transaction, str | None]:
        """The transaction, and what was wrong with its first malformed event (None: nothing)."""
        if not isinstance(data, dict) or not isinstance(data.get("events"), list):
            raise MatrixError(400, "M_BAD_JSON", "Body must be an object with an 'events' list")
        events: list[Event] = []
        echoes: list[Event] = []
        skipped = 0
        problem: str | None = None
        for index, raw in enumerate(data["events"]):
            try:
                event = parse_event(raw)
            except EventParseError as exc:
                skipped += 1
                if problem is None:
                    problem = f"#{index}: {exc}"
                continue
            (echoes if self.registration.is_our_user(event.sender) else events).append(event)
        self.stats.skipped_events += skipped
        ephemeral_raw = data.get("ephemeral", data.get("de.sorunome.msc2409.ephemeral", []))
        ephemeral = (
            [e for e in ephemeral_raw[:MAX_EPHEMERAL_PER_TRANSACTION] if isinstance(e, dict)]
            if isinstance(ephemeral_raw, list)
            else []
        )
        keys = {key: data[key] for key in KEY_FIELDS if isinstance(data.get(key), dict | list)}
        return Transaction(txn_id, events, echoes, ephemeral, skipped, keys), problem

    async def on_query_user(self, request: web.Request) -> web.Response:
        user_id = request.match_info["user_id"]
        if self.registration.is_our_user(user_id) and await self.handler.query_user(UserID(user_id)):
            return web.json_response({})
        raise MatrixError(404, "M_NOT_FOUND", "No such user")

    async def on_query_alias(self, request: web.Request) -> web.Response:
        alias = request.match_info["alias"]
        if self.registration.is_our_alias(alias) and await self.handler.query_alias(RoomAlias(alias)):
            return web.json_response({})
        raise MatrixError(404, "M_NOT_FOUND", "No such room alias")

    async def on_ping(self, request: web.Request) -> web.Response:
        data = await self._read_json(request, empty_is_object=True)  # the spec makes the body optional
        if not isinstance(data, dict):
            raise MatrixError(400, "M_BAD_JSON", "Body must be a JSON object")
        log.debug("Ping from the homeserver (transaction_id=%s)", str(data.get("transaction_id"))[:64])
        return web.json_response({})

    async def on_thirdparty(self, request: web.Request) -> web.Response:
        raise MatrixError(404, "M_UNRECOGNIZED", "This application service offers no third-party protocols")
