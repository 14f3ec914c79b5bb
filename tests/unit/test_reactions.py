"""The reactions policy: which keys an allow list lets through, what `!reactions` asks for, and what is queued.

The last tests run `reactions_command` and `screen_reactions` on a migrated SQLite database and read
the outbox back, as the outbox worker would find it; nothing is sent.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from appservice.events import Event
from appservice.ids import EventID, RoomID, UserID
from bridge.audience.reactions import (
    MAX_ALLOWED_REACTIONS,
    MAX_REACTION_KEY_LENGTH,
    ReactionPolicy,
    allowed,
    normalise_key,
    parse_policy,
    reactions_command,
    screen_reactions,
)
from bridge.matrix.powerlevels import broadcast_power_levels
from bridge.runtime.context import Context
from bridge.runtime.dispatch import CommandCall
from bridge.store.models import Channel, OutboxEntry, Room
from bridge.text.commands import Refusal, parse_command

DOMAIN = "example.org"
BOT = f"@kanal:{DOMAIN}"
OWNER = f"@alice:{DOMAIN}"
READER = f"@bob:{DOMAIN}"
HEART = "\u2764"  # ❤ as some keyboards send it
HEART_EMOJI = "\u2764\ufe0f"  # ❤️ as most clients send it
THUMBS = "👍"
THUMBS_MEDIUM = "👍🏽"


# -- allowed() -------------------------------------------------------------------------------------


def test_no_allow_list_allows_anything() -> None:
    assert allowed("😡", None)
    assert allowed("", None)


def test_an_empty_allow_list_allows_nothing() -> None:
    assert not allowed(THUMBS, [])


@pytest.mark.parametrize(("key", "listed"), [(HEART, HEART_EMOJI), (HEART_EMOJI, HEART), (HEART, HEART)])
def test_the_emoji_presentation_selector_does_not_matter(key: str, listed: str) -> None:
    assert allowed(key, [listed])


def test_the_text_presentation_selector_does_not_matter_either() -> None:
    assert allowed("\u2764\ufe0e", [HEART_EMOJI])


def test_skin_tones_are_distinct_reactions() -> None:
    assert not allowed(THUMBS_MEDIUM, [THUMBS])
    assert not allowed(THUMBS, [THUMBS_MEDIUM])
    assert allowed(THUMBS_MEDIUM, [THUMBS, THUMBS_MEDIUM])


def test_zwj_sequences_are_compared_whole() -> None:
    family = "👨\u200d👩\u200d👧"
    assert allowed(family, [family])
    assert not allowed("👨", [family])
    assert not allowed(family, ["👨"])


def test_text_keys_match_exactly() -> None:
    assert allowed("+1", ["+1"])
    assert not allowed("+1 ", ["+1"])
    assert not allowed("Yes", ["yes"])
    assert not allowed("yes", ["ye"])


def test_text_keys_compare_in_nfc() -> None:
    assert allowed("cafe\u0301", ["café"])


def test_other_emoji_are_refused() -> None:
    assert not allowed("😡", [THUMBS, "🔥"])
    assert allowed("🔥", [THUMBS, "🔥"])


def test_entries_that_are_not_text_are_ignored() -> None:
    assert not allowed("1", [1])  # type: ignore[list-item]


def test_normalise_key_keeps_modifiers_and_drops_selectors() -> None:
    assert normalise_key(HEART_EMOJI) == HEART
    assert normalise_key(THUMBS_MEDIUM) == THUMBS_MEDIUM


# -- parse_policy() --------------------------------------------------------------------------------


def test_on_allows_every_reaction() -> None:
    assert parse_policy(("on",)) == ReactionPolicy(enabled=True, allow=None)
    assert parse_policy(("ON",)) == ReactionPolicy(enabled=True, allow=None)


def test_off_closes_reactions() -> None:
    assert parse_policy(("off",)) == ReactionPolicy(enabled=False, allow=())


def test_only_keeps_the_keys_as_typed_in_order() -> None:
    assert parse_policy(("only", THUMBS, HEART_EMOJI, "🔥")) == ReactionPolicy(
        enabled=True, allow=(THUMBS, HEART_EMOJI, "🔥")
    )


def test_only_accepts_commas_and_persian_commas() -> None:
    assert parse_policy(("only", f"{THUMBS},{HEART_EMOJI}،🔥")) == ReactionPolicy(
        enabled=True, allow=(THUMBS, HEART_EMOJI, "🔥")
    )


def test_only_drops_repeats_including_selector_variants() -> None:
    policy = parse_policy(("only", HEART_EMOJI, THUMBS, HEART, HEART_EMOJI))
    assert policy == ReactionPolicy(enabled=True, allow=(HEART_EMOJI, THUMBS))


def test_only_keeps_skin_tones_apart() -> None:
    policy = parse_policy(("only", THUMBS, THUMBS_MEDIUM))
    assert policy == ReactionPolicy(enabled=True, allow=(THUMBS, THUMBS_MEDIUM))


@pytest.mark.parametrize(
    "args",
    [(), ("maybe",), ("only",), ("only", ","), ("only", "\ufe0f"), ("on", "please"), ("off", THUMBS)],
)
def test_anything_else_asks_for_the_usage(args: tuple[str, ...]) -> None:
    assert parse_policy(args) is None


def test_at_most_twenty_reactions() -> None:
    keys = tuple(chr(0x1F600 + i) for i in range(MAX_ALLOWED_REACTIONS + 1))

    assert MAX_ALLOWED_REACTIONS == 20
    assert parse_policy(("only", *keys[:-1])) == ReactionPolicy(enabled=True, allow=keys[:-1])
    assert parse_policy(("only", *keys)) == Refusal(
        "reactions_too_many", {"count": MAX_ALLOWED_REACTIONS + 1, "max": MAX_ALLOWED_REACTIONS}
    )


def test_repeats_do_not_count_towards_the_limit() -> None:
    keys = tuple(chr(0x1F600 + i) for i in range(MAX_ALLOWED_REACTIONS))

    policy = parse_policy(("only", *keys, *keys))

    assert isinstance(policy, ReactionPolicy) and policy.allow == keys


def test_overlong_keys_are_refused() -> None:
    refusal = parse_policy(("only", THUMBS, "x" * (MAX_REACTION_KEY_LENGTH + 1)))

    assert isinstance(refusal, Refusal) and refusal.key == "reactions_key_too_long"
    assert refusal.values == {"reaction": "x" * 16 + "…", "max": MAX_REACTION_KEY_LENGTH}
    assert isinstance(parse_policy(("only", "x" * MAX_REACTION_KEY_LENGTH)), ReactionPolicy)


# -- the command and the screen, on a real (SQLite) database ----------------------------------------


def broadcast(handle: str) -> str:
    return f"!{handle}-broadcast:{DOMAIN}"


def backstage(handle: str) -> str:
    return f"!{handle}-backstage:{DOMAIN}"


def ghost(handle: str) -> str:
    return f"@kanal_{handle}:{DOMAIN}"


async def seed_channel(ctx: Context, handle: str) -> None:
    async with ctx.sessions.begin() as session:
        channel = Channel(
            handle=handle,
            title=handle.title(),
            owner=OWNER,
            ghost_user_id=ghost(handle),
            broadcast_room_id=broadcast(handle),
            backstage_room_id=backstage(handle),
            status="active",
        )
        session.add(channel)
        await session.flush()
        session.add(Room(room_id=backstage(handle), kind="backstage", channel_id=channel.id))
        session.add(Room(room_id=broadcast(handle), kind="broadcast", channel_id=channel.id))


async def command(ctx: Context, handle: str, *args: str, lang: str = "en") -> list[OutboxEntry]:
    """Run `!reactions <args>` in the channel's backstage; what it queued."""
    async with ctx.sessions.begin() as session:
        before = set((await session.scalars(select(OutboxEntry.id))).all())
        channel = await session.scalar(select(Channel).where(Channel.handle == handle))
        room = await session.get(Room, backstage(handle))
        assert channel is not None and room is not None
        event = Event(
            event_id=EventID(f"$cmd{len(before)}"),
            room_id=RoomID(room.room_id),
            sender=UserID(OWNER),
            type="m.room.message",
            content={"msgtype": "m.text", "body": "!reactions " + " ".join(args)},
        )
        parsed = parse_command(str(event.content["body"]), require_bang=True)
        assert parsed is not None
        await reactions_command(CommandCall(ctx, session, room, event, parsed, lang, channel))
    async with ctx.sessions() as session:
        entries = (await session.scalars(select(OutboxEntry).order_by(OutboxEntry.id))).all()
    return [e for e in entries if e.id not in before]


