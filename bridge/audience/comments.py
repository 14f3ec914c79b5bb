"""Comments: a channel's discussion room, where every post gets a thread (`!comments on|off`).

    backstage post ─▶ Post + outbox "send" (room:<broadcast>)        the channel post, never held up
                   └▶ CommentThread + "comments_root" (comments:<channel>)
    comments_root: the ghost posts the root ─▶ thread.root_event_id + the seam's "post_edit" of the
                   channel post (bridge.broadcast.seam): its content read at send time, the post as it
                   is now (edits applied) with the 💬 Comments footer (bridge.matrix.decorations)

Why the channel post goes first and the link follows as an edit: the post must never wait for, nor be
lost with, a discussion room that is failing (a queue waits for its head's retries). The discussion
room has its own queue, `comments:<channel id>`, which starts with the room's creation, so roots queued
before the room exists wait for it there and nowhere else. Exactly one root per post: one thread row
and one root entry, made in the post's transaction; the root is sent with a deterministic transaction
id and recorded before the link is queued, and a retry finds it recorded. Exactly one link: queued in
the transaction that records the root, once (`link_queued`). Every later edit of a post that has a
thread is also a `post_edit` entry, computed at send time, so an edit and the link can never undo
each other whatever order their transactions commit in.

Comments are moderated with the channel's compliance hooks (bridge.moderation.hooks, `via="comment"`):
reject → the bot redacts the comment; the decision (kind `remove_comment`) carries a statement of
reasons, sent to the commenter in a direct chat with the bot (where `appeal` works; the bot opens one
when there is none), is audited, and is appealable; a granted appeal posts the comment again, by the
bot, in its thread. The room itself only sees a short notice naming the decision (the statement may
quote what was removed). hold → the comment stays up and is reported to the channel's backstage and to
the moderation room (audited), since a hold cannot stop what readers already see. A discussion room
that someone encrypts is no longer read: mirroring and moderation stop and backstage is told.

Readers report comments as they report posts (bridge.moderation.notices): a reported event is a comment
when Kanal received it in one of its discussion rooms from a reader (`reported_comment`); a thread root
stands for its post. A moderator's takedown of a comment is carried out like a rejection above
(`take_down_comment`), with the notice behind it; restricting or suspending is for channels only.
"""

from __future__ import annotations

import copy
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from appservice.errors import MatrixRequestError
from appservice.events import Event, EventParseError, parse_event
from appservice.ids import EventID, RoomAlias, RoomID, UserID
from bridge.broadcast import seam
from bridge.broadcast.seam import comments_url
from bridge.channels import roles
from bridge.channels.hosting import with_hosting_policy
from bridge.matrix.powerlevels import (
    ADMIN_LEVEL,
    ADMIN_STATE_EVENTS,
    CHANNEL_STATE_TYPE,
    POSTER_LEVEL,
    READER_LEVEL,
)
from bridge.matrix.relay import POLL_START_TYPES
from bridge.moderation import kinds
from bridge.moderation.kinds import ReportedComment
from bridge.runtime.context import Context, enqueue, reply, send_entry, state_entry
from bridge.runtime.dispatch import CommandCall, command
from bridge.runtime.languages import language_for
from bridge.runtime.outbox import (
    NotYet,
    OutboxKind,
    OutboxWorker,
    SkipEntry,
    aware,
    new_entry,
    room_queue,
    send_content,
    txn_id_for,
)
from bridge.runtime.rooms import create_once, forget_marker
from bridge.store import queries
from bridge.store.models import (
    Channel,
    ChannelMember,
    ChannelStatus,
    CommentStatus,
    CommentThread,
    Decision,
    DecisionKind,
    InboundEvent,
    ModeratedComment,
    Notice,
    OutboxEntry,
    Post,
    Room,
    RoomKind,
)
from bridge.text.i18n import t

if TYPE_CHECKING:
    from bridge.moderation.decisions import Ground

log = logging.getLogger(__name__)

ROOT_KEY = "net.kanal.comments_root"  # the backstage event a root mirrors (not SOURCE_KEY: see root_content)
DISCUSSION = RoomKind.DISCUSSION  # Room.kind
COMMENT_TYPES = ("m.room.message", "m.sticker")
ALIAS_SUFFIX = "_comments"
# A private message to someone on another server waits (polled every DM_JOIN_POLL_S) until they have
# joined the chat the bot opened, for at most DM_JOIN_WAIT; then it is sent anyway.
DM_JOIN_POLL_S = 3.0
DM_JOIN_WAIT = timedelta(minutes=10)


