"""The Application Service API served by `AppServiceServer.make_app()`, over real loopback HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

import appservice.server as server_module
from appservice.registration import Registration
from appservice.server import AppServiceServer, TransactionDedupe
from tests.support import drop_mid_body

from .conftest import (
    ALICE,
    API,
    BOT,
    DOMAIN,
    GHOST,
    RecordingHandler,
    make_event,
    raw_request,
    read_response,
)

Client = TestClient[web.Request, web.Application]

# (method, path, JSON body, status once authenticated, errcode once authenticated)
ENDPOINTS: list[tuple[str, str, Any, int, str | None]] = [
    ("PUT", f"{API}/transactions/1", {"events": []}, 200, None),
    ("GET", f"{API}/users/%40kanal_news%3Aexample.org", None, 200, None),
    ("GET", f"{API}/rooms/%23news%3Aexample.org", None, 200, None),
    ("POST", f"{API}/ping", {"transaction_id": "t1"}, 200, None),
    ("GET", f"{API}/thirdparty/protocol/irc", None, 404, "M_UNRECOGNIZED"),
    ("GET", f"{API}/thirdparty/user/irc", None, 404, "M_UNRECOGNIZED"),
    ("GET", f"{API}/thirdparty/location/irc", None, 404, "M_UNRECOGNIZED"),
    ("GET", f"{API}/thirdparty/user", None, 404, "M_UNRECOGNIZED"),
    ("GET", f"{API}/thirdparty/location", None, 404, "M_UNRECOGNIZED"),
]
ENDPOINT_IDS = [f"{method} {path.removeprefix(API)}" for method, path, *_ in ENDPOINTS]


async def matrix_error(response: Any, status: int, errcode: str) -> dict[str, Any]:
    """Assert a Matrix error response: status, JSON content type, `errcode` and a string `error`."""
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body: dict[str, Any] = await response.json()
    assert body["errcode"] == errcode
    assert isinstance(body["error"], str) and body["error"]
    return body


async def ok(response: Any) -> None:
    assert response.status == 200, await response.text()
    assert response.content_type == "application/json"
    assert await response.json() == {}


def txn_body(*events: Any, **extra: Any) -> bytes:
    return json.dumps({"events": list(events), **extra}).encode()


# -- authentication ---------------------------------------------------------------------------------


@pytest.fixture
def answering_handler(handler: RecordingHandler) -> RecordingHandler:
    handler.users.add(GHOST)
    handler.aliases.add(f"#news:{DOMAIN}")
    return handler


def _calls(handler: RecordingHandler) -> int:
    return handler.calls + len(handler.user_queries) + len(handler.alias_queries)


@pytest.mark.parametrize(("method", "path", "body", "status", "errcode"), ENDPOINTS, ids=ENDPOINT_IDS)
async def test_missing_token_is_401_and_reaches_no_handler(
    client: Client,
    answering_handler: RecordingHandler,
    method: str,
    path: str,
    body: Any,
    status: int,
    errcode: str | None,
) -> None:
    response = await client.request(method, path, json=body)
    await matrix_error(response, 401, "M_MISSING_TOKEN")
    assert _calls(answering_handler) == 0


@pytest.mark.parametrize(("method", "path", "body", "status", "errcode"), ENDPOINTS, ids=ENDPOINT_IDS)
@pytest.mark.parametrize("wrong", ["wrong", "x" * 43, "{token}x", "{token_prefix}"])
async def test_wrong_token_is_403_and_reaches_no_handler(
    client: Client,
    registration: Registration,
    answering_handler: RecordingHandler,
    wrong: str,
    method: str,
    path: str,
    body: Any,
    status: int,
    errcode: str | None,
) -> None:
    token = wrong.format(token=registration.hs_token, token_prefix=registration.hs_token[:-1])
    response = await client.request(method, path, json=body, headers={"Authorization": f"Bearer {token}"})
    await matrix_error(response, 403, "M_FORBIDDEN")
    assert _calls(answering_handler) == 0


@pytest.mark.parametrize(("method", "path", "body", "status", "errcode"), ENDPOINTS, ids=ENDPOINT_IDS)
async def test_token_in_query_string_only_is_not_accepted(
    client: Client,
    registration: Registration,
    answering_handler: RecordingHandler,
    method: str,
    path: str,
    body: Any,
    status: int,
    errcode: str | None,
) -> None:
    response = await client.request(method, path, json=body, params={"access_token": registration.hs_token})
    await matrix_error(response, 401, "M_MISSING_TOKEN")
    assert _calls(answering_handler) == 0


@pytest.mark.parametrize(("method", "path", "body", "status", "errcode"), ENDPOINTS, ids=ENDPOINT_IDS)
@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
async def test_correct_token_with_any_case_of_bearer_is_accepted(
    client: Client,
    registration: Registration,
    answering_handler: RecordingHandler,
    scheme: str,
    method: str,
    path: str,
    body: Any,
    status: int,
    errcode: str | None,
) -> None:
    headers = {"Authorization": f"{scheme} {registration.hs_token}"}
    response = await client.request(method, path, json=body, headers=headers)
    if errcode is None:
        await ok(response)
    else:
        await matrix_error(response, status, errcode)


async def test_header_token_wins_over_a_correct_query_token(
    client: Client, registration: Registration, handler: RecordingHandler
) -> None:
    response = await client.put(
        f"{API}/transactions/1",
        data=txn_body(make_event(1)),
        params={"access_token": registration.hs_token},
        headers={"Authorization": "Bearer wrong"},
    )
    await matrix_error(response, 403, "M_FORBIDDEN")
    assert handler.calls == 0


@pytest.mark.parametrize(
    "header", ["Basic {token}", "Bearer", "Bearer ", "{token}", "Token {token}", "Bearer{token}"]
)
async def test_other_authorization_schemes_count_as_missing(
    client: Client, registration: Registration, handler: RecordingHandler, header: str
) -> None:
    headers = {"Authorization": header.format(token=registration.hs_token)}
    response = await client.put(f"{API}/transactions/1", data=txn_body(make_event(1)), headers=headers)
    await matrix_error(response, 401, "M_MISSING_TOKEN")
    assert handler.calls == 0


async def test_non_utf8_token_bytes_are_403_not_500(client: Client, handler: RecordingHandler) -> None:
    assert client.server.port is not None
    response = await raw_request(
        client.server.port,
        b"PUT " + API.encode() + b"/transactions/1 HTTP/1.1\r\nHost: localhost\r\n"
        b"Authorization: Bearer \xff\xfe\r\nContent-Type: application/json\r\nContent-Length: 14\r\n"
        b"Connection: close\r\n\r\n" + b'{"events": []}',
    )
    assert response.status == 403
    assert json.loads(response.body)["errcode"] == "M_FORBIDDEN"
    assert handler.calls == 0


# -- transactions -----------------------------------------------------------------------------------


async def test_transaction_is_delivered_in_order_with_our_own_events_as_echoes(
    client: Client, auth: dict[str, str], handler: RecordingHandler, appservice: AppServiceServer
) -> None:
    events = [
        make_event(1),
        make_event(2, sender=BOT),
        make_event(3, sender="@bob:other.example"),
        make_event(4, sender=GHOST),
        make_event(
            5,
            sender=f"@kanal_other:{DOMAIN}",
            type="m.room.member",
            state_key=ALICE,
            content={"membership": "join"},
        ),
        make_event(6),
        # Look-alikes of our namespace that are not ours.
        make_event(7, sender="@kanal:other.example"),
        make_event(8, sender=f"@kanal_:{DOMAIN}"),
        make_event(9, sender=f"@kanalx:{DOMAIN}"),
    ]
    response = await client.put(f"{API}/transactions/42", data=txn_body(*events), headers=auth)
    await ok(response)
    [txn] = handler.transactions
    assert txn.txn_id == "42"
    assert [e.event_id for e in txn.events] == [
        "$event1",
        "$event3",
        "$event6",
        "$event7",
        "$event8",
        "$event9",
    ]
    assert [e.event_id for e in txn.echoes] == ["$event2", "$event4", "$event5"]
    assert txn.skipped == 0
    assert txn.ephemeral == []
    member = txn.echoes[2]
    assert (member.type, member.state_key, member.content) == ("m.room.member", ALICE, {"membership": "join"})
    assert txn.events[0].content == {"msgtype": "m.text", "body": "message 1"}
    assert txn.events[0].origin_server_ts == 1_700_000_000_001
    assert appservice.stats.transactions == 1
    assert appservice.stats.events == len(events)


async def test_empty_transaction_is_acknowledged(
    client: Client, auth: dict[str, str], handler: RecordingHandler
) -> None:
    await ok(await client.put(f"{API}/transactions/1", data=txn_body(), headers=auth))
    [txn] = handler.transactions
    assert (txn.events, txn.echoes, txn.ephemeral, txn.skipped) == ([], [], [], 0)


def _nested_list(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


def _nested_object(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


MALFORMED: dict[str, Any] = {
    "not an object: string": "$event",
    "not an object: number": 12,
    "not an object: null": None,
    "not an object: list": [make_event(0)],
    "not an object: nested lists": _nested_list(200),
    "missing event_id": {k: v for k, v in make_event(0).items() if k != "event_id"},
    "missing room_id": {k: v for k, v in make_event(0).items() if k != "room_id"},
    "missing sender": {k: v for k, v in make_event(0).items() if k != "sender"},
    "missing type": {k: v for k, v in make_event(0).items() if k != "type"},
    "missing content": {k: v for k, v in make_event(0).items() if k != "content"},
    "content is a list": make_event(0, content=["body"]),
    "content is a string": make_event(0, content="hello"),
    "type is a number": make_event(0, type=7),
    "type is empty": make_event(0, type=""),
    "event_id is a number": make_event(0, event_id=1),
    "event_id without sigil": make_event(0, event_id="event0"),
    "room_id with wrong sigil": make_event(0, room_id="#room:example.org"),
    "sender without sigil": make_event(0, sender="alice:example.org"),
    "sender is an object": {**make_event(0), "sender": {"@": "alice"}},
    "origin_server_ts is a string": make_event(0, origin_server_ts="1700000000000"),
    "origin_server_ts is a bool": make_event(0, origin_server_ts=True),
    "origin_server_ts is a float": make_event(0, origin_server_ts=1.5),
    "state_key is a number": make_event(0, state_key=0),
    "redacts is a list": make_event(0, redacts=["$x"]),
    "huge event_id": make_event(0, event_id="$" + "e" * 100_000),
    "huge room_id": make_event(0, room_id="!" + "r" * 300),
    "huge sender": make_event(0, sender="@" + "s" * 300 + ":example.org"),
    "huge type": make_event(0, type="m." + "t" * 100_000),
}


async def test_malformed_events_are_skipped_and_counted_while_the_rest_are_delivered(
    client: Client, auth: dict[str, str], handler: RecordingHandler, appservice: AppServiceServer
) -> None:
    deep_but_fine = make_event(3, content={"body": "deep", "nested": _nested_object(100)})
    large_but_fine = make_event(4, content={"msgtype": "m.text", "body": "x" * 60_000})
    entries = [make_event(1), *MALFORMED.values(), make_event(2, sender=GHOST), deep_but_fine, large_but_fine]
    response = await client.put(f"{API}/transactions/7", data=txn_body(*entries), headers=auth)
    await ok(response)
    [txn] = handler.transactions
    assert [e.event_id for e in txn.events] == ["$event1", "$event3", "$event4"]
    assert [e.event_id for e in txn.echoes] == ["$event2"]
    assert txn.events[1].content["nested"] == _nested_object(100)
    assert txn.skipped == len(MALFORMED)
    assert appservice.stats.skipped_events == len(MALFORMED)
    assert appservice.stats.events == 4


@pytest.mark.parametrize("name", list(MALFORMED))
async def test_each_malformed_event_alone_is_skipped(
    client: Client, auth: dict[str, str], handler: RecordingHandler, name: str
) -> None:
    body = txn_body(make_event(1), MALFORMED[name])
    await ok(await client.put(f"{API}/transactions/1", data=body, headers=auth))
    [txn] = handler.transactions
    assert [e.event_id for e in txn.events] == ["$event1"]
    assert txn.skipped == 1


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b'{"events": [', b"\xff\xfe{}", b"{'events': []}", b'{"events": []} trailing'],
    ids=["empty", "text", "truncated", "not-utf8", "single-quotes", "trailing-garbage"],
)
async def test_body_that_is_not_json_is_400_m_not_json(
    client: Client, auth: dict[str, str], handler: RecordingHandler, body: bytes
) -> None:
    response = await client.put(f"{API}/transactions/1", data=body, headers=auth)
    await matrix_error(response, 400, "M_NOT_JSON")
    assert handler.calls == 0
    assert handler.failed_deliveries == ["transaction 1 unreadable (M_NOT_JSON)"]


@pytest.mark.parametrize(
    "body",
    [{}, [], "events", 42, None, {"events": None}, {"events": {}}, {"events": "[]"}, {"Events": []}],
    ids=[
        "empty-object",
        "list",
        "string",
        "number",
        "null",
        "events-null",
        "events-object",
        "events-string",
        "wrong-case",
    ],
)
async def test_json_without_an_events_list_is_400_m_bad_json(
    client: Client, auth: dict[str, str], handler: RecordingHandler, body: Any
) -> None:
    response = await client.put(f"{API}/transactions/1", data=json.dumps(body).encode(), headers=auth)
    await matrix_error(response, 400, "M_BAD_JSON")
    assert handler.calls == 0


async def test_body_nested_deeper_than_the_parser_allows_is_400_not_500(
    client: Client, auth: dict[str, str], handler: RecordingHandler
) -> None:
    depth = 5_000
    hostile = json.dumps(make_event(2, content={"nested": "DEEP"}))
    hostile = hostile.replace('"DEEP"', '{"a": ' * depth + "1" + "}" * depth)
    body = f'{{"events": [{json.dumps(make_event(1))}, {hostile}]}}'
    response = await client.put(f"{API}/transactions/1", data=body.encode(), headers=auth)
    await matrix_error(response, 400, "M_NOT_JSON")
    assert handler.calls == 0


RECEIPT = {
    "type": "m.receipt",
    "room_id": "!room:example.org",
    "content": {"$event1": {"m.read": {ALICE: {"ts": 1_700_000_000_000}}}},
}
TYPING = {"type": "m.typing", "room_id": "!room:example.org", "content": {"user_ids": [ALICE]}}


@pytest.mark.parametrize("key", ["ephemeral", "de.sorunome.msc2409.ephemeral"])
async def test_ephemeral_events_are_passed_through(
    client: Client, auth: dict[str, str], handler: RecordingHandler, key: str
) -> None:
    body = txn_body(make_event(1), **{key: [RECEIPT, TYPING]})
    await ok(await client.put(f"{API}/transactions/1", data=body, headers=auth))
    [txn] = handler.transactions
    assert txn.ephemeral == [RECEIPT, TYPING]
    assert [e.event_id for e in txn.events] == ["$event1"]


async def test_ephemeral_sent_under_both_names_is_delivered_once(
    client: Client, auth: dict[str, str], handler: RecordingHandler
) -> None:
    # Synapse sends both keys, with the same list, when both settings are on.
    body = txn_body(**{"ephemeral": [RECEIPT], "de.sorunome.msc2409.ephemeral": [RECEIPT]})
    await ok(await client.put(f"{API}/transactions/1", data=body, headers=auth))
    assert handler.transactions[0].ephemeral == [RECEIPT]


@pytest.mark.parametrize("value", [None, {}, "receipts", 3], ids=["null", "object", "string", "number"])
async def test_ephemeral_that_is_not_a_list_is_ignored_and_events_still_delivered(
    client: Client, auth: dict[str, str], handler: RecordingHandler, value: Any
) -> None:
    body = txn_body(make_event(1), ephemeral=value)
    await ok(await client.put(f"{API}/transactions/1", data=body, headers=auth))
    [txn] = handler.transactions
    assert txn.ephemeral == []
    assert [e.event_id for e in txn.events] == ["$event1"]


async def test_ephemeral_entries_that_are_not_objects_are_dropped_and_the_list_is_bounded(
    client: Client, auth: dict[str, str], handler: RecordingHandler, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "MAX_EPHEMERAL_PER_TRANSACTION", 4)
    entries = [RECEIPT, "x", None, TYPING, [RECEIPT], RECEIPT, TYPING]
    await ok(await client.put(f"{API}/transactions/1", data=txn_body(ephemeral=entries), headers=auth))
    assert handler.transactions[0].ephemeral == [RECEIPT, TYPING]


# -- dedupe -----------------------------------------------------------------------------------------


async def test_same_id_and_same_body_is_handled_once_and_acknowledged_twice(
    client: Client, auth: dict[str, str], handler: RecordingHandler, appservice: AppServiceServer
) -> None:
    body = txn_body(make_event(1), make_event(2))
    await ok(await client.put(f"{API}/transactions/5", data=body, headers=auth))
    await ok(await client.put(f"{API}/transactions/5", data=body, headers=auth))
    assert handler.calls == 1
    assert len(handler.transactions) == 1
    assert appservice.stats.duplicate_transactions == 1
    assert appservice.stats.transactions == 1
    # Sent again after it was answered: the homeserver counted the delivery as failed.
    assert handler.failed_deliveries == ["transaction 5 sent again after it was answered"]


async def test_same_id_with_a_different_body_is_handled_again(
    client: Client, auth: dict[str, str], handler: RecordingHandler
) -> None:
    # Synapse on SQLite reuses transaction ids after a restart: the id alone must not drop events.
    await ok(await client.put(f"{API}/transactions/1", data=txn_body(make_event(1)), headers=auth))
    await ok(await client.put(f"{API}/transactions/1", data=txn_body(make_event(2)), headers=auth))
    assert [[e.event_id for e in t.events] for t in handler.transactions] == [["$event1"], ["$event2"]]


async def test_different_ids_with_the_same_body_are_each_handled(
    client: Client, auth: dict[str, str], handler: RecordingHandler
) -> None:
    body = txn_body(make_event(1))
    await ok(await client.put(f"{API}/transactions/1", data=body, headers=auth))
    await ok(await client.put(f"{API}/transactions/2", data=body, headers=auth))
    assert [t.txn_id for t in handler.transactions] == ["1", "2"]
    assert handler.failed_deliveries == []


async def test_a_synapse_retry_of_a_handled_transaction_is_not_handled_again(
    client: Client, auth: dict[str, str], handler: RecordingHandler
) -> None:
    first = txn_body(
        make_event(1, unsigned={"age": 10}), make_event(2, unsigned={"age": 12}), ephemeral=[RECEIPT]
    )
    retry = txn_body(
        make_event(1, unsigned={"age": 2010}), make_event(2, unsigned={"age": 2012}), ephemeral=[]
    )
    await ok(await client.put(f"{API}/transactions/9", data=first, headers=auth))
    await ok(await client.put(f"{API}/transactions/9", data=retry, headers=auth))
    assert handler.calls == 1


async def _wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll a server counter: the server offers no event to wait on, and tests must not reach inside."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


async def test_in_flight_duplicate_waits_for_the_first_and_the_handler_runs_once(
    client: Client, auth: dict[str, str], handler: RecordingHandler, appservice: AppServiceServer
) -> None:
    handler.gate = asyncio.Event()
    body = txn_body(make_event(1))
    first = asyncio.create_task(client.put(f"{API}/transactions/3", data=body, headers=auth))
    await asyncio.wait_for(handler.entered.wait(), 5)
    second = asyncio.create_task(client.put(f"{API}/transactions/3", data=body, headers=auth))
    await _wait_until(lambda: appservice.stats.duplicate_transactions == 1)
    await asyncio.sleep(0.05)
    assert not first.done() and not second.done()
    handler.gate.set()
    await ok(await asyncio.wait_for(first, 5))
    await ok(await asyncio.wait_for(second, 5))
    assert handler.calls == 1
    assert len(handler.transactions) == 1


async def test_failing_handler_is_500_and_the_retry_is_handled_again(
    client: Client, auth: dict[str, str], handler: RecordingHandler, appservice: AppServiceServer
) -> None:
    handler.failures_left = 1
    body = txn_body(make_event(1))
    response = await client.put(f"{API}/transactions/4", data=body, headers=auth)
    await matrix_error(response, 500, "M_UNKNOWN")
    assert handler.transactions == []
    assert appservice.stats.failed_transactions == 1
    # The handler hears of the failure (the homeserver's recovery may reorder what follows).
    assert handler.failed_deliveries == ["transaction 4 failed"]
    await ok(await client.put(f"{API}/transactions/4", data=body, headers=auth))
    assert handler.calls == 2
    assert [t.txn_id for t in handler.transactions] == ["4"]
    # Once handled, it is remembered.
    await ok(await client.put(f"{API}/transactions/4", data=body, headers=auth))
    assert handler.calls == 2


async def test_in_flight_duplicate_of_a_failing_transaction_fails_too_and_the_retry_is_handled(
    client: Client, auth: dict[str, str], handler: RecordingHandler, appservice: AppServiceServer
) -> None:
    handler.gate = asyncio.Event()
    handler.failures_left = 1
    body = txn_body(make_event(1))
    first = asyncio.create_task(client.put(f"{API}/transactions/8", data=body, headers=auth))
    await asyncio.wait_for(handler.entered.wait(), 5)
    second = asyncio.create_task(client.put(f"{API}/transactions/8", data=body, headers=auth))
    await _wait_until(lambda: appservice.stats.duplicate_transactions == 1)
    handler.gate.set()
    await matrix_error(await asyncio.wait_for(first, 5), 500, "M_UNKNOWN")
    await matrix_error(await asyncio.wait_for(second, 5), 500, "M_UNKNOWN")
    assert handler.calls == 1
    await ok(await client.put(f"{API}/transactions/8", data=body, headers=auth))
    assert handler.calls == 2
    assert len(handler.transactions) == 1


async def test_dedupe_remembers_only_the_newest_entries() -> None:
    dedupe = TransactionDedupe(limit=2)
    keys = [(str(n), "digest") for n in range(4)]
    for key in keys:
        dedupe.start(key)
        dedupe.finish(key, None)
    assert [dedupe.is_done(k) for k in keys] == [False, False, True, True]
    assert all(dedupe.in_flight(k) is None for k in keys)


async def test_dedupe_default_bound_is_the_named_constant() -> None:
    dedupe = TransactionDedupe()
    first = ("first", "digest")
    dedupe.start(first)
    dedupe.finish(first, None)
    for n in range(server_module.MAX_REMEMBERED_TRANSACTIONS - 1):
        dedupe.start((str(n), "d"))
        dedupe.finish((str(n), "d"), None)
    assert dedupe.is_done(first)
    dedupe.start(("one more", "d"))
    dedupe.finish(("one more", "d"), None)
    assert not dedupe.is_done(first)


async def test_dedupe_does_not_remember_failures_and_wakes_waiters() -> None:
    dedupe = TransactionDedupe(limit=2)
    key = ("1", "digest")
    future = dedupe.start(key)
    assert dedupe.in_flight(key) is future
    assert not dedupe.is_done(key)
    dedupe.finish(key, RuntimeError("nope"))
    assert not dedupe.is_done(key)
    assert dedupe.in_flight(key) is None
    with pytest.raises(RuntimeError, match="nope"):
        await future
    future = dedupe.start(key)
    dedupe.finish(key, None)
    await future
    assert dedupe.is_done(key)


async def test_dedupe_treats_the_digest_as_part_of_the_key() -> None:
    dedupe = TransactionDedupe(limit=10)
    dedupe.start(("1", "a"))
    dedupe.finish(("1", "a"), None)
    assert dedupe.is_done(("1", "a"))
    assert not dedupe.is_done(("1", "b"))


# -- user and alias queries -------------------------------------------------------------------------


async def test_user_in_namespace_that_the_handler_knows_is_200(
    client: Client, auth: dict[str, str], handler: RecordingHandler
) -> None:
    handler.users.update({GHOST, BOT})
    # Synapse percent-encodes the id in the path.
    await ok(await client.get(f"{API}/users/%40kanal_news%3Aexample.org", headers=auth))
    await ok(await client.get(f"{API}/users/@kanal:{DOMAIN}", headers=auth))
    assert handler.user_queries == [GHOST, BOT]


@pytest.mark.parametrize(
    "user_id",
    [
        "@alice:example.org",
        "@kanal_news:other.example",
        "@kanal_:example.org",
        "@xkanal_news:example.org",
        "@kanal:example.org.evil",
        "kanal_news:example.org",
    ],
)
async def test_user_outside_the_namespace_is_404_without_asking_the_handler(
    client: Client, auth: dict[str, str], handler: RecordingHandler, user_id: str
) -> None:
    handler.users.add(user_id)
    response = await client.get(f"{API}/users/{user_id}", headers=auth)
    await matrix_error(response, 404, "M_NOT_FOUND")
    assert handler.user_queries == []


async def test_user_in_namespace_that_the_handler_denies_is_404(
    client: Client, auth: dict[str, str], handler: RecordingHandler
) -> None:
    response = await client.get(f"{API}/users/@kanal_nobody:{DOMAIN}", headers=auth)
    await matrix_error(response, 404, "M_NOT_FOUND")
    assert handler.user_queries == [f"@kanal_nobody:{DOMAIN}"]


async def test_alias_in_namespace_that_the_handler_knows_is_200(
    client: Client, auth: dict[str, str], handler: RecordingHandler
) -> None:
    handler.aliases.add(f"#news:{DOMAIN}")
    await ok(await client.get(f"{API}/rooms/%23news%3Aexample.org", headers=auth))
    assert handler.alias_queries == [f"#news:{DOMAIN}"]


@pytest.mark.parametrize("alias", ["%23news%3Aother.example", "%23%3Aexample.org", "news%3Aexample.org"])
async def test_alias_outside_the_namespace_is_404_without_asking_the_handler(
    client: Client, auth: dict[str, str], handler: RecordingHandler, alias: str
) -> None:
    response = await client.get(f"{API}/rooms/{alias}", headers=auth)
    await matrix_error(response, 404, "M_NOT_FOUND")
    assert handler.alias_queries == []


async def test_alias_in_namespace_that_the_handler_denies_is_404(
    client: Client, auth: dict[str, str], handler: RecordingHandler
) -> None:
    response = await client.get(f"{API}/rooms/%23unknown%3Aexample.org", headers=auth)
    await matrix_error(response, 404, "M_NOT_FOUND")
    assert handler.alias_queries == [f"#unknown:{DOMAIN}"]


# -- ping, third party, unknown routes -----------------------------------------------------------------


async def test_ping_is_200_empty_object(client: Client, auth: dict[str, str]) -> None:
    await ok(
        await client.post(
            f"{API}/ping", json={"transaction_id": "mautrix-go_1683636478256400935_123"}, headers=auth
        )
    )
    await ok(await client.post(f"{API}/ping", json={}, headers=auth))


@pytest.mark.parametrize("body", [b"not json", b"[]", b'"ping"'])
async def test_ping_with_a_body_that_is_not_an_object_is_400(
    client: Client, auth: dict[str, str], body: bytes
) -> None:
    response = await client.post(f"{API}/ping", data=body, headers=auth)
    assert response.status == 400
    assert (await response.json())["errcode"] in {"M_NOT_JSON", "M_BAD_JSON"}


async def test_ping_without_a_body_is_200(client: Client, auth: dict[str, str]) -> None:
    await ok(await client.post(f"{API}/ping", headers=auth))


@pytest.mark.parametrize(
    "path",
    [
        "/thirdparty/protocol/irc",
        "/thirdparty/user/irc",
        "/thirdparty/location/irc",
        "/thirdparty/user?userid=%40a%3Ab",
        "/thirdparty/location?alias=%23a%3Ab",
    ],
)
async def test_thirdparty_endpoints_are_404_m_unrecognized(
    client: Client, auth: dict[str, str], path: str
) -> None:
    await matrix_error(await client.get(API + path, headers=auth), 404, "M_UNRECOGNIZED")


@pytest.mark.parametrize("authenticated", [True, False])
@pytest.mark.parametrize(
    "path",
    ["/", "/nope", f"{API}/nope", f"{API}/transactions", "/_matrix/app/v2/transactions/1", "/transactions/1"],
)
async def test_unknown_path_is_404_m_unrecognized_json(
    client: Client, auth: dict[str, str], path: str, authenticated: bool
) -> None:
    response = await client.put(path, json={"events": []}, headers=auth if authenticated else {})
    await matrix_error(response, 404, "M_UNRECOGNIZED")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"{API}/transactions/1"),
        ("POST", f"{API}/transactions/1"),
        ("DELETE", f"{API}/transactions/1"),
        ("PUT", f"{API}/users/@kanal_news:example.org"),
        ("POST", f"{API}/rooms/%23news%3Aexample.org"),
        ("GET", f"{API}/ping"),
        ("PUT", f"{API}/ping"),
    ],
)
async def test_wrong_method_is_405_m_unrecognized_json(
    client: Client, auth: dict[str, str], method: str, path: str
) -> None:
    response = await client.request(method, path, headers=auth)
    await matrix_error(response, 405, "M_UNRECOGNIZED")


# -- body size, slow clients, shutdown ----------------------------------------------------------------


LIMIT = 2048


@pytest.fixture
async def small_client(aiohttp_client: AiohttpClient, appservice: AppServiceServer) -> Client:
    return await aiohttp_client(appservice.make_app(client_max_size=LIMIT))


async def test_body_over_the_limit_is_413_m_too_large(
    small_client: Client, auth: dict[str, str], handler: RecordingHandler
) -> None:
    body = txn_body(make_event(1, content={"body": "x" * (2 * LIMIT)}))
    response = await small_client.put(f"{API}/transactions/1", data=body, headers=auth)
    await matrix_error(response, 413, "M_TOO_LARGE")
    assert handler.calls == 0
    # The limit applies to the body, so a small transaction still goes through afterwards.
    await ok(await small_client.put(f"{API}/transactions/2", data=txn_body(make_event(2)), headers=auth))


async def test_body_just_under_the_limit_is_accepted(
    small_client: Client, auth: dict[str, str], handler: RecordingHandler
) -> None:
    filler = txn_body(make_event(1, content={"body": ""}))
    body = txn_body(make_event(1, content={"body": "x" * (LIMIT - len(filler))}))
    assert len(body) == LIMIT
    await ok(await small_client.put(f"{API}/transactions/1", data=body, headers=auth))
    assert handler.calls == 1


async def test_ping_body_over_the_limit_is_413(small_client: Client, auth: dict[str, str]) -> None:
    response = await small_client.post(f"{API}/ping", json={"transaction_id": "x" * LIMIT}, headers=auth)
    await matrix_error(response, 413, "M_TOO_LARGE")


async def test_413_message_names_the_limit_in_force(small_client: Client, auth: dict[str, str]) -> None:
    body = txn_body(make_event(1, content={"body": "x" * (2 * LIMIT)}))
    response = await small_client.put(f"{API}/transactions/1", data=body, headers=auth)
    error = await matrix_error(response, 413, "M_TOO_LARGE")
    assert str(LIMIT) in error["error"]


def _slow_request_head(registration: Registration, content_length: int) -> bytes:
    return (
        f"PUT {API}/transactions/slow HTTP/1.1\r\nHost: localhost\r\n"
        f"Authorization: Bearer {registration.hs_token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {content_length}\r\n\r\n"
    ).encode()


async def _trickle(writer: asyncio.StreamWriter, interval: float = 0.05, count: int = 400) -> None:
    """Send one byte at a time, forever slower than the body deadline but never idle."""
    try:
        for _ in range(count):
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(interval)
    except (ConnectionError, OSError):
        pass


async def test_slow_client_does_not_hold_up_others_and_is_cut_off_with_408(
    client: Client,
    auth: dict[str, str],
    registration: Registration,
    handler: RecordingHandler,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server_module, "BODY_READ_TIMEOUT_S", 2.0)
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    trickle: asyncio.Task[None] | None = None
    try:
        writer.write(_slow_request_head(registration, 10_000) + b'{"events": [')
        await writer.drain()
        trickle = asyncio.create_task(_trickle(writer))
        slow = asyncio.create_task(read_response(reader))
        await asyncio.sleep(0.1)

        response = await asyncio.wait_for(
            client.put(f"{API}/transactions/fast", data=txn_body(make_event(1)), headers=auth), 1.5
        )
        await ok(response)
        assert [t.txn_id for t in handler.transactions] == ["fast"]
        assert not slow.done(), "the slow request must still be open while the normal one completes"

        # The deadline covers the whole body: a client that keeps trickling is still cut off.
        cut_off = await asyncio.wait_for(slow, 10)
        assert not trickle.done()
        assert cut_off.status == 408
        assert json.loads(cut_off.body)["errcode"] == "M_UNKNOWN"
        assert handler.calls == 1
    finally:
        if trickle is not None:
            trickle.cancel()
        writer.close()


async def test_slow_client_connection_is_closed_after_the_408(
    client: Client, registration: Registration, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "BODY_READ_TIMEOUT_S", 0.3)
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    trickle: asyncio.Task[None] | None = None
    try:
        writer.write(_slow_request_head(registration, 10_000) + b"{")
        await writer.drain()
        trickle = asyncio.create_task(_trickle(writer))
        response = await asyncio.wait_for(read_response(reader), 5)
        assert response.status == 408
        assert response.headers.get("connection", "").lower() == "close"
        # Closed by the server: a clean EOF, or a reset when the kernel still held
        # trickled bytes the server never read (closing such a socket sends RST).
        try:
            rest = await asyncio.wait_for(reader.read(), 2)
        except ConnectionResetError:
            rest = b""
        assert rest == b""
    finally:
        if trickle is not None:
            trickle.cancel()
        writer.close()


def _records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= level and r.name.startswith(("appservice", "aiohttp"))]


@pytest.fixture
async def served_port(appservice: AppServiceServer) -> AsyncIterator[int]:
    """The app served the way `kanal run` serves it: a client that leaves does not cancel its handler
    (the test server's default does)."""
    runner = web.AppRunner(appservice.make_app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port: int = runner.addresses[0][1]
    yield port
    await runner.cleanup()


async def test_clients_gone_mid_body_cost_one_short_line_and_count_as_failed_deliveries(
    served_port: int,
    registration: Registration,
    handler: RecordingHandler,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="appservice")
    for _ in range(20):
        await drop_mid_body(served_port, _slow_request_head(registration, 10_000), b'{"events": [')
    for _ in range(100):  # until the last handler has seen its connection go
        if len(handler.failed_deliveries) == 20:
            break
        await asyncio.sleep(0.02)
    assert handler.failed_deliveries == ["transaction slow cut off"] * 20
    assert handler.calls == 0
    lines = _records(caplog, logging.WARNING)
    assert [r.getMessage() for r in lines] == [
        f"PUT {API}/transactions/{{txn_id}}: the client closed the connection before the request was done"
    ]
    assert lines[0].exc_info is None


async def test_a_connection_error_of_our_own_keeps_its_traceback(
    client: Client, auth: dict[str, str], handler: RecordingHandler, caplog: pytest.LogCaptureFixture
) -> None:
    async def reset(txn: Any) -> None:
        raise ConnectionResetError("the database went away")

    handler.handle_transaction = reset  # type: ignore[method-assign]
    response = await client.put(f"{API}/transactions/1", data=txn_body(make_event(1)), headers=auth)
    await matrix_error(response, 500, "M_UNKNOWN")
    [record] = _records(caplog, logging.ERROR)
    assert record.exc_info is not None and isinstance(record.exc_info[1], ConnectionResetError)


async def test_malformed_events_cost_one_line_per_transaction_and_source(
    client: Client, auth: dict[str, str], handler: RecordingHandler, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="appservice")
    malformed = list(MALFORMED.values())
    for txn_id in ("m1", "m2", "m3"):
        body = txn_body(make_event(1), *malformed)
        await ok(await client.put(f"{API}/transactions/{txn_id}", data=body, headers=auth))
    assert [t.skipped for t in handler.transactions] == [len(malformed)] * 3
    assert [r.getMessage() for r in _records(caplog, logging.WARNING)] == [
        f"Transaction m1: skipped {len(malformed)} malformed event(s); the first: #1: an event must be a "
        "JSON object"
    ]


async def test_not_accepting_is_503_and_the_transaction_is_handled_once_accepting_again(
    client: Client, auth: dict[str, str], handler: RecordingHandler, appservice: AppServiceServer
) -> None:
    appservice.accepting = False
    body = txn_body(make_event(1))
    response = await client.put(f"{API}/transactions/1", data=body, headers=auth)
    await matrix_error(response, 503, "M_UNKNOWN")
    assert handler.calls == 0
    assert handler.failed_deliveries == ["transaction 1 refused while shutting down"]
    appservice.accepting = True
    await ok(await client.put(f"{API}/transactions/1", data=body, headers=auth))
    assert handler.calls == 1


async def test_not_accepting_still_checks_the_token_first(
    client: Client, appservice: AppServiceServer
) -> None:
    appservice.accepting = False
    response = await client.put(
        f"{API}/transactions/1", data=txn_body(), headers={"Authorization": "Bearer no"}
    )
    await matrix_error(response, 403, "M_FORBIDDEN")


async def test_key_fields_of_the_encryption_extensions_are_passed_through(
    client: Client, auth: dict[str, str], handler: RecordingHandler
) -> None:
    """MSC2409's to-device messages and MSC3202's key counts and device lists reach the handler
    (issue 17: the bot's device gets its room keys this way); other fields are not copied."""
    to_device = [{"type": "m.room.encrypted", "sender": ALICE, "to_user_id": "@kanal:example.org",
                  "to_device_id": "KANALBOT", "content": {"algorithm": "m.olm.v1.curve25519-aes-sha2"}}]
    counts = {"@kanal:example.org": {"KANALBOT": {"signed_curve25519": 42}}}
    lists = {"changed": [ALICE], "left": []}
    body = txn_body(
        **{
            "de.sorunome.msc2409.to_device": to_device,
            "org.matrix.msc3202.device_one_time_keys_count": counts,
            "org.matrix.msc3202.device_lists": lists,
            "org.example.unknown": {"x": 1},
        }
    )
    await ok(await client.put(f"{API}/transactions/1", data=body, headers=auth))
    [txn] = handler.transactions
    assert txn.keys == {
        "de.sorunome.msc2409.to_device": to_device,
        "org.matrix.msc3202.device_one_time_keys_count": counts,
        "org.matrix.msc3202.device_lists": lists,
    }
