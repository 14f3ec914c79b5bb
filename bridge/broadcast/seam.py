"""The channel-write seam: the one module that writes into a channel's public (broadcast) rooms.

Whatever changes what a channel's readers see is queued here, as outbox entries in the caller's
transaction: a post, an edit, a deletion, a pin, a poll's end, the room's state (name, topic, power
levels, join rules, ACL, retention, verification), its directory listing, its members (invites,
kicks, bans), and archiving it. Callers (backstage, the publishing API, scheduled posts, forwarding,
moderation, hosting, registration, statistics, comments) never build an entry for a channel room
themselves. A channel spans one or more public rooms (shards, see `shards.py`): every write goes to
each of them as its own entry on that room's queue (a crash mid-fan-out resends nothing twice: each
entry has its own transaction id); invites, the alias and the directory listing go to the open room.

    caller ─▶ seam.publish / edit / retract / set_state …  (one DB transaction with the decision)
               ├▶ an outbox entry per room on queue room:<room> ─▶ OutboxWorker sends them, in order
               │    (a post's event in each room is recorded as a PostCopy when sent)
               └▶ listeners: features that follow a post (comments: a thread root per post)

An edit of a post that shows a footer (a comments link, a view count) is a `post_edit` entry whose
content is read when it is sent, from the post as it stands (edits applied) and its footer, so an
edit, a new view count and the comments link never undo each other whatever order their transactions
commit in.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from appservice.client import q
from appservice.errors import MatrixRequestError, MNotFound
from appservice.ids import EventID, RoomAlias, RoomID, UserID
from bridge.broadcast import shards
from bridge.matrix.decorations import decorate
from bridge.matrix.powerlevels import access_state
from bridge.matrix.relay import REF_PLACEHOLDER
from bridge.runtime.context import Context, enqueue
from bridge.runtime.outbox import (
    OutboxKind,
    OutboxWorker,
    SkipEntry,
    insert_entries,
    new_entry,
    room_queue,
    send_content,
)
from bridge.store import plain, queries
from bridge.store.models import Channel, CommentThread, OutboxEntry, Post

MAX_REASON: Final = 500

PostListener = Callable[[AsyncSession, Channel, Post], Awaitable[None]]
RetractListener = Callable[[AsyncSession, Channel, Post, str | None], Awaitable[None]]

_published: list[PostListener] = []
_edited: list[PostListener] = []
_retracted: list[RetractListener] = []


def on_published(listener: PostListener) -> PostListener:
    """Call `listener` in the transaction that records every new post (after its row exists)."""
    _published.append(listener)
    return listener


def on_edited(listener: PostListener) -> PostListener:
    """Call `listener` when a post's content changes (its row already holds the new content)."""
    _edited.append(listener)
    return listener


def on_retracted(listener: RetractListener) -> RetractListener:
    """Call `listener` when a post is deleted or taken down."""
    _retracted.append(listener)
    return listener


def shown_content(content: dict[str, Any]) -> dict[str, Any]:
    """What a post shows (for the web pages): the content without relations and Kanal's markers."""
    return {
        k: v
        for k, v in content.items()
        if k not in ("m.relates_to", "m.new_content") and not k.startswith("net.kanal.")
    }


def edit_event_content(new_content: dict[str, Any], target: str) -> dict[str, Any]:
    """An `m.replace` of `target` (REF_PLACEHOLDER: the relayed copy, filled in by the outbox)."""
    body = new_content.get("body")
    return {
        "msgtype": new_content.get("msgtype", "m.text"),
        "body": f"* {body if isinstance(body, str) else ''}",
        "m.new_content": new_content,
        "m.relates_to": {"rel_type": "m.replace", "event_id": target},
    }


def footer_edit_content(
    content: dict[str, Any], target: str, *, url: str | None, views: int | None = None
) -> dict[str, Any]:
    """An m.replace of the channel post `target`: its content with the footer (comments link, views)."""
    return edit_event_content(decorate(content, comments_url=url, views=views), target)


def comments_url(room_id: RoomID, root_event_id: EventID, domain: str) -> str:
    """The matrix.to permalink of a comments thread root (what a post's footer links to)."""
    return f"https://matrix.to/#/{room_id}/{root_event_id}?via={domain}"


async def footer_url(session: AsyncSession, post: Post, domain: str) -> str | None:
    """The comments link a post's footer shows (None until its thread root exists)."""
    thread = await session.get(CommentThread, post.id)
    if thread is None or thread.room_id is None or thread.root_event_id is None:
        return None
    return comments_url(thread.room_id, thread.root_event_id, domain)