# -- pure parts -----------------------------------------------------------------------------------


def root_content(event_type: str, content: dict[str, Any] | None) -> tuple[str, dict[str, Any]] | None:
    """What the ghost posts as a post's thread root: the post itself; a poll as its text (a second,
    separate poll in the discussion room would split the votes). None: nothing to mirror."""
    if not isinstance(content, dict):
        return None
    if event_type in COMMENT_TYPES:
        out = {k: v for k, v in copy.deepcopy(content).items() if not k.startswith("net.kanal.")}
        out.pop("m.relates_to", None)
        return event_type, out
    if event_type in POLL_START_TYPES:
        return "m.room.message", {"msgtype": "m.text", "body": f"📊 {_poll_text(content)}"}
    return None


def _poll_text(content: dict[str, Any]) -> str:
    for key in ("body", "org.matrix.msc1767.text"):
        if isinstance(content.get(key), str) and content[key].strip():
            return str(content[key])
    texts = content.get("m.text")
    if isinstance(texts, list):
        for item in texts:
            if isinstance(item, dict) and isinstance(item.get("body"), str):
                return str(item["body"])
    return ""


def root_edit_content(event_type: str, content: dict[str, Any], root: str) -> dict[str, Any] | None:
    """An m.replace of a root with the post's new content; None for roots that cannot be edited."""
    mirrored = root_content(event_type, content)
    if mirrored is None or mirrored[0] != "m.room.message":
        return None
    new = mirrored[1]
    body = new.get("body")
    return {
        "msgtype": new.get("msgtype", "m.text"),
        "body": f"* {body if isinstance(body, str) else ''}",
        "m.new_content": new,
        "m.relates_to": {"rel_type": "m.replace", "event_id": root},
    }


def discussion_power_levels(ghost: str, moderators: list[str]) -> dict[str, Any]:
    """An ordinary group: readers (0) post, reply and react; the channel's team moderates (50).

    The bot creates the room (privileged for good in room version 12, so not listed). Encryption
    needs 100: only Kanal could turn it on, and it never does.
    """
    users = {user: POSTER_LEVEL for user in moderators if user != ghost}
    users[ghost] = ADMIN_LEVEL
    return {
        "users": users,
        "users_default": READER_LEVEL,
        "events": {
            **ADMIN_STATE_EVENTS,
            "m.room.join_rules": ADMIN_LEVEL,
            "m.room.pinned_events": POSTER_LEVEL,
        },
        "events_default": READER_LEVEL,
        "state_default": ADMIN_LEVEL,
        "ban": POSTER_LEVEL,
        "kick": POSTER_LEVEL,
        "redact": POSTER_LEVEL,
        "invite": READER_LEVEL,
        "notifications": {"room": POSTER_LEVEL},
    }


def discussion_room_request(
    *, handle: str, name: str, topic: str, ghost: str, moderators: list[str], avatar: str | None = None
) -> dict[str, Any]:
    """The `createRoom` body of a public channel's discussion room (public, joinable, unencrypted,
    not listed in the directory: readers come through the 💬 Comments links), with the channel's
    photo (`avatar`, an mxc URI) when it has one.

    The room is created without `#<handle>_comments` (its creation marker makes a retry find it):
    Synapse makes a `room_alias_name` resolve before the room's join rules exist, so a reader
    following the alias at once would be refused. That alias is added once the room is open
    (`_publish_alias`)."""
    request: dict[str, Any] = {
        "preset": "public_chat",
        "visibility": "private",
        "name": name,
        "topic": topic,
        "invite": [ghost],
        "power_level_content_override": discussion_power_levels(ghost, moderators),
        "initial_state": [
            {
                "type": "m.room.history_visibility",
                "state_key": "",
                "content": {"history_visibility": "world_readable"},
            },
            {"type": CHANNEL_STATE_TYPE, "state_key": "", "content": {"handle": handle, "role": DISCUSSION}},
        ],
    }
    if avatar:
        request["initial_state"].append({"type": "m.room.avatar", "state_key": "", "content": {"url": avatar}})
    return request


