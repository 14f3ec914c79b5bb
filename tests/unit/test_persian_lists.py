"""Lists and dates the bot builds in code, answered in Persian: every number in Persian digits, every word
from the catalogues (the operators' `tokens` and `requests`, the moderators' `held` and `notices`, the
end of a `restrict`). Run on a migrated SQLite database; the reply is read from the outbox."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from appservice.events import parse_event
from bridge.channels import operators  # noqa: F401  (registers the operators' commands)
from bridge.moderation.room import Refused  # (importing it registers the moderators' commands)
from bridge.runtime.context import Context
from bridge.runtime.dispatch import CommandCall, dispatch
from bridge.store.models import (
    Channel,
    ChannelRequest,
    ChannelStatus,
    HeldPost,
    Notice,
    OutboxEntry,
    RegistrationToken,
    Room,
    RoomKind,
)
from bridge.text.commands import parse_command

DOMAIN = "example.org"
STAFF = f"@staff:{DOMAIN}"
ROOM_ID = f"!staff:{DOMAIN}"
ASCII_DIGIT = re.compile(r"[0-9]")


async def answer(ctx: Context, kind: RoomKind, text: str, lang: str = "fa") -> str:
    """Run `text` as a staff member's command in a room of `kind`; the bot's reply."""
    command = parse_command(text, require_bang=False)
    assert command is not None
    event = parse_event(
        {
            "type": "m.room.message",
            "event_id": "$e",
            "room_id": ROOM_ID,
            "sender": STAFF,
            "origin_server_ts": 0,
            "content": {"msgtype": "m.text", "body": text},
        }
    )
    room = Room(room_id=ROOM_ID, kind=kind)
    async with ctx.sessions() as session, session.begin():
        call = CommandCall(ctx, session, room, event, command, lang)
        try:
            await dispatch(call, kind)
        except Refused as exc:
            call.refuse(exc.refusal)
    async with ctx.sessions() as session:
        entries = (await session.scalars(select(OutboxEntry).order_by(OutboxEntry.id))).all()
        replies = [e for e in entries if e.payload.get("room_id") == ROOM_ID and "content" in e.payload]
        assert replies, [e.payload for e in entries]
        body: str = replies[-1].payload["content"]["body"]
        for entry in entries:
            await session.delete(entry)
        await session.commit()
        return body


async def a_channel(ctx: Context) -> int:
    async with ctx.sessions() as session, session.begin():
        channel = Channel(
            handle="news",
            title="News",
            owner=f"@owner:{DOMAIN}",
            ghost_user_id=f"@kanal_news:{DOMAIN}",
            status=ChannelStatus.ACTIVE,
        )
        session.add(channel)
        await session.flush()
        return channel.id


async def test_the_operators_tokens_list_is_persian_with_persian_digits(ctx: Context) -> None:
    expires = datetime(2027, 3, 14, 9, 30, tzinfo=UTC)
    async with ctx.sessions() as session, session.begin():
        for n in range(12):
            session.add(
                RegistrationToken(
                    token_hash=f"hash{n}",
                    hint="abcdef",
                    label="",
                    uses_allowed=5 if n == 11 else None,
                    uses=2,
                    expires_at=expires if n == 11 else None,
                    revoked=n == 10,
                    created_by=STAFF,
                )
            )

    listed = await answer(ctx, RoomKind.OPERATOR, "tokens")

    assert not ASCII_DIGIT.search(listed), listed
    last = listed.splitlines()[-1]
    assert last.startswith("#۱۲ kanal_rt_abcdef…") and "۲/۵" in last and "۲۰۲۷-۰۳-۱۴ ۰۹:۳۰" in last
    assert "معتبر" in last and "باطل‌شده" in listed.splitlines()[-2] and "هرگز" in listed
    for english in ("uses", "expires", "never", "valid", "revoked"):
        assert english not in listed
    # The command line and the operators' English are unchanged.
    english = await answer(ctx, RoomKind.OPERATOR, "tokens", lang="en")
    assert english.splitlines()[-1] == "#12 kanal_rt_abcdef… — uses 2/5, expires 2027-03-14 09:30 UTC, valid"


async def test_the_operators_requests_list_has_persian_digits(ctx: Context) -> None:
    async with ctx.sessions() as session, session.begin():
        for _ in range(12):
            session.add(ChannelRequest(user_id=STAFF, room_id=ROOM_ID, handle="news", title="News"))

    listed = await answer(ctx, RoomKind.OPERATOR, "requests")

    assert not ASCII_DIGIT.search(listed), listed
    assert "#۱۲ " in listed


async def test_held_posts_and_notices_are_numbered_in_persian_digits(ctx: Context) -> None:
    channel = await a_channel(ctx)
    async with ctx.sessions() as session, session.begin():
        for n in range(12):
            verdict = {"hook": "terms", "action": "hold", "reason": "a listed word"}
            session.add(
                HeldPost(channel_id=channel, source_event_id=f"$held{n}", author=STAFF, event={}, verdicts=[verdict])
            )
            session.add(Notice(source="command", channel_id=channel, event_id="$post", explanation="spam"))

    held = await answer(ctx, RoomKind.MODERATION, "held")
    notices = await answer(ctx, RoomKind.MODERATION, "notices")

    assert not ASCII_DIGIT.search(held), held
    assert not ASCII_DIGIT.search(notices), notices
    assert held.splitlines()[-1].startswith("h۱۲ #news ")
    assert notices.splitlines()[-1].startswith("n۱۲ [command] #news ")
    # The numbers typed back in Persian digits name the same post.
    refused = await answer(ctx, RoomKind.MODERATION, "approve h۹۹")
    assert "h۹۹" in refused


async def test_a_restriction_ends_at_a_time_in_persian_digits(ctx: Context) -> None:
    await a_channel(ctx)

    answered = await answer(ctx, RoomKind.MODERATION, "restrict news 2d terms:4.2 spam")

    assert not ASCII_DIGIT.search(answered), answered
    until = datetime.now(UTC) + timedelta(days=2)
    assert until.strftime("%Y-%m-%d").translate(str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")) in answered
