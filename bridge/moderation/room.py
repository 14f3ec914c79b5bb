"""The moderation room: held posts, notices and appeals, decided by people.

Kanal keeps a private room for `compliance.moderators` (default: the operators). Everything acted
on here is public channel content or channel registration; every decision gets a statement of
reasons, an appeal path and an audit-log entry. Appeals are decided only here, by a person, and not
by the moderator who took the decision appealed (when another moderator exists).

The room's texts are in its moderators' language (bridge.moderation.gate.moderators_language), replies
to a moderator in theirs; what reaches authors, notifiers and appellants is in each one's own language,
chosen or read from what they wrote (their post, notice or appeal).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from appservice.events import Event, EventParseError, parse_event
from appservice.ids import EventID, RoomID
from bridge.moderation import audit, kinds
from bridge.moderation.decisions import (
    Ground,
    body_of,
    record,
    statement_in,
    suspend,
    take_down,
    unsuspend,
)
from bridge.moderation.gate import moderators, moderators_language
from bridge.moderation.kinds import ReportedComment
from bridge.runtime.context import Context, reply
from bridge.runtime.dispatch import CommandCall, command, dispatch, typed_text
from bridge.runtime.languages import language_for
from bridge.runtime.outbox import OutboxKind, OutboxWorker, SkipEntry
from bridge.runtime.staffrooms import schedule_staff_room, sync_staff_room
from bridge.store import queries
from bridge.store.models import (
    Appeal,
    AppealStatus,
    Channel,
    ChannelStatus,
    Decision,
    DecisionKind,
    DecisionStatus,
    HeldPost,
    HeldPostStatus,
    InboundEvent,
    Notice,
    NoticeStatus,
    OutboxEntry,
    Room,
    RoomKind,
)
from bridge.text.commands import Command, Refusal, parse_command, parse_duration
from bridge.text.digits import Numeral
from bridge.text.i18n import t

ROOM_NAME = "Kanal moderation"
_MATRIX_TO_EVENT = re.compile(r"(\$[A-Za-z0-9_\-+/=.:]+)")


class Refused(Exception):
    """A moderator's command that cannot be carried out; the refusal is the reply."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.key)
        self.refusal = refusal


def _ground(text: str) -> Ground:
    try:
        return Ground.parse(text)
    except ValueError:
        raise Refused(Refusal("mod_bad_ground", {"text": text[:64]})) from None


def _duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError:
        raise Refused(Refusal("mod_bad_duration", {"text": text[:32]})) from None


async def sync_moderation_room(ctx: Context, entry: OutboxEntry, worker: OutboxWorker) -> str | None:
    members = moderators(ctx)
    if not members:
        raise SkipEntry("no moderators configured")
    async with ctx.sessions() as session:
        lang = await moderators_language(ctx, session)
    room_id = await sync_staff_room(
        ctx,
        kind=RoomKind.MODERATION,
        name=ROOM_NAME,
        topic=t(lang, "mod_room_topic"),
        members=members,
        welcome=t(lang, "mod_help"),
    )
    if room_id is not None:
        await _remind(ctx, room_id)
    return room_id


async def _remind(ctx: Context, room_id: RoomID) -> None:
    """At each start, what is waiting (announcements made while there was no room are not lost)."""
    from sqlalchemy import func

    async with ctx.sessions.begin() as session:
        lang = await moderators_language(ctx, session)

        async def waiting(model: type[HeldPost] | type[Notice] | type[Appeal], status: str) -> int:
            count = await session.scalar(
                select(func.count()).select_from(model).where(model.status == status)
            )
            return count or 0

        counts = []
        if held := await waiting(HeldPost, HeldPostStatus.HELD):
            counts.append(t(lang, "mod_count_held", count=held))
        if notices := await waiting(Notice, NoticeStatus.OPEN):
            counts.append(t(lang, "mod_count_notices", count=notices))
        if appeals := await waiting(Appeal, AppealStatus.OPEN):
            counts.append(t(lang, "mod_count_appeals", count=appeals))
        if counts:
            reply(session, ctx, room_id, lang, "mod_waiting", counts=t(lang, "mod_separator").join(counts))


