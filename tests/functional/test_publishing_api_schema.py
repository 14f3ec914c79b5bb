"""Schemathesis against the publishing API, judged by its own OpenAPI document (bridge/web/publishing-api.openapi.json).

    schemathesis (requests, test thread) ──HTTP──▶ 127.0.0.1:<port>  add_api_routes() only
                                                    (own thread and event loop) ──▶ migrated SQLite
                                                    uploads ──HTTP──▶ MediaRepository on loopback

Channel `news` has a token and 20 posts made through the API before the run. Schemathesis sends valid
and invalid requests with that token (or, for its own negative cases, without one). A second pass
aims every case at `news` and at posts 1–20, so the answers checked against the document are mostly
successes, not only refusals. Seeds are fixed: CI sees the same requests on every run.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.runtime.context import Context
from bridge.web.api import OPENAPI_FILE

from .test_publishing_api import (
    HOOKS,
    MediaRepository,
    build_context,
    close_context,
    make_api_app,
    make_token,
    seed_channel,
)

T = TypeVar("T")

SEED = 20_250_301
SEEDED_POSTS = 20
BOOT_TIMEOUT_S = 30.0

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    ignored_auth,
]
SMALL = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=20,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


@dataclass(frozen=True)
class RunningApi:
    base_url: str
    token: str
    media: MediaRepository


@dataclass
class _Servers:
    ctx: Context
    engine: AsyncEngine
    runners: list[web.AppRunner]


async def _listen(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port: int = runner.addresses[0][1]
    return runner, port


async def _start(workdir: Path) -> tuple[_Servers, RunningApi]:
    media = MediaRepository()
    media_runner, media_port = await _listen(media.app())
    ctx, engine = await build_context(workdir, f"http://127.0.0.1:{media_port}", HOOKS)
    await seed_channel(ctx, "news")
    await seed_channel(ctx, "sport")
    token = await make_token(ctx, "news", "schemathesis")
    api_runner, api_port = await _listen(make_api_app(ctx))
    running = RunningApi(f"http://127.0.0.1:{api_port}", token, media)
    return _Servers(ctx, engine, [api_runner, media_runner]), running


async def _stop(servers: _Servers) -> None:
    for runner in servers.runners:
        await runner.cleanup()
    await close_context(servers.ctx, servers.engine)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApi]:
    """The API on a loopback port, served from its own thread (schemathesis is synchronous)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="publishing-api-under-schemathesis", daemon=True)
    thread.start()

    def run(coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(BOOT_TIMEOUT_S)

    try:
        servers, running = run(_start(tmp_path_factory.mktemp("publishing-api")))
        try:
            with requests.Session() as http:
                for n in range(SEEDED_POSTS):
                    response = http.post(
                        f"{running.base_url}/api/v1/channels/news/posts",
                        json={"text": f"seeded post {n}"},
                        headers={"Authorization": f"Bearer {running.token}"},
                    )
                    assert response.status_code == 201, response.text
            yield running
        finally:
            run(_stop(servers))
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(BOOT_TIMEOUT_S)
        loop.close()


STATUSES: Counter[tuple[str, int]] = Counter()


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    """One keep-alive session; its hook counts each answer by method and status."""
    session = requests.Session()

    def count(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        STATUSES[(str(response.request.method), response.status_code)] += 1

    session.hooks["response"].append(count)
    yield session
    session.close()


def _load(mode: str) -> schemathesis.BaseSchema:
    config = schemathesis.Config.from_dict({"seed": SEED, "generation": {"mode": mode}})
    return schemathesis.openapi.from_path(OPENAPI_FILE, config=config)


# Valid and invalid requests.
generated = _load("all")


def _call(case: Case[Any], api: RunningApi, http: requests.Session, checks: list[Any]) -> None:
    case.call_and_validate(
        base_url=api.base_url,
        session=http,
        headers={"Authorization": f"Bearer {api.token}"},
        checks=checks,
    )


@generated.parametrize()
@SMALL
def test_generated_requests_are_answered_as_documented(
    case: Case[Any], api: RunningApi, http: requests.Session
) -> None:
    _call(case, api, http, [*CHECKS, negative_data_rejection])


@generated.parametrize()
@SMALL
def test_requests_to_the_tokens_channel_and_its_posts_are_answered_as_documented(
    case: Case[Any], api: RunningApi, http: requests.Session
) -> None:
    """The same, aimed past the channel check, so bodies and parameters are what gets judged.

    A case made invalid through its path may become valid here, so invalid data is not required to
    be refused in this pass (the pass above requires it).
    """
    if "handle" in case.path_parameters:
        case.path_parameters["handle"] = "news"
    post_id = case.path_parameters.get("post_id")
    if isinstance(post_id, int) and not isinstance(post_id, bool):
        case.path_parameters["post_id"] = post_id % SEEDED_POSTS + 1
    _call(case, api, http, CHECKS)


def test_the_run_reached_success_and_refusal_alike(api: RunningApi) -> None:
    """Runs last: the cases above drew successes of every kind, refusals, and never a server error."""
    summary = dict(sorted(STATUSES.items()))
    print(f"{STATUSES.total()} requests; by method and status: {summary}")
    assert STATUSES, "run the whole module: the schemathesis tests above sent nothing"
    assert not [status for (_method, status) in STATUSES if status >= 500], summary
    assert {("POST", 201), ("GET", 200), ("PATCH", 200), ("DELETE", 204)} <= set(STATUSES), summary
    assert {status for (_method, status) in STATUSES} >= {400, 401, 403, 404, 409, 415}, summary
    assert api.media.uploads, "no generated multipart post reached the media repository"
