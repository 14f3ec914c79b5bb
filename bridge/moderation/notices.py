"""Notices (reports about public channel content) and appeals, from users, the homeserver and flaggers.

Only published channel posts and readers' comments in Kanal's discussion rooms can be reported (a
thread root stands for its post): anything else (a private room, a direct chat, an encrypted room) is
refused without being looked at. Each notice is acknowledged to whoever sent it,
announced in the moderation room, and written to the audit log (the notifier's identity and text
as erasable personal data).
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from appservice.errors import MatrixConnectionError, MatrixRequestError
from appservice.ids import EventID, RoomID, UserID
from bridge.moderation import audit, kinds
from bridge.moderation.gate import tell_moderators
from bridge.runtime.context import Context, reply
from bridge.runtime.languages import language_for
from bridge.store import queries
from bridge.store.hashing import hash_token
from bridge.store.models import (
    Appeal,
    Channel,
    ChannelMember,
    ChannelRequest,
    Decision,
    DecisionKind,
    Flagger,
    Notice,
    Room,
)

log = logging.getLogger(__name__)

CATEGORIES = (
    "illegal_content",
    "hate_speech",
    "violence",
    "terrorism",
    "child_safety",
    "scam_fraud",
    "spam",
    "privacy",
    "intellectual_property",
    "impersonation",
    "other",
)
FLAGGER_TOKEN_PREFIX = "kanal_flag_"  # noqa: S105 (a prefix, not a secret)
EVENT_ID = re.compile(r"(\$[A-Za-z0-9_\-+/=.:]+)")
MAX_EXPLANATION = 4000


def event_id_in(text: str) -> EventID | None:
    """The event id in an id or a matrix.to / client link (`…/#/!room:server/$event`)."""
    match = EVENT_ID.search(text.replace("%24", "$").replace("%3A", ":"))
    return EventID(match.group(1)) if match else None


def split_category(text: str) -> tuple[str, str]:
    """`spam: buy now` → ("spam", "buy now"); text without a known category → ("other", text)."""
    head, sep, rest = text.partition(":")
    if sep and head.strip().lower() in CATEGORIES:
        return head.strip().lower(), rest.strip()
    return "other", text.strip()


async def file_notice(
    ctx: Context,
    session: AsyncSession,
    *,
    source: str,
    event_id: EventID,
    explanation: str,
    category: str = "other",
    notifier: str | None = None,
    notifier_room: RoomID | None = None,
    trusted: bool = False,
    external_id: str | None = None,
) -> Notice | None:
    """Record a notice about a published post or a comment; None when `event_id` is neither (nothing
    recorded)."""
    comments = kinds.comment()
    post = await queries.post_by_relayed(session, event_id) or await comments.post_of_root(session, event_id)
    comment = None
    if post is not None and post.relayed_event_id is not None:
        channel = await session.get(Channel, post.channel_id)
        room_id = channel.broadcast_room_id if channel else None
        event_id = EventID(post.relayed_event_id)
    elif (comment := await comments.find(ctx, session, event_id)) is not None:
        channel = comment.channel
        room_id = comment.room.room_id
        event_id = comment.event.event_id
    else:
        return None
    notice = Notice(
        source=source,
        external_id=external_id,
        channel_id=channel.id if channel else None,
        room_id=room_id,
        event_id=event_id,
        category=category if category in CATEGORIES else "other",
        explanation=explanation[:MAX_EXPLANATION],
        notifier=notifier,
        notifier_room=notifier_room,
        trusted=trusted,
    )
    session.add(notice)
    await session.flush()
    if notice.received_at is None:
        notice.received_at = datetime.now(UTC)
    await audit.append(
        session,
        "notice",
        {
            "notice": notice.id,
            "source": source,
            "channel": channel.handle if channel else None,
            "event": event_id,
            "category": notice.category,
            "trusted": trusted,
            "about": "post" if comment is None else "comment",
        },
        {"notifier": notifier, "explanation": notice.explanation},
        config=ctx.config,
    )
    if comment is None:
        await tell_moderators(
            ctx,
            session,
            "mod_notice_trusted" if trusted else "mod_notice",
            notice=notice.id,
            source=source,
            event=event_id,
            handle=channel.handle if channel else "?",
            category=notice.category,
            explanation=notice.explanation[:500],
        )
    else:
        await tell_moderators(
            ctx,
            session,
            "mod_comment_notice_trusted" if trusted else "mod_comment_notice",
            notice=notice.id,
            source=source,
            author=comment.event.sender,
            link=comments.url(comment.room.room_id, event_id, ctx.domain),
            handle=comment.channel.handle,
            category=notice.category,
            explanation=notice.explanation[:500],
        )
    return notice


async def may_appeal(session: AsyncSession, decision: Decision, user_id: UserID) -> bool:
    """The channel's owner, editors and moderators, the notifier, and a refused requester may appeal a decision."""
    target = decision.target or ""
    if decision.kind == DecisionKind.REJECT_REQUEST and target.startswith("request:"):
        request = await session.get(ChannelRequest, int(target.split(":", 1)[1]))
        return request is not None and request.user_id == user_id
    if decision.kind == DecisionKind.REMOVE_COMMENT:
        return await kinds.comment().may_appeal(session, EventID(target), user_id)
    if decision.notice_id is not None:
        notice = await session.get(Notice, decision.notice_id)
        if notice is not None and notice.notifier == user_id:
            return True
    if decision.channel_id is None:
        return False
    member = await session.scalar(
        select(ChannelMember.role).where(
            ChannelMember.channel_id == decision.channel_id, ChannelMember.user_id == user_id
        )
    )
    return member is not None