async def schedule_moderation_room(ctx: Context) -> None:
    """Queue the moderation room's creation or membership check, once."""
    if moderators(ctx):
        await schedule_staff_room(ctx, "moderators", OutboxKind.MODERATION_ROOM)


def _ref(text: str | None, prefix: str) -> int | None:
    if not text:
        return None
    text = text.strip().lower().lstrip("#")
    if text.startswith(prefix):
        text = text[len(prefix) :]
    return int(text) if text.isdigit() else None


async def on_moderation_message(ctx: Context, session: AsyncSession, room: Room, event: Event) -> None:
    body = typed_text(event)
    if body is None:
        return
    command = parse_command(body, require_bang=False)
    if command is None:
        return
    # Staff texts: the moderator's chosen language, or the script they write in, or the room's.
    lang = await language_for(session, ctx, event.sender, body, room)
    if event.sender not in moderators(ctx):
        reply(session, ctx, room.room_id, lang, "mod_not_moderator")
        return
    call = CommandCall(ctx, session, room, event, command, lang)
    try:
        await dispatch(call, RoomKind.MODERATION, unknown=_unknown_command)
    except Refused as exc:
        call.refuse(exc.refusal)


def _unknown_command(name: str) -> Refusal:
    return Refusal("mod_unknown_command", {"command": name})


@command(RoomKind.MODERATION, "help")
async def _help(call: CommandCall) -> None:
    call.reply("mod_help")


@command(RoomKind.MODERATION, "held")
async def _held(call: CommandCall) -> None:
    s = call.session
    rows = (
        await s.scalars(select(HeldPost).where(HeldPost.status == HeldPostStatus.HELD).order_by(HeldPost.id))
    ).all()
    if not rows:
        call.reply("mod_no_held")
        return
    lines = []
    for row in rows:
        channel = await s.get(Channel, row.channel_id)
        why = "; ".join(f"{v['hook']}: {v['reason']}" for v in row.verdicts if v.get("action") != "allow")
        handle = channel.handle if channel and channel.handle else "?"
        lines.append(t(call.lang, "mod_held_line", held=row.id, handle=handle, author=row.author, why=why))
    call.reply("mod_held_list", lines="\n".join(lines))


async def _held_post(s: AsyncSession, cmd: Command, usage: Refusal, nargs: int) -> HeldPost:
    number = _ref(cmd.arg(0), "h")
    if number is None or len(cmd.args) < nargs:
        raise Refused(usage)
    held = await s.get(HeldPost, number)
    if held is None or held.status != HeldPostStatus.HELD:
        raise Refused(Refusal("mod_not_held", {"held": number}))
    return held


@command(RoomKind.MODERATION, "approve")
async def _approve(call: CommandCall) -> None:
    ctx, s = call.ctx, call.session
    held = await _held_post(s, call.command, Refusal("mod_usage_approve"), 1)
    channel = await s.get(Channel, held.channel_id)
    if channel is None or channel.status != ChannelStatus.ACTIVE:
        raise Refused(Refusal("mod_channel_inactive", {"held": held.id}))
    decision = await record(
        ctx,
        s,
        kind=DecisionKind.APPROVE_POST,
        decided_by=call.sender,
        channel=channel,
        ground=Ground("terms", "publication rules"),
        explanation="Reviewed by a moderator and published.",
        category=_category(held),
        target=held.source_event_id,
        tell_backstage=False,
    )
    held.status = HeldPostStatus.APPROVED
    held.decision_id = decision.id
    await publish(ctx, s, channel, held)
    if channel.backstage_room_id:
        backstage = await s.get(Room, channel.backstage_room_id)
        author_lang = await language_for(s, ctx, held.author, body_of(held.event.get("content")), backstage)
        reply(s, ctx, channel.backstage_room_id, author_lang, "mod_approved_backstage", held=held.id)
    call.reply("mod_approved", held=held.id, decision=decision.id, handle=channel.handle)


