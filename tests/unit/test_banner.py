"""What `kanal up` prints (bridge/ops/banner.py, bridge/ops/sandbox.py): every command in it runs as
printed from the project root (where the README's first command leaves `.venv/`), and its URLs carry
the ports the sandbox really uses."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.cli import UP_DEFAULTS, build_parser
from bridge.ops import sandbox
from bridge.ops.banner import installed_command, new_encrypted_sandbox, print_banner, up_again
from bridge.runtime.config import load

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _at_the_project_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def _runnable(command: str) -> list[str]:
    """The command's words, its program checked to be an executable file reached as printed: a path
    (relative to the project root, or absolute), never a bare name left to PATH."""
    argv = shlex.split(command)
    program = Path(argv[0])
    assert "/" in argv[0], f"`{command}` needs {argv[0]} on PATH"
    assert program.is_file() and os.access(program, os.X_OK), f"`{command}`: no {program} in {Path.cwd()}"
    return argv


def test_installed_commands_are_paths_beside_this_python() -> None:
    for name in ("kanal", "register_new_matrix_user"):
        command = installed_command(name)
        _runnable(command)
        assert Path(command).resolve().parent == Path(sys.executable).parent.resolve()


def test_the_banner_prints_runnable_commands_and_the_ports_it_is_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "sandbox"
    config = load(sandbox._ensure_kanal_files(data, 18018, 39350, encryption=False))
    synapse_port, web_url = sandbox.addresses(config)
    # The ports the sandbox was made with: Synapse's, and the web face next to Kanal's.
    assert (synapse_port, web_url) == (18018, "http://127.0.0.1:39351")
    # Run again with other ports, the folder keeps its own (and the banner says those).
    sandbox._ensure_kanal_files(data, 8008, 29340, encryption=False)
    assert sandbox.addresses(load(data / "kanal" / "config.yaml")) == (18018, "http://127.0.0.1:39351")

    print_banner(f"http://127.0.0.1:{synapse_port}", "@admin:localhost", "pw", "@kanal:localhost", data, web_url)
    out = capsys.readouterr().out
    ports = {int(port) for port in re.findall(r"http://127\.0\.0\.1:(\d+)", out)}
    assert ports == {18018, 39351}, out
    assert f"{web_url}/c/dailynews" in out

    (register,) = re.findall(r"Make more accounts with: (.+)", out)
    argv = _runnable(register)
    assert Path(argv[0]).name == "register_new_matrix_user"
    assert argv[1:] == ["-c", str(data / "synapse" / "homeserver.yaml")]


def test_the_commands_to_run_the_sandbox_again_are_runnable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # "Run `…` to continue": the options that differ from kanal up's defaults, nothing else.
    again = up_again("elsewhere", 18008, 39340, UP_DEFAULTS)
    argv = _runnable(again)
    args = build_parser().parse_args(argv[1:])
    assert (args.command, args.data_dir, args.synapse_port, args.port) == ("up", "elsewhere", 18008, 39340)
    assert _runnable(up_again(*UP_DEFAULTS, UP_DEFAULTS))[1:] == ["up"]

    # A sandbox made without encryption, asked for it: the command that makes one with it.
    data = tmp_path / "plain"
    sandbox._ensure_kanal_files(data, 18008, 39340, encryption=False)
    assert sandbox.run_sandbox(data, synapse_port=18008, kanal_port=39340, again=again, encryption=True) == 2
    (hint,) = re.findall(r"run `([^`]+)` for one with it", capsys.readouterr().err)
    assert hint == new_encrypted_sandbox()
    argv = _runnable(hint.replace("<a new folder>", str(tmp_path / "encrypted")))
    args = build_parser().parse_args(argv[1:])
    assert (args.command, args.encryption, args.data_dir) == ("up", True, str(tmp_path / "encrypted"))
    # And it runs as printed: `kanal up --help` through the very same program.
    shown = subprocess.run([argv[0], "up", "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert shown.returncode == 0 and "--encryption" in shown.stdout, shown.stderr
