"""What Kanal writes to its log: readable lines, JSON on request, and never a token."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time

import aiohttp
import pytest
import yaml

from appservice.server import API_PREFIX
from bridge.runtime.logs import JsonFormatter
from tests.support import Env, create_channel, drop_mid_body

GONE = "the client closed the connection before the request was done"


@pytest.mark.integration
async def test_tokens_never_reach_the_log(env: Env) -> None:
    alice = await env.user("alice")
    room = await alice.open_management_room()
    await alice.ask(room, "help", "create <handle>")
    config = yaml.safe_load(env.kanal.config_path.read_text())
    log = env.kanal.log_path.read_text(errors="replace")
    assert "Kanal is running" in log
    for key in ("as_token", "hs_token"):
        assert config["appservice"][key] not in log
    assert alice.client.access_token not in log


def test_json_log_lines_are_one_object_each() -> None:
    record = logging.LogRecord(
        "bridge.x", logging.WARNING, __file__, 1, "waiting for %s", ("the homeserver",), None
    )
    line = JsonFormatter().format(record)
    data = json.loads(line)
    assert data["level"] == "WARNING" and data["message"] == "waiting for the homeserver"
    assert data["logger"] == "bridge.x" and "ts" in data


def _head(method: str, path: str, content_type: str, length: int, token: str | None = None) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (
        f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


async def _new_log(env: Env, before: int, expected: list[str], timeout: float = 20) -> str:
    """What Kanal logged since `before`, once every line in `expected` is there."""
    deadline = time.monotonic() + timeout
    while True:
        text = env.kanal.log_path.read_bytes()[before:].decode(errors="replace")
        if all(line in text for line in expected) or time.monotonic() > deadline:
            return text
        await asyncio.sleep(0.2)


@pytest.mark.integration
async def test_clients_that_drop_mid_body_cost_one_line_per_route_without_traceback(env: Env) -> None:
    config = yaml.safe_load(env.kanal.config_path.read_text())
    web_port = int(config["web"]["listen"].rsplit(":", 1)[1])
    alice = await env.user("alice")
    channel = await create_channel(env, alice, env.handle("drops"), "Drops Desk")
    await alice.text(channel.backstage, "!token new dropper")
    notice = await alice.wait_for(
        channel.backstage, lambda e: "kanal_api_" in e.get("content", {}).get("body", "")
    )
    api_token = re.search(r"kanal_api_\S+", notice["content"]["body"]).group(0)  # type: ignore[union-attr]
    before = len(env.kanal.log_path.read_bytes())

    transaction_route = f"PUT {API_PREFIX}/transactions/{{txn_id}}: {GONE}"
    for i in range(20):  # the homeserver's listener: a transaction cut off (with the hs_token)
        head = _head(
            "PUT",
            f"{API_PREFIX}/transactions/drop-{i}",
            "application/json",
            100_000,
            config["appservice"]["hs_token"],
        )
        await drop_mid_body(env.kanal.port, head, b'{"events": [{"type": "m.room.message", ')
    upload_route = f"POST /api/v1/channels/{{handle}}/posts: {GONE}"
    for _ in range(10):  # the web listener: a publishing-API upload cut off (the token's burst is 10)
        head = _head(
            "POST",
            f"/api/v1/channels/{channel.handle}/posts",
            "multipart/form-data; boundary=cut",
            1_000_000,
            api_token,
        )
        part = b'--cut\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n' + b"x" * 5000
        await drop_mid_body(web_port, head, part)
    join_route = f"POST /join/{{token}}: {GONE}"
    for _ in range(3):  # the join form (rate-limited per address before its body is read)
        head = _head("POST", "/join/kanal_inv_" + "a" * 24, "application/x-www-form-urlencoded", 2000)
        await drop_mid_body(web_port, head, b"user_id=%40reader")
    async with aiohttp.ClientSession() as http:  # both listeners have handled what came before
        for url in (f"127.0.0.1:{env.kanal.port}/health", f"127.0.0.1:{web_port}/api/v1/openapi.json"):
            async with http.get(f"http://{url}") as response:
                await response.read()

    log = await _new_log(env, before, [transaction_route, upload_route])
    assert "Traceback" not in log and "ERROR" not in log, log
    assert log.count(transaction_route) == 1, log
    assert log.count(upload_route) == 1, log
    assert log.count(join_route) <= 1, log
    assert log.count(GONE) <= 3, log
    assert config["appservice"]["hs_token"] not in log and api_token not in log


@pytest.mark.integration
async def test_a_transaction_of_malformed_events_costs_one_line(env: Env) -> None:
    config = yaml.safe_load(env.kanal.config_path.read_text())
    before = len(env.kanal.log_path.read_bytes())
    malformed = [{"type": "m.room.message", "content": "no object", "event_id": f"$b{i}"} for i in range(500)]
    headers = {"Authorization": f"Bearer {config['appservice']['hs_token']}"}
    async with aiohttp.ClientSession() as http:
        for txn_id in ("malformed-1", "malformed-2"):
            url = f"http://127.0.0.1:{env.kanal.port}{API_PREFIX}/transactions/{txn_id}"
            async with http.put(url, json={"events": malformed}, headers=headers) as response:
                assert response.status == 200, await response.text()
    first = "Transaction malformed-1: skipped 500 malformed event(s); the first: #0: 'content' must be an"
    log = await _new_log(env, before, [first])
    assert first in log
    assert log.count("malformed event") == 1, log  # the second, from the same address, is held back