async def file_appeal(
    ctx: Context, session: AsyncSession, decision: Decision, appellant: str, room_id: str, text: str
) -> Appeal:
    appeal = Appeal(
        decision_id=decision.id, appellant=appellant, appellant_room=room_id, text=text[:MAX_EXPLANATION]
    )
    session.add(appeal)
    await session.flush()
    await audit.append(
        session,
        "appeal",
        {"appeal": appeal.id, "decision": decision.id, "kind": decision.kind},
        {"appellant": appellant, "text": appeal.text},
        config=ctx.config,
    )
    await tell_moderators(
        ctx,
        session,
        "mod_appeal",
        appeal=appeal.id,
        decision=decision.id,
        kind=decision.kind,
        appellant=appellant,
        text=appeal.text[:500],
    )
    return appeal


def appeal_deadline(ctx: Context, decision: Decision) -> datetime:
    created = decision.created_at if decision.created_at.tzinfo else decision.created_at.replace(tzinfo=UTC)
    return created + timedelta(days=ctx.config.compliance.appeal_window_days)


# -- trusted flaggers over HTTP --------------------------------------------------------------------


def new_flagger_token() -> str:
    return FLAGGER_TOKEN_PREFIX + secrets.token_urlsafe(24)


def _error(status: int, errcode: str, message: str) -> web.Response:
    return web.json_response({"errcode": errcode, "error": message}, status=status)