NOTES: Final = ("on_success", "on_failure")


def _entries(
    channel: Channel,
    kind: OutboxKind,
    as_user: UserID,
    payload: dict[str, Any],
    ref_source: str | None = None,
    *,
    rooms: list[RoomID] | None = None,
) -> list[OutboxEntry]:
    """One entry per public room of the channel (each shard's own queue keeps that room's order).

    A confirmation or failure note for the person who asked rides on the open room's entry only,
    so a channel of several rooms answers once.
    """
    targets = channel.rooms if rooms is None else rooms
    quiet = {k: v for k, v in payload.items() if k not in NOTES}
    return [
        new_entry(
            room_queue(room),
            kind,
            as_user,
            {"room_id": room, **(payload if i == len(targets) - 1 else quiet)},
            ref_source,
        )
        for i, room in enumerate(targets)
    ]


def _enqueue(session: AsyncSession, entries: list[OutboxEntry]) -> list[OutboxEntry]:
    for entry in entries:
        enqueue(session, entry)
    return entries




def for_readers(channel: Channel, event_type: str, content: dict[str, Any]) -> dict[str, Any]:
    """A post's content as the channel sends it: with `!notify off`, text goes out as `m.notice`
    (Synapse's default push rules notify nobody of a notice, so no reader gets a notification row)."""
    if channel.notify is not False or event_type != "m.room.message":  # None: a row not yet stored
        return content
    shown = dict(content)
    if shown.get("msgtype") == "m.text":
        shown["msgtype"] = "m.notice"
    new = shown.get("m.new_content")
    if isinstance(new, dict) and new.get("msgtype") == "m.text":
        shown["m.new_content"] = {**new, "msgtype": "m.notice"}
    return shown


# -- posts ------------------------------------------------------------------------------------------


async def publish(
    session: AsyncSession,
    channel: Channel,
    content: dict[str, Any],
    *,
    source: str,
    author: str,
    event_type: str = "m.room.message",
    ref_source: str | None = None,
    via: str = "backstage",
    ts: int | None = None,
) -> Post:
    """Send a new post as the channel's ghost and record it (`source`: the event or id it comes from).

    `content` goes out as it is (Kanal's source marker and relations included); the Post keeps what
    readers see: `content` without relations and markers. `ts` (milliseconds): the post's original
    time, for a post imported from elsewhere: its events carry it as `origin_server_ts` and the Post
    as its date.
    """
    # `post_source`: the outbox records each room's published event (a PostCopy) once it is sent.
    sent = for_readers(channel, event_type, content)
    payload: dict[str, Any] = {"event_type": event_type, "content": sent, "post_source": source}
    if ts is not None:
        payload["ts"] = ts
    outbox_ids = await insert_entries(session, _entries(channel, OutboxKind.SEND, channel.ghost_user_id, payload, ref_source))
    values = {
        "channel_id": channel.id,
        "source_event_id": source,
        "author": author,
        "outbox_id": outbox_ids[0] if outbox_ids else None,
        "event_type": event_type,
        "content": shown_content(content),
        "via": via,
        "created_at": datetime.fromtimestamp(ts / 1000, UTC) if ts is not None else datetime.now(UTC),
    }
    # One plain INSERT … RETURNING (the hot path: the ORM's flush costs more); the Post handed to the
    # listeners and the caller is the row as stored, not attached to the session.
    row = (await plain.run(session, _INSERT_POST, values)).one()
    post = Post(**row._mapping)
    for listener in _published:
        await listener(session, channel, post)
    return post


_INSERT_POST = insert(Post).returning(*Post.__table__.c)


def _with_views(content: dict[str, Any], views: int | None) -> dict[str, Any]:
    return decorate(content, views=views) if views is not None else content


async def edit(session: AsyncSession, channel: Channel, post: Post, new_content: dict[str, Any]) -> None:
    """Replace a post's content (the publishing API's PATCH, `!edit`, a held edit approved),
    keeping the footer it shows."""
    await _edit_post(
        session,
        channel,
        post,
        new_content,
        lambda views: edit_event_content(_with_views(new_content, views), REF_PLACEHOLDER),
    )