def comment_reported(event: Event, *, bot: str, ghost_prefix: str) -> str | None:
    """The comment a reported discussion-room event stands for: itself, or for an edit the comment it
    edits (redacting the original hides its edits). None: not a reader's comment (Kanal's own messages,
    thread roots, state and other event types)."""
    if event.type not in COMMENT_TYPES or event.is_state:
        return None
    if event.sender == bot or event.sender.startswith(f"@{ghost_prefix}"):
        return None
    if event.rel_type == "m.replace":
        return event.relates_to_event
    return event.event_id


def thread_relation(content: dict[str, Any], event_id: str) -> dict[str, Any]:
    """A relation that answers `event_id` inside its thread (or a plain reply outside threads)."""
    relates = content.get("m.relates_to")
    if isinstance(relates, dict) and relates.get("rel_type") == "m.thread":
        root = relates.get("event_id")
        if isinstance(root, str):
            return {
                "rel_type": "m.thread",
                "event_id": root,
                "is_falling_back": True,
                "m.in_reply_to": {"event_id": event_id},
            }
    return {"m.in_reply_to": {"event_id": event_id}}


# -- backstage: !comments on|off -------------------------------------------------------------------


@command(RoomKind.BACKSTAGE, "comments")
async def comments_command(call: CommandCall) -> None:
    """`!comments on|off` (the owner's): a discussion room where every new post gets a thread."""
    ctx, session, room, event, lang = call.ctx, call.session, call.room, call.event, call.lang
    channel = call.backstage_channel
    choice = (call.command.arg(0) or "").lower()
    state = t(lang, "on" if channel.comments else "off")
    if choice not in ("on", "off"):
        reply(session, ctx, room.room_id, lang, "comments_usage", handle=channel.handle, state=state)
        return
    if not await roles.require(ctx, session, room.room_id, channel, event.sender, "comments", lang):
        return
    if choice == "off":
        if not channel.comments:
            reply(session, ctx, room.room_id, lang, "comments_already", handle=channel.handle, state=state)
            return
        channel.comments = False
        reply(session, ctx, room.room_id, lang, "comments_off", room=_room_ref(ctx, channel))
        return
    if channel.private:
        reply(session, ctx, room.room_id, lang, "comments_private", handle=channel.handle)
        return
    usable = channel.comments_room_id is not None and not await _encrypted(session, channel.comments_room_id)
    if channel.comments and usable:
        reply(session, ctx, room.room_id, lang, "comments_already", handle=channel.handle, state=state)
        return
    channel.comments = True
    if usable:
        reply(session, ctx, room.room_id, lang, "comments_on", room=_room_ref(ctx, channel))
        return
    # None yet, or one that someone encrypted (no longer read): a new discussion room.
    channel.comments_room_id = None
    enqueue(
        session,
        new_entry(
            _queue(channel),
            OutboxKind.COMMENTS_ROOM,
            ctx.bot,
            {"channel_id": channel.id, "lang": lang, "room": room.room_id},
        ),
    )
    reply(session, ctx, room.room_id, lang, "comments_creating", handle=channel.handle)


def _queue(channel: Channel) -> str:
    """The discussion room's own queue: its creation, then roots, root edits and root redactions."""
    return f"comments:{channel.id}"


@roles.on_team_changed
async def sync_team(ctx: Context, session: AsyncSession, channel: Channel) -> None:
    """After a role change: the channel's owner, editors and moderators moderate the discussion room (50),
    and nobody else does. Queued behind the room's creation, so it also holds while the room is made."""
    if channel.comments_room_id is None:
        return
    team = list(
        (
            await session.scalars(select(ChannelMember.user_id).where(ChannelMember.channel_id == channel.id))
        ).all()
    )
    payload = {
        "room_id": channel.comments_room_id,
        "event_type": "m.room.power_levels",
        "content": discussion_power_levels(channel.ghost_user_id, sorted(team)),
    }
    enqueue(session, new_entry(_queue(channel), OutboxKind.STATE, ctx.bot, payload))


def _room_ref(ctx: Context, channel: Channel) -> str:
    if channel.handle:
        return f"#{channel.handle}{ALIAS_SUFFIX}:{ctx.domain} ({channel.comments_room_id})"
    return str(channel.comments_room_id)


async def _encrypted(session: AsyncSession, room_id: str) -> bool:
    room = await session.get(Room, room_id)
    return room is not None and room.encrypted_warned


# -- the post's side: a thread per new post, edits, redactions ----------------------------------


@seam.on_published
async def mirror_post(session: AsyncSession, channel: Channel, post: Post) -> None:
    """Queue the thread root of a post just published."""
    if not channel.comments:
        return
    session.add(CommentThread(post_id=post.id, channel_id=channel.id))
    entry = new_entry(_queue(channel), OutboxKind.COMMENTS_ROOT, channel.ghost_user_id, {"post_id": post.id})
    enqueue(session, entry)


