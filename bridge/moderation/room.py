"""The moderation room: held posts, notices and appeals, decided by people.

Kanal keeps a private room for `compliance.moderators` (default: the operators). Everything acted
on here is public channel content or channel registration; every decision gets a statement of
reasons, an appeal path and an audit-log entry. Appeals are decided only here, by a person, and not
by the moderator who took the decision appealed (when another moderator exists).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from appservice.events import Event, EventParseError, parse_event

from ..commands import Command, parse_command
from ..context import Context, enqueue, reply, send_entry
from ..i18n import t
from ..languages import language_for
from ..outbox import OutboxWorker, SkipEntry
from ..registry import parse_duration
from ..store.models import Appeal, Channel, Decision, HeldPost, InboundEvent, Notice, OutboxEntry, Post, Room
from . import audit
from .decisions import Ground, post_by_relayed_event, record, suspend, take_down, unsuspend

ROOM_NAME = "Kanal moderation"
HELP = (
    "Moderation commands (public channel content only):\n"
    "• held — posts held by the publication hooks\n"
    "• approve h<n> — publish a held post\n"
    "• reject h<n> <ground> <explanation> — do not publish it\n"
    "• notices — open notices (trusted flaggers first)\n"
    "• takedown <n<notice> | event id | matrix.to link> <ground> <explanation> — remove a published post\n"
    "• noaction n<notice> <explanation> — decide a notice without action\n"
    "• restrict <handle> <30m|12h|7d|2w> <ground> <explanation> — suspend posting for a while\n"
    "• suspend <handle> <ground> <explanation> — remove a channel from the directory and freeze it\n"
    "• appeals — open appeals;  grant a<n> <explanation> — reverse;  deny a<n> <explanation> — uphold\n"
    "• decision d<n> — show a decision's statement of reasons\n"
    "A ground is law:<law and article> or terms:<clause>. Every decision is sent to the channel's "
    "backstage (and to the notifier) with a statement of reasons, and written to the audit log."
)
_MATRIX_TO_EVENT = re.compile(r"(\$[A-Za-z0-9_\-+/=.:]+)")


def say(session: AsyncSession, ctx: Context, room_id: str, text: str) -> None:
    enqueue(session, send_entry(ctx.bot, room_id, {"msgtype": "m.notice", "body": text}))


def moderators(ctx: Context) -> list[str]:
    return list(ctx.config.compliance.moderators or ctx.config.operators)


async def sync_moderation_room(ctx: Context, entry: OutboxEntry, worker: OutboxWorker) -> str | None:
    from ..operators import sync_staff_room

    members = moderators(ctx)
    if not members:
        raise SkipEntry("no moderators configured")
    room_id = await sync_staff_room(
        ctx,
        kind="moderation",
        name=ROOM_NAME,
        topic="Held posts, notices and appeals about public channel content. Send help for the commands.",
        members=members,
        welcome=HELP,
    )
    if room_id is not None:
        await _remind(ctx, room_id)
    return room_id


async def _remind(ctx: Context, room_id: str) -> None:
    """At each start, what is waiting (announcements made while there was no room are not lost)."""
    from sqlalchemy import func

    async with ctx.sessions.begin() as session:
        counts = []
        for label, model, status in (
            ("held posts", HeldPost, "held"),
            ("open notices", Notice, "open"),
            ("open appeals", Appeal, "open"),
        ):
            count = await session.scalar(
                select(func.count()).select_from(model).where(model.status == status)
            )
            if count:
                counts.append(f"{count} {label}")
        if counts:
            say(
                session,
                ctx,
                room_id,
                f"Waiting: {', '.join(counts)}. Send held, notices or appeals to see them.",
            )


async def schedule_moderation_room(ctx: Context) -> None:
    """Queue the moderation room's creation or membership check, once."""
    from ..operators import schedule_staff_room

    if moderators(ctx):
        await schedule_staff_room(ctx, "moderators", "moderation_room")


def _ref(text: str | None, prefix: str) -> int | None:
    if not text:
        return None
    text = text.strip().lower().lstrip("#")
    if text.startswith(prefix):
        text = text[len(prefix) :]
    return int(text) if text.isdigit() else None


