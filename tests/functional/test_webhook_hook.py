"""The webhook hook against a real aiohttp receiver on loopback: signatures, answers, failures, scope.

Pipeline.check ──HTTP POST (signed)──▶ Receiver (aiohttp_server) ──▶ scripted answer, or a stall
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from bridge.moderation.hooks import MediaInfo, Pipeline, PostInfo, Verdict, WebhookHook
from bridge.runtime.config import Config, parse

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
KEY = base64.b64decode(SECRET.removeprefix("whsec_"))
TIMEOUT_MS = 200
_EVENTS = itertools.count()


@dataclass
class Seen:
    headers: dict[str, str]
    body: bytes

    @property
    def payload(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """The operator's moderation service: checks each signature itself, records, answers as told."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    answer: tuple[int, str] = (200, '{"action": "allow"}')
    stall: bool = False
    release: asyncio.Event = field(default_factory=asyncio.Event)
    bad_signatures: int = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = dict(request.headers)
        self.seen.append(Seen(headers, body))
        signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
        expected = "v1," + base64.b64encode(hmac.new(KEY, signed, hashlib.sha256).digest()).decode()
        if not hmac.compare_digest(expected, headers["webhook-signature"]):
            self.bad_signatures += 1
            return web.Response(status=401)
        if self.stall:
            await self.release.wait()
        status, text = self.answer
        return web.Response(status=status, text=text, content_type="application/json")


async def moved(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/check")


@pytest.fixture
async def receiver(aiohttp_server: AiohttpServer) -> AsyncIterator[Receiver]:
    fake = Receiver()
    app = web.Application()
    app.router.add_post("/check", fake.handle)
    app.router.add_post("/moved", moved)
    server = await aiohttp_server(app)
    fake.url = str(server.make_url("/check"))
    yield fake
    fake.release.set()  # never leave a handler waiting when the server shuts down


def make_config(tmp_path: Path, hooks: list[Any]) -> Config:
    data = {
        "homeserver": {"url": "https://matrix.example.org", "domain": "example.org"},
        "appservice": {"as_token": "as-token-0123456789abcdef", "hs_token": "hs-token-0123456789abcdef"},
        "compliance": {"hooks": hooks},
    }
    return parse(data, tmp_path / "config.yaml")


def webhook(receiver: Receiver, **extra: Any) -> dict[str, Any]:
    return {"type": "webhook", "name": "modsvc", "url": receiver.url, "secret": SECRET, **extra}


@pytest.fixture
async def pipelines() -> AsyncIterator[list[Pipeline]]:
    """Pipelines a test makes, closed at its end."""
    made: list[Pipeline] = []
    yield made
    for pipeline in made:
        await pipeline.close()


def build(tmp_path: Path, pipelines: list[Pipeline], hooks: list[Any]) -> Pipeline:
    pipeline = Pipeline(make_config(tmp_path, hooks))
    pipelines.append(pipeline)
    return pipeline


def post(handle: str = "news", body: str = "Breaking: all is well") -> PostInfo:
    return PostInfo(
        channel_id=7,
        handle=handle,
        title="Daily News",
        author="@alice:example.org",
        event_id=f"$post{next(_EVENTS)}",
        msgtype="m.image",
        body=body,
        formatted_body=f"<b>{body}</b>",
        media=MediaInfo("image/png", 1234, "mxc://example.org/abc"),
    )


async def test_the_request_is_signed_and_carries_the_post(
    tmp_path: Path, receiver: Receiver, pipelines: list[Pipeline]
) -> None:
    pipeline = build(tmp_path, pipelines, [webhook(receiver)])
    sent = post()

    verdicts = await pipeline.check(sent)

    assert verdicts == [Verdict("allow", "webhook:modsvc", "none", "allowed by 'modsvc'")]
    [seen] = receiver.seen
    assert receiver.bad_signatures == 0
    assert seen.headers["webhook-id"].startswith("msg_")
    assert abs(int(seen.headers["webhook-timestamp"]) - time.time()) < 60
    assert seen.headers["webhook-signature"].startswith("v1,")
    assert seen.headers["Content-Type"] == "application/json"
    payload = seen.payload
    assert payload["type"] == "kanal.post.check"
    assert payload["timestamp"].endswith("Z")
    assert payload["data"] == {
        "channel": {"id": 7, "handle": "news", "title": "Daily News"},
        "post": {
            "event_id": sent.event_id,
            "author": "@alice:example.org",
            "msgtype": "m.image",
            "body": "Breaking: all is well",
            "formatted_body": "<b>Breaking: all is well</b>",
            "media": {"mimetype": "image/png", "size": 1234, "url": "mxc://example.org/abc"},
            "via": "backstage",
        },
    }


async def test_one_post_keeps_its_webhook_id(
    tmp_path: Path, receiver: Receiver, pipelines: list[Pipeline]
) -> None:
    pipeline = build(tmp_path, pipelines, [webhook(receiver)])
    sent = post()
    await pipeline.check(sent)
    await pipeline.check(sent)
    await pipeline.check(post())
    ids = [s.headers["webhook-id"] for s in receiver.seen]
    assert ids[0] == ids[1] != ids[2]


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [
        ({"action": "allow", "reason": "fine"}, Verdict("allow", "webhook:modsvc", "none", "fine")),
        (
            {"action": "hold", "category": "illegal_hate_speech", "reason": "needs a look"},
            Verdict("hold", "webhook:modsvc", "illegal_hate_speech", "needs a look"),
        ),
        (
            {"action": "reject"},
            Verdict("reject", "webhook:modsvc", "spam", "flagged by the moderation service 'modsvc'"),
        ),
    ],
)
async def test_the_service_answer_is_the_verdict(
    tmp_path: Path, receiver: Receiver, pipelines: list[Pipeline], answer: dict[str, Any], verdict: Verdict
) -> None:
    pipeline = build(tmp_path, pipelines, [webhook(receiver, category="spam")])
    receiver.answer = (200, json.dumps(answer))
    assert await pipeline.check(post()) == [verdict]


