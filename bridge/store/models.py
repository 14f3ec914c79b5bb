"""The tables. Every row a user relies on survives a restart; work in progress is resumable."""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from appservice.ids import EventID, RoomID, UserID

# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigID = BigInteger().with_variant(Integer(), "sqlite")


def _now() -> datetime:
    return datetime.now(UTC)


class RoomKind(StrEnum):
    """`rooms.kind`: what a room Kanal looks after is for."""

    MANAGEMENT = "management"  # a person's direct chat with the bot
    BACKSTAGE = "backstage"  # a channel's team room; what editors post there is published
    BROADCAST = "broadcast"  # a channel's public room, read by subscribers
    DISCUSSION = "discussion"  # a channel's comments room
    OPERATOR = "operator"  # the operators' room
    MODERATION = "moderation"  # the moderators' room
    POLICY = "policy"  # a moderation policy list Kanal follows (MSC2313)


class ChannelStatus(StrEnum):
    """`channels.status`: creating → active (⇄ suspended) → deleting → deleted (or creating → failed)."""

    CREATING = "creating"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    DELETING = "deleting"
    DELETED = "deleted"
    FAILED = "failed"  # its rooms could not be made; the handle is freed


class DecisionKind(StrEnum):
    """`decisions.kind`: what an enforcement decision did (each with a statement of reasons)."""

    APPROVE_POST = "approve_post"
    REJECT_POST = "reject_post"
    TAKE_DOWN = "take_down"
    REMOVE_COMMENT = "remove_comment"
    RESTRICT = "restrict"
    SUSPEND = "suspend"
    REINSTATE = "reinstate"
    NO_ACTION = "no_action"
    REJECT_REQUEST = "reject_request"
    BAN_USER = "ban_user"  # a followed moderation policy list's user ban
    BAN_SERVER = "ban_server"  # a followed moderation policy list's server ban


class DecisionStatus(StrEnum):
    """`decisions.status`."""

    IN_FORCE = "in_force"
    REVERSED = "reversed"
    EXPIRED = "expired"


class InboundStatus(StrEnum):
    """`inbound_events.status`."""

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class RequestStatus(StrEnum):
    """`channel_requests.status`."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"


class HeldPostStatus(StrEnum):
    """`held_posts.status`."""

    HELD = "held"
    APPROVED = "approved"
    REJECTED = "rejected"


class NoticeStatus(StrEnum):
    """`notices.status`."""

    OPEN = "open"
    DECIDED = "decided"


class AppealStatus(StrEnum):
    """`appeals.status`."""

    OPEN = "open"
    UPHELD = "upheld"
    REVERSED = "reversed"


class ScheduledStatus(StrEnum):
    """`scheduled_posts.status`."""

    PENDING = "pending"
    SENT = "sent"
    CANCELLED = "cancelled"


class JoinRequestStatus(StrEnum):
    """`join_requests.status`."""

    PENDING = "pending"
    APPROVED = "approved"
    DECLINED = "declined"
    WITHDRAWN = "withdrawn"


class CommentStatus(StrEnum):
    """`moderated_comments.status`."""

    FLAGGED = "flagged"  # reported, left up
    REMOVED = "removed"
    RESTORED = "restored"  # put back after an appeal


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
    ghost_user_id: Mapped[UserID] = mapped_column(String(255))
    broadcast_room_id: Mapped[RoomID | None] = mapped_column(String(255), default=None)
    backstage_room_id: Mapped[RoomID | None] = mapped_column(String(255), default=None)
    # ChannelStatus: creating → active → deleting → deleted
    status: Mapped[str] = mapped_column(String(16), default="creating")
    signatures: Mapped[bool] = mapped_column(Boolean, default=False)
    reactions: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # Registration (issue 5): set by operators; shown in `info`, the topic and a state event.
    verified: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The title's comparison key (names.title_key) and the handle's confusable skeleton, for search
    # and for refusing look-alikes.
    title_key: Mapped[str] = mapped_column(Text, default="", server_default="", index=True)
    handle_skeleton: Mapped[str | None] = mapped_column(String(255), default=None, index=True)
    # Days of history the homeserver keeps (m.room.retention); None: the deployment's default.
    retention_days: Mapped[int | None] = mapped_column(Integer, default=None)
    # Compliance: posting suspended until then (a `restrict` decision).
    restricted_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    # Telegram-grade features (issue 6): the channel's time zone for !schedule (IANA name), and which
    # reactions readers may use: reaction_allow None = any (as `reactions` says), [] = none, else only these.
    timezone: Mapped[str] = mapped_column(String(64), default="UTC", server_default="UTC")
    reaction_allow: Mapped[list[Any] | None] = mapped_column(JSON, default=None)
    # Comments (`!comments on|off`): whether new posts get a thread in the discussion room, and that
    # room (kept, with its history, when comments are turned off).
    comments: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    comments_room_id: Mapped[RoomID | None] = mapped_column(String(255), default=None)
    # Statistics (issue 6): `!views-in-posts on` keeps a compact view count in relayed posts.
    views_in_posts: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Private channel (issue 6): knock/invite only, not in the room directory nor on the web pages.
    private: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Shards: the channel's public rooms opened after `broadcast_room_id` (oldest first; the last is
    # the open one, where #handle points), and the operators' shard size for this channel (None: the
    # config's `channels.shard_size`).
    shard_rooms: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    shard_size: Mapped[int | None] = mapped_column(Integer, default=None)
    # `!notify off`: text posts go out as m.notice, which creates no notification for any reader.
    notify: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    # The channel photo (`!avatar`): its mxc:// URI, shown as every room's avatar, the ghost's and the
    # web pages'; None: a letter placeholder.
    avatar_url: Mapped[str | None] = mapped_column(String(255), default=None)
    # When the row last changed (set on every write, ORM or Core): part of the web pages' Last-Modified.
    changed_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), default=_now, onupdate=_now
    )

    @property
    def rooms(self) -> list[RoomID]:
        """The channel's public rooms, oldest first; the last is the open one (empty before creation)."""
        if self.broadcast_room_id is None:
            return []
        return [self.broadcast_room_id, *(RoomID(r) for r in self.shard_rooms or ())]

    @property
    def open_room(self) -> RoomID | None:
        """The room new readers join: where #handle and the directory entry point."""
        rooms = self.rooms
        return rooms[-1] if rooms else None


