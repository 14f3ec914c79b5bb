"""Idempotency-Key for new posts: the stored answer to a request made again, for 24 hours.

The same key with the same request answers what the first one was answered (`Idempotent-Replayed`);
the same key with another request is a conflict (409).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from aiohttp import web
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.runtime.outbox import aware
from bridge.store.models import ApiIdempotency
from bridge.web.api_errors import ApiError

MAX_IDEMPOTENCY_KEY_CHARS: Final = 255
IDEMPOTENCY_TTL: Final = timedelta(hours=24)

_IDEMPOTENCY_KEY: Final = re.compile(rf"[\x20-\x7e]{{1,{MAX_IDEMPOTENCY_KEY_CHARS}}}")


def idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        raise ApiError(
            400,
            "invalid_idempotency_key",
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII characters.",
        )
    return key


async def replay(session: AsyncSession, token_id: int, key: str, fingerprint: str) -> web.Response | None:
    """The stored answer to an earlier request with this key, or None when there is none (or it expired)."""
    row = await session.get(ApiIdempotency, (token_id, key))
    if row is None or aware(row.created_at) < datetime.now(UTC) - IDEMPOTENCY_TTL:
        return None
    if row.request_hash != fingerprint:
        raise ApiError(
            409,
            "idempotency_key_reused",
            "This Idempotency-Key was used for a different request; use a new key for a new post.",
        )
    return web.json_response(row.response, status=row.status, headers={"Idempotent-Replayed": "true"})


async def remember(
    session: AsyncSession, token_id: int, key: str, fingerprint: str, status: int, body: dict[str, Any]
) -> None:
    now = datetime.now(UTC)
    await session.execute(
        delete(ApiIdempotency).where(
            ApiIdempotency.token_id == token_id, ApiIdempotency.created_at < now - IDEMPOTENCY_TTL
        )
    )
    session.add(
        ApiIdempotency(
            token_id=token_id, key=key, request_hash=fingerprint, status=status, response=body, created_at=now
        )
    )
    await session.flush()  # a concurrent request with the same key fails here (primary key)
