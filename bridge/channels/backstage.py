"""The backstage room: what an admin posts is published as the channel; `!` lines are commands."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from appservice.events import Event
from bridge.audience.comments import comments_command, mirror_post, mirror_redaction, relayed_edit
from bridge.audience.stats import keep_views
from bridge.channels import roles
from bridge.matrix.relay import REF_PLACEHOLDER, RELAYED_EVENT_TYPES, plan_relay, silent_content, with_text
from bridge.publishing import drafts, forwarding
from bridge.runtime.context import Context, enqueue, reply, send_entry
from bridge.runtime.languages import language_command, language_for
from bridge.runtime.outbox import new_entry
from bridge.store.models import Channel, Post, Room
from bridge.text.commands import Command, parse_command
from bridge.text.i18n import t


async def _known_posts(session: AsyncSession, channel: Channel, event_ids: list[str]) -> set[str]:
    if not event_ids:
        return set()
    rows = await session.scalars(
        select(Post.source_event_id).where(
            Post.channel_id == channel.id, Post.source_event_id.in_(event_ids), Post.redacted.is_(False)
        )
    )
    return set(rows.all())


async def _author_name(ctx: Context, user_id: str) -> str:
    name = await ctx.bot_intent().get_displayname(user_id)
    return name or user_id[1:].split(":", 1)[0]


async def on_backstage_event(ctx: Context, session: AsyncSession, room: Room, event: Event) -> None:
    channel = await session.get(Channel, room.channel_id) if room.channel_id is not None else None
    if channel is None:
        return
    if event.type not in RELAYED_EVENT_TYPES and event.type != "m.room.redaction":
        return
    body = event.content.get("body")
    lang = await language_for(session, ctx, event.sender, body if isinstance(body, str) else "", room)
    role = await roles.role_of(session, channel, event.sender)
    if role is None:
        if event.type != "m.room.redaction":
            reply(
                session,
                ctx,
                room.room_id,
                lang,
                "not_backstage_admin",
                handle=channel.handle,
                owner=channel.owner,
            )
        return
    if channel.status != "active" or channel.broadcast_room_id is None:
        if event.type != "m.room.redaction":
            reply(
                session,
                ctx,
                room.room_id,
                lang,
                "channel_unavailable",
                handle=channel.handle,
                status=channel.status,
            )
        return
    if event.type == "m.room.redaction":
        # A moderator's deletion here is their own business: only editors' deletions are mirrored.
        if roles.allowed(role, "publish"):
            await _mirror_redaction(ctx, session, channel, event)
        return
    if isinstance(body, str) and event.rel_type != "m.replace":
        command = parse_command(body, require_bang=True)
        if command is not None:
            permission = COMMAND_PERMISSIONS.get(command.name)
            if permission is not None and not roles.allowed(role, permission):
                await roles.require(ctx, session, room.room_id, channel, event.sender, permission, lang)
                return
            if command.name == "silent" and not await _may_publish(ctx, session, room, channel, event, lang):
                return
            await _command(ctx, session, room, channel, event, command, lang)
            return
    if not roles.allowed(role, "publish"):
        reply(session, ctx, room.room_id, lang, "moderator_not_published", handle=channel.handle)
        return
    if event.rel_type is None and await drafts.in_draft_mode(session, channel, event.sender):
        drafts.mark_kept(ctx, session, room, event)  # kept: `!publish` or `!schedule` as a reply sends it
        return
    if event.rel_type is None and isinstance(await forwarding.origin_of(session, event.content), Post):
        reply(session, ctx, room.room_id, lang, "forward_unavailable")
        return
    if await _may_publish(ctx, session, room, channel, event, lang):
        await _relay(ctx, session, channel, event)


# What each built-in backstage command needs (bridge.channels.roles.PERMISSIONS); commands not listed here
# check their own permission.
COMMAND_PERMISSIONS = {
    "help": "help",
    "silent": "publish",
    "pin": "pin",
    "unpin": "pin",
    "signatures": "signatures",
    "stats": "stats",
    "schedule": "schedule",
    "scheduled": "schedule",
    "unschedule": "schedule",
    "reactions": "reactions",
    "draft": "publish",
    "edit": "publish",
    "publish": "publish",
}


async def _may_publish(
    ctx: Context, session: AsyncSession, room: Room, channel: Channel, event: Event, lang: str
) -> bool:
    """Not while the channel is restricted; only what the compliance hooks allow (others are held)."""
    from bridge.moderation.gate import restricted, screen

    if await restricted(ctx, session, room, channel, lang):
        return False
    return await screen(ctx, session, room, channel, event, lang)


async def relay_event(ctx: Context, session: AsyncSession, channel: Channel, event: Event) -> None:
    """Publish a backstage post that was held and is now approved (or reinstated on appeal)."""
    body = event.content.get("body")
    if isinstance(body, str) and body.startswith("!silent "):
        content = silent_content(body[len("!silent ") :].strip())
        content["net.kanal.source"] = event.event_id
        entry = enqueue(
            session,
            send_entry(
                channel.ghost_user_id, channel.broadcast_room_id or "", content, post_source=event.event_id
            ),
        )
        await session.flush()
        session.add(
            Post(
                channel_id=channel.id,
                source_event_id=event.event_id,
                author=event.sender,
                outbox_id=entry.id,
                content=shown_content(content),
            )
        )
        await mirror_post(session, channel, event.event_id)
        return
    await _relay(ctx, session, channel, event)


async def _relay(ctx: Context, session: AsyncSession, channel: Channel, event: Event) -> None:
    refs = [e for e in (event.relates_to_event, event.reply_to) if e]
    known = await _known_posts(session, channel, list(refs))
    signature = await _author_name(ctx, event.sender) if channel.signatures else None
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
    broadcast = channel.broadcast_room_id or ""
    extra = {} if plan.is_edit else {"post_source": event.event_id}
    # A post with a comments thread is edited by a `comments_link` entry that keeps its link.
    edit = await relayed_edit(ctx, session, channel, plan) if plan.is_edit else None
    entry = enqueue(
        session,
        edit
        or send_entry(
            channel.ghost_user_id,
            broadcast,
            await keep_views(session, channel, plan) if plan.is_edit else plan.content,
            event_type=plan.event_type,
            ref_source=plan.ref_source,
            **extra,
        ),
    )
    if not plan.is_edit:
        await session.flush()
        session.add(
            Post(
                channel_id=channel.id,
                source_event_id=event.event_id,
                author=event.sender,
                outbox_id=entry.id,
                event_type=plan.event_type,
                content=shown_content(plan.content),
            )
        )
        await mirror_post(session, channel, event.event_id)
    elif plan.ref_source is not None:
        edited = await session.scalar(
            select(Post).where(Post.source_event_id == plan.ref_source, Post.channel_id == channel.id)
        )
        new_content = plan.content.get("m.new_content")
        if edited is not None and isinstance(new_content, dict):
            edited.content = shown_content(new_content)
            edited.edited_at = datetime.now(UTC)


async def _edit_command(
    ctx: Context,
    session: AsyncSession,
    room: Room,
    channel: Channel,
    event: Event,
    command: Command,
    lang: str,
) -> None:
    """`!edit <new text>` as a reply to a published post, by any editor: Matrix lets only a message's
    sender edit it, so this is how an editor corrects a post someone else wrote. It goes the way of an
    ordinary edit (compliance hooks, footer kept), as an edit of that post."""
    target = event.reply_to
    text = command.rest.strip()
    if target is None or not text:
        reply(session, ctx, room.room_id, lang, "edit_usage")
        return
    post = await session.scalar(
        select(Post).where(
            Post.source_event_id == target, Post.channel_id == channel.id, Post.redacted.is_(False)
        )
    )
    if post is None or not isinstance(post.content, dict):
        reply(session, ctx, room.room_id, lang, "edit_unknown")
        return
    new_content = with_text(post.content, {"msgtype": "m.text", "body": text})
    edit = dataclasses.replace(
        event,
        content={
            "msgtype": new_content["msgtype"],
            "body": f"* {text}",
            "m.new_content": new_content,
            "m.relates_to": {"rel_type": "m.replace", "event_id": target},
        },
    )
    if await _may_publish(ctx, session, room, channel, edit, lang):
        await _relay(ctx, session, channel, edit)
        reply(session, ctx, room.room_id, lang, "edit_done", handle=channel.handle)


def shown_content(content: dict[str, Any]) -> dict[str, Any]:
    """What a post shows (for the web pages): the content without relations and Kanal's markers."""
    return {
        k: v
        for k, v in content.items()
        if k not in ("m.relates_to", "m.new_content") and not k.startswith("net.kanal.")
    }