class ChannelMember(Base):
    """Who may act for a channel: its owner and its admins."""

    __tablename__ = "channel_members"

    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))  # owner | admin


class Room(Base):
    """Rooms Kanal looks after: management chats, backstage and broadcast rooms."""

    __tablename__ = "rooms"

    room_id: Mapped[RoomID] = mapped_column(String(255), primary_key=True)
    kind: Mapped[str] = mapped_column(
        String(16)
    )  # RoomKind: management | backstage | broadcast | discussion | operator | moderation | policy
    channel_id: Mapped[int | None] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"))
    user_id: Mapped[str | None] = mapped_column(String(255))  # the management room's user
    language: Mapped[str | None] = mapped_column(String(8))
    encrypted_warned: Mapped[bool] = mapped_column(Boolean, default=False)
    # A channel's public room: its joined readers (Kanal's own users not counted), kept from the
    # membership events the homeserver pushes; None until first counted.
    joined: Mapped[int | None] = mapped_column(Integer, default=None)


class InboundEvent(Base):
    """Events recorded before the transaction is acknowledged, handled afterwards in order."""

    __tablename__ = "inbound_events"
    __table_args__ = (Index("ix_inbound_pending", "status", "seq"),)

    seq: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(255), unique=True)
    room_id: Mapped[RoomID] = mapped_column(String(255))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # InboundStatus
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
    kind: Mapped[str] = mapped_column(String(32))  # bridge.runtime.outbox.OutboxKind
    as_user: Mapped[str] = mapped_column(String(255))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    # A backstage event whose relayed copy this entry needs (edit, redaction, reply, pin).
    ref_source: Mapped[str | None] = mapped_column(String(255), default=None)
    # bridge.runtime.outbox.OutboxStatus: pending | done | failed
    status: Mapped[str] = mapped_column(String(16), default="pending")
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
    # What the channel shows (for the web pages and feeds): the relayed content, edits applied.
    event_type: Mapped[str] = mapped_column(
        String(64), default="m.room.message", server_default="m.room.message"
    )
    content: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    edited_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    via: Mapped[str] = mapped_column(
        String(80), default="backstage", server_default="backstage"
    )  # or api:<token>
    # The view count the relayed copy shows (`!views-in-posts`), and when it was last edited to show it.
    views_shown: Mapped[int | None] = mapped_column(Integer, default=None)
    views_shown_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    # When the row last changed (recorded, published, edited, deleted; set on every write, ORM or
    # Core, except the view count's, which no page shows): the web pages' Last-Modified.
    changed_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), default=_now, onupdate=_now
    )