async def relay_edit(
    session: AsyncSession, channel: Channel, source: str, event_content: dict[str, Any], event_type: str
) -> None:
    """Mirror an edit made in backstage (`event_content`: the `m.replace` to send, relations pointing
    at REF_PLACEHOLDER) onto the published copy of the post `source`."""
    post = await queries.post_by_source(session, source, channel_id=channel.id)
    new_content = event_content.get("m.new_content")
    if post is None or not isinstance(new_content, dict):
        _enqueue(session, _send_entries(channel, event_type, event_content, source))
        return
    await _edit_post(
        session,
        channel,
        post,
        new_content,
        lambda views: {**event_content, "m.new_content": _with_views(new_content, views)},
        event_type,
    )


async def _edit_post(
    session: AsyncSession,
    channel: Channel,
    post: Post,
    new_content: dict[str, Any],
    content_showing: Callable[[int | None], dict[str, Any]],
    event_type: str = "m.room.message",
) -> None:
    """Record the post's new content and queue its edit. A post with a comments thread is edited by
    a `post_edit` entry (its link is read when sent); any other by the edit itself, showing the view
    count the post shows."""
    post.content = shown_content(new_content)
    post.edited_at = datetime.now(UTC)
    if await session.get(CommentThread, post.id) is not None:
        _enqueue(session, _post_edit_entries(channel, post))
    else:
        views = post.views_shown if channel.views_in_posts else None
        _enqueue(session, _send_entries(channel, event_type, content_showing(views), post.source_event_id))
    for listener in _edited:
        await listener(session, channel, post)


def _send_entries(
    channel: Channel, event_type: str, content: dict[str, Any], ref_source: str | None, ts: int | None = None
) -> list[OutboxEntry]:
    payload: dict[str, Any] = {"event_type": event_type, "content": for_readers(channel, event_type, content)}
    if ts is not None:
        payload["ts"] = ts
    return _entries(channel, OutboxKind.SEND, channel.ghost_user_id, payload, ref_source)


def _post_edit_entries(channel: Channel, post: Post) -> list[OutboxEntry]:
    return _entries(channel, OutboxKind.POST_EDIT, channel.ghost_user_id, {"post_id": post.id})


def refresh_footer(session: AsyncSession, channel: Channel, post: Post) -> None:
    """Edit a post to show its footer as it is now (a new view count, a comments link)."""
    _enqueue(session, _post_edit_entries(channel, post))


def reference(
    session: AsyncSession,
    channel: Channel,
    event_type: str,
    content: dict[str, Any],
    source: str,
    *,
    ts: int | None = None,
) -> None:
    """Send an event that refers to the published copy of `source` (a poll's end), as the ghost
    (`ts`: its original time, for an imported one)."""
    _enqueue(session, _send_entries(channel, event_type, content, source, ts))


async def retract(session: AsyncSession, channel: Channel, post: Post, reason: str | None) -> None:
    """Delete the relayed copy of a post (the backstage original stays, for the record and a reversal)."""
    post.redacted = True
    reason = reason[:MAX_REASON] if reason else reason
    _enqueue(
        session,
        _entries(
            channel,
            OutboxKind.REDACT,
            channel.ghost_user_id,
            {"event_id": REF_PLACEHOLDER, "reason": reason},
            post.source_event_id,
        ),
    )
    for listener in _retracted:
        await listener(session, channel, post, reason)


def pin(
    session: AsyncSession,
    channel: Channel,
    source: str,
    *,
    pinned: bool,
    on_success: dict[str, Any] | None = None,
) -> None:
    """Pin or unpin the relayed copy of `source` (m.room.pinned_events); `on_success`: a note for
    whoever asked (an import asks no one)."""
    kind = OutboxKind.PIN if pinned else OutboxKind.UNPIN
    payload: dict[str, Any] = {"event_id": REF_PLACEHOLDER}
    if on_success is not None:
        payload["on_success"] = on_success
    _enqueue(session, _entries(channel, kind, channel.ghost_user_id, payload, source))


def replace(session: AsyncSession, channel: Channel, post: Post, event_content: dict[str, Any]) -> None:
    """Send an edit of a post's published copy exactly as given (`m.relates_to` pointing at
    REF_PLACEHOLDER), its footer already in it: a new view count."""
    _enqueue(session, _send_entries(channel, "m.room.message", event_content, post.source_event_id))


def redact_event(
    ctx: Context, session: AsyncSession, room_id: RoomID, event_id: EventID, reason: str | None
) -> None:
    """Redact a reader's event in a channel's public room, as the bot (a reaction the channel refuses)."""
    payload = {"room_id": room_id, "event_id": event_id, "reason": reason}
    enqueue(session, new_entry(room_queue(room_id), OutboxKind.REDACT, ctx.bot, payload))


# -- the room's state, listing and members ----------------------------------------------------------


