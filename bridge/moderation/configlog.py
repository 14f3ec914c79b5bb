"""What the hook configuration is, for the audit log: a description without secrets, and its digest."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from bridge.runtime.config import Config

SECRET_WORDS = ("secret", "token", "password", "key")


def _plain(value: Any, mask: bool = True) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value), mask)
    if isinstance(value, dict):
        return {
            str(k): (
                "<secret>" if mask and any(w in str(k).lower() for w in SECRET_WORDS) else _plain(v, mask)
            )
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_plain(v, mask) for v in value]
        return sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    pattern = getattr(value, "pattern", None)  # a compiled regular expression
    return pattern if isinstance(pattern, str) else type(value).__name__


def describe_hooks(config: Config) -> dict[str, Any]:
    """The deployment's hooks and each channel's own list, secrets replaced by `<secret>`."""
    return {
        "deployment": [_plain(spec) for spec in config.compliance.hooks],
        "channels": {
            handle: [_plain(s) for s in specs]
            for handle, specs in sorted(config.compliance.channel_hooks.items())
        },
    }


def hook_configuration_digest(config: Config) -> str:
    """Changes when any hook setting changes, secrets included (their values never leave this digest)."""
    everything = {
        "deployment": [_plain(spec, mask=False) for spec in config.compliance.hooks],
        "channels": {
            h: [_plain(s, mask=False) for s in specs]
            for h, specs in sorted(config.compliance.channel_hooks.items())
        },
    }
    return hashlib.sha256(json.dumps(everything, sort_keys=True).encode()).hexdigest()
