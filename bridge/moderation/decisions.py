"""Enforcement decisions on public channel content, each with a statement of reasons (DSA Art. 17).

A decision is recorded, audited and carried out in one database transaction: the homeserver writes
(redactions, state changes, notices) go through the outbox like every other write. The statement of
reasons names what was restricted and for how long, the facts and circumstances, whether a notice or
Kanal's own initiative started it, whether automated means were used, the legal or terms-of-service
ground, and the redress options. It reaches the channel's backstage and, when there is one, the notifier.
A reversal (after an appeal) is itself a decision with its own statement.

The statement is stored (with the decision, in the audit log, in transparency exports) in English, the
legal record; the copy each person receives is put into words in their language from the same facts
(`StatementFacts` → `render_statement`), through the `moderation` catalogue.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bridge.broadcast import seam
from bridge.moderation import audit
from bridge.moderation.hooks import Verdict
from bridge.runtime.context import Context, enqueue, send_entry
from bridge.runtime.languages import language_for
from bridge.store import queries
from bridge.store.models import (
    Channel,
    ChannelStatus,
    Decision,
    DecisionKind,
    DecisionStatus,
    Notice,
    NoticeStatus,
    Post,
    Room,
)
from bridge.text.digits import localise_digits
from bridge.text.i18n import SOURCE_LANGUAGE, t


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
            raise ValueError(t(SOURCE_LANGUAGE, "mod_bad_ground", text=text[:64]))
        return cls(kind, reference.strip())

    def describe(self, lang: str = SOURCE_LANGUAGE) -> str:
        if self.kind == "law":
            return t(lang, "sor_ground_law", reference=self.reference)
        return t(lang, "sor_ground_terms", reference=self.reference)


# Decisions whose statement names the post, comment or request they are about.
_TARGETED = (
    DecisionKind.TAKE_DOWN,
    DecisionKind.REJECT_POST,
    DecisionKind.APPROVE_POST,
    DecisionKind.REJECT_REQUEST,
    DecisionKind.REMOVE_COMMENT,
)


@dataclass(frozen=True)
class StatementFacts:
    """What a statement of reasons says, before it is put into words in one language."""

    decision: int
    kind: str
    where: str | None  # #handle:domain, when the decision is about a channel
    target: str | None  # named only for _TARGETED kinds
    until: str  # "" unless the decision lasts until a time
    reverses: int | None
    facts: str
    notice_source: str | None  # None: Kanal's own initiative
    notice_id: int | None
    notice_received: str
    notice_category: str | None
    automated_detection: bool
    automated_decision: bool
    ground: str
    ground_reference: str | None
    redress: str
    appeal_days: int | None  # set when `redress` may be Kanal's default text (then it is translated)


def statement_facts(
    decision: Decision,
    *,
    channel: Channel | None,
    notice: Notice | None,
    redress: str,
    domain: str,
    appeal_days: int | None = None,
) -> StatementFacts:
    return StatementFacts(
        decision=decision.id,
        kind=decision.kind,
        where=f"#{channel.handle or channel.former_handle}:{domain}" if channel else None,
        target=decision.target if decision.kind in _TARGETED else None,
        until=decision.until.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if decision.until else "",
        reverses=decision.reverses_id,
        facts=decision.explanation,
        notice_source=notice.source if notice is not None else None,
        notice_id=notice.id if notice is not None else None,
        notice_received=(
            notice.received_at.astimezone(UTC).strftime("%Y-%m-%d")
            if notice is not None and notice.received_at
            else ""
        ),
        notice_category=notice.category if notice is not None else None,
        automated_detection=decision.automated,
        automated_decision=decision.decided_by.startswith("hook:"),
        ground=decision.ground,
        ground_reference=decision.ground_reference,
        redress=redress,
        appeal_days=appeal_days,
    )


def _kind_text(lang: str, facts: StatementFacts) -> str:
    texts: dict[str, str] = {
        DecisionKind.TAKE_DOWN: t(lang, "sor_take_down"),
        DecisionKind.RESTRICT: t(lang, "sor_restrict", until=localise_digits(facts.until, lang)),
        DecisionKind.SUSPEND: t(lang, "sor_suspend"),
        DecisionKind.NO_ACTION: t(lang, "sor_no_action"),
        DecisionKind.REJECT_POST: t(lang, "sor_reject_post"),
        DecisionKind.APPROVE_POST: t(lang, "sor_approve_post"),
        DecisionKind.REINSTATE: t(lang, "sor_reinstate", reverses=facts.reverses),
        DecisionKind.REJECT_REQUEST: t(lang, "sor_reject_request"),
        DecisionKind.REMOVE_COMMENT: t(lang, "sor_remove_comment"),
    }
    return texts.get(facts.kind, facts.kind)


def _what(lang: str, facts: StatementFacts) -> str:
    what = _kind_text(lang, facts)
    where = facts.where or "—"
    if facts.target:
        return t(lang, "sor_what_target", what=what, target=facts.target, where=where)
    if facts.where is not None:
        return t(lang, "sor_what_channel", what=what, where=where)
    return what


def _origin(lang: str, facts: StatementFacts) -> str:
    if facts.notice_source is None:
        return t(lang, "sor_own_initiative")
    sources = {
        "command": t(lang, "sor_source_command"),
        "homeserver": t(lang, "sor_source_homeserver"),
        "flagger": t(lang, "sor_source_flagger"),
    }
    return t(
        lang,
        "sor_origin_notice",
        source=sources.get(facts.notice_source) or t(lang, "sor_source_other"),
        notice=facts.notice_id,
        received=localise_digits(facts.notice_received, lang),
        category=facts.notice_category,
    )


def _automated(lang: str, facts: StatementFacts) -> str:
    return t(
        lang,
        "sor_automated",
        detected=t(lang, "sor_detected_automated" if facts.automated_detection else "sor_detected_manual"),
        decided=t(lang, "sor_decided_automatically" if facts.automated_decision else "sor_decided_by_person"),
    )


def _redress(lang: str, facts: StatementFacts) -> str:
    """Kanal's default redress text in `lang`; an operator's own `compliance.redress` as written."""
    days = facts.appeal_days
    if days is not None and facts.redress == t(SOURCE_LANGUAGE, "sor_redress_default", days=days):
        return t(lang, "sor_redress_default", days=days)
    return facts.redress


def render_statement(lang: str, facts: StatementFacts) -> str:
    """The statement of reasons as a person reads it, in `lang` (in English: the stored text)."""
    ground = (
        Ground(facts.ground, facts.ground_reference).describe(lang)
        if facts.ground_reference
        else facts.ground
    )
    return t(
        lang,
        "sor_text",
        decision=facts.decision,
        what=_what(lang, facts),
        facts=facts.facts or "—",
        origin=_origin(lang, facts),
        automated=_automated(lang, facts),
        ground=ground,
        redress=_redress(lang, facts),
    )


def statement_of_reasons(
    decision: Decision,
    *,
    channel: Channel | None,
    notice: Notice | None,
    redress: str,
    domain: str,
    appeal_days: int | None = None,
) -> dict[str, Any]:
    """The Art. 17 elements of `decision`, as data and as English text: the record that is stored."""
    facts = statement_facts(
        decision, channel=channel, notice=notice, redress=redress, domain=domain, appeal_days=appeal_days
    )
    return _statement_record(decision, facts)


def _statement_record(decision: Decision, facts: StatementFacts) -> dict[str, Any]:
    return {
        "decision": decision.id,
        "kind": decision.kind,
        "what": _what(SOURCE_LANGUAGE, facts),
        "until": facts.until or None,
        "facts": decision.explanation,
        "initiated_by": _origin(SOURCE_LANGUAGE, facts),
        "automated_detection": decision.automated,
        "automated_decision": facts.automated_decision,
        "ground": decision.ground,
        "ground_reference": decision.ground_reference,
        "category": decision.category,
        "redress": facts.redress,
        "text": render_statement(SOURCE_LANGUAGE, facts),
    }


async def statement_in(ctx: Context, session: AsyncSession, decision: Decision, lang: str) -> str:
    """A recorded decision's statement in `lang`: the stored record in English, else rebuilt from its rows."""
    stored = str(decision.statement.get("text", "")) if decision.statement else ""
    if lang == SOURCE_LANGUAGE and stored:
        return stored
    channel = await queries.channel_by_id(session, decision.channel_id)
    notice = await session.get(Notice, decision.notice_id) if decision.notice_id else None
    return render_statement(lang, _facts(ctx, decision, channel, notice))


