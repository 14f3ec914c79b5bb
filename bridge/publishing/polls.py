"""`!poll results` in backstage: the votes of a published poll, counted as the web pages count them.

!poll results  (as a reply to a poll in backstage, or alone: the channel's latest poll)
    ─▶ its copy in each of the channel's rooms ─▶ /relations m.reference, as the bot (all added up)
    ─▶ tally_poll: each voter's latest response, none after the poll's end ─▶ one notice
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from appservice.errors import MatrixConnectionError, MatrixRequestError
from appservice.ids import RoomID
from bridge.matrix.polls import PollTally, parse_poll, tally_poll
from bridge.matrix.relations import related_events_in
from bridge.matrix.relay import POLL_START_TYPES
from bridge.runtime.context import Context, reply
from bridge.runtime.dispatch import CommandCall, command
from bridge.store import queries
from bridge.store.models import Channel, Post, RoomKind
from bridge.text.i18n import t

POLL_RELATIONS_PAGES: Final = 20  # the newest 2,000 relations count, as on the web pages


async def poll_tally(
    ctx: Context, channel: Channel, post: Post, copies: Mapping[RoomID, str]
) -> PollTally | None:
    """The votes of a published poll post in all the channel's rooms (`copies`: the post's event in
    each; None: not a poll, or not published yet)."""
    poll = parse_poll(post.event_type, post.content or {})
    if poll is None or not copies:
        return None
    events, _ = await related_events_in(
        ctx.client, ctx.bot, copies, "m.reference", pages=POLL_RELATIONS_PAGES
    )
    return tally_poll(poll.answer_ids, poll.max_selections, channel.ghost_user_id, events)


async def _poll_post(session: AsyncSession, channel: Channel, source: str | None) -> Post | None:
    query = select(Post).where(
        Post.channel_id == channel.id, Post.redacted.is_(False), Post.event_type.in_(POLL_START_TYPES)
    )
    if source is not None:
        query = query.where(Post.source_event_id == source)
    return await session.scalar(query.order_by(Post.id.desc()).limit(1))


@command(RoomKind.BACKSTAGE, "poll", permission="polls")
async def poll_command(call: CommandCall) -> None:
    """`!poll results`: the tally of the poll replied to, or of the channel's latest poll."""
    ctx, session, room, channel, event = call.ctx, call.session, call.room, call.backstage_channel, call.event
    command, lang = call.command, call.lang
    if (command.arg(0) or "").lower() != "results":
        reply(session, ctx, room.room_id, lang, "poll_usage")
        return
    post = await _poll_post(session, channel, event.reply_to)
    if post is None:
        reply(session, ctx, room.room_id, lang, "poll_not_found" if event.reply_to else "poll_none")
        return
    poll = parse_poll(post.event_type, post.content or {})
    if poll is None or post.relayed_event_id is None:
        reply(session, ctx, room.room_id, lang, "poll_not_published")
        return
    try:
        tally = await poll_tally(ctx, channel, post, await queries.copies_of(session, post.id))
    except (MatrixRequestError, MatrixConnectionError):
        reply(session, ctx, room.room_id, lang, "poll_results_unavailable")
        return
    if tally is None:
        reply(session, ctx, room.room_id, lang, "poll_not_published")
        return
    counts = dict(tally.counts)
    lines = []
    for answer in poll.answers:
        count = counts.get(answer.id, 0) if answer.id is not None else 0
        percent = round(100 * count / tally.voters) if tally.voters else 0
        lines.append(t(lang, "poll_results_answer", answer=answer.text, count=count, percent=percent))
    reply(
        session,
        ctx,
        room.room_id,
        lang,
        "poll_results",
        question=poll.question,
        answers="\n".join(lines),
        voters=tally.voters,
        state=t(lang, "poll_ended" if tally.ended else "poll_open"),
    )