@seam.on_edited
async def mirror_edit(session: AsyncSession, channel: Channel, post: Post) -> None:
    """A post was edited (its new content already in `post.content`): its root follows."""
    if await session.get(CommentThread, post.id) is None:
        return
    payload = {"post_id": post.id, "action": "edit"}
    enqueue(session, new_entry(_queue(channel), OutboxKind.COMMENTS_THREAD, channel.ghost_user_id, payload))


@seam.on_retracted
async def mirror_redaction(session: AsyncSession, channel: Channel, post: Post, reason: str | None) -> None:
    """The post was deleted: delete its root too (the comments under it stay, as in Telegram's
    linked groups; moderators may remove them)."""
    if await session.get(CommentThread, post.id) is not None:
        enqueue(session, root_redaction(channel, post, reason))


def root_redaction(channel: Channel, post: Post, reason: str | None) -> OutboxEntry:
    """The entry that redacts a post's root (skipped when the post has none)."""
    payload = {"post_id": post.id, "action": "redact", "reason": reason}
    return new_entry(_queue(channel), OutboxKind.COMMENTS_THREAD, channel.ghost_user_id, payload)


# -- the discussion room's side: comments -------------------------------------------------------


async def on_discussion_event(ctx: Context, session: AsyncSession, room: Room, event: Event) -> None:
    """Screen a reader's comment with the channel's hooks (never in a room someone encrypted)."""
    if room.encrypted_warned or event.type not in COMMENT_TYPES or room.channel_id is None:
        return
    if event.sender == ctx.bot or event.sender.startswith(f"@{ctx.config.ghost_prefix}"):
        return
    channel = await session.get(Channel, room.channel_id)
    pipeline = ctx.pipeline
    if channel is None or pipeline is None or not pipeline.hooks_for(channel.handle or ""):
        return
    from bridge.moderation.gate import post_info

    verdicts = await pipeline.check(post_info(channel, event, via="comment"))
    from bridge.moderation.hooks import outcome

    deciding = outcome(verdicts)
    if deciding is None:
        return
    if await session.get(ModeratedComment, event.event_id) is not None:
        return
    body = event.content.get("body")
    lang = await language_for(session, ctx, event.sender, body if isinstance(body, str) else "")
    if deciding.action == "hold":
        await _flag(ctx, session, room, channel, event, deciding)
    else:
        await _remove(ctx, session, room, channel, event, deciding, lang)


def _moderated(
    room: Room, channel: Channel, event: Event, status: CommentStatus, decision_id: int | None = None
) -> ModeratedComment:
    """The record of a comment the hooks or a moderator acted on (the comment kept, to restore it)."""
    return ModeratedComment(
        event_id=event.event_id,
        channel_id=channel.id,
        room_id=room.room_id,
        author=event.sender,
        status=status,
        decision_id=decision_id,
        event=_event_dict(event),
    )


async def _flag(
    ctx: Context, session: AsyncSession, room: Room, channel: Channel, event: Event, verdict: Any
) -> None:
    """A hold: readers already see the comment, so it is reported, not removed."""
    from bridge.moderation import audit
    from bridge.moderation.gate import tell_moderators

    session.add(_moderated(room, channel, event, CommentStatus.FLAGGED))
    await audit.append(
        session,
        "comment_flagged",
        {
            "channel": channel.handle,
            "event": event.event_id,
            "hook": verdict.hook,
            "category": verdict.category,
        },
        {"author": event.sender, "reason": verdict.reason},
        config=ctx.config,
    )
    link = comments_url(room.room_id, event.event_id, ctx.domain)
    # The same words for the channel's team (the owner's language) and for the moderators (theirs).
    if channel.backstage_room_id:
        backstage = await session.get(Room, channel.backstage_room_id)
        reply(
            session,
            ctx,
            channel.backstage_room_id,
            await language_for(session, ctx, channel.owner, room=backstage),
            "comment_flagged",
            handle=channel.handle,
            user=event.sender,
            hook=verdict.hook,
            category=verdict.category,
            reason=verdict.reason,
            link=link,
        )
    await tell_moderators(
        ctx,
        session,
        "comment_flagged",
        handle=channel.handle,
        user=event.sender,
        hook=verdict.hook,
        category=verdict.category,
        reason=verdict.reason,
        link=link,
    )