async def publish(ctx: Context, s: AsyncSession, channel: Channel, held: HeldPost) -> None:
    """Publish a held post: a backstage event, or a post made through the publishing API."""
    await kinds.post().publish_held(ctx, s, channel, held)


def _category(held: HeldPost) -> str:
    for verdict in held.verdicts:
        if verdict.get("action") != "allow":
            return str(verdict.get("category") or "other")
    return "other"


@command(RoomKind.MODERATION, "reject")
async def _reject(call: CommandCall) -> None:
    ctx, s, cmd = call.ctx, call.session, call.command
    held = await _held_post(s, cmd, Refusal("mod_usage_reject"), 3)
    ground = _ground(cmd.args[1])
    channel = await s.get(Channel, held.channel_id)
    decision = await record(
        ctx,
        s,
        kind=DecisionKind.REJECT_POST,
        decided_by=call.sender,
        channel=channel,
        ground=ground,
        explanation=cmd.rest_after(2),
        category=_category(held),
        target=held.source_event_id,
        automated=True,  # detected by a hook, decided by a person
        recipient=held.author,
        recipient_text=body_of(held.event.get("content")),
    )
    held.status = HeldPostStatus.REJECTED
    held.decision_id = decision.id
    call.reply("mod_rejected", held=held.id, decision=decision.id)


@command(RoomKind.MODERATION, "notices")
async def _notices(call: CommandCall) -> None:
    s, lang = call.session, call.lang
    rows = (
        await s.scalars(
            select(Notice)
            .where(Notice.status == NoticeStatus.OPEN)
            .order_by(Notice.trusted.desc(), Notice.id)
        )
    ).all()
    if not rows:
        call.reply("mod_no_notices")
        return
    lines = []
    for n in rows:
        channel = await queries.channel_by_id(s, n.channel_id)
        flag = t(lang, "mod_trusted_mark") + " " if n.trusted else ""
        # 💬: a comment in the channel's discussion room (a post notice names the broadcast room)
        where = "💬 " if channel is not None and n.room_id and n.room_id not in channel.rooms else ""
        lines.append(
            t(
                lang,
                "mod_notice_line",
                notice=n.id,
                trusted=flag,
                source=n.source,
                handle=channel.handle if channel and channel.handle else "?",
                where=where,
                event=n.event_id or "",
                category=n.category,
                text=n.explanation[:200],
            )
        )
    call.reply("mod_notices_list", lines="\n".join(lines))


async def _target_event(s: AsyncSession, text: str) -> tuple[EventID | None, Notice | None]:
    """What `n<notice>`, an event id or a matrix.to link names: the event, and the notice if any."""
    number = _ref(text, "n")
    if number is not None and not text.startswith("$"):
        notice = await s.get(Notice, number)
        if notice is None:
            raise Refused(Refusal("mod_no_notice", {"notice": number}))
        return notice.event_id, notice
    match = _MATRIX_TO_EVENT.search(text)
    return (EventID(match.group(1)) if match else None), None


@command(RoomKind.MODERATION, "takedown")
async def _takedown(call: CommandCall) -> None:
    ctx, s, cmd = call.ctx, call.session, call.command
    if len(cmd.args) < 3:
        raise Refused(Refusal("mod_usage_takedown"))
    event_id, notice = await _target_event(s, cmd.args[0])
    post = await queries.post_by_relayed(s, event_id) if event_id else None
    if post is None:
        comment = await kinds.comment().find(ctx, s, event_id) if event_id else None
        if comment is None:
            raise Refused(Refusal("mod_not_a_post"))
        await _takedown_comment(call, comment, notice)
        return
    channel = await s.get(Channel, post.channel_id)
    if channel is None:
        raise Refused(Refusal("mod_channel_gone"))
    ground = _ground(cmd.args[1])
    if post.redacted:
        raise Refused(Refusal("mod_already_removed"))
    decision = await record(
        ctx,
        s,
        kind=DecisionKind.TAKE_DOWN,
        decided_by=call.sender,
        channel=channel,
        ground=ground,
        explanation=cmd.rest_after(2),
        target=post.relayed_event_id,
        notice=notice,
        recipient=post.author,
        recipient_text=body_of(post.content),
    )
    # The redaction's reason is public: readers see it in the deployment's language.
    readers = ctx.config.default_language
    reason = t(readers, "mod_takedown_reason", decision=decision.id, ground=ground.describe(readers))
    await take_down(ctx, s, channel, post, reason)
    call.reply("mod_taking_down", decision=decision.id)


