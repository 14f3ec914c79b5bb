"""Every response of the Application Service API checked against the Matrix spec's OpenAPI document."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient

from appservice.registration import Registration

from .conftest import API, GHOST, RecordingHandler, make_event

try:
    import jsonschema  # type: ignore[import-untyped,unused-ignore]
    import referencing
except ImportError:  # the hand-written checks below still run
    jsonschema = None
    referencing = None  # type: ignore[assignment,unused-ignore]

Client = TestClient[web.Request, web.Application]

SPEC_DIR = Path(__file__).resolve().parents[1] / "matrix-spec"  # a copy of the spec's data (Apache-2.0)
OPENAPI = json.loads((SPEC_DIR / "application-service.openapi.json").read_text(encoding="utf-8"))
ERROR_SCHEMA: dict[str, Any] = OPENAPI["paths"][f"{API}/users/{{userId}}"]["get"]["responses"]["401"][
    "content"
]["application/json"]["schema"]


def _check_by_hand(schema: dict[str, Any], value: Any) -> None:
    """The subset of JSON Schema these responses use: object type and required keys."""
    if schema.get("type") == "object":
        assert isinstance(value, dict), value
        for key in schema.get("required", []):
            assert key in value, (key, value)
        for key, sub in schema.get("properties", {}).items():
            if key in value and sub.get("type") == "string":
                assert isinstance(value[key], str), (key, value)


def validate(schema: dict[str, Any], value: Any) -> None:
    if jsonschema is None:
        _check_by_hand(schema, value)
    else:
        jsonschema.Draft202012Validator(schema).validate(value)


def response_schema(template: str, method: str, status: int) -> dict[str, Any]:
    """The documented schema, or the spec's standard error schema for an error status it leaves out."""
    responses = OPENAPI["paths"][template][method.lower()]["responses"]
    documented = responses.get(str(status))
    if documented is not None:
        schema: dict[str, Any] = documented["content"]["application/json"]["schema"]
        return schema
    assert status >= 400, f"{method} {template} answered {status}, which the spec does not document"
    return ERROR_SCHEMA


TRANSACTION = f"{API}/transactions/{{txnId}}"
USERS = f"{API}/users/{{userId}}"
ROOMS = f"{API}/rooms/{{roomAlias}}"
PING = f"{API}/ping"

Auth = Callable[[Registration], dict[str, str]]


def good(reg: Registration) -> dict[str, str]:
    return {"Authorization": f"Bearer {reg.hs_token}"}


def wrong(reg: Registration) -> dict[str, str]:
    return {"Authorization": "Bearer wrong"}


def none(reg: Registration) -> dict[str, str]:
    return {}


# (template, method, path, auth, body, expected status)
CALLS: list[tuple[str, str, str, Auth, bytes | None, int]] = [
    (
        TRANSACTION,
        "PUT",
        f"{API}/transactions/1",
        good,
        json.dumps({"events": [make_event(1)]}).encode(),
        200,
    ),
    (TRANSACTION, "PUT", f"{API}/transactions/2", good, b"not json", 400),
    (TRANSACTION, "PUT", f"{API}/transactions/3", good, b"{}", 400),
    (TRANSACTION, "PUT", f"{API}/transactions/4", none, b'{"events": []}', 401),
    (TRANSACTION, "PUT", f"{API}/transactions/5", wrong, b'{"events": []}', 403),
    (USERS, "GET", f"{API}/users/%40kanal_news%3Aexample.org", good, None, 200),
    (USERS, "GET", f"{API}/users/%40kanal_nobody%3Aexample.org", good, None, 404),
    (USERS, "GET", f"{API}/users/%40alice%3Aexample.org", good, None, 404),
    (USERS, "GET", f"{API}/users/%40kanal_news%3Aexample.org", none, None, 401),
    (USERS, "GET", f"{API}/users/%40kanal_news%3Aexample.org", wrong, None, 403),
    (ROOMS, "GET", f"{API}/rooms/%23news%3Aexample.org", good, None, 200),
    (ROOMS, "GET", f"{API}/rooms/%23nothing%3Aexample.org", good, None, 404),
    (ROOMS, "GET", f"{API}/rooms/%23news%3Aother.example", good, None, 404),
    (ROOMS, "GET", f"{API}/rooms/%23news%3Aexample.org", none, None, 401),
    (ROOMS, "GET", f"{API}/rooms/%23news%3Aexample.org", wrong, None, 403),
    (PING, "POST", f"{API}/ping", good, b'{"transaction_id": "mautrix-go_1683636478256400935_123"}', 200),
    (PING, "POST", f"{API}/ping", none, b"{}", 401),
    (PING, "POST", f"{API}/ping", wrong, b"{}", 403),
]
for _path in ("protocol/irc", "user/irc", "location/irc", "user", "location"):
    _template = f"{API}/thirdparty/{_path.replace('irc', '{protocol}')}"
    CALLS += [
        (_template, "GET", f"{API}/thirdparty/{_path}", good, None, 404),
        (_template, "GET", f"{API}/thirdparty/{_path}", none, None, 401),
        (_template, "GET", f"{API}/thirdparty/{_path}", wrong, None, 403),
    ]


