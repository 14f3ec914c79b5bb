"""The `kanal` command as an operator runs it: init, run (with its failures), and the `up` sandbox."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import aiohttp
import pytest
import yaml

from appservice.registration import load as load_registration
from bridge.cli import build_parser
from tests.support import Env, free_port

KANAL = [sys.executable, "-m", "bridge.cli"]


def kanal(*args: str, timeout: float = 60, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KANAL, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def test_init_writes_private_files_and_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "kanal"
    result = kanal(
        "init",
        "--domain",
        "example.org",
        "--homeserver-url",
        "http://127.0.0.1:8008",
        "--output-dir",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    for name in ("config.yaml", "registration.yaml"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600
    registration = load_registration(out / "registration.yaml")
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert registration.sender_localpart == "kanal"
    assert registration.as_token == config["appservice"]["as_token"] != config["appservice"]["hs_token"]
    assert registration.is_our_user("@kanal_news:example.org") and registration.is_our_user(
        "@kanal:example.org"
    )
    assert not registration.is_our_user("@alice:example.org")
    assert registration.is_our_alias("#news:example.org") and not registration.aliases[0].exclusive
    assert registration.as_token not in result.stdout + result.stderr  # never printed

    again = kanal(
        "init",
        "--domain",
        "example.org",
        "--homeserver-url",
        "http://127.0.0.1:8008",
        "--output-dir",
        str(out),
    )
    assert again.returncode == 2 and "--force" in again.stderr
    forced = kanal(
        "init",
        "--domain",
        "example.org",
        "--homeserver-url",
        "http://127.0.0.1:8008",
        "--output-dir",
        str(out),
        "--force",
    )
    assert forced.returncode == 0
    assert load_registration(out / "registration.yaml").as_token != registration.as_token


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c.update(surprise=1), "unknown key 'surprise'"),
        (lambda c: c["appservice"].pop("as_token"), "'appservice.as_token' is required"),
        (lambda c: c["appservice"].update(listen=8080), "'appservice.listen' must be a string"),
        (lambda c: c["homeserver"].update(url="ftp://x"), "'homeserver.url' must start with http"),
        (lambda c: c["logging"].update(colour="yes"), "unknown key 'logging.colour'"),
    ],
)
def test_broken_config_is_one_clear_paragraph_and_exit_2(
    tmp_path: Path, mutate: Callable[[dict[str, Any]], object], expected: str
) -> None:
    kanal(
        "init",
        "--domain",
        "example.org",
        "--homeserver-url",
        "http://127.0.0.1:9",
        "--output-dir",
        str(tmp_path),
    )
    path = tmp_path / "config.yaml"
    config = yaml.safe_load(path.read_text())
    mutate(config)
    path.write_text(yaml.safe_dump(config))
    result = kanal("run", "-c", str(path))
    assert result.returncode == 2
    assert expected in result.stderr and str(path) in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("homeserver: [unclosed\n")
    result = kanal("run", "-c", str(path))
    assert (
        result.returncode == 2
        and "not valid YAML at line" in result.stderr
        and "Traceback" not in result.stderr
    )
    missing = kanal("run", "-c", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "kanal init" in missing.stderr


def test_run_fails_clearly_when_the_homeserver_is_unreachable(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    kanal(
        "init",
        "--domain",
        "example.org",
        "--homeserver-url",
        f"http://127.0.0.1:{port}",
        "--listen",
        f"127.0.0.1:{free_port()}",
        "--output-dir",
        str(tmp_path),
    )
    result = kanal("run", "-c", str(tmp_path / "config.yaml"))
    assert result.returncode == 1
    assert "Cannot reach the homeserver" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.integration
def test_run_fails_clearly_when_the_homeserver_rejects_the_token(env: Env, tmp_path: Path) -> None:
    # A registration the homeserver never loaded: its as_token is unknown there.
    kanal(
        "init",
        "--domain",
        env.domain,
        "--homeserver-url",
        env.homeserver,
        "--listen",
        f"127.0.0.1:{free_port()}",
        "--output-dir",
        str(tmp_path),
    )
    result = kanal("run", "-c", str(tmp_path / "config.yaml"))
    assert result.returncode == 1
    assert "rejected Kanal's as_token" in result.stderr and "app_service_config_files" in result.stderr
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert config["appservice"]["as_token"] not in result.stderr


async def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout} s")


async def _login(base: str, user: str, password: str) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{base}/_matrix/client/v3/login",
            json={
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": user},
                "password": password,
            },
        ) as response,
    ):
        assert response.status == 200, await response.text()
        return str((await response.json())["user_id"])


def _printed(output: str, pattern: str) -> str:
    match = re.search(pattern, output)
    assert match, f"`kanal up` printed no line matching {pattern!r}:\n{output}"
    return match.group(1)


def _kanal_up(log: IO[str], data: Path, synapse_port: int, kanal_port: int, *flags: str) -> subprocess.Popen[bytes]:
    """`kanal up` with the sandbox in `data` on these ports, its output to `log`."""
    return subprocess.Popen(
        [*KANAL, "up", *flags, "--data-dir", str(data), "--synapse-port", str(synapse_port), "--port", str(kanal_port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.integration
async def test_up_runs_a_wired_sandbox_stops_on_ctrl_c_and_reuses_its_data(tmp_path: Path) -> None:
    """What the sandbox prints is true: its URLs name the ports in use, its commands run as printed."""
    synapse_port, kanal_port = free_port(), free_port()
    data = tmp_path / "sandbox"
    for round_ in range(2):
        log = (tmp_path / f"up-{round_}.log").open("w")
        process = _kanal_up(log, data, synapse_port, kanal_port)
        try:
            await _wait_http(f"http://127.0.0.1:{kanal_port}/health", 90)
            output = (tmp_path / f"up-{round_}.log").read_text()
            assert "Log in from Element" in output and "@kanal:localhost" in output
            password = (data / "admin-password").read_text().strip()
            assert stat.S_IMODE((data / "admin-password").stat().st_mode) == 0o600
            assert await _login(f"http://127.0.0.1:{synapse_port}", "admin", password) == "@admin:localhost"
            page = _printed(output, r"on its web page, (\S+)")
            assert page == f"http://127.0.0.1:{kanal_port + 1}/c/dailynews"
            await _wait_http(page.removesuffix("/c/dailynews") + "/", 10)  # the directory: Kanal's web face
            if round_ == 0:
                # Run as printed, from where `kanal up` ran (the project root), answering its questions
                # with flags instead of a terminal.
                register = shlex.split(_printed(output, r"Make more accounts with: (.+)"))
                made = await asyncio.to_thread(
                    subprocess.run,
                    [*register, "-u", "bob", "-p", "bob-password", "--no-admin"],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
                assert made.returncode == 0, made.stdout + made.stderr
                assert await _login(f"http://127.0.0.1:{synapse_port}", "bob", "bob-password") == "@bob:localhost"
            process.send_signal(signal.SIGINT)
            assert await asyncio.to_thread(process.wait, 60) == 0
        finally:
            if process.poll() is None:
                process.kill()
            log.close()
        output = (tmp_path / f"up-{round_}.log").read_text()
        assert "Stopped." in output and "Traceback" not in output
        again = shlex.split(_printed(output, r"Run `([^`]+)` to continue"))
        assert Path(again[0]).name == "kanal" and os.access(again[0], os.X_OK), again
        parser = await asyncio.to_thread(build_parser)  # reads files
        args = parser.parse_args(again[1:])
        assert (args.command, Path(args.data_dir), args.synapse_port, args.port) == (
            "up",
            data,
            synapse_port,
            kanal_port,
        )
        with pytest.raises(aiohttp.ClientError):
            await _login(f"http://127.0.0.1:{synapse_port}", "admin", password)


@pytest.mark.integration
async def test_up_with_encryption_answers_an_encrypting_client(tmp_path: Path) -> None:
    """`kanal up --encryption`: the sandbox's homeserver encrypts a new direct chat, and the bot reads
    and answers in it; a later run keeps encryption without the flag; the sandbox's `kanal doctor` agrees."""
    from bridge.ops.synapse import LocalSynapse
    from tests.encrypting import Encrypting

    synapse_port, kanal_port = free_port(), free_port()
    data = tmp_path / "sandbox"
    log = (tmp_path / "up.log").open("w")
    process = _kanal_up(log, data, synapse_port, kanal_port, "--encryption")
    person: Encrypting | None = None
    try:
        await _wait_http(f"http://127.0.0.1:{kanal_port}/health", 90)
        password = (data / "admin-password").read_text().strip()
        # The sandbox's homeserver, as a client sees it (started by `kanal up`, not by this test).
        synapse = LocalSynapse(data / "synapse", server_name="localhost", port=synapse_port)
        env = Env(synapse, None, "localhost", "@kanal:localhost", "kanal_", data)  # type: ignore[arg-type]
        person = await Encrypting.login(env, tmp_path / "store", "@admin:localhost", password)
        chat = await person.open_greeted_chat(timeout=60)  # an encrypted greeting, decrypted here
        await person.ask(chat, "help", "create", timeout=30)
        doctor = await asyncio.to_thread(
            subprocess.run,
            [
                *KANAL,
                "doctor",
                "-c",
                str(data / "kanal" / "config.yaml"),
                "--homeserver-config",
                str(data / "synapse" / "homeserver.yaml"),
                "--format",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        checks = {check["name"]: check for check in json.loads(doctor.stdout)["checks"]}
        assert checks["encryption by default"]["status"] == "pass", checks["encryption by default"]
        assert "invite" in checks["encryption by default"]["detail"]
    finally:
        if person is not None:
            await person.close()
            await person.client.close()  # no fixture closes this Env's clients
        process.send_signal(signal.SIGINT)
        await asyncio.to_thread(process.wait, 60)
        log.close()
    assert "Traceback" not in (tmp_path / "up.log").read_text()

