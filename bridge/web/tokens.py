"""Publishing-API tokens: made, listed and revoked by a channel's owner in backstage; only hashes are kept.

A token is `kanal_api_` followed by 32 random bytes (URL-safe base64). It is shown once, as the bot's
`m.notice` in backstage; the database keeps its SHA-256 (`api_tokens.token_hash`), so a copy of the
database cannot be used to post. Each token belongs to one channel and has a name, which the audit log
and the posts it makes (`via = api:<name>`) carry.
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

from ..context import Context, enqueue, send_entry
from ..management import role_of
from ..moderation import audit
from ..registry import hash_token as hash_token  # the one digest of secret tokens
from ..store.models import ApiToken, Channel, Room

TOKEN_PREFIX: Final = "kanal_api_"  # noqa: S105 (a prefix, not a secret)
TOKEN_BYTES: Final = 32
# Anything longer is not one of ours: refused before it is hashed.
MAX_TOKEN_LENGTH: Final = 128
MAX_ACTIVE_TOKENS_PER_CHANNEL: Final = 20
# Shown in audit entries and in `via = api:<name>` (posts.via is VARCHAR(80)).
TOKEN_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

USAGE: Final = (
    "Publishing-API tokens (owner only):\n"
    "• !token new <name> — a new token for a bot (shown once)\n"
    "• !token list — the tokens of this channel\n"
    "• !token revoke <name> — stop a token from working"
)


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


def _say(ctx: Context, session: AsyncSession, room: Room, text: str, *, secret: bool = False) -> None:
    content = {"msgtype": "m.notice", "body": text}
    if secret:
        enqueue(session, send_entry(ctx.bot, room.room_id, content, secret=True))
    else:
        enqueue(session, send_entry(ctx.bot, room.room_id, content))


async def token_command(
    ctx: Context,
    session: AsyncSession,
    room: Room,
    channel: Channel,
    event: Event,
    args: tuple[str, ...],
    lang: str,
) -> None:
    """`!token new <name>`, `!token list`, `!token revoke <name>` in a channel's backstage.

    Making and revoking tokens is the owner's; admins may list them. Replies are in English (`lang`
    is accepted for when they are translated).
    """
    action = args[0].lower() if args else ""
    role = await role_of(session, channel, event.sender)
    if action == "list":
        if role is None:
            _say(ctx, session, room, "Only the channel's owner and admins may see its API tokens.")
            return
        _say(ctx, session, room, await _listing(session, channel))
        return
    if action not in ("new", "revoke") or len(args) != 2:
        _say(ctx, session, room, USAGE)
        return
    if role != "owner":
        _say(
            ctx, session, room, f"Only the owner of #{channel.handle} ({channel.owner}) may {action} tokens."
        )
        return
    name = args[1]
    if action == "new":
        await _create(ctx, session, room, channel, event, name)
    else:
        await _revoke(ctx, session, room, channel, event, name)


async def _active(session: AsyncSession, channel: Channel, name: str) -> ApiToken | None:
    token: ApiToken | None = await session.scalar(
        select(ApiToken).where(
            ApiToken.channel_id == channel.id, ApiToken.name == name, ApiToken.revoked.is_(False)
        )
    )
    return token


async def _create(
    ctx: Context, session: AsyncSession, room: Room, channel: Channel, event: Event, name: str
) -> None:
    if not TOKEN_NAME.fullmatch(name):
        _say(
            ctx,
            session,
            room,
            "A token name is 1 to 64 characters from A–Z, a–z, 0–9, _ . - and starts with a letter or "
            "digit, e.g. !token new rss_bot",
        )
        return
    if await _active(session, channel, name) is not None:
        _say(
            ctx,
            session,
            room,
            f"There is already a token named {name}; revoke it first or pick another name.",
        )
        return
    active = await session.scalar(
        select(func.count())
        .select_from(ApiToken)
        .where(ApiToken.channel_id == channel.id, ApiToken.revoked.is_(False))
    )
    if (active or 0) >= MAX_ACTIVE_TOKENS_PER_CHANNEL:
        _say(
            ctx,
            session,
            room,
            f"This channel has {MAX_ACTIVE_TOKENS_PER_CHANNEL} active tokens, the most it may have; "
            "revoke one first (!token list shows them).",
        )
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
    await audit.append(
        session,
        "api_token",
        {"channel": channel.handle, "token": name, "action": "create"},
        {"by": event.sender},
        config=ctx.config,
    )
    _say(
        ctx,
        session,
        room,
        f"API token {name} for #{channel.handle} — shown only this once, store it now:\n{token}\n"
        f"Send it as the header Authorization: Bearer <token> to "
        f"{ctx.config.web_public_url}/api/v1/channels/{channel.handle}/posts "
        f"(documentation: {ctx.config.web_public_url}/api/v1/openapi.json). "
        f"Anyone with it can post as the channel; !token revoke {name} stops it.",
        secret=True,
    )


async def _revoke(
    ctx: Context, session: AsyncSession, room: Room, channel: Channel, event: Event, name: str
) -> None:
    token = await _active(session, channel, name)
    if token is None:
        _say(ctx, session, room, f"No active token is named {name[:64]} (!token list shows them).")
        return
    token.revoked = True
    await audit.append(
        session,
        "api_token",
        {"channel": channel.handle, "token": name, "action": "revoke"},
        {"by": event.sender},
        config=ctx.config,
    )
    _say(ctx, session, room, f"Token {name} is revoked: requests made with it are refused from now on.")


async def _listing(session: AsyncSession, channel: Channel) -> str:
    tokens = (
        await session.scalars(select(ApiToken).where(ApiToken.channel_id == channel.id).order_by(ApiToken.id))
    ).all()
    if not tokens:
        return f"#{channel.handle} has no API tokens. The owner makes one with !token new <name>."
    lines = [f"API tokens of #{channel.handle}:"]
    for token in tokens:
        created = token.created_at.strftime("%Y-%m-%d") if token.created_at else "?"
        state = "revoked" if token.revoked else "active"
        lines.append(f"• {token.name} — {state}, made {created} by {token.created_by}")
    return "\n".join(lines)
