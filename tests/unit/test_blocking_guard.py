"""The blocking_guard fixture (tests/conftest.py) fails a test whose Kanal code blocks the event loop."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from blockbuster import BlockBuster, BlockingError

import bridge

SLEEP = "time.sleep(0.01)\n"


def _run_as_kanal_code(source: str) -> None:
    """Runs `source` as if it were a line of bridge/: the guard knows code by the file it comes from."""
    code = compile(source, str(Path(bridge.__file__).parent / "blocking_example.py"), "exec")
    exec(code, {"time": time})  # noqa: S102 - a fixed line of this file


async def test_kanal_code_sleeping_in_the_loop_fails(blocking_guard: BlockBuster) -> None:
    with pytest.raises(BlockingError, match="sleep"):
        _run_as_kanal_code(SLEEP)


async def test_kanal_code_reading_a_file_in_the_loop_fails(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"data")
    with pytest.raises(BlockingError, match="read"):
        _run_as_kanal_code(f"with open({str(tmp_path / 'f')!r}, 'rb') as f:\n    f.read()\n")


async def test_kanal_code_in_a_thread_may_block() -> None:
    await asyncio.to_thread(_run_as_kanal_code, SLEEP)


def test_kanal_code_without_a_running_loop_may_block() -> None:
    _run_as_kanal_code(SLEEP)


async def test_test_code_may_block_in_the_loop() -> None:
    # Fixtures and tests start subprocesses and write files; only Kanal's code is held to the rule.
    time.sleep(0.01)  # noqa: ASYNC251