def flagger_routes(app: web.Application, ctx: Context) -> None:
    """`POST /_kanal/flagger/v1/notices` with `Authorization: Bearer <flagger token>`."""

    async def submit(request: web.Request) -> web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _error(401, "M_MISSING_TOKEN", "A flagger token is required (Authorization: Bearer …)")
        async with ctx.sessions() as session:
            flagger = await session.scalar(
                select(Flagger).where(Flagger.token_hash == hash_token(token), Flagger.revoked.is_(False))
            )
        if flagger is None:
            return _error(403, "M_FORBIDDEN", "Unknown or revoked flagger token")
        try:
            data = await request.json()
        except ValueError:
            return _error(400, "M_NOT_JSON", "The body must be JSON")
        if not isinstance(data, dict):
            return _error(400, "M_BAD_JSON", "The body must be a JSON object")
        location = data.get("event_id") or data.get("url")
        explanation = data.get("explanation")
        category = data.get("category", "other")
        if not isinstance(location, str) or not isinstance(explanation, str) or not explanation.strip():
            return _error(400, "M_BAD_JSON", "Give 'event_id' (or 'url') and a non-empty 'explanation'")
        if not isinstance(category, str) or category not in CATEGORIES:
            return _error(400, "M_BAD_JSON", f"'category' must be one of {', '.join(CATEGORIES)}")
        event_id = event_id_in(location)
        if event_id is None:
            return _error(400, "M_BAD_JSON", "No event id in 'event_id'/'url'")
        async with ctx.sessions.begin() as session:
            notice = await file_notice(
                ctx,
                session,
                source="flagger",
                event_id=event_id,
                explanation=explanation,
                category=category,
                notifier=flagger.name,
                trusted=True,
            )
        if notice is None:
            return _error(
                404, "M_NOT_FOUND", "That is neither a post of a public channel here nor a comment on one"
            )
        ctx.outbox.wake()
        return web.json_response(
            {"notice_id": notice.id, "received_at": notice.received_at.isoformat(), "status": "received"},
            status=202,
        )

    app.router.add_post("/_kanal/flagger/v1/notices", submit)


# -- the homeserver's own reports (Element's "Report" button) --------------------------------------


async def poll_homeserver_reports(ctx: Context, token: str, start: int = 0) -> tuple[int, int]:
    """Read Synapse's event reports from `start` on; file those about channel posts and comments.
    (next start, filed)."""
    filed = 0
    offset = start
    while True:
        data: dict[str, Any] = await ctx.client.request(
            "GET",
            "/_synapse/admin/v1/event_reports",
            query={"from": str(offset), "limit": "100", "dir": "f"},
            token=token,
        )
        reports = data.get("event_reports", [])
        for report in reports:
            event_id = report.get("event_id")
            if not isinstance(event_id, str):
                continue
            external = f"homeserver:{report.get('id')}"
            async with ctx.sessions.begin() as session:
                if await session.scalar(select(Notice.id).where(Notice.external_id == external)) is not None:
                    continue
                reason = report.get("reason")
                category, text = split_category(reason if isinstance(reason, str) else "")
                reporter = report.get("user_id") if isinstance(report.get("user_id"), str) else None
                # The reporter hears back in their chat with the bot, when they have one.
                their_room = await queries.management_room_of(session, reporter) if reporter else None
                notice = await file_notice(
                    ctx,
                    session,
                    source="homeserver",
                    event_id=EventID(event_id),
                    explanation=text or "(no reason given)",
                    category=category,
                    notifier=reporter,
                    notifier_room=their_room,
                    external_id=external,
                )
                if notice is not None and their_room is not None and reporter is not None:
                    room = await session.get(Room, their_room)
                    reply(
                        session,
                        ctx,
                        their_room,
                        await language_for(session, ctx, reporter, room=room),
                        "report_received",
                        id=notice.id,
                    )
                filed += notice is not None
        offset += len(reports)
        if not reports or "next_token" not in data:
            return offset, filed


async def run_report_poller(ctx: Context, leases: Any, stopping: asyncio.Event) -> None:
    path = ctx.config.compliance.homeserver_admin_token_file
    if path is None:
        return
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        log.error(
            "Cannot read compliance.homeserver_admin_token_file %s: %s; not polling reports",
            path,
            exc.strerror,
        )
        return
    offset = 0
    while not stopping.is_set():
        if await leases.hold("reports"):
            try:
                offset, filed = await poll_homeserver_reports(ctx, token, offset)
                if filed:
                    log.info("Filed %d notice(s) from the homeserver's event reports", filed)
                    ctx.outbox.wake()
            except (MatrixConnectionError, MatrixRequestError) as exc:
                log.warning("Could not read the homeserver's event reports (%s)", exc)
        try:
            await asyncio.wait_for(stopping.wait(), ctx.config.compliance.report_poll_seconds)
        except TimeoutError:
            pass