async def _remove(
    ctx: Context, session: AsyncSession, room: Room, channel: Channel, event: Event, verdict: Any, lang: str
) -> None:
    """A reject: an automated decision with a statement of reasons to the commenter, then the redaction."""
    from bridge.moderation.decisions import record_hook_rejection

    decision = await record_hook_rejection(
        ctx,
        session,
        verdict,
        kind=DecisionKind.REMOVE_COMMENT,
        channel=channel,
        target=event.event_id,
        tell_backstage=False,
    )
    await _carry_out_removal(
        ctx,
        session,
        room,
        channel,
        event,
        decision,
        lang,
        reason=t(lang, "comment_removed_reason", decision=decision.id),
        by_moderator=False,
    )


async def _carry_out_removal(
    ctx: Context,
    session: AsyncSession,
    room: Room,
    channel: Channel,
    event: Event,
    decision: Decision,
    lang: str,
    *,
    reason: str,
    by_moderator: bool,
) -> None:
    """Redact the comment as the bot, say so in its thread, and send the statement to the commenter."""
    from bridge.moderation.decisions import statement_in

    comment = await session.get(ModeratedComment, event.event_id)
    if comment is None:
        session.add(_moderated(room, channel, event, CommentStatus.REMOVED, decision.id))
    else:  # flagged by a hold before it was reported
        comment.status = CommentStatus.REMOVED
        comment.decision_id = decision.id
    enqueue(
        session,
        new_entry(
            room_queue(room.room_id),
            OutboxKind.REDACT,
            ctx.bot,
            {"room_id": room.room_id, "event_id": event.event_id, "reason": reason[:500]},
        ),
    )
    notice = t(
        lang,
        "comment_taken_down_notice" if by_moderator else "comment_removed_notice",
        user=event.sender,
        decision=decision.id,
    )
    enqueue(
        session,
        send_entry(
            ctx.bot,
            room.room_id,
            {
                "msgtype": "m.notice",
                "body": notice,
                "m.mentions": {"user_ids": [event.sender]},
                "m.relates_to": thread_relation(event.content, event.event_id),
            },
        ),
    )
    statement = t(
        lang,
        "comment_removed_statement",
        handle=channel.handle,
        statement=await statement_in(ctx, session, decision, lang),
        decision=decision.id,
    )
    enqueue(
        session,
        new_entry(
            f"dm:{event.sender}",
            OutboxKind.COMMENTS_DM,
            ctx.bot,
            {"user_id": event.sender, "lang": lang, "content": {"msgtype": "m.notice", "body": statement}},
        ),
    )


def _event_dict(event: Event) -> dict[str, Any]:
    return event.as_dict()


# -- reports on comments --------------------------------------------------------------------------


async def reported_comment(ctx: Context, session: AsyncSession, event_id: EventID) -> ReportedComment | None:
    """The comment `event_id` is (or edits), when Kanal received it from a reader in one of its own,
    unencrypted discussion rooms; None for anything else, which is not Kanal's to judge."""
    found = await _received_in_discussion(session, event_id)
    if found is None:
        return None
    room, event = found
    comment_id = comment_reported(event, bot=ctx.bot, ghost_prefix=ctx.config.ghost_prefix)
    if comment_id is None:
        return None
    if comment_id != event.event_id:  # an edit: the comment it edits, by the same reader
        original = await _received_in_discussion(session, comment_id)
        if original is None or original[0].room_id != room.room_id or original[1].sender != event.sender:
            return None
        event = original[1]
        if comment_reported(event, bot=ctx.bot, ghost_prefix=ctx.config.ghost_prefix) != event.event_id:
            return None
    channel = await queries.channel_by_id(session, room.channel_id)
    if channel is None or channel.private:
        return None
    return ReportedComment(room=room, channel=channel, event=event)


async def _received_in_discussion(session: AsyncSession, event_id: str) -> tuple[Room, Event] | None:
    payload = await session.scalar(select(InboundEvent.payload).where(InboundEvent.event_id == event_id))
    if payload is None:
        return None
    try:
        event = parse_event(payload)
    except EventParseError:
        return None
    room = await session.get(Room, event.room_id)
    if room is None or room.kind != DISCUSSION or room.encrypted_warned:
        return None
    return room, event


