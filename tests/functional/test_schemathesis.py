"""Schemathesis against Kanal's real Application Service API, judged by the Matrix spec's OpenAPI document.

    schemathesis (requests, test thread) ──HTTP──▶ 127.0.0.1:<port>  Service(config).make_app()
                                                    (own thread and event loop)  ──▶ migrated SQLite
                                                    homeserver: a closed port, never contacted

The service is built as `kanal run` builds it (config from `kanal init`, migrations, `make_app()`), but
`Service.start()` is not called: it would check the homeserver. No ghost or channel exists, so user and
alias queries answer 404 without leaving the process.

Schemathesis sends valid and invalid requests with the `hs_token`, and valid ones with bad credentials;
a plain Hypothesis test adds the strings schemathesis never draws. The last test checks that over 1,000
generated requests reached Kanal. Seeds are fixed: CI sees the same requests on every run.

Where the spec leaves out a status Kanal answers for a good reason, `SPEC_GAPS` names it and says why;
those answers must still be Matrix errors (`errors_are_matrix_errors`).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import re
import socket
import threading
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import jsonschema  # type: ignore[import-untyped,unused-ignore]
import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from schemathesis import Case, CheckContext, Response
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from bridge.app import Service
from bridge.ops.initfiles import write_init_files
from bridge.runtime.config import load as load_config
from bridge.store.db import migrate

T = TypeVar("T")
Check = Callable[[CheckContext, Response, "Case[Any]"], bool | None]

SPEC_PATH = Path(__file__).resolve().parents[1] / "matrix-spec" / "application-service.openapi.json"
DOMAIN = "example.org"
SEED = 20_240_601
MIN_REQUESTS = 1_000
BOOT_TIMEOUT_S = 30.0

TRANSACTIONS = "PUT /_matrix/app/v1/transactions/{txnId}"
PING = "POST /_matrix/app/v1/ping"
USERS = "GET /_matrix/app/v1/users/{userId}"
ROOMS = "GET /_matrix/app/v1/rooms/{roomAlias}"

# Statuses Kanal answers that the spec's OpenAPI document does not list for the operation. The Matrix spec
# documents only `200` for these two, yet its prose requires `events` and a valid `hs_token` on every
# call; Synapse retries a transaction on any non-2xx, so rejecting is the safe answer. (Also undocumented,
# not exercised here: 413 for a body over 16 MiB, 408 for one trickled slower than 30 s, and 503 for a
# transaction that arrives while Kanal shuts down.)
_AUTH_GAPS = {
    401: "no `Authorization: Bearer` token (M_MISSING_TOKEN), as the spec's prose and Synapse require",
    403: "a wrong `hs_token` (M_FORBIDDEN)",
}
SPEC_GAPS: dict[str, dict[int, str]] = {
    TRANSACTIONS: {
        400: "body absent, not JSON (M_NOT_JSON) or without an `events` list (M_BAD_JSON); the document "
        "does not mark the request body `required`, but acknowledging it would tell Synapse that events "
        "nobody read were delivered",
        **_AUTH_GAPS,
    },
    PING: {400: "a body that is not a JSON object (M_NOT_JSON, M_BAD_JSON)", **_AUTH_GAPS},
}


@functools.cache
def _spec() -> dict[str, Any]:
    if not SPEC_PATH.is_file():
        pytest.fail(
            f"The Matrix spec's OpenAPI document is missing: {SPEC_PATH}. It is kept in tests/matrix-spec/ "
            "(a copy of the Matrix specification's data).",
            pytrace=False,
        )
    spec: dict[str, Any] = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
    return spec


@functools.cache
def _error_validator() -> jsonschema.Draft202012Validator:
    """The spec's standard Matrix error object, as it documents it for `401` on user queries."""
    responses = _spec()["paths"]["/_matrix/app/v1/users/{userId}"]["get"]["responses"]
    return jsonschema.Draft202012Validator(responses["401"]["content"]["application/json"]["schema"])


# -- the service under test, on loopback ---------------------------------------------------------------


@dataclass(frozen=True)
class RunningKanal:
    base_url: str
    hs_token: str


