"""What every handler needs: configuration, the homeserver client, the database, the outbox."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from appservice.client import HomeserverClient, Intent
from appservice.ids import RoomID, UserID
from bridge.runtime.config import Config
from bridge.runtime.outbox import OutboxKind, OutboxWorker, new_entry, room_queue
from bridge.store.models import OutboxEntry
from bridge.text.i18n import t


@dataclass
class Context:
    config: Config
    client: HomeserverClient
    sessions: async_sessionmaker[AsyncSession]
    outbox: OutboxWorker
    # Management and backstage rooms, kept in memory when this process is the only writer (SQLite);
    # None means "ask the database" (PostgreSQL, where another process may add rooms).
    known_rooms: set[str] | None = None
    # People who chose a language (`language …`), likewise kept in memory when this process is the
    # only writer, so the many who never chose cost no query; None: ask the database.
    language_users: set[str] | None = None
    # The pre-publication hooks (bridge.moderation.hooks.Pipeline); None: nothing to check.
    pipeline: Any = None

    def remember_room(self, room_id: RoomID) -> None:
        if self.known_rooms is not None:
            self.known_rooms.add(room_id)

    @property
    def bot(self) -> UserID:
        return UserID(self.config.bot_user_id)

    @property
    def domain(self) -> str:
        return self.config.domain

    def bot_intent(self) -> Intent:
        return self.client.intent(self.bot)

    def ghost_for(self, handle: str) -> UserID:
        return UserID(f"@{self.config.ghost_prefix}{handle}:{self.config.domain}")

    def is_ours(self, user_id: str) -> bool:
        """Kanal's own users: the bot and the channels' ghosts (never counted as readers)."""
        return user_id == self.bot or (
            user_id.startswith(f"@{self.config.ghost_prefix}") and user_id.endswith(f":{self.config.domain}")
        )

    def alias_for(self, handle: str) -> str:
        return f"#{handle}:{self.config.domain}"

    def note(self, room_id: RoomID, text: str) -> dict[str, Any]:
        """An `on_success`/`on_failure` payload: the bot tells `room_id` the outcome."""
        return {"as_user": self.bot, "room_id": room_id, "body": text}


def enqueue(session: AsyncSession, entry: OutboxEntry) -> OutboxEntry:
    session.add(entry)
    return entry


def reply(
    session: AsyncSession, ctx: Context, room_id: RoomID, lang: str, key: str, **values: Any
) -> None:
    """Queue the bot's answer (an `m.notice`, so it never notifies) in the same transaction as the decision."""
    text = t(lang, key, domain=ctx.domain, **values)
    enqueue(session, send_entry(ctx.bot, room_id, {"msgtype": "m.notice", "body": text}))


def reply_sealed(session: AsyncSession, ctx: Context, room_id: RoomID, text: str, stand_in: str) -> None:
    """Queue the bot's answer that shows a secret once (a token), in the decision's transaction.

    The database keeps only `stand_in`, what the person is told should this process stop before
    sending; `text` stays in this process's memory until the outbox sends it (see
    `bridge.runtime.outbox.SealedReplies`), so the secret is never written anywhere.
    """
    ref = ctx.outbox.sealed.seal({"msgtype": "m.notice", "body": text})
    content = {"msgtype": "m.notice", "body": stand_in}
    enqueue(session, send_entry(ctx.bot, room_id, content, sealed=ref, holder=ctx.outbox.holder))


def send_entry(
    as_user: UserID,
    room_id: RoomID,
    content: dict[str, Any],
    *,
    event_type: str = "m.room.message",
    ref_source: str | None = None,
    **extra: Any,
) -> OutboxEntry:
    payload = {"room_id": room_id, "event_type": event_type, "content": content, **extra}
    return new_entry(room_queue(room_id), OutboxKind.SEND, as_user, payload, ref_source)


def state_entry(as_user: UserID, room_id: RoomID, event_type: str, content: dict[str, Any]) -> OutboxEntry:
    """A state event for one of Kanal's own rooms (a channel's public room: bridge.broadcast.seam)."""
    payload = {"room_id": room_id, "event_type": event_type, "content": content}
    return new_entry(room_queue(room_id), OutboxKind.STATE, as_user, payload)
