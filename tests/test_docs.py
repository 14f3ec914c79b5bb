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


def test_readme_lists_every_kanal_up_flag_with_its_default() -> None:
    """`kanal up --help` and the README's table of its flags agree."""
    import argparse

    from bridge.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    up = commands.choices["up"]
    readme = (ROOT / "README.md").read_text()
    flags = [a for a in up._actions if a.option_strings and a.dest != "help"]
    assert flags
    for action in flags:
        (flag,) = action.option_strings
        switch = isinstance(action, argparse._StoreTrueAction)  # a switch's row is `--flag`, default off
        start = f"| `{flag}` |" if switch else f"| `{flag} "
        row = next((line for line in readme.splitlines() if line.startswith(start)), None)
        assert row is not None, f"README.md has no row for kanal up's {flag}"
        default = "off" if switch else f"`{action.default}`"
        assert f"| {default} |" in row, f"README.md gives another default for {flag}: {row}"