async def post_of_root(session: AsyncSession, event_id: EventID) -> Post | None:
    """The post whose thread root `event_id` is (a report on a root is a report on the post)."""
    post: Post | None = await session.scalar(
        select(Post)
        .join(CommentThread, CommentThread.post_id == Post.id)
        .where(CommentThread.root_event_id == event_id)
    )
    return post


async def comment_removed(session: AsyncSession, event_id: EventID) -> bool:
    """Already redacted by a decision (restored comments are new events: the original stays removed)."""
    comment = await session.get(ModeratedComment, event_id)
    return comment is not None and comment.status in (CommentStatus.REMOVED, CommentStatus.RESTORED)


async def take_down_comment(
    ctx: Context,
    session: AsyncSession,
    comment: ReportedComment,
    *,
    decided_by: str,
    ground: Ground,
    explanation: str,
    notice: Notice | None,
) -> Decision:
    """A moderator removes a comment: a `remove_comment` decision (its statement to the notifier through
    `record`, to the commenter here), then the same removal as a rejection by the hooks."""
    from bridge.moderation.decisions import record

    event = comment.event
    decision = await record(
        ctx,
        session,
        kind=DecisionKind.REMOVE_COMMENT,
        decided_by=decided_by,
        channel=comment.channel,
        ground=ground,
        explanation=explanation,
        target=event.event_id,
        notice=notice,
        tell_backstage=False,
    )
    body = event.content.get("body")
    lang = await language_for(session, ctx, event.sender, body if isinstance(body, str) else "")
    await _carry_out_removal(
        ctx,
        session,
        comment.room,
        comment.channel,
        event,
        decision,
        lang,
        reason=t(lang, "mod_takedown_reason", decision=decision.id, ground=ground.describe(lang)),
        by_moderator=True,
    )
    return decision


async def may_appeal(session: AsyncSession, event_id: EventID, user_id: UserID) -> bool:
    """Only the commenter appeals the removal of a comment."""
    comment = await session.get(ModeratedComment, event_id)
    return comment is not None and comment.author == user_id


async def restore_comment(ctx: Context, session: AsyncSession, event_id: EventID, decision_id: int) -> None:
    """A granted appeal: the bot posts the comment again in its thread (a redaction cannot be undone)."""
    comment = await session.get(ModeratedComment, event_id)
    if comment is None or comment.status != CommentStatus.REMOVED:
        return
    comment.status = CommentStatus.RESTORED
    content = comment.event.get("content") if isinstance(comment.event.get("content"), dict) else {}
    body = content.get("body") if isinstance(content, dict) else None
    text = t(
        ctx.config.default_language,
        "comment_restored",
        user=comment.author,
        decision=decision_id,
        body=body if isinstance(body, str) else "",
    )
    relates = content.get("m.relates_to") if isinstance(content, dict) else None
    restored: dict[str, Any] = {"msgtype": "m.text", "body": text}
    if (
        isinstance(relates, dict)
        and relates.get("rel_type") == "m.thread"
        and isinstance(relates.get("event_id"), str)
    ):
        restored["m.relates_to"] = {"rel_type": "m.thread", "event_id": relates["event_id"]}
    enqueue(session, send_entry(ctx.bot, comment.room_id, restored))


async def discussion_encrypted(ctx: Context, session: AsyncSession, room: Room) -> None:
    """Someone turned encryption on: Kanal stops reading the room and says so in backstage."""
    room.encrypted_warned = True
    channel = await queries.channel_by_id(session, room.channel_id)
    if channel is None:
        return
    if channel.comments_room_id == room.room_id:
        channel.comments = False
    if channel.backstage_room_id:
        text = t(ctx.config.default_language, "comments_encrypted", handle=channel.handle, room=room.room_id)
        enqueue(
            session, send_entry(ctx.bot, channel.backstage_room_id, {"msgtype": "m.notice", "body": text})
        )


# -- outbox executors -----------------------------------------------------------------------------


def register(ctx: Context) -> None:
    executors = ctx.outbox.executors
    executors[OutboxKind.COMMENTS_ROOM] = lambda entry, worker: _exec_room(ctx, entry, worker)
    executors[OutboxKind.COMMENTS_ROOT] = lambda entry, worker: _exec_root(ctx, entry, worker)
    executors[OutboxKind.COMMENTS_THREAD] = lambda entry, worker: _exec_thread(ctx, entry, worker)
    executors[OutboxKind.COMMENTS_DM] = lambda entry, worker: _exec_dm(ctx, entry, worker)