def test_every_endpoint_we_serve_is_in_the_spec_and_the_spec_has_no_endpoint_we_miss() -> None:
    templates = {template for template, *_ in CALLS}
    assert templates == set(OPENAPI["paths"])


@pytest.mark.parametrize(
    ("template", "method", "path", "auth", "body", "status"),
    CALLS,
    ids=[f"{m} {p.removeprefix(API)} {a.__name__} {s}" for _t, m, p, a, _b, s in CALLS],
)
async def test_response_matches_the_documented_schema(
    client: Client,
    registration: Registration,
    handler: RecordingHandler,
    template: str,
    method: str,
    path: str,
    auth: Auth,
    body: bytes | None,
    status: int,
) -> None:
    handler.users.add(GHOST)
    handler.aliases.add("#news:example.org")
    response = await client.request(method, path, data=body, headers=auth(registration))
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    payload = await response.json()
    validate(response_schema(template, method, status), payload)
    if status >= 400:
        # Beyond the spec's minimum (only errcode is required): we always say why.
        assert isinstance(payload.get("error"), str) and payload["error"]


def _request_schema(template: str, method: str) -> dict[str, Any]:
    schema: dict[str, Any] = OPENAPI["paths"][template][method]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    return schema


def test_our_sample_transaction_is_what_the_spec_describes() -> None:
    sample = {"events": [make_event(1), make_event(2, type="m.room.member", state_key="@a:example.org")]}
    validate(_request_schema(TRANSACTION, "put"), sample)


async def test_the_spec_example_transaction_is_delivered(
    client: Client, registration: Registration, handler: RecordingHandler
) -> None:
    example = _request_schema(TRANSACTION, "put")["example"]
    response = await client.put(f"{API}/transactions/spec", json=example, headers=good(registration))
    assert response.status == 200
    [txn] = handler.transactions
    assert [(e.sender, e.type) for e in txn.events] == [
        ("@alice:example.org", "m.room.member"),
        ("@example:example.org", "m.room.message"),
    ]
    assert txn.events[0].state_key == "@alice:example.org"
    assert txn.ephemeral == example["ephemeral"]
    assert txn.skipped == 0


def test_saved_registration_matches_the_spec_schema(registration: Registration, tmp_path: Path) -> None:
    definitions = SPEC_DIR / "application-service" / "definitions"
    schema = yaml.safe_load((definitions / "registration.yaml").read_text(encoding="utf-8"))
    namespace_list = yaml.safe_load((definitions / "namespace_list.yaml").read_text(encoding="utf-8"))
    document = registration.to_dict()
    if jsonschema is None or referencing is None:
        for key in schema["required"]:
            assert key in document
        return
    registry: referencing.Registry[Any] = referencing.Registry().with_resource(
        "namespace_list.yaml", referencing.Resource.from_contents(namespace_list)
    )
    jsonschema.Draft202012Validator(schema, registry=registry).validate(document)
    for kind in ("users", "aliases"):
        assert document["namespaces"][kind], f"the registration claims no {kind}"