async def _mirror_redaction(ctx: Context, session: AsyncSession, channel: Channel, event: Event) -> None:
    target = event.redacted_event
    post = await session.scalar(
        select(Post).where(Post.source_event_id == target, Post.channel_id == channel.id)
    )
    if post is None or post.redacted:
        return
    post.redacted = True
    reason = event.content.get("reason")
    payload = {
        "room_id": channel.broadcast_room_id,
        "event_id": REF_PLACEHOLDER,
        "reason": reason if isinstance(reason, str) else None,
    }
    enqueue(
        session,
        new_entry(
            f"room:{channel.broadcast_room_id}",
            "redact",
            channel.ghost_user_id,
            payload,
            ref_source=post.source_event_id,
        ),
    )
    await mirror_redaction(ctx, session, channel, post, payload["reason"])


async def _command(
    ctx: Context,
    session: AsyncSession,
    room: Room,
    channel: Channel,
    event: Event,
    command: Command,
    lang: str,
) -> None:
    name = command.name
    if name == "language":
        await language_command(ctx, session, room, event, command, lang)
    elif name == "help":
        reply(session, ctx, room.room_id, lang, "help_backstage", handle=channel.handle, title=channel.title)
    elif name == "silent":
        text = command.rest.strip()
        if not text:
            reply(session, ctx, room.room_id, lang, "silent_usage")
            return
        content = silent_content(text)
        if channel.signatures:
            content["body"] += f"\n— {await _author_name(ctx, event.sender)}"
        content["net.kanal.source"] = event.event_id
        entry = enqueue(
            session,
            send_entry(
                channel.ghost_user_id, channel.broadcast_room_id or "", content, post_source=event.event_id
            ),
        )
        await session.flush()
        session.add(
            Post(
                channel_id=channel.id,
                source_event_id=event.event_id,
                author=event.sender,
                outbox_id=entry.id,
                content=shown_content(content),
            )
        )
        await mirror_post(session, channel, event.event_id)
    elif name in ("pin", "unpin"):
        target = event.reply_to
        if target is None:
            reply(session, ctx, room.room_id, lang, "pin_usage", name=name)
            return
        if target not in await _known_posts(session, channel, [target]):
            reply(session, ctx, room.room_id, lang, "pin_unknown", name=name)
            return
        payload = {
            "room_id": channel.broadcast_room_id,
            "event_id": REF_PLACEHOLDER,
            "on_success": ctx.note(room.room_id, t(lang, "pinned" if name == "pin" else "unpinned")),
        }
        enqueue(
            session,
            new_entry(
                f"room:{channel.broadcast_room_id}", name, channel.ghost_user_id, payload, ref_source=target
            ),
        )
    elif name == "signatures":
        state = t(lang, "on" if channel.signatures else "off")
        choice = (command.arg(0) or "").lower()
        if choice not in ("on", "off"):
            reply(session, ctx, room.room_id, lang, "signatures_usage", state=state)
            return
        channel.signatures = choice == "on"
        reply(session, ctx, room.room_id, lang, "signatures_set", state=t(lang, choice))
    elif name == "stats":
        from bridge.audience.stats import stats_command

        await stats_command(ctx, session, room, channel, event, lang)
    elif name == "views-in-posts":
        from bridge.audience.stats import views_in_posts_command

        await views_in_posts_command(ctx, session, room, channel, event, command, lang)
    elif name == "poll":
        from bridge.publishing.polls import poll_command

        await poll_command(ctx, session, room, channel, event, command, lang)
    elif name in ("schedule", "scheduled", "unschedule"):
        from bridge.publishing.schedule import schedule_command

        await schedule_command(ctx, session, room, channel, event, command, lang)
    elif name == "reactions":
        from bridge.audience.reactions import reactions_command

        await reactions_command(ctx, session, room, channel, event, command.args, lang)
    elif name in ("link", "requests", "approve", "decline"):
        from bridge.channels.private import backstage_command

        await backstage_command(ctx, session, room, channel, event, command, lang)
    elif name == "edit":
        await _edit_command(ctx, session, room, channel, event, command, lang)
    elif name == "draft":
        await drafts.draft_command(ctx, session, room, channel, event, command, lang)
    elif name == "publish":
        kept = await drafts.publish_command(ctx, session, room, channel, event, lang)
        if kept is not None and await _may_publish(ctx, session, room, channel, kept, lang):
            await _relay(ctx, session, channel, kept)
            reply(session, ctx, room.room_id, lang, "publish_done", handle=channel.handle)
    elif name == "token":
        from bridge.web.tokens import token_command

        await token_command(ctx, session, room, channel, event, command.args, lang)
    elif name == "comments":
        await comments_command(ctx, session, room, channel, event, command, lang)
    else:
        reply(session, ctx, room.room_id, lang, "unknown_backstage_command", name=name[:64])