def set_state(
    ctx: Context,
    session: AsyncSession,
    channel: Channel,
    event_type: str,
    content: dict[str, Any],
    state_key: str = "",
    **extra: Any,
) -> None:
    """Set a state event in every room of the channel, as the bot (extra: `on_success`, `on_failure`)."""
    payload = {"event_type": event_type, "content": content, **extra}
    if state_key:
        payload["state_key"] = state_key
    _enqueue(session, _entries(channel, OutboxKind.STATE, ctx.bot, payload))


def set_canonical_alias(ctx: Context, session: AsyncSession, channel: Channel, content: dict[str, Any]) -> None:
    """The open room's `m.room.canonical_alias` (the homeserver accepts only aliases that point at the
    room, and #handle points at the open room)."""
    payload = {"event_type": "m.room.canonical_alias", "content": content}
    _enqueue(session, _entries(channel, OutboxKind.STATE, ctx.bot, payload, rooms=_open(channel)))


def set_room_state(
    ctx: Context, session: AsyncSession, room_id: RoomID, event_type: str, content: dict[str, Any]
) -> OutboxEntry:
    """Set a state event of one given public room of a channel, as the bot (the hosting policy
    reconciles room by room, whatever rooms a channel has)."""
    payload = {"room_id": room_id, "event_type": event_type, "content": content}
    return enqueue(session, new_entry(room_queue(room_id), OutboxKind.STATE, ctx.bot, payload))


def _open(channel: Channel) -> list[RoomID]:
    return channel.rooms[-1:]


def set_alias(ctx: Context, session: AsyncSession, channel: Channel, alias: str) -> None:
    """Point `alias` at the channel's open room (after a rename)."""
    _enqueue(
        session, _entries(channel, OutboxKind.ALIAS_SET, ctx.bot, {"alias": alias}, rooms=_open(channel))
    )


async def point_alias(ctx: Context, channel: Channel, alias: str) -> None:
    """Point `alias` at the channel's open room now (the homeserver asked about an alias in Kanal's
    namespace)."""
    if channel.open_room is None:
        return
    try:
        await ctx.bot_intent().set_alias(RoomAlias(alias), channel.open_room)
    except MatrixRequestError as exc:
        # 409: it exists again (the alias was being moved to a new room, and its move set it first).
        if exc.status != 409:
            raise


def remove_alias(ctx: Context, session: AsyncSession, channel: Channel, alias: str) -> None:
    """Free an alias the channel no longer uses (queued behind the open room's other writes)."""
    _enqueue(
        session, _entries(channel, OutboxKind.ALIAS_DELETE, ctx.bot, {"alias": alias}, rooms=_open(channel))
    )


def set_listed(ctx: Context, session: AsyncSession, channel: Channel, listed: bool) -> None:
    """In the room directory (the open room only: that is where new readers go), or out of it."""
    rooms = channel.rooms
    for room in rooms:
        visibility = "public" if listed and room == rooms[-1] else "private"
        _enqueue(
            session,
            _entries(channel, OutboxKind.DIRECTORY, ctx.bot, {"visibility": visibility}, rooms=[room]),
        )


def set_access(ctx: Context, session: AsyncSession, channel: Channel) -> None:
    """Join rules, history visibility, guest access and the directory listing as `channel.private`
    asks: knock and unlisted, or public and listed."""
    for event_type, content in access_state(channel.private):
        set_state(ctx, session, channel, event_type, content)
    set_listed(ctx, session, channel, not channel.private)


def close(ctx: Context, session: AsyncSession, channel: Channel) -> None:
    """Out of the directory and invite-only (a suspended channel)."""
    set_listed(ctx, session, channel, False)
    set_state(ctx, session, channel, "m.room.join_rules", {"join_rule": "invite"})


def invite(ctx: Context, session: AsyncSession, channel: Channel, user_id: UserID, **extra: Any) -> None:
    """Invite a reader into the open room, as the bot (extra: `reason`, `on_failure`)."""
    payload = {"user_id": user_id, **extra}
    _enqueue(session, _entries(channel, OutboxKind.INVITE, ctx.bot, payload, rooms=_open(channel)))


def kick(ctx: Context, session: AsyncSession, channel: Channel, user_id: UserID, reason: str) -> None:
    """Remove a member (or refuse a knock) from whichever of the channel's rooms they are in, as the bot."""
    _enqueue(session, _entries(channel, OutboxKind.KICK, ctx.bot, {"user_id": user_id, "reason": reason}))


