"""Which language the bot answers in, and `language en|fa|auto`, on a migrated SQLite database."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from appservice.events import parse_event
from bridge.runtime.context import Context
from bridge.runtime.dispatch import CommandCall
from bridge.runtime.languages import chosen_language, language_command, language_for
from bridge.store.models import OutboxEntry, Room, UserSetting
from bridge.text.commands import parse_command

DOMAIN = "example.org"
ALICE = f"@alice:{DOMAIN}"
ROOM_ID = f"!dm:{DOMAIN}"


def room(language: str | None = None) -> Room:
    return Room(room_id=ROOM_ID, kind="management", user_id=ALICE, language=language)


async def send_language(ctx: Context, text: str) -> str:
    """Run `text` as Alice's command; the bot's reply."""
    command = parse_command(text, require_bang=False)
    assert command is not None
    event = parse_event(
        {
            "type": "m.room.message",
            "event_id": "$e",
            "room_id": ROOM_ID,
            "sender": ALICE,
            "origin_server_ts": 0,
            "content": {"msgtype": "m.text", "body": text},
        }
    )
    async with ctx.sessions() as session, session.begin():
        lang = await language_for(session, ctx, ALICE, text, room())
        await language_command(CommandCall(ctx, session, room(), event, command, lang))
    async with ctx.sessions() as session:
        entry = await session.scalar(select(OutboxEntry).order_by(OutboxEntry.id.desc()))
        assert entry is not None
        payload: dict[str, Any] = entry.payload
        body: str = payload["content"]["body"]
        await session.delete(entry)
        await session.commit()
        return body


@pytest.mark.parametrize(
    ("text", "room_language", "expected"),
    [
        ("help", None, "en"),
        ("help", "fa", "fa"),
        ("راهنما", None, "fa"),
        ("راهنما", "en", "fa"),
    ],
)
async def test_without_a_choice_the_script_then_the_room_then_the_default_decide(
    ctx: Context, text: str, room_language: str | None, expected: str
) -> None:
    async with ctx.sessions() as session:
        assert await language_for(session, ctx, ALICE, text, room(room_language)) == expected


@pytest.mark.parametrize("chosen", ["en", "fa"])
@pytest.mark.parametrize(("text", "room_language"), [("help", None), ("راهنما", "fa"), ("", "en")])
async def test_a_choice_beats_everything_else(
    ctx: Context, chosen: str, text: str, room_language: str | None
) -> None:
    async with ctx.sessions() as session, session.begin():
        session.add(UserSetting(user_id=ALICE, language=chosen))
    async with ctx.sessions() as session:
        assert await language_for(session, ctx, ALICE, text, room(room_language)) == chosen


async def test_a_language_kanal_no_longer_has_is_ignored(ctx: Context) -> None:
    async with ctx.sessions() as session, session.begin():
        session.add(UserSetting(user_id=ALICE, language="de"))
    async with ctx.sessions() as session:
        assert await chosen_language(session, ALICE) is None
        assert await language_for(session, ctx, ALICE, "help") == "en"


async def test_the_command_sets_shows_and_forgets_the_choice(ctx: Context) -> None:
    assert "You have not chosen a language" in await send_language(ctx, "language")

    assert "از این پس" in await send_language(ctx, "language fa")
    async with ctx.sessions() as session:
        assert await chosen_language(session, ALICE) == "fa"
    assert "فارسی" in await send_language(ctx, "language")

    assert "From now on I reply to you in English" in await send_language(ctx, "language EN")
    assert "I reply to you in English, as you chose" in await send_language(ctx, "language")

    assert "Language choice removed" in await send_language(ctx, "language auto")
    async with ctx.sessions() as session:
        assert await chosen_language(session, ALICE) is None


async def test_an_unknown_language_is_refused_with_the_choices(ctx: Context) -> None:
    reply = await send_language(ctx, "language de")

    assert "“de”" in reply
    assert "en (English), fa (فارسی)" in reply
    async with ctx.sessions() as session:
        assert await chosen_language(session, ALICE) is None