async def on_moderation_message(ctx: Context, session: AsyncSession, room: Room, event: Event) -> None:
    body = event.content.get("body")
    if event.type != "m.room.message" or not isinstance(body, str) or event.rel_type == "m.replace":
        return
    command = parse_command(body, require_bang=False)
    if command is None:
        return
    if event.sender not in moderators(ctx):
        say(session, ctx, room.room_id, "Only the configured moderators can use this room's commands.")
        return
    handler = _HANDLERS.get(command.name)
    if handler is None:
        say(session, ctx, room.room_id, f"Unknown command “{command.name[:64]}”. Send help for the list.")
        return
    try:
        await handler(ctx, session, room, event, command)
    except ValueError as exc:
        say(session, ctx, room.room_id, f"{exc}")


Handler = Callable[[Context, AsyncSession, Room, Event, Command], Awaitable[None]]


async def _help(ctx: Context, s: AsyncSession, room: Room, event: Event, cmd: Command) -> None:
    say(s, ctx, room.room_id, HELP)


async def _held(ctx: Context, s: AsyncSession, room: Room, event: Event, cmd: Command) -> None:
    rows = (await s.scalars(select(HeldPost).where(HeldPost.status == "held").order_by(HeldPost.id))).all()
    if not rows:
        say(s, ctx, room.room_id, "No posts are held.")
        return
    lines = []
    for row in rows:
        channel = await s.get(Channel, row.channel_id)
        why = "; ".join(f"{v['hook']}: {v['reason']}" for v in row.verdicts if v.get("action") != "allow")
        lines.append(f"h{row.id} #{channel.handle if channel else '?'} {row.author} — {why}")
    say(s, ctx, room.room_id, "Held posts:\n" + "\n".join(lines))


async def _held_post(s: AsyncSession, cmd: Command, usage: str, nargs: int) -> HeldPost:
    number = _ref(cmd.arg(0), "h")
    if number is None or len(cmd.args) < nargs:
        raise ValueError(f"Usage: {usage}")
    held = await s.get(HeldPost, number)
    if held is None or held.status != "held":
        raise ValueError(f"h{number} is not a held post (send held for the list).")
    return held


async def _approve(ctx: Context, s: AsyncSession, room: Room, event: Event, cmd: Command) -> None:

    held = await _held_post(s, cmd, "approve h<n>", 1)
    channel = await s.get(Channel, held.channel_id)
    if channel is None or channel.status != "active":
        raise ValueError(f"h{held.id}: its channel is not active; reject it instead.")
    decision = await record(
        ctx,
        s,
        kind="approve_post",
        decided_by=event.sender,
        channel=channel,
        ground=Ground("terms", "publication rules"),
        explanation="Reviewed by a moderator and published.",
        category=_category(held),
        target=held.source_event_id,
        tell_backstage=False,
    )
    held.status = "approved"
    held.decision_id = decision.id
    await publish(ctx, s, channel, held)
    if channel.backstage_room_id:
        say(
            s,
            ctx,
            channel.backstage_room_id,
            f"A moderator reviewed the held post h{held.id}: it is published now.",
        )
    say(
        s,
        ctx,
        room.room_id,
        f"h{held.id} approved (decision d{decision.id}); publishing it in #{channel.handle}.",
    )


async def publish(ctx: Context, s: AsyncSession, channel: Channel, held: HeldPost) -> None:
    """Publish a held post: a backstage event, or a post made through the publishing API."""
    from ..backstage import relay_event
    from ..web.api import is_held_api_post, publish_held

    if is_held_api_post(held):
        await publish_held(ctx, s, channel, held)
    else:
        await relay_event(ctx, s, channel, parse_event(held.event))


def _category(held: HeldPost) -> str:
    for verdict in held.verdicts:
        if verdict.get("action") != "allow":
            return str(verdict.get("category") or "other")
    return "other"


