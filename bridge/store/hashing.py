"""What Kanal stores of a secret token (registration, flagger, publishing API, invite link): its SHA-256."""

from __future__ import annotations

import hashlib


def hash_token(token: str) -> str:
    """The stored form of a token; the clear token is shown once and never kept."""
    return hashlib.sha256(token.strip().encode()).hexdigest()