async def policy_of(ctx: Context, handle: str) -> tuple[bool, list[Any] | None]:
    async with ctx.sessions() as session:
        channel = await session.scalar(select(Channel).where(Channel.handle == handle))
        assert channel is not None
        return channel.reactions, channel.reaction_allow


def said(entries: list[OutboxEntry]) -> str:
    bodies = [e.payload["content"]["body"] for e in entries if e.kind == "send"]
    assert len(bodies) == 1, bodies
    body: str = bodies[0]
    return body


def power_levels(entries: list[OutboxEntry]) -> dict[str, Any]:
    states = [e for e in entries if e.kind == "state"]
    assert len(states) == 1
    assert states[0].as_user == BOT and states[0].queue == f"room:{states[0].payload['room_id']}"
    assert states[0].payload["event_type"] == "m.room.power_levels"
    content: dict[str, Any] = states[0].payload["content"]
    return content


async def test_only_on_and_off_set_the_policy_and_the_power_levels(ctx: Context) -> None:
    await seed_channel(ctx, "news")

    queued = await command(ctx, "news", "only", THUMBS, "🔥")
    assert await policy_of(ctx, "news") == (True, [THUMBS, "🔥"])
    assert power_levels(queued) == broadcast_power_levels(ghost("news"), reactions=True)
    assert [e.payload["room_id"] for e in queued if e.kind == "state"] == [broadcast("news")]
    text = said(queued)
    assert f"only with {THUMBS} 🔥" in text and "best-effort" in text and "#news" in text

    queued = await command(ctx, "news", "off")
    assert await policy_of(ctx, "news") == (False, [])
    assert power_levels(queued)["events"]["m.reaction"] == 50
    assert "are off" in said(queued)

    queued = await command(ctx, "news", "on")
    assert await policy_of(ctx, "news") == (True, None)
    assert power_levels(queued)["events"]["m.reaction"] == 0
    assert "are on" in said(queued)


