"""The one JSON spelling of a value that Kanal hashes or signs: keys sorted, no spaces, UTF-8 as it is,
no NaN or infinities (the audit log's chain, and Matrix's "Signing JSON" for the bot's keys)."""

from __future__ import annotations

import json
from typing import Any


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
