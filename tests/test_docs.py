"""The documentation matches the code: the example config is complete and valid."""

from __future__ import annotations

from pathlib import Path

import yaml

from bridge.runtime.config import _SCHEMA, parse

ROOT = Path(__file__).resolve().parent.parent


def test_config_example_is_valid_and_documents_every_key() -> None:
    path = ROOT / "config.example.yaml"
    data = yaml.safe_load(path.read_text())
    parse(data, path)
    for section, keys in _SCHEMA.items():
        assert section in data, f"config.example.yaml lacks the section {section}"
        missing = set(keys) - set(data[section])
        assert not missing, f"config.example.yaml lacks {section}.{sorted(missing)}"


def test_readme_commands_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "scripts/up" in readme and "scripts/test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/test" in ci
