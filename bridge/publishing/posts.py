"""What an editor's message becomes in the channel: relayed as the ghost through the channel-write seam.

    backstage message ─▶ may_publish (not restricted; the compliance hooks: allowed, held or rejected)
        ─▶ relay: forwarded? (attribution) ─▶ plan_relay (replies re-pointed, signature) ─▶ seam.publish
    backstage edit ─▶ seam.relay_edit        backstage deletion ─▶ seam.retract
    held post approved (or reinstated on appeal) ─▶ publish_held: as backstage or the publishing API
    would have published it

The backstage room's handler (bridge.channels.backstage) decides who may post; this module decides
what is published, and the publishing API (bridge.web.api) uses the same calls.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncSession

from appservice.events import Event, parse_event
from bridge.broadcast import seam
from bridge.matrix.imported import IMPORTED_KEY, POLL_END, as_reply
from bridge.matrix.relay import (
    REF_PLACEHOLDER,
    SOURCE_KEY,
    plan_relay,
    silent_content,
    with_text,
)
from bridge.moderation import audit, kinds
from bridge.moderation.gate import restricted, screen
from bridge.publishing import forwarding
from bridge.runtime.context import Context
from bridge.runtime.dispatch import CommandCall, command
from bridge.store import queries
from bridge.store.models import Channel, HeldPost, Post, Room, RoomKind
from bridge.text.i18n import t

API_SOURCE_PREFIX: Final = "api:"
"""Posts made through the publishing API have ids (and authors) `api:<…>`, never Matrix ids."""
SILENT_PREFIX: Final = "!silent "
IMPORT_VIA: Final = "import:telegram"
"""`posts.via` of a post imported from a Telegram export."""


async def author_name(ctx: Context, user_id: str) -> str:
    name = await ctx.bot_intent().get_displayname(user_id)
    return name or user_id[1:].split(":", 1)[0]


async def may_publish(
    ctx: Context, session: AsyncSession, room: Room, channel: Channel, event: Event, lang: str
) -> bool:
    """Not while the channel is restricted; only what the compliance hooks allow (others are held)."""
    if await restricted(ctx, session, room, channel, lang):
        return False
    return await screen(ctx, session, room, channel, event, lang)


async def relay(ctx: Context, session: AsyncSession, channel: Channel, event: Event) -> None:
    """Publish a backstage message (a post, an edit of one, a poll's end) in the channel."""
    refs = [e for e in (event.relates_to_event, event.reply_to) if e]
    known = await queries.published_sources(session, channel.id, refs)
    signature = await author_name(ctx, event.sender) if channel.signatures else None
    content = event.content
    origin = await forwarding.origin_of(session, content) if event.rel_type is None else None
    if isinstance(origin, Post):
        return  # a forward of a deleted or taken-down post is not republished
    if origin is not None:
        header = t(ctx.config.default_language, "forwarded_from", title=forwarding.TITLE_MARK)
        content = forwarding.attributed(origin, ctx.domain, header)
    plan = plan_relay(
        event.type, content, source_event_id=event.event_id, known_source=known, signature=signature
    )
    if plan is None:
        return
    if plan.ref_source is not None and plan.is_edit:
        if plan.content.get("m.relates_to", {}).get("rel_type") == "m.replace":
            await seam.relay_edit(session, channel, plan.ref_source, plan.content, plan.event_type)
        else:
            seam.reference(session, channel, plan.event_type, plan.content, plan.ref_source)
        return
    await seam.publish(
        session,
        channel,
        plan.content,
        source=event.event_id,
        author=event.sender,
        event_type=plan.event_type,
        ref_source=plan.ref_source,
    )


async def publish_silent(
    ctx: Context, session: AsyncSession, channel: Channel, event: Event, text: str, *, signed: bool
) -> None:
    """`!silent <text>`: an `m.notice`, which the default push rules never notify about."""
    content = silent_content(text)
    if signed and channel.signatures:
        content["body"] += f"\n— {await author_name(ctx, event.sender)}"
    content[SOURCE_KEY] = event.event_id
    await seam.publish(session, channel, content, source=event.event_id, author=event.sender)


async def relay_event(ctx: Context, session: AsyncSession, channel: Channel, event: Event) -> None:
    """Publish a backstage post that was held and is now approved (or reinstated on appeal)."""
    body = event.content.get("body")
    if isinstance(body, str) and body.startswith(SILENT_PREFIX):
        await publish_silent(ctx, session, channel, event, body[len(SILENT_PREFIX) :].strip(), signed=False)
        return
    await relay(ctx, session, channel, event)


async def mirror_redaction(session: AsyncSession, channel: Channel, event: Event) -> None:
    """An editor deleted a published message in backstage: delete its published copy."""
    target = event.redacted_event
    post = await queries.post_by_source(session, target, channel_id=channel.id) if target else None
    if post is None or post.redacted:
        return
    reason = event.content.get("reason")
    await seam.retract(session, channel, post, reason if isinstance(reason, str) else None)


# -- posts made through the publishing API ---------------------------------------------------------


async def publish_api_post(
    session: AsyncSession,
    channel: Channel,
    token_name: str,
    source: str,
    content: dict[str, Any],
    reply_source: str | None,
) -> Post:
    """Queue an API post as the ghost and record it, exactly as a relayed backstage post is."""
    content = {**content, SOURCE_KEY: source}
    if reply_source is not None:
        content["m.relates_to"] = {"m.in_reply_to": {"event_id": REF_PLACEHOLDER}}
    via = f"{API_SOURCE_PREFIX}{token_name}"
    return await seam.publish(
        session, channel, content, source=source, author=via, ref_source=reply_source, via=via
    )


async def audit_api_post(
    ctx: Context,
    session: AsyncSession,
    channel: Channel,
    token_name: str,
    post_id: int | None,
    action: str,
    outcome: str,
    **extra: Any,
) -> None:
    """What a publishing-API token did, in the audit log."""
    details = {"channel": channel.handle, "token": token_name, "post": post_id, "action": action}
    await audit.append(
        session, "api_post", {**details, "outcome": outcome, **extra}, None, config=ctx.config
    )


def is_held_api_post(held: HeldPost) -> bool:
    """Whether a held post came through the publishing API (approve it with `publish_held`)."""
    return str(held.event.get("sender", "")).startswith(API_SOURCE_PREFIX)


async def publish_held(ctx: Context, session: AsyncSession, channel: Channel, held: HeldPost) -> Post | None:
    """Publish a held post a moderator approved (or an appeal reinstated), as backstage or the
    publishing API would have; the caller sets the held post's status. The post made or edited
    (None: a backstage message, or an edit whose post is gone)."""
    if is_held_import(held):
        return await _publish_held_import(session, channel, held)
    if not is_held_api_post(held):
        await relay_event(ctx, session, channel, parse_event(held.event))
        return None
    # API posts: `parse_event` refuses their `api:` ids, which are no Matrix ids.
    event = held.event
    token_name = str(event.get("sender", "")).removeprefix(API_SOURCE_PREFIX)
    content = dict(event.get("content") or {})
    relates = content.pop("m.relates_to", None)
    relates = relates if isinstance(relates, dict) else {}
    if relates.get("rel_type") == "m.replace":
        target = relates.get("event_id")
        post = (
            await queries.post_by_source(session, target, channel_id=channel.id)
            if isinstance(target, str)
            else None
        )
        new_content = content.get("m.new_content")
        if post is None or post.redacted or not isinstance(new_content, dict):
            return None
        await seam.edit(session, channel, post, new_content)
        await audit_api_post(ctx, session, channel, token_name, post.id, "edit", "published_after_review")
        return post
    reply = relates.get("m.in_reply_to")
    reply_source = reply.get("event_id") if isinstance(reply, dict) else None
    if isinstance(reply_source, str) and not await queries.published_sources(
        session, channel.id, [reply_source]
    ):
        reply_source = None
    content.pop(SOURCE_KEY, None)
    post = await publish_api_post(
        session,
        channel,
        token_name,
        held.source_event_id,
        content,
        reply_source if isinstance(reply_source, str) else None,
    )
    await audit_api_post(ctx, session, channel, token_name, post.id, "create", "published_after_review")
    return post


# -- posts imported from elsewhere ------------------------------------------------------------------


async def publish_imported(
    session: AsyncSession,
    channel: Channel,
    *,
    source: str,
    author: str,
    event_type: str,
    content: dict[str, Any],
    ts: int,
    reply_source: str | None = None,
    end: dict[str, Any] | None = None,
) -> Post:
    """Publish an imported post as the ghost, at its original time `ts` (a reply to the imported
    post `reply_source`, which must be published; `end`: a closed poll's end event, sent after it)."""
    if reply_source is not None:
        content = as_reply(content)
    post = await seam.publish(
        session,
        channel,
        content,
        source=source,
        author=author,
        event_type=event_type,
        ref_source=reply_source,
        via=IMPORT_VIA,
        ts=ts,
    )
    if end is not None:
        seam.reference(session, channel, POLL_END, end, source, ts=ts)
    return post


def is_held_import(held: HeldPost) -> bool:
    """Whether a held post came from an import (approve it with `publish_held`)."""
    content = held.event.get("content")
    return isinstance(content, dict) and IMPORTED_KEY in content


async def _publish_held_import(session: AsyncSession, channel: Channel, held: HeldPost) -> Post:
    event = held.event
    raw = event.get("unsigned")
    unsigned: dict[str, Any] = raw if isinstance(raw, dict) else {}
    reply_source = unsigned.get("ref_source")
    if isinstance(reply_source, str) and not await queries.published_sources(session, channel.id, [reply_source]):
        reply_source = None
    end = unsigned.get("end")
    return await publish_imported(
        session,
        channel,
        source=held.source_event_id,
        author=held.author,
        event_type=str(event.get("type", "m.room.message")),
        content=dict(event.get("content") or {}),
        ts=int(event.get("origin_server_ts") or 0),
        reply_source=reply_source if isinstance(reply_source, str) else None,
        end=end if isinstance(end, dict) else None,
    )


# -- backstage commands that publish ----------------------------------------------------------------


@command(RoomKind.BACKSTAGE, "silent", permission="publish")
async def silent_command(call: CommandCall) -> None:
    channel = call.backstage_channel
    if not await may_publish(call.ctx, call.session, call.room, channel, call.event, call.lang):
        return
    text = call.command.rest.strip()
    if not text:
        call.reply("silent_usage")
        return
    await publish_silent(call.ctx, call.session, channel, call.event, text, signed=True)


@command(RoomKind.BACKSTAGE, "edit", permission="publish")
async def edit_command(call: CommandCall) -> None:
    """`!edit <new text>` as a reply to a published post, by any editor: Matrix lets only a message's
    sender edit it, so this is how an editor corrects a post someone else wrote. It goes the way of an
    ordinary edit (compliance hooks, footer kept), as an edit of that post."""
    channel, target = call.backstage_channel, call.event.reply_to
    text = call.command.rest.strip()
    if target is None or not text:
        call.reply("edit_usage")
        return
    post = await queries.post_by_source(call.session, target, channel_id=channel.id)
    if post is None or post.redacted or not isinstance(post.content, dict):
        call.reply("edit_unknown")
        return
    new_content = with_text(post.content, {"msgtype": "m.text", "body": text})
    edit = dataclasses.replace(
        call.event,
        content={
            "msgtype": new_content["msgtype"],
            "body": f"* {text}",
            "m.new_content": new_content,
            "m.relates_to": {"rel_type": "m.replace", "event_id": target},
        },
    )
    if await may_publish(call.ctx, call.session, call.room, channel, edit, call.lang):
        await relay(call.ctx, call.session, channel, edit)
        call.reply("edit_done", handle=channel.handle)


@command(RoomKind.BACKSTAGE, "pin", "unpin", permission="pin")
async def pin_command(call: CommandCall) -> None:
    channel, name, target = call.backstage_channel, call.command.name, call.event.reply_to
    if target is None:
        call.reply("pin_usage", name=name)
        return
    if not await queries.published_sources(call.session, channel.id, [target]):
        call.reply("pin_unknown", name=name)
        return
    note = call.ctx.note(call.room.room_id, t(call.lang, "pinned" if name == "pin" else "unpinned"))
    seam.pin(call.session, channel, target, pinned=name == "pin", on_success=note)


@command(RoomKind.BACKSTAGE, "signatures", permission="signatures")
async def signatures_command(call: CommandCall) -> None:
    channel = call.backstage_channel
    state = t(call.lang, "on" if channel.signatures else "off")
    choice = (call.command.arg(0) or "").lower()
    if choice not in ("on", "off"):
        call.reply("signatures_usage", state=state)
        return
    channel.signatures = choice == "on"
    call.reply("signatures_set", state=t(call.lang, choice))


kinds.register_post(kinds.PostKind(publish_held=publish_held, republish=relay_event))