async def _reject(ctx: Context, s: AsyncSession, room: Room, event: Event, cmd: Command) -> None:
    held = await _held_post(s, cmd, "reject h<n> <law:…|terms:…> <explanation>", 3)
    ground = Ground.parse(cmd.args[1])
    channel = await s.get(Channel, held.channel_id)
    decision = await record(
        ctx,
        s,
        kind="reject_post",
        decided_by=event.sender,
        channel=channel,
        ground=ground,
        explanation=cmd.rest_after(2),
        category=_category(held),
        target=held.source_event_id,
        automated=True,  # detected by a hook, decided by a person
    )
    held.status = "rejected"
    held.decision_id = decision.id
    say(
        s,
        ctx,
        room.room_id,
        f"h{held.id} rejected (decision d{decision.id}); the backstage has the statement.",
    )


async def _notices(ctx: Context, s: AsyncSession, room: Room, event: Event, cmd: Command) -> None:
    rows = (
        await s.scalars(
            select(Notice).where(Notice.status == "open").order_by(Notice.trusted.desc(), Notice.id)
        )
    ).all()
    if not rows:
        say(s, ctx, room.room_id, "No open notices.")
        return
    lines = []
    for n in rows:
        channel = await s.get(Channel, n.channel_id) if n.channel_id else None
        flag = "★ trusted " if n.trusted else ""
        lines.append(
            f"n{n.id} {flag}[{n.source}] #{channel.handle if channel else '?'} {n.event_id or ''} "
            f"{n.category}: {n.explanation[:200]}"
        )
    say(s, ctx, room.room_id, "Open notices:\n" + "\n".join(lines))


async def _target_post(s: AsyncSession, text: str) -> tuple[Post, Channel, Notice | None]:
    notice: Notice | None = None
    number = _ref(text, "n")
    event_id: str | None
    if number is not None and not text.startswith("$"):
        notice = await s.get(Notice, number)
        if notice is None:
            raise ValueError(f"There is no notice n{number}.")
        event_id = notice.event_id
    else:
        match = _MATRIX_TO_EVENT.search(text)
        event_id = match.group(1) if match else None
    post = await post_by_relayed_event(s, event_id) if event_id else None
    if post is None:
        raise ValueError(
            "That is not a published channel post Kanal knows (give n<notice>, an event id or a matrix.to link)."
        )
    channel = await s.get(Channel, post.channel_id)
    if channel is None:
        raise ValueError("That post's channel no longer exists.")
    return post, channel, notice


async def _takedown(ctx: Context, s: AsyncSession, room: Room, event: Event, cmd: Command) -> None:
    if len(cmd.args) < 3:
        raise ValueError("Usage: takedown <n<notice> | event id | link> <law:…|terms:…> <explanation>")
    post, channel, notice = await _target_post(s, cmd.args[0])
    ground = Ground.parse(cmd.args[1])
    if post.redacted:
        raise ValueError("That post is already removed.")
    decision = await record(
        ctx,
        s,
        kind="take_down",
        decided_by=event.sender,
        channel=channel,
        ground=ground,
        explanation=cmd.rest_after(2),
        target=post.relayed_event_id,
        notice=notice,
    )
    take_down(ctx, s, channel, post, f"Decision d{decision.id}: {ground.describe()}")
    say(s, ctx, room.room_id, f"Taking the post down (decision d{decision.id}).")


async def _noaction(ctx: Context, s: AsyncSession, room: Room, event: Event, cmd: Command) -> None:
    number = _ref(cmd.arg(0), "n")
    if number is None or len(cmd.args) < 2:
        raise ValueError("Usage: noaction n<notice> <explanation>")
    notice = await s.get(Notice, number)
    if notice is None or notice.status != "open":
        raise ValueError(f"n{number} is not an open notice.")
    channel = await s.get(Channel, notice.channel_id) if notice.channel_id else None
    decision = await record(
        ctx,
        s,
        kind="no_action",
        decided_by=event.sender,
        channel=channel,
        ground=Ground("terms", "no breach found"),
        explanation=cmd.rest_after(1),
        target=notice.event_id,
        notice=notice,
        tell_backstage=False,
    )
    say(
        s,
        ctx,
        room.room_id,
        f"n{notice.id} decided without action (decision d{decision.id}); the notifier is told.",
    )


async def _channel(s: AsyncSession, handle_text: str | None) -> Channel:
    from ..management import find_channel

    channel = await find_channel(s, handle_text or "")
    if channel is None:
        raise ValueError(
            f"There is no channel #{(handle_text or '').strip().lstrip('#@').split(':', 1)[0].lower()[:64]}."
        )
    return channel