def _facts(ctx: Context, decision: Decision, channel: Channel | None, notice: Notice | None) -> StatementFacts:
    """What the statement of `decision` says, with this deployment's redress and appeal window."""
    compliance = ctx.config.compliance
    return statement_facts(
        decision,
        channel=channel,
        notice=notice,
        redress=compliance.redress,
        domain=ctx.domain,
        appeal_days=compliance.appeal_window_days,
    )


async def record(
    ctx: Context,
    session: AsyncSession,
    *,
    kind: DecisionKind,
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
    recipient: str | None = None,
    recipient_text: str = "",
) -> Decision:
    """Record a decision with its statement, audit it, and deliver the statement.

    Each copy is in its reader's language (bridge.runtime.languages.language_for): the backstage copy
    in that of `recipient` (the post's author; default: the owner), who wrote `recipient_text` (the
    post: Persian script in it means Persian, unless they chose a language); the notifier's in
    theirs, read from their notice the same way.
    """
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
        status=DecisionStatus.IN_FORCE,
    )
    session.add(decision)
    await session.flush()
    if decision.created_at is None:
        decision.created_at = datetime.now(UTC)
    facts = _facts(ctx, decision, channel, notice)
    decision.statement = _statement_record(decision, facts)
    if notice is not None:
        notice.status = NoticeStatus.DECIDED
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
    # The record above stays in English; each person reads their copy in their own language.
    if tell_backstage and channel is not None and channel.backstage_room_id:
        backstage = channel.backstage_room_id
        lang = await language_for(
            session, ctx, recipient or channel.owner, recipient_text, await session.get(Room, backstage)
        )
        text = render_statement(lang, facts)
        enqueue(session, send_entry(ctx.bot, backstage, {"msgtype": "m.notice", "body": text}))
    if notice is not None and notice.notifier_room:
        lang = await language_for(
            session, ctx, notice.notifier or "", notice.explanation, await session.get(Room, notice.notifier_room)
        )
        text = t(lang, "mod_notice_decided", notice=notice.id, statement=render_statement(lang, facts))
        enqueue(session, send_entry(ctx.bot, notice.notifier_room, {"msgtype": "m.notice", "body": text}))
    return decision


