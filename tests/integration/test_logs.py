"""What Kanal writes to its log: readable lines, JSON on request, and never a token."""

from __future__ import annotations

import json
import logging

import pytest
import yaml

from bridge.runtime.logs import JsonFormatter
from tests.support import Env


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
