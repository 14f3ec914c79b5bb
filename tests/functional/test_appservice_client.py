"""`HomeserverClient` and `Intent` against a fake homeserver that is a real aiohttp server on loopback."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

import appservice.client as client_module
from appservice.client import HomeserverClient
from appservice.errors import (
    MatrixConnectionError,
    MatrixRequestError,
    MForbidden,
    MLimitExceeded,
    MNotFound,
    MRoomInUse,
    MUnknownToken,
)
from appservice.ids import EventID, RoomID, UserID

from .conftest import FakeHomeserver, Seen

AS_TOKEN = "as-token-that-must-never-appear-in-a-url"
GHOST = UserID("@kanal_news:example.org")
BOT = UserID("@kanal:example.org")
ROOM = RoomID("!room:example.org")
V3 = "/_matrix/client/v3"
SEND = f"{V3}/rooms/{ROOM}/send/m.room.message"
REGISTER = f"{V3}/register"
WHOAMI = f"{V3}/account/whoami"

pytestmark = pytest.mark.usefixtures("fast_backoff")

Observed = list[tuple[str, int | None, float]]


@pytest.fixture
def observed() -> Observed:
    return []


@pytest.fixture
async def hs(homeserver: FakeHomeserver, observed: Observed) -> AsyncIterator[HomeserverClient]:
    async with HomeserverClient(
        homeserver.url + "/", AS_TOKEN, observer=lambda *args: observed.append(args)
    ) as client:
        yield client


def assert_token_only_in_header(seen: list[Seen]) -> None:
    assert seen, "the fake homeserver saw no request"
    for request in seen:
        assert request.headers.get("Authorization") == f"Bearer {AS_TOKEN}"
        assert "access_token" not in request.query
        assert AS_TOKEN not in request.raw_path


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port that is bound but not listening, so connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        yield port


# -- the token and the identity ---------------------------------------------------------------------------


async def test_token_travels_only_in_the_authorization_header(
    hs: HomeserverClient, homeserver: FakeHomeserver
) -> None:
    homeserver.on("GET", "/_matrix/client/versions", (200, {"versions": ["v1.11"]}))
    homeserver.on("GET", WHOAMI, (200, {"user_id": GHOST}))
    homeserver.on("PUT", f"{SEND}/t1", (200, {"event_id": "$sent"}))
    homeserver.on("POST", REGISTER, (200, {"user_id": GHOST}))
    assert await hs.versions() == {"versions": ["v1.11"]}
    intent = hs.intent(GHOST)
    assert await intent.whoami() == GHOST
    await intent.send(ROOM, "m.room.message", {"msgtype": "m.text", "body": "hi"}, "t1")
    await intent.ensure_registered()
    assert len(homeserver.seen) == 4
    assert_token_only_in_header(homeserver.seen)


async def test_intent_asserts_its_identity_with_user_id(
    hs: HomeserverClient, homeserver: FakeHomeserver
) -> None:
    homeserver.on("GET", WHOAMI, (200, {"user_id": GHOST}))
    homeserver.on("PUT", f"{V3}/profile/{GHOST}/displayname", (200, {}))
    homeserver.on("POST", f"{V3}/join/#news:example.org", (200, {"room_id": ROOM}))
    intent = hs.intent(GHOST)
    await intent.whoami()
    await intent.set_displayname("Daily News")
    assert await intent.join("#news:example.org") == ROOM
    assert [s.query for s in homeserver.seen] == [{"user_id": GHOST}] * 3
    assert homeserver.seen[1].body == {"displayname": "Daily News"}
    assert_token_only_in_header(homeserver.seen)


async def test_calls_that_are_not_as_a_user_carry_no_user_id(
    hs: HomeserverClient, homeserver: FakeHomeserver
) -> None:
    homeserver.on("GET", "/_matrix/client/versions", (200, {"versions": []}))
    homeserver.on("POST", "/_matrix/client/v1/appservice/kanal/ping", (200, {"duration_ms": 3}))
    await hs.versions()
    assert await hs.ping("kanal", "ping-1") == {"duration_ms": 3}
    assert [s.query for s in homeserver.seen] == [{}, {}]
    assert homeserver.seen[1].body == {"transaction_id": "ping-1"}


async def test_ids_with_reserved_characters_travel_as_single_path_segments(
    hs: HomeserverClient, homeserver: FakeHomeserver
) -> None:
    # Room version 3 event ids are standard base64: they can hold `/` and `+`.
    event_id = EventID("$acR1l0raoZnm60CBwAVgqbZqoO/mYU81xysh1u7XcJk+")
    homeserver.on("PUT", f"{V3}/rooms/{ROOM}/redact/{event_id}/txn/1?#", (200, {"event_id": "$r"}))
    await hs.intent(GHOST).redact(ROOM, event_id, "txn/1?#", reason="spam")
    [seen] = homeserver.seen
    assert seen.segments[-5:] == ["rooms", ROOM, "redact", event_id, "txn/1?#"]
    assert seen.body == {"reason": "spam"}
    assert seen.query == {"user_id": GHOST}


# -- retries --------------------------------------------------------------------------------------------


async def test_429_is_retried_after_retry_after_ms(
    hs: HomeserverClient, homeserver: FakeHomeserver, observed: Observed
) -> None:
    homeserver.on(
        "PUT",
        f"{SEND}/t1",
        (429, {"errcode": "M_LIMIT_EXCEEDED", "error": "Too many requests", "retry_after_ms": 300}),
        (200, {"event_id": "$sent"}),
    )
    event_id = await hs.intent(GHOST).send(ROOM, "m.room.message", {"body": "hi"}, "t1")
    assert event_id == "$sent"
    first, second = homeserver.seen
    # BACKOFF_BASE_S is 1 ms here, so only retry_after_ms explains the wait.
    assert second.at - first.at >= 0.29
    assert [status for _m, status, _d in observed] == [429, 200]


async def test_429_wait_is_capped(
    hs: HomeserverClient, homeserver: FakeHomeserver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "BACKOFF_MAX_S", 0.05)
    homeserver.on(
        "GET",
        WHOAMI,
        (429, {"errcode": "M_LIMIT_EXCEEDED", "error": "slow down", "retry_after_ms": 3_600_000}),
        (200, {"user_id": GHOST}),
    )
    started = time.monotonic()
    assert await asyncio.wait_for(hs.intent(GHOST).whoami(), 10) == GHOST
    assert time.monotonic() - started < 10


async def test_429_after_the_last_attempt_raises_limit_exceeded(
    homeserver: FakeHomeserver,
) -> None:
    homeserver.on("GET", WHOAMI, (429, {"errcode": "M_LIMIT_EXCEEDED", "error": "no", "retry_after_ms": 1}))
    async with HomeserverClient(homeserver.url, AS_TOKEN, attempts=3) as hs:
        with pytest.raises(MLimitExceeded) as caught:
            await hs.intent(GHOST).whoami()
    assert caught.value.retry_after_ms == 1
    assert caught.value.status == 429
    assert len(homeserver.seen) == 3


@pytest.mark.parametrize("failure", [500, 502, 503, 504])
async def test_5xx_is_retried_then_succeeds(
    hs: HomeserverClient, homeserver: FakeHomeserver, failure: int
) -> None:
    homeserver.on(
        "GET",
        WHOAMI,
        (failure, {"errcode": "M_UNKNOWN", "error": "Internal server error"}),
        (failure, "<html><body>Bad gateway</body></html>"),
        (200, {"user_id": GHOST}),
    )
    assert await hs.intent(GHOST).whoami() == GHOST
    assert len(homeserver.seen) == 3
    assert_token_only_in_header(homeserver.seen)


async def test_5xx_on_every_attempt_raises_after_the_attempts(homeserver: FakeHomeserver) -> None:
    homeserver.on("GET", WHOAMI, (502, "<html>Bad gateway</html>"))
    async with HomeserverClient(homeserver.url, AS_TOKEN, attempts=3) as hs:
        with pytest.raises(MatrixRequestError) as caught:
            await hs.intent(GHOST).whoami()
    assert caught.value.status == 502
    assert caught.value.errcode == "M_UNKNOWN"
    assert len(homeserver.seen) == 3


async def test_single_attempt_calls_are_not_retried(hs: HomeserverClient, homeserver: FakeHomeserver) -> None:
    homeserver.on("GET", "/_matrix/client/versions", (503, {"errcode": "M_UNKNOWN", "error": "starting"}))
    with pytest.raises(MatrixRequestError):
        await hs.versions()
    assert len(homeserver.seen) == 1


async def test_retried_send_repeats_the_same_transaction_id(
    hs: HomeserverClient, homeserver: FakeHomeserver
) -> None:
    homeserver.on(
        "PUT",
        f"{SEND}/kanal.post.42",
        (500, {"errcode": "M_UNKNOWN", "error": "oops"}),
        (200, {"event_id": "$once"}),
    )
    content = {"msgtype": "m.text", "body": "hello"}
    assert await hs.intent(GHOST).send(ROOM, "m.room.message", content, "kanal.post.42") == "$once"
    first, second = homeserver.seen
    assert first.segments == second.segments
    assert first.segments[-3:] == ["send", "m.room.message", "kanal.post.42"]
    assert first.body == second.body == content
    assert first.query == second.query == {"user_id": GHOST}


async def test_connection_refused_raises_connection_error_after_the_attempts(
    refused_port: int, observed: Observed
) -> None:
    base = f"http://127.0.0.1:{refused_port}"
    async with HomeserverClient(base, AS_TOKEN, attempts=3, observer=lambda *a: observed.append(a)) as hs:
        with pytest.raises(MatrixConnectionError) as caught:
            await hs.intent(GHOST).whoami()
    assert isinstance(caught.value.__cause__, aiohttp.ClientConnectionError)
    assert base in str(caught.value)
    assert AS_TOKEN not in str(caught.value)
    assert [status for _m, status, _d in observed] == [None, None, None]


async def test_connection_error_then_success_is_retried(
    homeserver: FakeHomeserver, refused_port: int, observed: Observed
) -> None:
    homeserver.on("GET", WHOAMI, (200, {"user_id": GHOST}))

    def homeserver_comes_back(method: str, status: int | None, duration: float) -> None:
        observed.append((method, status, duration))
        client.base_url = homeserver.url

    client = HomeserverClient(
        f"http://127.0.0.1:{refused_port}", AS_TOKEN, attempts=3, observer=homeserver_comes_back
    )
    async with client:
        assert await client.intent(GHOST).whoami() == GHOST
    assert [status for _m, status, _d in observed] == [None, 200]
    assert len(homeserver.seen) == 1


async def test_timeout_raises_connection_error(
    homeserver: FakeHomeserver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "REQUEST_TIMEOUT_S", 0.2)
    homeserver.stall_paths.add(WHOAMI)
    async with HomeserverClient(homeserver.url, AS_TOKEN, attempts=2) as hs:
        with pytest.raises(MatrixConnectionError):
            await asyncio.wait_for(hs.intent(GHOST).whoami(), 10)
    assert len(homeserver.seen) == 2


# -- errors ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "errcode", "cls"),
    [
        (403, "M_FORBIDDEN", MForbidden),
        (404, "M_NOT_FOUND", MNotFound),
        (401, "M_UNKNOWN_TOKEN", MUnknownToken),
    ],
)
async def test_4xx_raises_the_mapped_class_without_retrying(
    hs: HomeserverClient, homeserver: FakeHomeserver, status: int, errcode: str, cls: type[MatrixRequestError]
) -> None:
    homeserver.on("GET", WHOAMI, (status, {"errcode": errcode, "error": "no"}))
    with pytest.raises(cls) as caught:
        await hs.intent(GHOST).whoami()
    assert (caught.value.status, caught.value.errcode, caught.value.message) == (status, errcode, "no")
    assert not caught.value.retryable
    assert len(homeserver.seen) == 1


async def test_unknown_errcode_is_kept_with_its_extra_fields(
    hs: HomeserverClient, homeserver: FakeHomeserver
) -> None:
    body = {"errcode": "ORG.EXAMPLE.M_WEIRD", "error": "weird", "org.example.detail": [1, 2]}
    homeserver.on("PUT", f"{SEND}/t1", (400, body))
    with pytest.raises(MatrixRequestError) as caught:
        await hs.intent(GHOST).send(ROOM, "m.room.message", {}, "t1")
    assert type(caught.value) is MatrixRequestError
    assert caught.value.errcode == "ORG.EXAMPLE.M_WEIRD"
    assert caught.value.to_json() == body
    assert len(homeserver.seen) == 1


async def test_non_json_4xx_is_an_m_unknown_request_error(
    hs: HomeserverClient, homeserver: FakeHomeserver
) -> None:
    homeserver.on("GET", WHOAMI, (400, "<html>Bad request</html>"))
    with pytest.raises(MatrixRequestError) as caught:
        await hs.intent(GHOST).whoami()
    assert (caught.value.status, caught.value.errcode) == (400, "M_UNKNOWN")
    assert len(homeserver.seen) == 1


async def test_2xx_that_is_not_json_raises_a_matrix_error(
    hs: HomeserverClient, homeserver: FakeHomeserver
) -> None:
    homeserver.on("PUT", f"{SEND}/t1", (200, "<html>captive portal</html>"))
    with pytest.raises((MatrixRequestError, MatrixConnectionError)):
        await hs.intent(GHOST).send(ROOM, "m.room.message", {}, "t1")


# -- registration ----------------------------------------------------------------------------------------


async def test_ensure_registered_treats_user_in_use_as_success_and_registers_once(
    hs: HomeserverClient, homeserver: FakeHomeserver
) -> None:
    homeserver.on("POST", REGISTER, (400, {"errcode": "M_USER_IN_USE", "error": "User ID already taken."}))
    intent = hs.intent(GHOST)
    await intent.ensure_registered()
    await intent.ensure_registered()
    await hs.intent(GHOST).ensure_registered()  # a fresh Intent for the same user shares the memory
    [seen] = homeserver.seen
    assert seen.body == {
        "type": "m.login.application_service",
        "username": "kanal_news",
        "inhibit_login": True,
    }
    # Registering is done as the application service itself: the user does not exist yet.
    assert seen.query == {}
    assert_token_only_in_header(homeserver.seen)


async def test_ensure_registered_registers_a_new_user_once_per_user(
    hs: HomeserverClient, homeserver: FakeHomeserver
) -> None:
    homeserver.on("POST", REGISTER, (200, {"user_id": GHOST}))
    await hs.intent(GHOST).ensure_registered()
    await hs.intent(GHOST).ensure_registered()
    await hs.intent(BOT).ensure_registered()
    assert [s.body["username"] for s in homeserver.seen] == ["kanal_news", "kanal"]


async def test_ensure_registered_failure_is_raised_and_not_remembered(
    hs: HomeserverClient, homeserver: FakeHomeserver
) -> None:
    homeserver.on(
        "POST",
        REGISTER,
        (400, {"errcode": "M_EXCLUSIVE", "error": "This user ID is reserved by an application service."}),
        (200, {"user_id": GHOST}),
    )
    with pytest.raises(MatrixRequestError) as caught:
        await hs.intent(GHOST).ensure_registered()
    assert caught.value.errcode == "M_EXCLUSIVE"
    await hs.intent(GHOST).ensure_registered()
    await hs.intent(GHOST).ensure_registered()
    assert len(homeserver.seen) == 2


async def test_ensure_registered_survives_a_transient_failure(
    hs: HomeserverClient, homeserver: FakeHomeserver
) -> None:
    homeserver.on(
        "POST",
        REGISTER,
        (502, "<html>Bad gateway</html>"),
        (400, {"errcode": "M_USER_IN_USE", "error": "taken"}),
    )
    await hs.intent(GHOST).ensure_registered()
    assert len(homeserver.seen) == 2


# -- the observer ---------------------------------------------------------------------------------------


async def test_observer_sees_every_attempt(
    hs: HomeserverClient, homeserver: FakeHomeserver, observed: Observed
) -> None:
    homeserver.on(
        "PUT",
        f"{SEND}/t1",
        (503, {"errcode": "M_UNKNOWN", "error": "busy"}),
        (200, {"event_id": "$e"}),
    )
    await hs.intent(GHOST).send(ROOM, "m.room.message", {}, "t1")
    assert [(method, status) for method, status, _d in observed] == [("PUT", 503), ("PUT", 200)]
    assert all(duration >= 0 for *_x, duration in observed)


# -- createRoom once ------------------------------------------------------------------------------------------

CREATE_ROOM = f"{V3}/createRoom"
MARKER = "#_kanal.staff.x:example.org"
IN_USE = (400, {"errcode": "M_ROOM_IN_USE", "error": "Room alias already taken"})


async def test_create_room_once_finds_the_room_an_earlier_attempt_made(
    hs: HomeserverClient, homeserver: FakeHomeserver
) -> None:
    homeserver.on("POST", CREATE_ROOM, IN_USE)
    homeserver.on("GET", f"{V3}/directory/room/{MARKER}", (200, {"room_id": ROOM}))
    homeserver.on("GET", f"{V3}/rooms/{ROOM}/state/m.room.create/", (200, {"sender": BOT, "content": {}}))

    room = await hs.intent(BOT).create_room_once({"preset": "private_chat"}, "_kanal.staff.x")

    assert room == ROOM
    (create,) = homeserver.requests_to("POST", CREATE_ROOM)
    assert create.body["room_alias_name"] == "_kanal.staff.x"
    # The marker is not announced as the room's address.
    assert {"type": "m.room.canonical_alias", "state_key": "", "content": {}} in create.body["initial_state"]
    (state,) = homeserver.requests_to("GET", f"{V3}/rooms/{ROOM}/state/m.room.create/")
    assert state.query == {"format": "event", "user_id": BOT}


async def test_create_room_once_refuses_a_marker_someone_else_made(
    hs: HomeserverClient, homeserver: FakeHomeserver
) -> None:
    homeserver.on("POST", CREATE_ROOM, IN_USE)
    homeserver.on("GET", f"{V3}/directory/room/{MARKER}", (200, {"room_id": ROOM}))
    homeserver.on(
        "GET", f"{V3}/rooms/{ROOM}/state/m.room.create/", (200, {"sender": "@squatter:example.org", "content": {}})
    )

    with pytest.raises(MRoomInUse):
        await hs.intent(BOT).create_room_once({"preset": "private_chat"}, "_kanal.staff.x")
