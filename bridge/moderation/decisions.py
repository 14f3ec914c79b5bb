"""Enforcement decisions on public channel content, each with a statement of reasons (DSA Art. 17).

A decision is recorded, audited and carried out in one database transaction: the homeserver writes
(redactions, state changes, notices) go through the outbox like every other write. The statement of
reasons names what was restricted and for how long, the facts and circumstances, whether a notice or
Kanal's own initiative started it, whether automated means were used, the legal or terms-of-service
ground, and the redress options. It reaches the channel's backstage and, when there is one, the notifier.
A reversal (after an appeal) is itself a decision with its own statement.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ..context import Context, enqueue, send_entry
from ..outbox import new_entry
from ..relay import REF_PLACEHOLDER
from ..store.models import Channel, Decision, HeldPost, Notice, Post
from . import audit

KIND_TEXT = {
    "take_down": "The post was removed from the channel.",
    "restrict": "Posting in the channel is suspended until {until}.",
    "suspend": "The channel is suspended: removed from the directory, nothing can be posted, it cannot be joined.",
    "no_action": "No action was taken against the content.",
    "reject_post": "The post was not published.",
    "approve_post": "The post was published after review.",
    "reinstate": "The earlier decision #{reverses} is reversed; what it restricted is restored.",
    "reject_request": "The request to register a channel was refused.",
    "remove_comment": "The comment was removed from the channel's discussion room.",
}


@dataclass(frozen=True)
class Ground:
    """`law:<reference>` or `terms:<clause>`, as moderators type it."""

    kind: str  # law | terms
    reference: str

    @classmethod
    def parse(cls, text: str) -> Ground:
        kind, sep, reference = text.partition(":")
        kind = kind.lower()
        if not sep or kind not in ("law", "terms") or not reference.strip():
            raise ValueError(
                f"'{text[:64]}' is not a ground: write law:<the law and article> or terms:<the clause>, "
                "e.g. terms:4.2 or law:Penal-Code-Art-12"
            )
        return cls(kind, reference.strip())

    def describe(self) -> str:
        return (
            f"the law: {self.reference}" if self.kind == "law" else f"the terms of service: {self.reference}"
        )


def statement_of_reasons(
    decision: Decision,
    *,
    channel: Channel | None,
    notice: Notice | None,
    redress: str,
    domain: str,
) -> dict[str, Any]:
    """The Art. 17 elements of `decision`, as data (stored with it) and as text (delivered)."""
    where = f"#{channel.handle or channel.former_handle}:{domain}" if channel else "—"
    until = decision.until.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if decision.until else ""
    what = KIND_TEXT.get(decision.kind, decision.kind).format(until=until, reverses=decision.reverses_id)
    if decision.target and decision.kind in (
        "take_down",
        "reject_post",
        "approve_post",
        "reject_request",
        "remove_comment",
    ):
        what += f" ({decision.target} in {where})"
    elif channel is not None:
        what += f" ({where})"
    if notice is not None:
        received = notice.received_at.astimezone(UTC).strftime("%Y-%m-%d") if notice.received_at else ""
        source = {
            "command": "a user's report",
            "homeserver": "a report to the homeserver",
            "flagger": "a trusted flagger's notice",
        }
        origin = f"{source.get(notice.source, 'a notice')} (notice #{notice.id}, {received}, category {notice.category})"
    else:
        origin = "Kanal's own initiative"
    automated = (
        "Automated means detected the content; " if decision.automated else "No automated means were used; "
    ) + (
        "the decision was taken automatically."
        if decision.decided_by.startswith("hook:")
        else "a person decided."
    )
    data = {
        "decision": decision.id,
        "kind": decision.kind,
        "what": what,
        "until": until or None,
        "facts": decision.explanation,
        "initiated_by": origin,
        "automated_detection": decision.automated,
        "automated_decision": decision.decided_by.startswith("hook:"),
        "ground": decision.ground,
        "ground_reference": decision.ground_reference,
        "category": decision.category,
        "redress": redress,
    }
    ground = (
        Ground(decision.ground, decision.ground_reference).describe()
        if decision.ground_reference
        else decision.ground
    )
    data["text"] = (
        f"Statement of reasons — decision #{decision.id}\n"
        f"What: {what}\n"
        f"Facts and circumstances: {decision.explanation or '—'}\n"
        f"Started by: {origin}\n"
        f"Automated means: {automated}\n"
        f"Ground: {ground}\n"
        f"Your options: {redress}"
    )
    return data


async def record(
    ctx: Context,
    session: AsyncSession,
    *,
    kind: str,
    decided_by: str,
    channel: Channel | None,
    ground: Ground,
    explanation: str,
    category: str = "other",
    target: str | None = None,
    notice: Notice | None = None,
    automated: bool = False,
    until: datetime | None = None,
    reverses: Decision | None = None,
    tell_backstage: bool = True,
) -> Decision:
    """Record a decision with its statement, audit it, and deliver the statement."""
    decision = Decision(
        kind=kind,
        channel_id=channel.id if channel else None,
        target=target,
        notice_id=notice.id if notice else None,
        own_initiative=notice is None,
        automated=automated,
        ground=ground.kind,
        ground_reference=ground.reference,
        explanation=explanation,
        category=notice.category if notice and category == "other" else category,
        until=until,
        decided_by=decided_by,
        reverses_id=reverses.id if reverses else None,
        status="in_force",
    )
    session.add(decision)
    await session.flush()
    if decision.created_at is None:
        decision.created_at = datetime.now(UTC)
    decision.statement = statement_of_reasons(
        decision, channel=channel, notice=notice, redress=ctx.config.compliance.redress, domain=ctx.domain
    )
    if notice is not None:
        notice.status = "decided"
        notice.decided_at = datetime.now(UTC)
    await audit.append(
        session,
        "decision",
        {
            "decision": decision.id,
            "kind": kind,
            "channel": channel.handle if channel else None,
            "target": target,
            "notice": notice.id if notice else None,
            "automated": automated,
            "ground": ground.kind,
            "ground_reference": ground.reference,
            "category": decision.category,
            "until": until.isoformat() if until else None,
            "reverses": decision.reverses_id,
        },
        {"decided_by": decided_by, "explanation": explanation},
        config=ctx.config,
    )
    text = decision.statement["text"]
    if tell_backstage and channel is not None and channel.backstage_room_id:
        enqueue(
            session, send_entry(ctx.bot, channel.backstage_room_id, {"msgtype": "m.notice", "body": text})
        )
    if notice is not None and notice.notifier_room:
        enqueue(
            session,
            send_entry(
                ctx.bot,
                notice.notifier_room,
                {"msgtype": "m.notice", "body": f"Your notice #{notice.id} was decided.\n{text}"},
            ),
        )
    return decision


# -- carrying decisions out ------------------------------------------------------------------------


async def post_by_relayed_event(session: AsyncSession, event_id: str) -> Post | None:
    post: Post | None = await session.scalar(select(Post).where(Post.relayed_event_id == event_id))
    return post


def take_down(ctx: Context, session: AsyncSession, channel: Channel, post: Post, reason: str) -> None:
    """Redact the relayed copy (the backstage original stays, for the record and a possible reversal)."""
    post.redacted = True
    enqueue(
        session,
        new_entry(
            f"room:{channel.broadcast_room_id}",
            "redact",
            channel.ghost_user_id,
            {"room_id": channel.broadcast_room_id, "event_id": REF_PLACEHOLDER, "reason": reason[:500]},
            ref_source=post.source_event_id,
        ),
    )
    if channel.comments_room_id:
        from ..comments import root_redaction

        enqueue(session, root_redaction(channel, post, reason[:500]))


def suspend(ctx: Context, session: AsyncSession, channel: Channel) -> None:
    """Out of the directory and invite-only; posting is refused while `status` is suspended."""
    channel.status = "suspended"
    room = channel.broadcast_room_id
    if room:
        enqueue(
            session,
            new_entry(f"room:{room}", "directory", ctx.bot, {"room_id": room, "visibility": "private"}),
        )
        enqueue(
            session,
            new_entry(
                f"room:{room}",
                "state",
                ctx.bot,
                {"room_id": room, "event_type": "m.room.join_rules", "content": {"join_rule": "invite"}},
            ),
        )


def unsuspend(ctx: Context, session: AsyncSession, channel: Channel) -> None:
    """Back to how the owner had it: public (listed, anyone joins) or private (knock, unlisted)."""
    from ..private import access_entries

    channel.status = "active"
    for entry in access_entries(ctx, channel):
        enqueue(session, entry)


async def held_for(session: AsyncSession, decision: Decision) -> HeldPost | None:
    held: HeldPost | None = await session.scalar(select(HeldPost).where(HeldPost.decision_id == decision.id))
    return held