async def test_usage_and_refusals_change_nothing(ctx: Context) -> None:
    await seed_channel(ctx, "news")
    await command(ctx, "news", "only", THUMBS)

    queued = await command(ctx, "news")
    assert f"Now: {THUMBS}." in said(queued) and "Usage" in said(queued)
    assert [e.kind for e in queued] == ["send"]

    many = [chr(0x1F600 + i) for i in range(MAX_ALLOWED_REACTIONS + 1)]
    queued = await command(ctx, "news", "only", *many)
    assert "At most 20" in said(queued) and [e.kind for e in queued] == ["send"]
    assert await policy_of(ctx, "news") == (True, [THUMBS])
    queued = await command(ctx, "news", "only", "y" * (MAX_REACTION_KEY_LENGTH + 1))
    assert "too long for a reaction" in said(queued) and [e.kind for e in queued] == ["send"]
    assert await policy_of(ctx, "news") == (True, [THUMBS])

    await command(ctx, "news", "off")
    assert "Now: off." in said(await command(ctx, "news", "sometimes"))


async def test_replies_follow_the_language(ctx: Context) -> None:
    await seed_channel(ctx, "news")

    queued = await command(ctx, "news", "off", lang="fa")

    assert "خاموش" in said(queued)


def reaction(
    n: int, room_id: str, key: Any, *, sender: str = READER, event_type: str = "m.reaction"
) -> Event:
    relates: dict[str, Any] = {"rel_type": "m.annotation", "event_id": "$post"}
    if key is not None:
        relates["key"] = key
    return Event(
        event_id=EventID(f"$reaction{n}"),
        room_id=RoomID(room_id),
        sender=UserID(sender),
        type=event_type,
        content={"m.relates_to": relates},
    )