async def _exec_room(ctx: Context, entry: OutboxEntry, worker: OutboxWorker) -> str | None:
    """Create the discussion room (or adopt ours after a crash), with the ghost in it."""
    from bridge.moderation.policy import banned_servers

    lang = entry.payload.get("lang") or ctx.config.default_language
    async with ctx.sessions() as session:
        channel = await session.get(Channel, entry.payload["channel_id"])
        if channel is None or channel.handle is None or channel.status != ChannelStatus.ACTIVE:
            raise SkipEntry("the channel is gone or not active")
        if channel.comments_room_id is not None:
            raise SkipEntry("the discussion room exists")
        team = list(
            (
                await session.scalars(
                    select(ChannelMember.user_id).where(ChannelMember.channel_id == channel.id)
                )
            ).all()
        )
        banned = await banned_servers(session, ctx.domain)
    handle = channel.handle

    request = with_hosting_policy(
        discussion_room_request(
            handle=handle,
            name=t(lang, "comments_room_name", title=channel.title),
            topic=t(lang, "comments_room_topic", handle=handle, domain=ctx.domain),
            ghost=channel.ghost_user_id,
            moderators=team,
            avatar=channel.avatar_url,
        ),
        ctx.config,
        channel.retention_days,
        banned,
    )
    # One room per creation (this entry): a retry finds the room it made; a later `!comments on`
    # (after the room was encrypted) makes a new one.
    creation = f"{channel.id}.{entry.id}"
    room_id = await create_once(ctx, request, "comments", creation)
    ghost = ctx.client.intent(UserID(channel.ghost_user_id))
    await ghost.join(room_id)
    # Only now, with the room open (createRoom answers once its join rules are in place), is
    # #<handle>_comments published.
    await _publish_alias(ctx, handle, room_id)
    async with ctx.sessions.begin() as session:
        current = await session.get(Channel, channel.id)
        if current is None:
            raise SkipEntry("the channel is gone")
        current.comments_room_id = room_id
        await session.merge(Room(room_id=room_id, kind=DISCUSSION, channel_id=channel.id))
        if current.avatar_url != channel.avatar_url:  # the photo changed while the room was made
            photo = {"url": current.avatar_url} if current.avatar_url else {}
            enqueue(session, state_entry(ctx.bot, room_id, "m.room.avatar", photo))
        reply(
            session,
            ctx,
            entry.payload["room"],
            lang,
            "comments_ready",
            handle=handle,
            room=_room_ref(ctx, current),
        )
    ctx.remember_room(room_id)
    await forget_marker(ctx, "comments", creation)
    log.info("Discussion room of #%s is %s", handle, room_id)
    return None


async def _publish_alias(ctx: Context, handle: str, room_id: RoomID) -> None:
    """Point `#<handle>_comments` at the new discussion room, and make it the room's canonical alias.

    An alias already there that leads to an earlier discussion room of this channel (one that was
    encrypted) is moved; one leading to someone else's room is left alone, and the room goes without."""
    bot = ctx.bot_intent()
    alias = RoomAlias(f"#{handle}{ALIAS_SUFFIX}:{ctx.domain}")
    try:
        await bot.set_alias(alias, room_id)
    except MatrixRequestError as exc:
        if exc.status != 409:
            raise
        current = await bot.resolve_alias(alias)
        if current != room_id:
            if not await _is_discussion_room(ctx, current, handle):
                log.warning("%s leads to a room that is not Kanal's; the discussion room goes without", alias)
                return
            await bot.delete_alias(alias)
            await bot.set_alias(alias, room_id)
    await bot.send_state(room_id, "m.room.canonical_alias", {"alias": alias})


async def _is_discussion_room(ctx: Context, room_id: RoomID, handle: str) -> bool:
    """Whether Kanal made `room_id` as a discussion room of #handle (its creation marker says so)."""
    try:
        marker = await ctx.bot_intent().get_state(room_id, CHANNEL_STATE_TYPE)
    except MatrixRequestError as exc:
        if exc.retryable:
            raise
        return False
    return marker.get("handle") == handle and marker.get("role") == DISCUSSION


