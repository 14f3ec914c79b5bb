"""Publishing-API tokens: made, listed and revoked by a channel's owner in backstage; only hashes are kept.

A token is `kanal_api_` followed by 32 random bytes (URL-safe base64). It is shown once, as the bot's
`m.notice` in backstage, a sealed reply (`reply_sealed`: never written anywhere in clear); the
database keeps its SHA-256 (`api_tokens.token_hash`), so a copy of the database cannot be used to post.
Each token belongs to one channel and has a name, which the audit log and the posts it makes
(`via = api:<name>`) carry.
"""

from __future__ import annotations

import hmac
import re
import secrets
from datetime import UTC, datetime
from typing import Final

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from appservice.events import Event
from bridge.channels.management import role_of
from bridge.moderation import audit
from bridge.runtime.context import Context, reply, reply_sealed
from bridge.runtime.dispatch import CommandCall, command
from bridge.store.hashing import hash_token
from bridge.store.models import ApiToken, Channel, Room, RoomKind
from bridge.text.digits import localise_digits
from bridge.text.i18n import t

TOKEN_PREFIX: Final = "kanal_api_"  # noqa: S105 (a prefix, not a secret)
TOKEN_BYTES: Final = 32
# Anything longer is not one of ours: refused before it is hashed.
MAX_TOKEN_LENGTH: Final = 128
MAX_ACTIVE_TOKENS_PER_CHANNEL: Final = 20
# Shown in audit entries and in `via = api:<name>` (posts.via is VARCHAR(80)).
TOKEN_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def bearer_token(header_value: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None when there is none."""
    scheme, _, value = (header_value or "").strip().partition(" ")
    token = value.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


async def authenticate(session: AsyncSession, header_value: str | None) -> ApiToken | None:
    """The active token an `Authorization` header carries, or None."""
    token = bearer_token(header_value)
    if token is None or not token.startswith(TOKEN_PREFIX) or len(token) > MAX_TOKEN_LENGTH:
        return None
    digest = hash_token(token)
    row = await session.scalar(
        select(ApiToken).where(ApiToken.token_hash == digest, ApiToken.revoked.is_(False))
    )
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    return row


@command(RoomKind.BACKSTAGE, "token")
async def token_command(call: CommandCall) -> None:
    """`!token new <name>`, `!token list`, `!token revoke <name>` in a channel's backstage.

    Making and revoking tokens is the owner's; editors and moderators may list them too. Replies are in `lang`.
    """
    ctx, session, room, channel, event = call.ctx, call.session, call.room, call.backstage_channel, call.event
    args, lang = call.command.args, call.lang
    action = args[0].lower() if args else ""
    role = await role_of(session, channel, event.sender)
    if action == "list":
        if role is None:
            reply(session, ctx, room.room_id, lang, "api_token_list_forbidden")
            return
        await _listing(ctx, session, room, channel, lang)
        return
    if action not in ("new", "revoke") or len(args) != 2:
        reply(session, ctx, room.room_id, lang, "api_token_usage")
        return
    if role != "owner":
        reply(
            session,
            ctx,
            room.room_id,
            lang,
            "api_token_owner_only_new" if action == "new" else "api_token_owner_only_revoke",
            handle=channel.handle,
            owner=channel.owner,
        )
        return
    name = args[1]
    if action == "new":
        await _create(ctx, session, room, channel, event, name, lang)
    else:
        await _revoke(ctx, session, room, channel, event, name, lang)


async def _active(session: AsyncSession, channel: Channel, name: str) -> ApiToken | None:
    token: ApiToken | None = await session.scalar(
        select(ApiToken).where(
            ApiToken.channel_id == channel.id, ApiToken.name == name, ApiToken.revoked.is_(False)
        )
    )
    return token


async def _create(
    ctx: Context, session: AsyncSession, room: Room, channel: Channel, event: Event, name: str, lang: str
) -> None:
    if not TOKEN_NAME.fullmatch(name):
        reply(session, ctx, room.room_id, lang, "api_token_bad_name")
        return
    if await _active(session, channel, name) is not None:
        reply(session, ctx, room.room_id, lang, "api_token_exists", name=name)
        return
    active = await session.scalar(
        select(func.count())
        .select_from(ApiToken)
        .where(ApiToken.channel_id == channel.id, ApiToken.revoked.is_(False))
    )
    if (active or 0) >= MAX_ACTIVE_TOKENS_PER_CHANNEL:
        reply(session, ctx, room.room_id, lang, "api_token_too_many", limit=MAX_ACTIVE_TOKENS_PER_CHANNEL)
        return
    token = new_token()
    session.add(
        ApiToken(
            channel_id=channel.id,
            name=name,
            token_hash=hash_token(token),
            created_by=event.sender,
            revoked=False,
            created_at=datetime.now(UTC),
        )
    )
    await session.flush()
    await _audit(ctx, session, channel, name, "create", event.sender)
    base = ctx.config.web_public_url
    text = t(
        lang,
        "api_token_created",
        name=name,
        handle=channel.handle,
        token=token,
        endpoint=f"{base}/api/v1/channels/{channel.handle}/posts",
        docs=f"{base}/api/v1/openapi.json",
    )
    lost = t(lang, "api_token_lost", name=name, handle=channel.handle)
    reply_sealed(session, ctx, room.room_id, text, lost)


async def _revoke(
    ctx: Context, session: AsyncSession, room: Room, channel: Channel, event: Event, name: str, lang: str
) -> None:
    token = await _active(session, channel, name)
    if token is None:
        reply(session, ctx, room.room_id, lang, "api_token_not_found", name=name[:64])
        return
    token.revoked = True
    await _audit(ctx, session, channel, name, "revoke", event.sender)
    reply(session, ctx, room.room_id, lang, "api_token_revoked", name=name)


async def _audit(
    ctx: Context, session: AsyncSession, channel: Channel, name: str, action: str, by: str
) -> None:
    """A token made or revoked, in the audit log (the name, never the token)."""
    await audit.append(
        session,
        "api_token",
        {"channel": channel.handle, "token": name, "action": action},
        {"by": by},
        config=ctx.config,
    )


async def _listing(ctx: Context, session: AsyncSession, room: Room, channel: Channel, lang: str) -> None:
    tokens = (
        await session.scalars(select(ApiToken).where(ApiToken.channel_id == channel.id).order_by(ApiToken.id))
    ).all()
    if not tokens:
        reply(session, ctx, room.room_id, lang, "api_token_none", handle=channel.handle)
        return
    lines = [
        t(
            lang,
            "api_token_line_revoked" if token.revoked else "api_token_line_active",
            name=token.name,
            created=localise_digits(token.created_at.strftime("%Y-%m-%d"), lang) if token.created_at else "?",
            user=token.created_by,
        )
        for token in tokens
    ]
    reply(session, ctx, room.room_id, lang, "api_token_list", handle=channel.handle, lines="\n".join(lines))