async def archive(ctx: Context, channel: Channel, closing_notice: str, txn_id: str) -> None:
    """Close a deleted channel's rooms at once (inside the resumable deletion job): out of the
    directory, invite-only, no canonical alias, and a last notice from the ghost."""
    bot = ctx.bot_intent()
    ghost = ctx.client.intent(UserID(channel.ghost_user_id))
    for i, room in enumerate(channel.rooms):
        if i:  # each later room's own alias (#handle itself is freed by the deletion job)
            try:
                await bot.delete_alias(RoomAlias(shards.shard_alias(ctx, channel.id, i)))
            except MNotFound:
                pass
        await bot.set_directory_visibility(room, "private")
        await bot.send_state(room, "m.room.join_rules", {"join_rule": "invite"})
        await bot.send_state(room, "m.room.canonical_alias", {})
        notice = {"msgtype": "m.notice", "body": closing_notice}
        await ghost.send(room, "m.room.message", notice, f"{txn_id}-{i}" if i else txn_id)


async def ban(ctx: Context, room_id: RoomID, user_id: UserID, *, banned: bool, reason: str) -> None:
    """Ban (or unban) someone in a channel's public room or its discussion room, at once (inside the
    policy-list job, which retries what the homeserver could not do)."""
    path = f"/_matrix/client/v3/rooms/{q(room_id)}/{'ban' if banned else 'unban'}"
    body: dict[str, Any] = {"user_id": user_id}
    if banned:
        body["reason"] = reason[:MAX_REASON]
    await ctx.client.request("POST", path, body=body, user_id=ctx.bot)


# -- executors -----------------------------------------------------------------------------------------


async def _exec_alias(entry: OutboxEntry, worker: OutboxWorker) -> str | None:
    """`alias_set` (point an alias at a room) and `alias_delete`."""
    intent = worker.client.intent(UserID(entry.as_user))
    alias = RoomAlias(entry.payload["alias"])
    if entry.kind == OutboxKind.ALIAS_DELETE:
        try:
            await intent.delete_alias(alias)
        except MNotFound:
            pass  # already gone (a retry, or someone removed it)
        return None
    room_id = RoomID(entry.payload["room_id"])
    try:
        await intent.set_alias(alias, room_id)
    except MatrixRequestError as exc:
        # Synapse answers 409 when the alias exists: fine if it already points at this room (a retry).
        if exc.status != 409 or await intent.resolve_alias(alias) != room_id:
            raise
    return None


async def _exec_directory(entry: OutboxEntry, worker: OutboxWorker) -> str | None:
    """Publish a room in the directory or take it out."""
    intent = worker.client.intent(UserID(entry.as_user))
    await intent.set_directory_visibility(RoomID(entry.payload["room_id"]), entry.payload["visibility"])
    return None


async def _exec_post_edit(ctx: Context, entry: OutboxEntry, worker: OutboxWorker) -> str | None:
    """Edit the channel post to show its current content with its footer (read now, not when queued)."""
    post_id = entry.payload["post_id"]
    async with ctx.sessions() as session:
        post = await session.get(Post, post_id)
        channel = await session.get(Channel, post.channel_id) if post is not None else None
        # An entry queued before shards existed names no room: the channel's first.
        room = entry.payload.get("room_id") or (channel.broadcast_room_id if channel is not None else None)
        copy = await queries.copy_in(session, post_id, room) if room is not None else None
        if post is None or channel is None or post.redacted or room is None or copy is None:
            raise SkipEntry(f"post {post_id} has no published copy to edit in {room}")
        url = await footer_url(session, post, ctx.domain)
    views = post.views_shown if channel.views_in_posts else None
    content = footer_edit_content(post.content or {}, copy, url=url, views=views)
    return await send_content(
        worker, entry, room, post.event_type, for_readers(channel, post.event_type, content)
    )


def register(ctx: Context) -> None:
    """The seam's own outbox kinds (`comments_link`: a post_edit queued before the seam existed)."""

    async def run(entry: OutboxEntry, worker: OutboxWorker) -> str | None:
        return await _exec_post_edit(ctx, entry, worker)

    executors = ctx.outbox.executors
    executors[OutboxKind.POST_EDIT] = run
    executors[OutboxKind.COMMENTS_LINK] = run
    executors[OutboxKind.ALIAS_SET] = _exec_alias
    executors[OutboxKind.ALIAS_DELETE] = _exec_alias
    executors[OutboxKind.DIRECTORY] = _exec_directory
    executors[OutboxKind.OPEN_SHARD] = functools.partial(shards.open_shard, ctx)