async def record_hook_rejection(
    ctx: Context,
    session: AsyncSession,
    verdict: Verdict,
    *,
    kind: DecisionKind,
    channel: Channel,
    target: str,
    tell_backstage: bool = True,
    recipient: str | None = None,
    recipient_text: str = "",
) -> Decision:
    """A hook's reject of `target` (a post or comment), recorded as the hook's own decision: detected
    and decided automatically, on the deployment's publication rules."""
    return await record(
        ctx,
        session,
        kind=kind,
        decided_by=f"hook:{verdict.hook}",
        channel=channel,
        ground=Ground("terms", f"publication rules ({verdict.hook})"),
        explanation=verdict.reason,
        category=verdict.category,
        target=target,
        automated=True,
        tell_backstage=tell_backstage,
        recipient=recipient,
        recipient_text=recipient_text,
    )


def body_of(content: dict[str, Any] | None) -> str:
    """The text of a message's content (what its author wrote), or ""."""
    body = (content or {}).get("body")
    return body if isinstance(body, str) else ""


# -- carrying decisions out ------------------------------------------------------------------------


async def take_down(ctx: Context, session: AsyncSession, channel: Channel, post: Post, reason: str) -> None:
    """Redact the published copy (the backstage original stays, for the record and a possible reversal)."""
    await seam.retract(session, channel, post, reason)


def suspend(ctx: Context, session: AsyncSession, channel: Channel) -> None:
    """Out of the directory and invite-only; posting is refused while `status` is suspended."""
    channel.status = ChannelStatus.SUSPENDED
    if channel.broadcast_room_id:
        seam.close(ctx, session, channel)


def unsuspend(ctx: Context, session: AsyncSession, channel: Channel) -> None:
    """Back to how the owner had it: public (listed, anyone joins) or private (knock, unlisted)."""
    channel.status = ChannelStatus.ACTIVE
    if channel.broadcast_room_id:
        seam.set_access(ctx, session, channel)