async def _takedown_comment(call: CommandCall, comment: ReportedComment, notice: Notice | None) -> None:
    """Remove a reader's comment: redacted by the bot, the statement to the commenter and the notifier."""
    ground = _ground(call.command.args[1])
    comments = kinds.comment()
    if await comments.removed(call.session, comment.event.event_id):
        raise Refused(Refusal("mod_comment_already_removed"))
    decision = await comments.take_down(
        call.ctx,
        call.session,
        comment,
        decided_by=call.sender,
        ground=ground,
        explanation=call.command.rest_after(2),
        notice=notice,
    )
    call.reply(
        "mod_taking_down_comment",
        decision=decision.id,
        author=comment.event.sender,
        handle=comment.channel.handle,
    )


@command(RoomKind.MODERATION, "noaction")
async def _noaction(call: CommandCall) -> None:
    ctx, s, cmd = call.ctx, call.session, call.command
    number = _ref(cmd.arg(0), "n")
    if number is None or len(cmd.args) < 2:
        raise Refused(Refusal("mod_usage_noaction"))
    notice = await s.get(Notice, number)
    if notice is None or notice.status != NoticeStatus.OPEN:
        raise Refused(Refusal("mod_not_open_notice", {"notice": number}))
    channel = await queries.channel_by_id(s, notice.channel_id)
    decision = await record(
        ctx,
        s,
        kind=DecisionKind.NO_ACTION,
        decided_by=call.sender,
        channel=channel,
        ground=Ground("terms", "no breach found"),
        explanation=cmd.rest_after(1),
        target=notice.event_id,
        notice=notice,
        tell_backstage=False,
    )
    call.reply("mod_noaction_done", notice=notice.id, decision=decision.id)


async def _channel(s: AsyncSession, handle_text: str | None) -> Channel:
    channel = await queries.channel_by_handle(s, handle_text or "")
    if channel is None:
        handle = queries.handle_of(handle_text or "")[:64]
        raise Refused(Refusal("mod_no_channel", {"handle": handle}))
    return channel


async def _refuse_comment(ctx: Context, s: AsyncSession, text: str | None, command: str) -> None:
    """`restrict` and `suspend` act on channels: naming a comment (by notice, id or link) is refused
    with what can be done to a comment instead."""
    if not text or await queries.channel_by_handle(s, text) is not None:
        return
    number = _ref(text, "n")
    notice = await s.get(Notice, number) if number is not None and not text.startswith("$") else None
    match = _MATRIX_TO_EVENT.search(text)
    event_id = notice.event_id if notice is not None else EventID(match.group(1)) if match else None
    if event_id and await kinds.comment().find(ctx, s, event_id) is not None:
        ref = f"n{notice.id}" if notice is not None else event_id
        raise Refused(Refusal("mod_comment_not_channel", {"command": command, "ref": ref}))


