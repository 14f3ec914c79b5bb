"""`kanal doctor` as an operator runs it, against the session's real Synapse and Kanal."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.cli import main
from tests.support import Env, postgres_url

pytestmark = pytest.mark.integration

KANAL = [sys.executable, "-m", "bridge.cli"]
# The suite's Kanal uses SQLite unless KANAL_TEST_POSTGRES is set; the test Synapse always uses SQLite.
KANAL_DATABASE = "pass" if postgres_url() else "warn"
LIVE = {
    "homeserver": "pass",
    "bot user": "pass",
    "appservice ping": "pass",
    "tokens": "pass",
    "kanal database": KANAL_DATABASE,
}
SOVEREIGN = {
    "homeserver.yaml": "pass",
    "server_name": "pass",
    "app_service_config_files": "pass",
    "trusted_key_servers": "pass",
    "report_stats": "pass",
    "identity server": "pass",
    "federation": "pass",
    "media storage": "pass",
    "room_list_publication_rules": "pass",
    "encryption by default": "pass",
    "synapse database": "warn",
    "caches for large rooms": "pass",  # the test Synapse's caches hold a full shard
}


def doctor(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KANAL, "doctor", "-c", str(config), *args], capture_output=True, text=True, timeout=60
    )


def doctor_json(config: Path, *args: str) -> tuple[int, dict[str, dict[str, str]], str]:
    """Exit code, each check by name, and everything printed."""
    result = doctor(config, "--format", "json", *args)
    assert "Traceback" not in result.stderr, result.stderr
    data = json.loads(result.stdout)
    assert data["exit_code"] == result.returncode
    return result.returncode, {c["name"]: c for c in data["checks"]}, result.stdout + result.stderr


def statuses(checks: dict[str, dict[str, str]]) -> dict[str, str]:
    return {name: check["status"] for name, check in checks.items()}


def table_rows(stdout: str) -> dict[str, str]:
    """Each check's status as the table shows it (continuation lines are indented)."""
    lines = stdout.splitlines()
    assert lines[0].split() == ["CHECK", "STATUS", "DETAIL"]
    rows = [re.split(r"\s{2,}", line) for line in lines[1:] if line and not line.startswith(" ")]
    return {row[0]: row[1] for row in rows if len(row) > 2}


def kanal_config(env: Env) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(env.kanal.config_path.read_text())
    return data


def copy_kanal_config(
    env: Env, folder: Path, hosting: dict[str, Any] | None = None, **appservice: str
) -> Path:
    """The session's config.yaml elsewhere, its registration path made absolute, with changes."""
    data = kanal_config(env)
    data["appservice"]["registration"] = str(env.kanal.config_path.parent / "registration.yaml")
    data["appservice"].update(appservice)
    if hosting is not None:
        data["hosting"] = hosting
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_good_deployment(env: Env) -> None:
    code, checks, printed = doctor_json(
        env.kanal.config_path, "--homeserver-config", str(env.synapse.config_path)
    )
    assert statuses(checks) == LIVE | SOVEREIGN
    assert code == 1  # the test Synapse's SQLite
    assert checks["homeserver"]["detail"].startswith("Synapse 1.") and env.homeserver in printed
    assert "@kanal:localhost" in checks["bot user"]["detail"]
    assert "rule 1 allows @kanal:localhost" in checks["room_list_publication_rules"]["detail"]
    tokens = kanal_config(env)["appservice"]
    assert tokens["as_token"] not in printed and tokens["hs_token"] not in printed

    table = doctor(env.kanal.config_path)  # without the homeserver's config: the live checks only
    assert table_rows(table.stdout) == LIVE and "\033[" not in table.stdout
    assert table.returncode == (1 if KANAL_DATABASE == "warn" else 0)
    assert table.stdout.splitlines()[-1].startswith("WARN: " if KANAL_DATABASE == "warn" else "PASS: ")


