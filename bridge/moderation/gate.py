"""The pre-publication gate: every backstage post passes the channel's hooks before it is relayed.

allow → relayed as usual; hold → kept for the moderators (the backstage is told); reject → not
published, with a statement of reasons in backstage, in the author's language (an automated decision,
open to appeal). The moderation room is told in its moderators' language (`moderators_language`).
Also refuses posts while the channel is restricted.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from appservice.events import Event
from bridge.moderation import audit
from bridge.moderation.decisions import record_hook_rejection
from bridge.moderation.hooks import MediaInfo, PostInfo, Verdict, outcome
from bridge.runtime.context import Context, enqueue, reply, send_entry
from bridge.runtime.languages import chosen_language
from bridge.runtime.outbox import aware
from bridge.store.models import (
    Channel,
    Decision,
    DecisionKind,
    DecisionStatus,
    HeldPost,
    HeldPostStatus,
    Room,
    RoomKind,
)
from bridge.text.digits import utc_time
from bridge.text.i18n import t

log = logging.getLogger(__name__)


def post_info(channel: Channel, event: Event, via: str = "backstage") -> PostInfo:
    content: dict[str, Any] = event.content
    new_content = content.get("m.new_content")
    if event.rel_type == "m.replace" and isinstance(new_content, dict):
        content = new_content
    info = content.get("info") if isinstance(content.get("info"), dict) else {}
    msgtype = content.get("msgtype") if isinstance(content.get("msgtype"), str) else event.type
    media = None
    if isinstance(content.get("url"), str) or event.type == "m.sticker":
        size = info.get("size") if isinstance(info, dict) else None
        mimetype = info.get("mimetype") if isinstance(info, dict) else None
        media = MediaInfo(
            mimetype=mimetype if isinstance(mimetype, str) else None,
            size=size if isinstance(size, int) else None,
            url=content.get("url") if isinstance(content.get("url"), str) else None,
        )
    body = content.get("body")
    formatted = content.get("formatted_body")
    return PostInfo(
        channel_id=channel.id,
        handle=channel.handle or "",
        title=channel.title,
        author=event.sender,
        event_id=event.event_id,
        msgtype=str(msgtype),
        body=body if isinstance(body, str) else "",
        formatted_body=formatted if isinstance(formatted, str) else None,
        media=media,
        via=via,
    )


async def restriction(session: AsyncSession, channel: Channel) -> tuple[datetime, int | None] | None:
    """While a `restrict` decision suspends posting: until when, and that decision's id (the latest in
    force, None if there is none); None when posting is not suspended. Backstage and the API both ask."""
    until = channel.restricted_until
    if until is None or aware(until) <= datetime.now(UTC):
        return None
    decision = await session.scalar(
        select(Decision.id)
        .where(
            Decision.channel_id == channel.id,
            Decision.kind == DecisionKind.RESTRICT,
            Decision.status == DecisionStatus.IN_FORCE,
        )
        .order_by(Decision.id.desc())
    )
    return aware(until), decision


async def restricted(ctx: Context, session: AsyncSession, room: Room, channel: Channel, lang: str) -> bool:
    """True (and the backstage told why) while a `restrict` decision suspends posting."""
    suspended = await restriction(session, channel)
    if suspended is None:
        return False
    until, decision = suspended
    reply(
        session,
        ctx,
        room.room_id,
        lang,
        "posting_restricted",
        handle=channel.handle,
        until=utc_time(until),
        decision=decision or "?",
    )
    return True


async def record_held(
    ctx: Context,
    session: AsyncSession,
    channel: Channel,
    source_event_id: str,
    author: str,
    event: dict[str, Any],
    verdicts: list[Verdict],
    deciding: Verdict,
) -> HeldPost:
    """A post the hooks held or rejected, recorded (with its event, to publish on approval); a hold is
    also written to the audit log. Backstage posts and publishing-API posts both come here."""
    held = HeldPost(
        channel_id=channel.id,
        source_event_id=source_event_id,
        author=author,
        event=event,
        verdicts=[_verdict_dict(v) for v in verdicts],
        status=HeldPostStatus.HELD if deciding.action == "hold" else HeldPostStatus.REJECTED,
    )
    session.add(held)
    await session.flush()
    if deciding.action == "hold":
        await audit.append(
            session,
            "post_held",
            {
                "held": held.id,
                "channel": channel.handle,
                "hook": deciding.hook,
                "category": deciding.category,
            },
            {"author": author, "reason": deciding.reason},
            config=ctx.config,
        )
    return held


async def screen(
    ctx: Context, session: AsyncSession, room: Room, channel: Channel, event: Event, lang: str
) -> bool:
    """Run the hooks; True when the post may be published now."""
    judged = await judge(ctx, session, channel, event, author=event.sender)
    if judged is None:
        return True
    held, deciding = judged
    if deciding.action == "hold":
        reply(session, ctx, room.room_id, lang, "post_held", handle=channel.handle, id=held.id)
    return False


async def judge(
    ctx: Context, session: AsyncSession, channel: Channel, event: Event, *, author: str, via: str = "backstage"
) -> tuple[HeldPost, Verdict] | None:
    """Run the hooks on a post; None when it may be published now. Otherwise it is recorded: held
    (the moderation room told) or rejected (a statement of reasons to `author`). Backstage posts and
    imported ones (`via="import"`, whose author is the channel's owner) come here."""
    pipeline = ctx.pipeline
    if pipeline is None or not pipeline.hooks_for(channel.handle or ""):
        return None
    verdicts = await pipeline.check(post_info(channel, event, via))
    deciding = outcome(verdicts)
    if deciding is None:
        return None
    held = await record_held(ctx, session, channel, event.event_id, author, _event_dict(event), verdicts, deciding)
    if deciding.action == "hold":
        await tell_moderators_held(ctx, session, channel, held, deciding, _preview(event))
    else:
        await reject_held(ctx, session, channel, held, deciding, recipient=author, recipient_text=_preview(event))
    return held, deciding


async def tell_moderators_held(
    ctx: Context,
    session: AsyncSession,
    channel: Channel,
    held: HeldPost,
    deciding: Verdict,
    preview: str,
    token: str | None = None,
) -> None:
    """Tell the moderation room a post was held: the hook's verdict, the post's first 300 characters and
    who wrote it (its author in backstage, or the API `token` it came through)."""
    await tell_moderators(
        ctx,
        session,
        "mod_held_post" if token is None else "mod_held_api_post",
        held=held.id,
        handle=channel.handle,
        author=held.author,
        token=token,
        hook=deciding.hook,
        category=deciding.category,
        reason=deciding.reason,
        preview=preview if len(preview) <= 300 else preview[:300] + "…",
    )


async def reject_held(
    ctx: Context,
    session: AsyncSession,
    channel: Channel,
    held: HeldPost,
    deciding: Verdict,
    recipient: str | None = None,
    recipient_text: str = "",
) -> Decision:
    """A rejected post's automated decision, its statement delivered (in the language of `recipient`,
    default the owner, who wrote `recipient_text`), linked to the post's HeldPost row."""
    decision = await record_hook_rejection(
        ctx,
        session,
        deciding,
        kind=DecisionKind.REJECT_POST,
        channel=channel,
        target=held.source_event_id,
        recipient=recipient,
        recipient_text=recipient_text,
    )
    held.decision_id = decision.id
    return decision


def moderators(ctx: Context) -> list[str]:
    """Who decides in the moderation room: `compliance.moderators`, by default the operators."""
    return list(ctx.config.compliance.moderators or ctx.config.operators)


async def moderators_language(ctx: Context, session: AsyncSession) -> str:
    """The language the moderation room speaks: the one its moderators chose (`language fa`), when all
    who chose one chose the same; otherwise `channels.default_language`."""
    chosen = {lang for user in moderators(ctx) if (lang := await chosen_language(session, user))}
    return chosen.pop() if len(chosen) == 1 else ctx.config.default_language


async def tell_moderators(ctx: Context, session: AsyncSession, key: str, **values: Any) -> None:
    """Post the message `key` in the moderation room, in the moderators' language."""
    room_id = await session.scalar(select(Room.room_id).where(Room.kind == RoomKind.MODERATION))
    text = t(await moderators_language(ctx, session), key, **values)
    if room_id is None:
        log.warning(
            "No moderation room yet (compliance.moderators or operators.users is empty): %s", text[:200]
        )
        return
    enqueue(session, send_entry(ctx.bot, room_id, {"msgtype": "m.notice", "body": text}))


def _preview(event: Event) -> str:
    body = event.content.get("body", event.content.get("org.matrix.msc1767.text"))
    return body if isinstance(body, str) else event.type


def _event_dict(event: Event) -> dict[str, Any]:
    return event.as_dict()


def _verdict_dict(verdict: Verdict) -> dict[str, Any]:
    return {
        "hook": verdict.hook,
        "action": verdict.action,
        "category": verdict.category,
        "reason": verdict.reason,
        "automated": verdict.automated,
    }