async def _exec_root(ctx: Context, entry: OutboxEntry, worker: OutboxWorker) -> str | None:
    post_id = entry.payload["post_id"]
    async with ctx.sessions() as session:
        post = await session.get(Post, post_id)
        thread = await session.get(CommentThread, post_id)
        channel = await session.get(Channel, post.channel_id) if post is not None else None
        if post is None or thread is None or channel is None:
            raise SkipEntry(f"post {post_id} is gone")
        if thread.root_event_id is not None:
            return thread.root_event_id  # recorded by an attempt whose outcome was lost
        room_id = channel.comments_room_id
        if room_id is None or await _encrypted(session, room_id):
            raise SkipEntry(f"#{channel.handle} has no usable discussion room")
        if post.redacted:
            raise SkipEntry(f"post {post_id} was deleted")
    mirrored = root_content(post.event_type, post.content)
    if mirrored is None:
        raise SkipEntry(f"post {post_id} ({post.event_type}) has nothing to mirror")
    event_type, content = mirrored
    content[ROOT_KEY] = post.source_event_id
    root = await send_content(worker, entry, room_id, event_type, content)
    async with ctx.sessions.begin() as session:
        thread = await session.get(CommentThread, post_id)
        if thread is None:
            raise SkipEntry(f"post {post_id} is gone")
        thread.room_id = room_id
        thread.root_event_id = EventID(root) if root is not None else None
        current = await session.get(Post, post_id)
        if not thread.link_queued and current is not None and not current.redacted:
            thread.link_queued = True
            seam.refresh_footer(session, channel, current)
    worker.wake()
    return root


async def _exec_thread(ctx: Context, entry: OutboxEntry, worker: OutboxWorker) -> str | None:
    """Edit or redact a post's root, once the root exists (it is earlier in the same queue)."""
    post_id = entry.payload["post_id"]
    async with ctx.sessions() as session:
        post = await session.get(Post, post_id)
        thread = await session.get(CommentThread, post_id)
    if post is None or thread is None or thread.root_event_id is None or thread.room_id is None:
        raise SkipEntry(f"post {post_id} has no thread root")
    if entry.payload.get("action") == "redact":
        intent = worker.client.intent(UserID(entry.as_user))
        reason = entry.payload.get("reason")
        return await intent.redact(
            RoomID(thread.room_id),
            EventID(thread.root_event_id),
            txn_id_for(entry.id),
            reason if isinstance(reason, str) else None,
        )
    content = root_edit_content(post.event_type, post.content or {}, thread.root_event_id)
    if content is None or post.redacted:
        raise SkipEntry(f"the root of post {post_id} cannot be edited")
    return await send_content(worker, entry, thread.room_id, "m.room.message", content)


async def _exec_dm(ctx: Context, entry: OutboxEntry, worker: OutboxWorker) -> str | None:
    """Tell a user something privately: in their chat with the bot, which the bot opens when there is none
    (it becomes their management chat, where they can `appeal`)."""
    user = entry.payload["user_id"]
    async with ctx.sessions() as session:
        room_id = await queries.management_room_of(session, user)
    if room_id is None:
        body = {"preset": "trusted_private_chat", "is_direct": True, "invite": [user]}
        room_id = await create_once(ctx, body, "dm", user)
        async with ctx.sessions.begin() as session:
            await session.merge(
                Room(
                    room_id=room_id,
                    kind=RoomKind.MANAGEMENT,
                    user_id=user,
                    language=entry.payload.get("lang") or ctx.config.default_language,
                )
            )
        ctx.remember_room(room_id)
        await forget_marker(ctx, "dm", user)
    queued = aware(entry.created_at) if entry.created_at is not None else datetime.now(UTC)
    if not user.endswith(f":{ctx.domain}") and queued > datetime.now(UTC) - DM_JOIN_WAIT:
        # Someone on another server: their server sees what was said before they joined only if it
        # fetches the room's history then, which it may not do. Said once they are in, it reaches them.
        member = await _membership(ctx, room_id, user)
        if member != "join":
            raise NotYet(f"{user} has not joined {room_id} yet ({member})", DM_JOIN_POLL_S)
    return await send_content(worker, entry, room_id, "m.room.message", entry.payload["content"])


async def _membership(ctx: Context, room_id: RoomID, user: str) -> str | None:
    """`user`'s membership of the room, as the homeserver has it (None: never a member)."""
    state = await ctx.bot_intent().find_state(room_id, "m.room.member", user)
    membership = (state or {}).get("membership")
    return membership if isinstance(membership, str) else None


kinds.register_comment(
    kinds.CommentKind(
        find=reported_comment,
        post_of_root=post_of_root,
        removed=comment_removed,
        take_down=take_down_comment,
        restore=restore_comment,
        may_appeal=may_appeal,
        url=comments_url,
    )
)