def test_a_homeserver_that_is_not_sovereign(env: Env, tmp_path: Path) -> None:
    config = copy_kanal_config(
        env, tmp_path, hosting={"federation": "allowlist", "allowed_servers": ["partner.example"]}
    )
    homeserver: dict[str, Any] = yaml.safe_load(env.synapse.config_path.read_text())
    homeserver["report_stats"] = True
    del homeserver["trusted_key_servers"]  # Synapse then asks matrix.org
    homeserver["federation_domain_whitelist"] = ["localhost", "evil.example"]
    homeserver["media_storage_providers"] = [
        {
            "module": "s3_storage_provider.S3StorageProviderBackend",
            "store_local": True,
            "store_remote": True,
            "store_synchronous": True,
            "config": {"bucket": "media", "endpoint_url": "https://s3.eu-central-1.amazonaws.com"},
        }
    ]
    homeserver["default_identity_server"] = "https://vector.im"
    del homeserver["room_list_publication_rules"]
    homeserver["encryption_enabled_by_default_for_room_type"] = "invite"
    bad = tmp_path / "homeserver.yaml"
    bad.write_text(yaml.safe_dump(homeserver))

    expected = (
        LIVE
        | SOVEREIGN
        | {
            "trusted_key_servers": "fail",
            "report_stats": "fail",
            "identity server": "warn",
            "federation": "fail",
            "media storage": "fail",
            "room_list_publication_rules": "fail",
            "encryption by default": "fail",
        }
    )
    table = doctor(config, "--homeserver-config", str(bad))
    assert table.returncode == 3
    assert table_rows(table.stdout) == expected
    text = " ".join(table.stdout.split())  # undo the table's wrapping
    assert "not set, so Synapse uses its default, matrix.org" in text
    assert "fix: set report_stats: false" in text
    assert "federation_domain_whitelist also allows evil.example" in text
    assert "s3_storage_provider.S3StorageProviderBackend → s3.eu-central-1.amazonaws.com" in text
    assert "default_identity_server is https://vector.im" in text
    assert "not set: Synapse then lets nobody (admins included) publish rooms" in text
    assert "encryption_enabled_by_default_for_room_type is invite: the homeserver encrypts people's chats" in text
    count = Counter(expected.values())
    assert text.endswith(f"FAIL: {count['pass']} pass, {count['warn']} warn, {count['fail']} fail")


def test_a_config_whose_as_token_the_homeserver_does_not_know(env: Env, tmp_path: Path) -> None:
    wrong = f"wrong-as-token-{secrets.token_hex(12)}"
    config = copy_kanal_config(env, tmp_path, as_token=wrong)
    code, checks, printed = doctor_json(config)
    assert code == 3
    assert statuses(checks) == LIVE | {"bot user": "fail", "appservice ping": "fail", "tokens": "fail"}
    assert "M_UNKNOWN_TOKEN" in checks["bot user"]["detail"]
    assert checks["bot user"]["fix"] == (
        "add registration.yaml to app_service_config_files in the homeserver's config and restart the homeserver"
    )
    assert checks["tokens"]["detail"].startswith(f"appservice.as_token in {config} differ")
    for token in (wrong, *(kanal_config(env)["appservice"][k] for k in ("as_token", "hs_token"))):
        assert token not in printed


async def test_kanal_down_is_a_warning_not_a_missing_registration(env: Env) -> None:
    assert await env.kanal.stop() == 0
    try:
        code, checks, _ = await asyncio.to_thread(doctor_json, env.kanal.config_path)
    finally:
        await env.kanal.start()
    assert statuses(checks) == LIVE | {"appservice ping": "warn"}
    assert code == 1
    assert "registration is loaded" in checks["appservice ping"]["detail"]
    assert "kanal run -c" in checks["appservice ping"]["fix"]


def test_a_broken_kanal_config_is_one_paragraph_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("homeserver: {url: http://127.0.0.1:9}\n")
    assert main(["doctor", "-c", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and str(path) in err and "'homeserver.domain' is required" in err


def test_encryption_by_default_invite_passes_with_kanal_taking_part_and_all_fails(e2ee: Env, tmp_path: Path) -> None:
    """Issue 17: `invite` works once Kanal's bot takes part in encryption (its config, Synapse's
    MSC2409/MSC3202 flags and the registration all set up); `all` never does (public rooms encrypted)."""
    homeserver: dict[str, Any] = yaml.safe_load(e2ee.synapse.config_path.read_text())
    assert homeserver["encryption_enabled_by_default_for_room_type"] == "invite"
    _code, checks, _out = doctor_json(e2ee.kanal.config_path, "--homeserver-config", str(e2ee.synapse.config_path))
    assert checks["encryption by default"]["status"] == "pass", checks["encryption by default"]
    assert "takes part in their encryption" in checks["encryption by default"]["detail"]

    homeserver["encryption_enabled_by_default_for_room_type"] = "all"
    every = tmp_path / "all.yaml"
    every.write_text(yaml.safe_dump(homeserver))
    code, checks, _out = doctor_json(e2ee.kanal.config_path, "--homeserver-config", str(every))
    check = checks["encryption by default"]
    assert code == 3 and check["status"] == "fail"
    assert "public_chat preset" in check["detail"] and "does not scale" in check["detail"]
    assert "encryption_enabled_by_default_for_room_type: invite" in check["fix"]

    # `invite` without the homeserver's extensions: Kanal cannot get its keys, and doctor names what is missing.
    homeserver["encryption_enabled_by_default_for_room_type"] = "invite"
    del homeserver["experimental_features"]
    bare = tmp_path / "bare.yaml"
    bare.write_text(yaml.safe_dump(homeserver))
    code, checks, _out = doctor_json(e2ee.kanal.config_path, "--homeserver-config", str(bare))
    check = checks["encryption by default"]
    assert code == 3 and check["status"] == "fail"
    assert "experimental_features.msc2409_to_device_messages_enabled is not true" in check["detail"]