class PostCopy(Base):
    """A post's published event in one of its channel's rooms (one per shard the post reached)."""

    __tablename__ = "post_copies"
    __table_args__ = (UniqueConstraint("post_id", "room_id", name="uq_post_copies_post_room"),)

    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    post_id: Mapped[int] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"))
    room_id: Mapped[RoomID] = mapped_column(String(255))


class ApiToken(Base):
    """A channel's publishing-API token (`!token new <name>` in backstage); only its hash is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str] = mapped_column(String(255))
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ApiIdempotency(Base):
    """The answer to a POST made with an Idempotency-Key, replayed when the same key comes again."""

    __tablename__ = "api_idempotency"

    token_id: Mapped[int] = mapped_column(ForeignKey("api_tokens.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Confirmation(Base):
    """A destructive command waiting for the user to confirm it (e.g. `delete`)."""

    __tablename__ = "confirmations"

    room_id: Mapped[RoomID] = mapped_column(String(255), primary_key=True)
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


class HandleHold(Base):
    """A handle nobody else may take for now: a renamed channel's old alias (still pointing at it
    for a grace period) or a released handle cooling down."""

    __tablename__ = "handle_holds"

    handle: Mapped[str] = mapped_column(String(64), primary_key=True)
    skeleton: Mapped[str] = mapped_column(String(255), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # grace | cooldown
    channel_id: Mapped[int | None] = mapped_column(ForeignKey("channels.id", ondelete="SET NULL"))
    until: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ReservedHandle(Base):
    """Handles operators reserved with a command (the config's list is reserved as well)."""

    __tablename__ = "reserved_handles"

    handle: Mapped[str] = mapped_column(String(64), primary_key=True)
    added_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ChannelRequest(Base):
    """A request to create a channel, waiting in the operators' review queue (policy `approval`)."""

    __tablename__ = "channel_requests"

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(255), index=True)
    room_id: Mapped[RoomID] = mapped_column(String(255))  # the requester's management room
    handle: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # RequestStatus
    private: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())  # create --private
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    decided_by: Mapped[str | None] = mapped_column(String(255), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class RegistrationToken(Base):
    """A token that lets its holder create a channel (policy `token`). Only its hash is stored."""

    __tablename__ = "registration_tokens"

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(16))  # the first characters, to tell tokens apart
    label: Mapped[str] = mapped_column(Text, default="")
    uses_allowed: Mapped[int | None] = mapped_column(Integer, default=None)  # None: unlimited
    uses: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class PendingTransfer(Base):
    """An ownership transfer the new owner has not accepted yet."""

    __tablename__ = "pending_transfers"

    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True)
    from_user: Mapped[str] = mapped_column(String(255))
    to_user: Mapped[str] = mapped_column(String(255), index=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RegistryLog(Base):
    """What operators and owners changed in the registry: verification, approvals, transfers, ..."""

    __tablename__ = "registry_log"

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(255))  # a handle, a user id, a token hint
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


# -- compliance (issue 4): public channel content and channel registration only ------------------------