@command(RoomKind.MODERATION, "restrict")
async def _restrict(call: CommandCall) -> None:
    ctx, s, cmd = call.ctx, call.session, call.command
    await _refuse_comment(ctx, s, cmd.arg(0), "restrict")
    if len(cmd.args) < 4:
        raise Refused(Refusal("mod_usage_restrict"))
    channel = await _channel(s, cmd.args[0])
    until = datetime.now(UTC) + _duration(cmd.args[1])
    ground = _ground(cmd.args[2])
    decision = await record(
        ctx,
        s,
        kind=DecisionKind.RESTRICT,
        decided_by=call.sender,
        channel=channel,
        ground=ground,
        explanation=cmd.rest_after(3),
        until=until,
    )
    channel.restricted_until = until
    call.reply("mod_restricted", handle=channel.handle, until=Numeral(f"{until:%Y-%m-%d %H:%M}"), decision=decision.id)


@command(RoomKind.MODERATION, "suspend")
async def _suspend(call: CommandCall) -> None:
    ctx, s, cmd = call.ctx, call.session, call.command
    await _refuse_comment(ctx, s, cmd.arg(0), "suspend")
    if len(cmd.args) < 3:
        raise Refused(Refusal("mod_usage_suspend"))
    channel = await _channel(s, cmd.args[0])
    if channel.status != ChannelStatus.ACTIVE:
        raise Refused(Refusal("mod_channel_status", {"handle": channel.handle, "status": channel.status}))
    ground = _ground(cmd.args[1])
    decision = await record(
        ctx,
        s,
        kind=DecisionKind.SUSPEND,
        decided_by=call.sender,
        channel=channel,
        ground=ground,
        explanation=cmd.rest_after(2),
    )
    suspend(ctx, s, channel)
    call.reply("mod_suspended", handle=channel.handle, decision=decision.id)


@command(RoomKind.MODERATION, "appeals")
async def _appeals(call: CommandCall) -> None:
    lang = call.lang
    rows = (
        await call.session.scalars(select(Appeal).where(Appeal.status == AppealStatus.OPEN).order_by(Appeal.id))
    ).all()
    if not rows:
        call.reply("mod_no_appeals")
        return
    lines = [
        t(
            lang,
            "mod_appeal_line",
            appeal=a.id,
            decision=a.decision_id,
            appellant=a.appellant,
            text=a.text[:300],
        )
        for a in rows
    ]
    call.reply("mod_appeals_list", lines="\n".join(lines))


async def _open_appeal(call: CommandCall, usage: Refusal) -> tuple[Appeal, Decision]:
    s, cmd = call.session, call.command
    number = _ref(cmd.arg(0), "a")
    if number is None or len(cmd.args) < 2:
        raise Refused(usage)
    appeal = await s.get(Appeal, number)
    if appeal is None or appeal.status != AppealStatus.OPEN:
        raise Refused(Refusal("mod_not_open_appeal", {"appeal": number}))
    decision = await s.get(Decision, appeal.decision_id)
    if decision is None:
        raise Refused(Refusal("mod_appeal_decision_gone", {"appeal": number}))
    if decision.decided_by == call.sender and len(moderators(call.ctx)) > 1:
        raise Refused(Refusal("mod_own_decision", {"decision": decision.id}))
    return appeal, decision


async def _appellant_language(ctx: Context, s: AsyncSession, appeal: Appeal) -> str:
    room = await s.get(Room, appeal.appellant_room) if appeal.appellant_room else None
    return await language_for(s, ctx, appeal.appellant, appeal.text, room)


async def _close_appeal(
    call: CommandCall, appeal: Appeal, decision: Decision, status: AppealStatus, outcome: dict[str, Any]
) -> None:
    """The appeal decided by this moderator, and the audit entry saying so (`outcome`: how)."""
    appeal.status = status
    appeal.decided_by = call.sender
    appeal.decided_at = datetime.now(UTC)
    await audit.append(
        call.session,
        "appeal_decided",
        {"appeal": appeal.id, "decision": decision.id, **outcome},
        {"decided_by": call.sender, "explanation": call.command.rest_after(1)},
        config=call.ctx.config,
    )