async def _restrict(ctx: Context, s: AsyncSession, room: Room, event: Event, cmd: Command) -> None:
    if len(cmd.args) < 4:
        raise ValueError("Usage: restrict <handle> <30m|12h|7d|2w> <law:…|terms:…> <explanation>")
    channel = await _channel(s, cmd.args[0])
    until = datetime.now(UTC) + parse_duration(cmd.args[1])
    ground = Ground.parse(cmd.args[2])
    decision = await record(
        ctx,
        s,
        kind="restrict",
        decided_by=event.sender,
        channel=channel,
        ground=ground,
        explanation=cmd.rest_after(3),
        until=until,
    )
    channel.restricted_until = until
    say(
        s,
        ctx,
        room.room_id,
        f"#{channel.handle}: posting suspended until {until:%Y-%m-%d %H:%M} UTC (decision d{decision.id}).",
    )


async def _suspend(ctx: Context, s: AsyncSession, room: Room, event: Event, cmd: Command) -> None:
    if len(cmd.args) < 3:
        raise ValueError("Usage: suspend <handle> <law:…|terms:…> <explanation>")
    channel = await _channel(s, cmd.args[0])
    if channel.status != "active":
        raise ValueError(f"#{channel.handle} is {channel.status}.")
    ground = Ground.parse(cmd.args[1])
    decision = await record(
        ctx,
        s,
        kind="suspend",
        decided_by=event.sender,
        channel=channel,
        ground=ground,
        explanation=cmd.rest_after(2),
    )
    suspend(ctx, s, channel)
    say(s, ctx, room.room_id, f"#{channel.handle} suspended (decision d{decision.id}).")


async def _appeals(ctx: Context, s: AsyncSession, room: Room, event: Event, cmd: Command) -> None:
    rows = (await s.scalars(select(Appeal).where(Appeal.status == "open").order_by(Appeal.id))).all()
    if not rows:
        say(s, ctx, room.room_id, "No open appeals.")
        return
    lines = [f"a{a.id} against d{a.decision_id} by {a.appellant}: {a.text[:300]}" for a in rows]
    say(s, ctx, room.room_id, "Open appeals:\n" + "\n".join(lines))


async def _open_appeal(
    ctx: Context, s: AsyncSession, event: Event, cmd: Command, usage: str
) -> tuple[Appeal, Decision]:
    number = _ref(cmd.arg(0), "a")
    if number is None or len(cmd.args) < 2:
        raise ValueError(f"Usage: {usage}")
    appeal = await s.get(Appeal, number)
    if appeal is None or appeal.status != "open":
        raise ValueError(f"a{number} is not an open appeal.")
    decision = await s.get(Decision, appeal.decision_id)
    if decision is None:
        raise ValueError(f"a{number}: its decision is gone.")
    if decision.decided_by == event.sender and len(moderators(ctx)) > 1:
        raise ValueError(f"You took decision d{decision.id}; another moderator must decide its appeal.")
    return appeal, decision


async def _deny(ctx: Context, s: AsyncSession, room: Room, event: Event, cmd: Command) -> None:
    appeal, decision = await _open_appeal(ctx, s, event, cmd, "deny a<n> <explanation>")
    appeal.status = "upheld"
    appeal.decided_by = event.sender
    appeal.decided_at = datetime.now(UTC)
    explanation = cmd.rest_after(1)
    await audit.append(
        s,
        "appeal_decided",
        {"appeal": appeal.id, "decision": decision.id, "outcome": "upheld"},
        {"decided_by": event.sender, "explanation": explanation},
        config=ctx.config,
    )
    if appeal.appellant_room:
        say(
            s,
            ctx,
            appeal.appellant_room,
            f"Your appeal a{appeal.id} against decision d{decision.id} was reviewed by a person and the decision "
            f"stands. Their reasons: {explanation}\nYou may still turn to an out-of-court dispute settlement "
            "body or a court.",
        )
    say(s, ctx, room.room_id, f"a{appeal.id}: decision d{decision.id} upheld; the appellant is told.")