class HeldPost(Base):
    """A backstage post a pre-publication hook held for human review (or rejected)."""

    __tablename__ = "held_posts"

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"), index=True)
    source_event_id: Mapped[str] = mapped_column(String(255), unique=True)
    author: Mapped[str] = mapped_column(String(255))
    event: Mapped[dict[str, Any]] = mapped_column(JSON)  # the backstage event, to publish on approval
    verdicts: Mapped[list[Any]] = mapped_column(JSON, default=list)  # [{hook, action, category, reason}]
    status: Mapped[str] = mapped_column(String(16), default="held")  # HeldPostStatus
    decision_id: Mapped[int | None] = mapped_column(BigID, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Notice(Base):
    """A report about public channel content (DSA Art. 16 notice), from a user, the homeserver or a flagger."""

    __tablename__ = "notices"

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(16))  # command | homeserver | flagger
    external_id: Mapped[str | None] = mapped_column(String(255), unique=True, default=None)
    channel_id: Mapped[int | None] = mapped_column(ForeignKey("channels.id", ondelete="SET NULL"), index=True)
    room_id: Mapped[RoomID | None] = mapped_column(String(255), default=None)
    event_id: Mapped[EventID | None] = mapped_column(String(255), default=None)  # the reported (relayed) post
    category: Mapped[str] = mapped_column(String(64), default="other")
    explanation: Mapped[str] = mapped_column(Text, default="")
    notifier: Mapped[str | None] = mapped_column(String(255), default=None)  # None: anonymous
    notifier_room: Mapped[RoomID | None] = mapped_column(String(255), default=None)  # where to answer
    trusted: Mapped[bool] = mapped_column(Boolean, default=False)  # a trusted flagger's: reviewed first
    status: Mapped[str] = mapped_column(String(16), default="open")  # NoticeStatus: open | decided
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class Decision(Base):
    """An enforcement decision and its statement of reasons (DSA Art. 17)."""

    __tablename__ = "decisions"

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    # DecisionKind: take_down | restrict | suspend | no_action | reject_post | approve_post | ban_user
    # | ban_server | remove_comment | reject_request | reinstate (a reversal)
    kind: Mapped[str] = mapped_column(String(32))
    channel_id: Mapped[int | None] = mapped_column(ForeignKey("channels.id", ondelete="SET NULL"), index=True)
    target: Mapped[str | None] = mapped_column(String(255), default=None)  # event id, user id or server
    notice_id: Mapped[int | None] = mapped_column(ForeignKey("notices.id", ondelete="SET NULL"), default=None)
    own_initiative: Mapped[bool] = mapped_column(Boolean, default=False)
    automated: Mapped[bool] = mapped_column(Boolean, default=False)  # automated detection or decision
    ground: Mapped[str] = mapped_column(String(16), default="terms")  # law | terms
    ground_reference: Mapped[str] = mapped_column(Text, default="")
    explanation: Mapped[str] = mapped_column(Text, default="")
    category: Mapped[str] = mapped_column(String(64), default="other")
    until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    decided_by: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default="in_force")  # DecisionStatus
    reverses_id: Mapped[int | None] = mapped_column(BigID, default=None)
    statement: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Appeal(Base):
    """A complaint against a decision (DSA Art. 20), decided by a human."""

    __tablename__ = "appeals"

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    decision_id: Mapped[int] = mapped_column(ForeignKey("decisions.id", ondelete="CASCADE"), index=True)
    appellant: Mapped[str] = mapped_column(String(255))
    appellant_room: Mapped[RoomID | None] = mapped_column(String(255), default=None)
    text: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="open")  # AppealStatus
    decided_by: Mapped[str | None] = mapped_column(String(255), default=None)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AuditEntry(Base):
    """The tamper-evident audit log: each entry's hash covers the previous one's.

    `body` is the canonical JSON of what happened, without personal data; personal data sits in
    `audit_personal` and only its hash is chained, so it can be erased without breaking verification.
    """

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    kind: Mapped[str] = mapped_column(String(32))
    body: Mapped[str] = mapped_column(Text)
    personal_hash: Mapped[str] = mapped_column(String(64), default="")
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditPersonal(Base):
    """Personal data of an audit entry (erasable; its hash stays in the chain)."""

    __tablename__ = "audit_personal"

    seq: Mapped[int] = mapped_column(ForeignKey("audit_log.seq", ondelete="CASCADE"), primary_key=True)
    data: Mapped[str] = mapped_column(Text)  # canonical JSON