@pytest.mark.parametrize(
    ("on_failure", "category"), [("allow", "none"), ("hold", "other"), ("reject", "other")]
)
async def test_a_timeout_gets_the_configured_verdict(
    tmp_path: Path, receiver: Receiver, pipelines: list[Pipeline], on_failure: str, category: str
) -> None:
    pipeline = build(tmp_path, pipelines, [webhook(receiver, timeout_ms=TIMEOUT_MS, on_failure=on_failure)])
    receiver.stall = True

    started = time.monotonic()
    [verdict] = await pipeline.check(post())
    elapsed = time.monotonic() - started

    assert len(receiver.seen) == 1  # it was asked, and did not answer in time
    assert verdict == Verdict(
        on_failure,
        "webhook:modsvc",
        category,
        f"the moderation service 'modsvc' did not answer within {TIMEOUT_MS} ms; "
        f"when it cannot answer, the configured verdict is {on_failure}",
    )
    assert 0.9 * TIMEOUT_MS / 1000 <= elapsed < TIMEOUT_MS / 1000 + 2


async def test_fail_open_lets_the_next_hooks_decide(
    tmp_path: Path, receiver: Receiver, pipelines: list[Pipeline]
) -> None:
    hooks = [
        webhook(receiver, timeout_ms=TIMEOUT_MS, on_failure="allow"),
        {"type": "terms", "terms": ["well"]},
    ]
    pipeline = build(tmp_path, pipelines, hooks)
    receiver.stall = True

    verdicts = await pipeline.check(post())

    assert [(v.hook, v.action) for v in verdicts] == [("webhook:modsvc", "allow"), ("terms", "hold")]


@pytest.mark.parametrize(
    ("status", "text", "what"),
    [
        (500, '{"action": "allow"}', "answered HTTP 500"),
        (200, "<html>maintenance</html>", "sent an answer that is not JSON"),
        (200, '{"verdict": "ok"}', "sent an answer without an action"),
        (200, '{"action": "allow", "pad": "' + "x" * 70_000 + '"}', "sent an answer larger than 65536 bytes"),
    ],
)
async def test_a_bad_answer_gets_the_configured_verdict(
    tmp_path: Path, receiver: Receiver, pipelines: list[Pipeline], status: int, text: str, what: str
) -> None:
    pipeline = build(tmp_path, pipelines, [webhook(receiver, on_failure="reject")])
    receiver.answer = (status, text)

    [verdict] = await pipeline.check(post())

    assert (verdict.action, verdict.category) == ("reject", "other")
    assert verdict.reason.startswith(f"the moderation service 'modsvc' {what}")
    assert verdict.reason.endswith("when it cannot answer, the configured verdict is reject")


async def test_redirects_are_not_followed(
    tmp_path: Path, receiver: Receiver, pipelines: list[Pipeline]
) -> None:
    pipeline = build(tmp_path, pipelines, [webhook(receiver, url=receiver.url.replace("/check", "/moved"))])
    [verdict] = await pipeline.check(post())
    assert verdict.action == "hold"
    assert "answered HTTP 302" in verdict.reason
    assert receiver.seen == []


async def test_an_unreachable_service_gets_the_configured_verdict(
    tmp_path: Path, pipelines: list[Pipeline], caplog: pytest.LogCaptureFixture, unused_tcp_port: int
) -> None:
    url = f"http://127.0.0.1:{unused_tcp_port}/check"
    pipeline = build(
        tmp_path, pipelines, [{"type": "webhook", "name": "modsvc", "url": url, "secret": SECRET}]
    )

    [verdict] = await pipeline.check(post())

    assert verdict.action == "hold"
    assert verdict.reason.startswith("the moderation service 'modsvc' could not be reached;")
    assert "compliance webhook modsvc" in caplog.text
    assert SECRET.removeprefix("whsec_") not in caplog.text
    assert SECRET.removeprefix("whsec_") not in verdict.reason


async def test_a_scoped_webhook_never_sees_other_channels(
    tmp_path: Path, receiver: Receiver, pipelines: list[Pipeline]
) -> None:
    pipeline = build(
        tmp_path, pipelines, [webhook(receiver, channels=["news"]), {"type": "terms", "terms": ["x"]}]
    )

    other = await pipeline.check(post(handle="sport", body="sport body"))
    hook = next(h for h in pipeline.hooks_for("news") if isinstance(h, WebhookHook))
    direct = await hook.check(post(handle="sport", body="sport body"))  # even when called directly
    own = await pipeline.check(post(handle="News", body="news body"))

    assert [v.hook for v in other] == ["terms"]
    assert direct == Verdict("allow", "webhook:modsvc", "none", "not configured for this channel")
    assert [v.hook for v in own] == ["webhook:modsvc", "terms"]
    assert [s.payload["data"]["channel"]["handle"] for s in receiver.seen] == ["News"]
    assert all("sport" not in s.body.decode() for s in receiver.seen)


async def test_close_ends_the_http_session(tmp_path: Path, receiver: Receiver) -> None:
    pipeline = Pipeline(make_config(tmp_path, [webhook(receiver)]))
    await pipeline.check(post())
    await pipeline.close()
    await pipeline.close()  # twice is harmless
    assert len(receiver.seen) == 1