async def redactions(ctx: Context) -> list[OutboxEntry]:
    async with ctx.sessions() as session:
        return list(
            (
                await session.scalars(
                    select(OutboxEntry).where(OutboxEntry.kind == "redact").order_by(OutboxEntry.id)
                )
            ).all()
        )


async def test_reactions_outside_the_allow_list_are_redacted_silently(ctx: Context) -> None:
    await seed_channel(ctx, "news")
    await seed_channel(ctx, "open")
    await command(ctx, "news", "only", THUMBS, HEART_EMOJI)
    async with ctx.sessions() as session:
        sends_before = len(
            (await session.scalars(select(OutboxEntry).where(OutboxEntry.kind == "send"))).all()
        )
    room = broadcast("news")
    events = [
        reaction(1, room, THUMBS),
        reaction(2, room, "😡"),
        reaction(3, room, HEART),  # ❤ without the selector is the allowed ❤️
        reaction(4, room, THUMBS_MEDIUM),  # another skin tone is another reaction
        reaction(5, room, None),  # no key at all
        reaction(6, broadcast("open"), "😡"),  # a channel without an allow list
        reaction(7, backstage("news"), "😡"),  # not a broadcast room
        reaction(8, "!elsewhere:example.org", "😡"),  # not a channel room
        reaction(9, room, "😡", event_type="m.room.message"),  # not a reaction
        reaction(10, room, "😡", sender=ghost("news")),  # Kanal's own users are left alone
    ]

    assert await screen_reactions(ctx, events) == 3

    queued = await redactions(ctx)
    assert [e.payload["event_id"] for e in queued] == ["$reaction2", "$reaction4", "$reaction5"]
    for entry in queued:
        assert entry.as_user == BOT and entry.queue == f"room:{room}" and entry.ref_source is None
        assert entry.payload["room_id"] == room
        assert entry.payload["reason"] == f"This channel allows only these reactions: {THUMBS} {HEART_EMOJI}"
    async with ctx.sessions() as session:
        sends_after = len(
            (await session.scalars(select(OutboxEntry).where(OutboxEntry.kind == "send"))).all()
        )
    assert sends_after == sends_before  # nobody is told


async def test_a_policy_change_applies_to_the_next_transaction(ctx: Context) -> None:
    await seed_channel(ctx, "news")
    room = broadcast("news")
    assert await screen_reactions(ctx, [reaction(1, room, "😡")]) == 0

    await command(ctx, "news", "only", "🔥")
    assert await screen_reactions(ctx, [reaction(2, room, "😡")]) == 1

    await command(ctx, "news", "off")
    assert await screen_reactions(ctx, [reaction(3, room, "🔥")]) == 1
    assert (await redactions(ctx))[-1].payload["reason"] == "Reactions are off in this channel."

    await command(ctx, "news", "on")
    assert await screen_reactions(ctx, [reaction(4, room, "😡")]) == 0


async def test_nothing_to_screen_asks_nothing(ctx: Context) -> None:
    assert await screen_reactions(ctx, []) == 0
    assert await screen_reactions(ctx, [reaction(1, "!x:example.org", "😡", event_type="m.sticker")]) == 0