class AuditCheckpoint(Base):
    """A signed statement of the log's size and head, made every so many entries."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    seq: Mapped[int] = mapped_column(BigInteger)  # the last entry it covers
    size: Mapped[int] = mapped_column(BigInteger)
    head: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(Text)  # base64 Ed25519 over the canonical checkpoint
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PolicyRule(Base):
    """A moderation policy list rule (MSC2313) Kanal follows, and the decision it led to."""

    __tablename__ = "policy_rules"

    room_id: Mapped[RoomID] = mapped_column(String(255), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    state_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    entity: Mapped[str] = mapped_column(String(255))
    recommendation: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text, default="")
    decision_id: Mapped[int | None] = mapped_column(BigID, default=None)


class Flagger(Base):
    """A trusted flagger (DSA Art. 22): submits notices over HTTP with a token; reviewed first."""

    __tablename__ = "flaggers"

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ScheduledPost(Base):
    """A backstage post to publish later (`!schedule`); published exactly once, even with several processes."""

    __tablename__ = "scheduled_posts"
    __table_args__ = (Index("ix_scheduled_due", "status", "due_at"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"), index=True)
    source_event_id: Mapped[str] = mapped_column(String(255), unique=True)  # the `!schedule` event
    author: Mapped[str] = mapped_column(String(255))
    event: Mapped[dict[str, Any]] = mapped_column(JSON)  # a backstage-shaped event with the content to post
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16), default="pending")  # ScheduledStatus
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ReaderPosition(Base):
    """How far a reader has read a channel (their newest read receipt on a post).

    A receipt on a post counts it and every earlier one: the views of post p are the readers whose
    position is p or later.
    """

    __tablename__ = "reader_positions"
    __table_args__ = (Index("ix_reader_positions_post", "channel_id", "post_id"),)

    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    post_id: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class InviteLink(Base):
    """An invite link of a private channel (`!link new`); only the token's SHA-256 is stored."""

    __tablename__ = "invite_links"

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    uses_allowed: Mapped[int | None] = mapped_column(Integer, default=None)  # None: unlimited
    uses: Mapped[int] = mapped_column(Integer, default=0)
    approval: Mapped[bool] = mapped_column(Boolean, default=False)  # joins wait for an admin's approval
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class JoinRequest(Base):
    """Someone asking to join a private channel: through an approval link, or by knocking."""

    __tablename__ = "join_requests"
    __table_args__ = (Index("ix_join_requests_channel", "channel_id", "status"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(16))  # link | knock
    link_id: Mapped[int | None] = mapped_column(
        ForeignKey("invite_links.id", ondelete="SET NULL"), default=None
    )
    reason: Mapped[str] = mapped_column(Text, default="")  # the knock's reason, token removed
    status: Mapped[str] = mapped_column(String(16), default="pending")  # JoinRequestStatus
    decided_by: Mapped[str | None] = mapped_column(String(255), default=None)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class UserSetting(Base):
    """What a Matrix user chose for themselves: the language of the bot's replies (`language fa`)."""

    __tablename__ = "user_settings"

    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    language: Mapped[str | None] = mapped_column(String(8), default=None)  # None: not chosen
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ChannelDailyStats(Base):
    """A channel's numbers on one (UTC) day, as last seen that day: the history `!stats` charts.

    Written by the housekeeping loop (refreshed hourly) and by `!stats`; the growth of a day is the
    difference from the day before.
    """

    __tablename__ = "channel_daily_stats"

    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    subscribers: Mapped[int] = mapped_column(Integer)
    views: Mapped[int] = mapped_column(BigInteger)  # all views of all posts so far (unique readers each)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class CommentThread(Base):
    """A post's thread in its channel's discussion room: the root the ghost posted there, and whether
    the channel post was edited to link to it. One row per post, made when the post is relayed."""

    __tablename__ = "comment_threads"

    post_id: Mapped[int] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"), primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"), index=True)
    room_id: Mapped[RoomID | None] = mapped_column(String(255), default=None)  # set with the root
    root_event_id: Mapped[EventID | None] = mapped_column(String(255), default=None, index=True)
    link_queued: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ModeratedComment(Base):
    """A comment the channel's compliance hooks flagged (reported, left up) or rejected (removed)."""

    __tablename__ = "moderated_comments"

    event_id: Mapped[EventID] = mapped_column(String(255), primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"), index=True)
    room_id: Mapped[RoomID] = mapped_column(String(255))
    author: Mapped[str] = mapped_column(String(255), index=True)
    status: Mapped[str] = mapped_column(String(16))  # CommentStatus
    decision_id: Mapped[int | None] = mapped_column(BigID, default=None, index=True)
    event: Mapped[dict[str, Any]] = mapped_column(JSON)  # the comment, to restore it on appeal
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class DraftMode(Base):
    """An editor who is writing drafts in a channel's backstage: what they post is kept, not published,
    until they turn it off; `!publish` or `!schedule` as a reply to a kept message sends it."""

    __tablename__ = "draft_modes"

    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class CryptoRecord(Base):
    """One piece of the bot's end-to-end encryption state (bridge/runtime/e2ee_store.py): its Olm
    account, sessions, room keys, the devices it knows. `value` is sealed (AES-256-GCM under the key
    file `encryption.store_key`); `kind` and `key` say what it is, never what it holds."""

    __tablename__ = "crypto_store"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    key: Mapped[str] = mapped_column(String(600), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
