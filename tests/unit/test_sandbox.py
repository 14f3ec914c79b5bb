"""`kanal up`'s choices made before anything starts (bridge/ops/sandbox.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.ops.sandbox import run_sandbox
from bridge.runtime.config import load


def test_encryption_is_chosen_when_the_sandbox_is_made_and_never_switched_on_later(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bridge.ops import sandbox

    data = tmp_path / "sandbox"
    config_path = sandbox._ensure_kanal_files(data, 18008, 39340, encryption=False)
    assert not load(config_path).encryption_enabled
    # The same folder asked for encryption: refused before anything starts, with what to do instead.
    assert run_sandbox(data, synapse_port=18008, kanal_port=39340, again="kanal up", encryption=True) == 2
    assert "was made without encryption" in capsys.readouterr().err
    assert not load(config_path).encryption_enabled
    made = sandbox._ensure_kanal_files(tmp_path / "other", 18008, 39340, encryption=True)
    assert load(made).encryption_enabled
