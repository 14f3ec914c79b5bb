"""Rooms Kanal makes for itself exist once, however often their creation is retried.

    createRoom with alias #_kanal.<kind>.<key digest> ─▶ answer lost ─▶ retried: M_ROOM_IN_USE
        ─▶ the alias's room, if the bot created it ─▶ recorded ─▶ alias deleted (the record now says
           which room it is)

The digest is keyed with the application service's token: nobody else can compute a marker, so none
can be taken before Kanal or looked up to learn which private rooms exist. Channel rooms with an
alias of their own (a channel's public rooms, `#handle`, and its later shards) use that alias instead.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any

from appservice.errors import MatrixConnectionError, MatrixRequestError, MNotFound
from appservice.ids import RoomAlias, RoomID
from bridge.runtime.context import Context

log = logging.getLogger(__name__)


def creation_marker(ctx: Context, kind: str, key: object) -> str:
    """The alias localpart a room of `kind` for `key` (a channel id, a user id…) is created with."""
    digest = hmac.new(ctx.config.as_token.encode(), f"{kind}:{key}".encode(), hashlib.sha256).hexdigest()
    return f"_kanal.{kind}.{digest[:32]}"


async def create_once(ctx: Context, body: dict[str, Any], kind: str, key: object) -> RoomID:
    """Create the bot's room of `kind` for `key`, or find the one an attempt whose answer was lost made."""
    return await ctx.bot_intent().create_room_once(body, creation_marker(ctx, kind, key))


async def forget_marker(ctx: Context, kind: str, key: object) -> None:
    """The room is recorded: its marker is no longer needed (best effort; a left-over marker only
    names a room already recorded)."""
    alias = RoomAlias(f"#{creation_marker(ctx, kind, key)}:{ctx.domain}")
    try:
        await ctx.bot_intent().delete_alias(alias)
    except MNotFound:
        pass
    except (MatrixRequestError, MatrixConnectionError) as exc:
        log.warning("Could not delete the creation marker of a %s room (%s); it is harmless", kind, exc)