def _closed_port() -> int:
    """A loopback port nothing listens on: the homeserver Kanal must never need in these tests."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _serve(service: Service) -> tuple[web.AppRunner, int]:
    await migrate(service.engine)
    runner = web.AppRunner(service.make_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port: int = runner.addresses[0][1]
    return runner, port


async def _shut_down(service: Service, runner: web.AppRunner) -> None:
    await runner.cleanup()
    await service.client.close()
    await service.engine.dispose()


@pytest.fixture(scope="module")
def kanal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningKanal]:
    """Kanal's real HTTP app on a loopback port, served from its own thread (schemathesis is synchronous)."""
    workdir = tmp_path_factory.mktemp("schemathesis")
    config_path, _ = write_init_files(
        workdir, domain=DOMAIN, homeserver_url=f"http://127.0.0.1:{_closed_port()}"
    )
    config = load_config(config_path)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="kanal-under-schemathesis", daemon=True)
    thread.start()

    def run(coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(BOOT_TIMEOUT_S)

    async def build() -> Service:
        return Service(config)  # inside the loop: whatever the service creates belongs to it

    service = run(build())
    try:
        runner, port = run(_serve(service))
        try:
            database = workdir / "kanal.db"
            assert database.is_file(), (
                f"the migrated SQLite database is not where the config says: {database}"
            )
            yield RunningKanal(f"http://127.0.0.1:{port}", config.hs_token)
        finally:
            run(_shut_down(service, runner))
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(BOOT_TIMEOUT_S)
        loop.close()


# -- counting what was actually sent -------------------------------------------------------------------


def _operation_patterns() -> list[tuple[str, re.Pattern[str]]]:
    """Each documented operation, with a regex for the raw request paths that address it."""

    def regex(template: str) -> re.Pattern[str]:
        literal_parts = re.split(r"\{[^}]+\}", template)
        return re.compile("^" + "[^/]+".join(re.escape(part) for part in literal_parts) + "$")

    return [
        (f"{method.upper()} {template}", regex(template))
        for template, item in _spec()["paths"].items()
        for method in item
    ]


@dataclass
class Traffic:
    """Every HTTP exchange the tests below had with Kanal, by test, documented operation and status."""

    exchanges: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    current_test: str = "(outside a test)"

    def count(self, test: str | None = None) -> int:
        return sum(n for (t, _operation, _status), n in self.exchanges.items() if test in (None, t))


TRAFFIC = Traffic()


@pytest.fixture(autouse=True)
def _attribute_traffic(request: pytest.FixtureRequest) -> None:
    TRAFFIC.current_test = request.node.originalname


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    """One keep-alive session for all requests; its response hook counts each exchange."""
    patterns = _operation_patterns()
    session = requests.Session()

    def count(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        method, path = response.request.method, response.request.path_url.split("?", 1)[0]
        label = next(
            (label for label, pattern in patterns if label.startswith(f"{method} ") and pattern.match(path)),
            f"{method} (no documented operation)",
        )
        TRAFFIC.exchanges[(TRAFFIC.current_test, label, response.status_code)] += 1

    session.hooks["response"].append(count)
    yield session
    session.close()


# -- the schema ----------------------------------------------------------------------------------------

# Loaded at import, as schemathesis's parametrization needs it (its fixture-based loader does not work
# with pytest ≥ 9.2). A missing document must not abort the whole run's collection: it loads as an
# empty API here, and each test that needs it fails with the reason instead (`_each_operation`).
_NO_OPERATIONS: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "missing", "version": "0"},
    "paths": {},
}


def _load(mode: str) -> schemathesis.BaseSchema:
    config = schemathesis.Config.from_dict({"seed": SEED, "generation": {"mode": mode}})
    if not SPEC_PATH.is_file():
        return schemathesis.openapi.from_dict(_NO_OPERATIONS, config=config)
    return schemathesis.openapi.from_path(SPEC_PATH, config=config)


# Valid and invalid requests; each is sent with the homeserver's token unless schemathesis's negative
# case is "no credentials" (it then drops the header).
authorized = _load("all")
# Valid requests, each sent with the bad credentials of `_bad_credentials`.
unauthorized = _load("positive")


F = TypeVar("F", bound=Callable[..., None])


def _each_operation(schema: schemathesis.BaseSchema) -> Callable[[F], F]:
    """`schema.parametrize()`, or, without the spec's document, a test that fails saying it is missing."""
    if SPEC_PATH.is_file():
        parametrize: Callable[[F], F] = schema.parametrize()
        return parametrize

    def replace(test: F) -> F:
        def spec_is_missing() -> None:
            _spec()

        spec_is_missing.__name__ = test.__name__
        return spec_is_missing  # type: ignore[return-value]

    return replace