@command(RoomKind.MODERATION, "deny")
async def _deny(call: CommandCall) -> None:
    ctx, s = call.ctx, call.session
    appeal, decision = await _open_appeal(call, Refusal("mod_usage_deny"))
    await _close_appeal(call, appeal, decision, AppealStatus.UPHELD, {"outcome": "upheld"})
    if appeal.appellant_room:
        reply(
            s,
            ctx,
            appeal.appellant_room,
            await _appellant_language(ctx, s, appeal),
            "mod_appeal_upheld_you",
            appeal=appeal.id,
            decision=decision.id,
            reasons=call.command.rest_after(1),
        )
    call.reply("mod_upheld", appeal=appeal.id, decision=decision.id)


@command(RoomKind.MODERATION, "grant")
async def _grant(call: CommandCall) -> None:
    ctx, s = call.ctx, call.session
    appeal, decision = await _open_appeal(call, Refusal("mod_usage_grant"))
    channel = await queries.channel_by_id(s, decision.channel_id)
    reversal = await record(
        ctx,
        s,
        kind=DecisionKind.REINSTATE,
        decided_by=call.sender,
        channel=channel,
        ground=Ground(decision.ground, decision.ground_reference or "—"),
        explanation=f"Appeal a{appeal.id} granted: {call.command.rest_after(1)}",
        target=decision.target,
        reverses=decision,
    )
    decision.status = DecisionStatus.REVERSED
    outcome = {"outcome": "reversed", "reversal": reversal.id}
    await _close_appeal(call, appeal, decision, AppealStatus.REVERSED, outcome)
    await restore(ctx, s, decision, channel)
    if appeal.appellant_room:
        reply(
            s,
            ctx,
            appeal.appellant_room,
            await _appellant_language(ctx, s, appeal),
            "mod_appeal_granted_you",
            appeal=appeal.id,
            decision=decision.id,
            reversal=reversal.id,
        )
    call.reply("mod_granted", appeal=appeal.id, decision=decision.id, reversal=reversal.id)


async def restore(ctx: Context, s: AsyncSession, decision: Decision, channel: Channel | None) -> None:
    """Undo what `decision` restricted: re-publish a removed or rejected post, lift a restriction."""
    target = decision.target or ""
    if decision.kind == DecisionKind.REJECT_REQUEST and target.startswith("request:"):
        await kinds.channel_request().reopen(ctx, s, int(target.split(":", 1)[1]))
        return
    if channel is None:
        return
    if decision.kind == DecisionKind.REMOVE_COMMENT and target:
        await kinds.comment().restore(ctx, s, EventID(target), decision.id)
    elif decision.kind == DecisionKind.RESTRICT:
        channel.restricted_until = None
    elif decision.kind == DecisionKind.SUSPEND:
        unsuspend(ctx, s, channel)
    elif decision.kind == DecisionKind.REJECT_POST:
        held = await s.scalar(select(HeldPost).where(HeldPost.decision_id == decision.id))
        if held is not None:
            held.status = HeldPostStatus.APPROVED
            await publish(ctx, s, channel, held)
    elif decision.kind == DecisionKind.TAKE_DOWN and decision.target:
        post = await queries.post_by_relayed(s, EventID(decision.target))
        if post is None:
            return
        stored = await s.scalar(
            select(InboundEvent.payload).where(InboundEvent.event_id == post.source_event_id)
        )
        try:
            source = parse_event(stored) if stored else None
        except EventParseError:
            source = None
        if source is None:
            return
        # A new copy of the post: the removed one stays removed (a redaction cannot be undone).
        await s.delete(post)
        await s.flush()
        await kinds.post().republish(ctx, s, channel, source)


@command(RoomKind.MODERATION, "decision")
async def _decision(call: CommandCall) -> None:
    number = _ref(call.command.arg(0), "d")
    decision = await call.session.get(Decision, number) if number is not None else None
    if decision is None:
        raise Refused(Refusal("mod_usage_decision"))
    statement = await statement_in(call.ctx, call.session, decision, call.lang)
    call.reply("mod_decision_status", statement=statement, status=decision.status)


