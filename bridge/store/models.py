"""The tables. Every row a user relies on survives a restart; work in progress is resumable."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, String, Text, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigID = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON}


class Channel(Base):
    __tablename__ = "channels"

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    # NULL once deleted, which frees the handle; `former_handle` keeps it for the record.
    handle: Mapped[str | None] = mapped_column(String(64), unique=True)
    former_handle: Mapped[str | None] = mapped_column(String(64), default=None)
    title: Mapped[str] = mapped_column(Text)
    about: Mapped[str] = mapped_column(Text, default="")
    owner: Mapped[str] = mapped_column(String(255))
    ghost_user_id: Mapped[str] = mapped_column(String(255))
    broadcast_room_id: Mapped[str | None] = mapped_column(String(255), default=None)
    backstage_room_id: Mapped[str | None] = mapped_column(String(255), default=None)
    # creating → active → deleting → deleted
    status: Mapped[str] = mapped_column(String(16), default="creating")
    signatures: Mapped[bool] = mapped_column(Boolean, default=False)
    reactions: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ChannelMember(Base):
    """Who may act for a channel: its owner and its admins."""

    __tablename__ = "channel_members"

    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))  # owner | admin


class Room(Base):
    """Rooms Kanal looks after: management chats, backstage and broadcast rooms."""

    __tablename__ = "rooms"

    room_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # management | backstage | broadcast
    channel_id: Mapped[int | None] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"))
    user_id: Mapped[str | None] = mapped_column(String(255))  # the management room's user
    language: Mapped[str | None] = mapped_column(String(8))
    encrypted_warned: Mapped[bool] = mapped_column(Boolean, default=False)


class InboundEvent(Base):
    """Events recorded before the transaction is acknowledged, handled afterwards in order."""

    __tablename__ = "inbound_events"
    __table_args__ = (Index("ix_inbound_pending", "status", "seq"),)

    seq: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(255), unique=True)
    room_id: Mapped[str] = mapped_column(String(255))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | done | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class OutboxEntry(Base):
    """A write to the homeserver: recorded first, sent with a deterministic transaction id, marked done."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_pending", "status", "id"),
        Index("ix_outbox_queue", "queue", "status", "id"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    # Entries with the same queue key are sent strictly in id order (a room, or a channel's setup).
    queue: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32))
    as_user: Mapped[str] = mapped_column(String(255))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    # A backstage event whose relayed copy this entry needs (edit, redaction, reply, pin).
    ref_source: Mapped[str | None] = mapped_column(String(255), default=None)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | done | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    result_event_id: Mapped[str | None] = mapped_column(String(255), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Post(Base):
    """A backstage post and its relayed copy in the broadcast room."""

    __tablename__ = "posts"

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"), index=True)
    source_event_id: Mapped[str] = mapped_column(String(255), unique=True)
    relayed_event_id: Mapped[str | None] = mapped_column(String(255), default=None, index=True)
    author: Mapped[str] = mapped_column(String(255))
    outbox_id: Mapped[int | None] = mapped_column(BigID, default=None)
    redacted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Confirmation(Base):
    """A destructive command waiting for the user to confirm it (e.g. `delete`)."""

    __tablename__ = "confirmations"

    room_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    action: Mapped[str] = mapped_column(String(32))
    argument: Mapped[str] = mapped_column(String(255))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Lease(Base):
    """Who may run a singleton job (the event processor, periodic jobs) until when, across processes."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