def test_the_spec_document_is_present() -> None:
    assert len(_operation_patterns()) == 9


# -- bad credentials ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BadCredentials:
    name: str
    headers: dict[str, str]
    params: dict[str, str]
    status: int
    errcode: str


def _bad_credentials(hs_token: str) -> list[BadCredentials]:
    near_miss = hs_token[:-1] + ("A" if hs_token[-1] != "A" else "B")
    return [
        BadCredentials("no token", {}, {}, 401, "M_MISSING_TOKEN"),
        BadCredentials("empty bearer", {"Authorization": "Bearer "}, {}, 401, "M_MISSING_TOKEN"),
        BadCredentials("basic scheme", {"Authorization": f"Basic {hs_token}"}, {}, 401, "M_MISSING_TOKEN"),
        BadCredentials("token in the query", {}, {"access_token": hs_token}, 401, "M_MISSING_TOKEN"),
        BadCredentials("wrong token", {"Authorization": "Bearer not-the-hs-token"}, {}, 403, "M_FORBIDDEN"),
        BadCredentials("near miss", {"Authorization": f"Bearer {near_miss}"}, {}, 403, "M_FORBIDDEN"),
        BadCredentials("prefix", {"Authorization": f"Bearer {hs_token[:-1]}"}, {}, 403, "M_FORBIDDEN"),
    ]


# -- checks beyond schemathesis's built-ins ------------------------------------------------------------


def status_code_conformance_except_spec_gaps(
    ctx: CheckContext, response: Response, case: Case[Any]
) -> bool | None:
    """Schemathesis's status check, allowing only the statuses `SPEC_GAPS` explains."""
    if response.status_code in SPEC_GAPS.get(case.operation.label, {}):
        return None
    return status_code_conformance(ctx, response, case)