async def _grant(ctx: Context, s: AsyncSession, room: Room, event: Event, cmd: Command) -> None:
    appeal, decision = await _open_appeal(ctx, s, event, cmd, "grant a<n> <explanation>")
    channel = await s.get(Channel, decision.channel_id) if decision.channel_id else None
    explanation = cmd.rest_after(1)
    reversal = await record(
        ctx,
        s,
        kind="reinstate",
        decided_by=event.sender,
        channel=channel,
        ground=Ground(decision.ground, decision.ground_reference or "—"),
        explanation=f"Appeal a{appeal.id} granted: {explanation}",
        target=decision.target,
        reverses=decision,
    )
    decision.status = "reversed"
    appeal.status = "reversed"
    appeal.decided_by = event.sender
    appeal.decided_at = datetime.now(UTC)
    await audit.append(
        s,
        "appeal_decided",
        {"appeal": appeal.id, "decision": decision.id, "outcome": "reversed", "reversal": reversal.id},
        {"decided_by": event.sender, "explanation": explanation},
        config=ctx.config,
    )
    await restore(ctx, s, decision, channel)
    if appeal.appellant_room:
        say(
            s,
            ctx,
            appeal.appellant_room,
            f"Your appeal a{appeal.id} was granted: decision d{decision.id} is reversed (decision d{reversal.id}).",
        )
    say(s, ctx, room.room_id, f"a{appeal.id} granted: d{decision.id} reversed by d{reversal.id}; restoring.")


async def restore(ctx: Context, s: AsyncSession, decision: Decision, channel: Channel | None) -> None:
    """Undo what `decision` restricted: re-publish a removed or rejected post, lift a restriction."""
    from ..backstage import relay_event

    target = decision.target or ""
    if decision.kind == "reject_request" and target.startswith("request:"):
        await _reopen_request(ctx, s, int(target.split(":", 1)[1]))
        return
    if channel is None:
        return
    if decision.kind == "remove_comment" and target:
        from ..comments import restore_comment

        await restore_comment(ctx, s, target, decision.id)
    elif decision.kind == "restrict":
        channel.restricted_until = None
    elif decision.kind == "suspend":
        unsuspend(ctx, s, channel)
    elif decision.kind == "reject_post":
        held = await s.scalar(select(HeldPost).where(HeldPost.decision_id == decision.id))
        if held is not None:
            held.status = "approved"
            await publish(ctx, s, channel, held)
    elif decision.kind == "take_down" and decision.target:
        post = await post_by_relayed_event(s, decision.target)
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
        await relay_event(ctx, s, channel, source)


async def _reopen_request(ctx: Context, s: AsyncSession, request_id: int) -> None:
    """A refused registration, granted on appeal: the channel is created for the requester."""
    from ..management import start_creation
    from ..registry import handle_refusal
    from ..store.models import ChannelRequest

    request = await s.get(ChannelRequest, request_id)
    if request is None:
        return
    refusal = await handle_refusal(
        s, ctx.config, request.handle, user_id=request.user_id, request_id=request.id
    )
    lang = await language_for(s, ctx, request.user_id, room=await s.get(Room, request.room_id))
    if refusal is not None:
        why = t(lang, refusal.key, **refusal.values)
        reply(s, ctx, request.room_id, lang, "appeal_granted_unavailable", handle=request.handle, why=why)
        return
    request.status = "approved"
    await start_creation(
        ctx,
        s,
        owner=request.user_id,
        handle=request.handle,
        title=request.title,
        notify_room=request.room_id,
        lang=lang,
        private=request.private,
    )


async def _decision(ctx: Context, s: AsyncSession, room: Room, event: Event, cmd: Command) -> None:
    number = _ref(cmd.arg(0), "d")
    decision = await s.get(Decision, number) if number is not None else None
    if decision is None:
        raise ValueError("Usage: decision d<n>")
    say(s, ctx, room.room_id, str(decision.statement.get("text", "")) + f"\nStatus: {decision.status}")


_HANDLERS: dict[str, Handler] = {
    "help": _help,
    "held": _held,
    "approve": _approve,
    "reject": _reject,
    "notices": _notices,
    "takedown": _takedown,
    "noaction": _noaction,
    "restrict": _restrict,
    "suspend": _suspend,
    "appeals": _appeals,
    "grant": _grant,
    "deny": _deny,
    "decision": _decision,
}