def errors_are_matrix_errors(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """Every 4xx, documented for the operation or not, is a JSON Matrix error as the spec defines it."""
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/json"), f"error sent as {content_type!r}, not JSON"
    body = json.loads(response.content)
    _error_validator().validate(body)
    assert isinstance(body.get("error"), str) and body["error"], f"error without an explanation: {body}"
    return None


def _request_json(response: Response) -> Any:
    body = response.request.body
    if not isinstance(body, (bytes, str)) or not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def well_formed_requests_succeed(hs_token: str) -> Check:
    """With the right token, a well-formed transaction or ping is acknowledged with `200 {}`.

    Schemathesis's positive data is not enough to decide: without `required` on the request body it
    may send none. The request as sent decides here.
    """

    def well_formed_request_succeeded(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
        if (
            response.request.method != case.operation.method.upper()  # a probe with another method
            or response.request.headers.get("Authorization") != f"Bearer {hs_token}"
        ):
            return None
        label = case.operation.label
        sent = _request_json(response)
        well_formed = (
            label == TRANSACTIONS and isinstance(sent, dict) and isinstance(sent.get("events"), list)
        ) or (label == PING and (isinstance(sent, dict) or not response.request.body))
        if well_formed:
            assert response.status_code == 200, f"a well-formed request was refused: {response.content!r}"
            assert json.loads(response.content) == {}
        if label in (USERS, ROOMS) and response.status_code == 404:
            # No ghost or channel exists, so "not found" is the only right answer.
            errcode = json.loads(response.content)["errcode"]
            assert errcode == "M_NOT_FOUND", (errcode, response.request.path_url)
        return None

    return well_formed_request_succeeded


def rejected_with(bad: BadCredentials) -> Check:
    """Bad credentials are refused before anything else is looked at."""

    def credentials_refused(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
        body = json.loads(response.content)
        assert (response.status_code, body.get("errcode")) == (bad.status, bad.errcode), (
            f"{bad.name}: expected {bad.status} {bad.errcode}, got {response.status_code} {body}"
        )
        return None

    return credentials_refused


SPEC_CHECKS: list[Check] = [
    not_a_server_error,
    response_schema_conformance,
    content_type_conformance,
    status_code_conformance_except_spec_gaps,
    errors_are_matrix_errors,
]

SLOW_IS_FINE = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


# -- the tests -----------------------------------------------------------------------------------------


@_each_operation(authorized)
@settings(SLOW_IS_FINE, max_examples=110)
def test_authorized_requests_conform_to_the_spec(
    case: Case[Any], kanal: RunningKanal, http: requests.Session
) -> None:
    case.call_and_validate(
        base_url=kanal.base_url,
        session=http,
        headers={"Authorization": f"Bearer {kanal.hs_token}"},
        checks=[*SPEC_CHECKS, well_formed_requests_succeed(kanal.hs_token)],
    )


@_each_operation(unauthorized)
@settings(SLOW_IS_FINE, max_examples=12)
def test_bad_credentials_are_refused_as_the_spec_says(
    case: Case[Any], kanal: RunningKanal, http: requests.Session
) -> None:
    for bad in _bad_credentials(kanal.hs_token):
        case.headers.pop("Authorization", None)  # schemathesis's own random token, if it drew one
        response = case.call(base_url=kanal.base_url, session=http, headers=bad.headers, params=bad.params)
        case.validate_response(response, checks=[*SPEC_CHECKS, rejected_with(bad)])


# Every code point, NUL and lone surrogates included: JSON can carry them all (`"\ud800"`), and the spec
# types Matrix ids as plain strings. Schemathesis never draws these (Hypothesis leaves surrogates out of text).
ANY_CHARACTER = st.characters(exclude_categories=())
TRANSACTION_IDS = itertools.count()


@given(local=st.text(ANY_CHARACTER, min_size=1, max_size=8))
@example(local="\ud800")
@settings(SLOW_IS_FINE, max_examples=40)
def test_any_string_as_an_id_is_answered_without_a_server_error(
    local: str, kanal: RunningKanal, http: requests.Session
) -> None:
    """Ids the spec allows but no database can store: a message in such a room, an invite with such an id."""
    room, alice, bot = f"!{local}:{DOMAIN}", f"@alice:{DOMAIN}", f"@kanal:{DOMAIN}"
    body: Any = {
        "events": [
            {
                "event_id": f"${local}-message",
                "room_id": room,
                "sender": alice,
                "type": "m.room.message",
                "content": {"msgtype": "m.text", "body": "hi"},
                "origin_server_ts": 1_700_000_000_000,
            },
            {
                "event_id": f"${local}-invite",
                "room_id": room,
                "sender": alice,
                "type": "m.room.member",
                "state_key": bot,
                "content": {"membership": "invite", "is_direct": True},
                "origin_server_ts": 1_700_000_000_001,
            },
        ]
    }
    operation = authorized["/_matrix/app/v1/transactions/{txnId}"]["PUT"]
    case = operation.Case(path_parameters={"txnId": f"ids-{next(TRANSACTION_IDS)}"}, body=body)
    case.call_and_validate(
        base_url=kanal.base_url,
        session=http,
        headers={"Authorization": f"Bearer {kanal.hs_token}"},
        checks=[*SPEC_CHECKS, well_formed_requests_succeed(kanal.hs_token)],
    )


def test_at_least_1000_generated_requests_reached_kanal() -> None:
    """Runs last: schemathesis's traffic was large, reached every operation, and drew every kind of answer."""
    schemathesis_tests = {
        test_authorized_requests_conform_to_the_spec.__name__,
        test_bad_credentials_are_refused_as_the_spec_says.__name__,
    }
    generated = TRAFFIC.count(test=test_authorized_requests_conform_to_the_spec.__name__)
    statuses = Counter[int]()
    operations = Counter[str]()
    for (test, operation, status), n in TRAFFIC.exchanges.items():
        if test in schemathesis_tests:
            statuses[status] += n
            operations[operation] += n
    summary = (
        f"{statuses.total()} requests from schemathesis, {generated} of them generated cases each sent once; "
        f"by status {dict(sorted(statuses.items()))}; by operation {dict(sorted(operations.items()))}"
    )
    print(summary)
    assert statuses.total() > 0, "run the whole module: the schemathesis tests above sent nothing"
    assert generated >= MIN_REQUESTS, summary
    assert not [status for status in statuses if status >= 500], summary
    assert {200, 400, 401, 403, 404} <= set(statuses), summary
    assert all(operations[label] >= 50 for label, _pattern in _operation_patterns()), summary
