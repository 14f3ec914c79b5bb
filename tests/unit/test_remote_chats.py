"""Users of other servers in a chat with the bot, on a migrated SQLite database (nothing is sent):
who may open one (the hosting policy and policy-list server bans, as every channel room's server ACL
says) and which commands they may use there (a reader's: REMOTE_COMMANDS)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from sqlalchemy import select

from appservice.events import Event, parse_event
from bridge.channels.management import REMOTE_COMMANDS, on_management_message
from bridge.runtime.context import Context
from bridge.runtime.dispatch import names
from bridge.runtime.outbox import OutboxKind
from bridge.service import Bridge
from bridge.store.leases import Leases
from bridge.store.models import OutboxEntry, PolicyRule, Room, RoomKind
from bridge.text.i18n import t

DOMAIN = "example.org"
LOCAL = f"@alice:{DOMAIN}"
REMOTE = "@far:partner.example"
ROOM_ID = f"!chat:{DOMAIN}"
LOCAL_ONLY = t("en", "local_only", domain=DOMAIN)
REFUSED = f"Only users of {DOMAIN} and the servers it federates with can chat with me here."


def message(sender: str, text: str) -> Event:
    return parse_event(
        {
            "type": "m.room.message",
            "event_id": "$command",
            "room_id": ROOM_ID,
            "sender": sender,
            "origin_server_ts": 0,
            "content": {"msgtype": "m.text", "body": text},
        }
    )


def invite(sender: str, *, direct: bool = True) -> Event:
    return parse_event(
        {
            "type": "m.room.member",
            "event_id": "$invite",
            "room_id": ROOM_ID,
            "sender": sender,
            "state_key": f"@kanal:{DOMAIN}",
            "origin_server_ts": 0,
            "content": {"membership": "invite", "is_direct": direct},
        }
    )


async def taken(ctx: Context) -> list[OutboxEntry]:
    """What the bot queued, oldest first (and the queue emptied for the next step)."""
    async with ctx.sessions() as session, session.begin():
        entries = list((await session.scalars(select(OutboxEntry).order_by(OutboxEntry.id))).all())
        for entry in entries:
            await session.delete(entry)
    return entries


async def answers(ctx: Context, sender: str, text: str) -> list[str]:
    """The bot's replies when `sender` writes `text` in their chat with it."""
    room = Room(room_id=ROOM_ID, kind=RoomKind.MANAGEMENT, user_id=sender, language=None)
    async with ctx.sessions() as session, session.begin():
        await on_management_message(ctx, session, room, message(sender, text))
    return [str(e.payload["content"]["body"]) for e in await taken(ctx) if e.kind == OutboxKind.SEND]


def policy(ctx: Context, federation: str, *allowed: str) -> None:
    ctx.config = dataclasses.replace(ctx.config, federation=federation, allowed_servers=allowed)


# -- which commands -------------------------------------------------------------------------------------


def test_the_readers_commands_are_management_commands() -> None:
    assert REMOTE_COMMANDS <= set(names(RoomKind.MANAGEMENT))


@pytest.mark.parametrize("name", sorted(names(RoomKind.MANAGEMENT)))
async def test_a_remote_user_gets_a_readers_commands_only(ctx: Context, name: str) -> None:
    replies = await answers(ctx, REMOTE, name)
    if name in REMOTE_COMMANDS:
        assert LOCAL_ONLY not in replies, replies
    else:
        assert replies == [LOCAL_ONLY], replies


async def test_the_gate_knows_commands_by_their_persian_words_too(ctx: Context) -> None:
    assert await answers(ctx, REMOTE, "ساخت mychannel Mine") == [t("fa", "local_only", domain=DOMAIN)]
    assert await answers(ctx, REMOTE, "راهنما") == [t("fa", "help", domain=DOMAIN)]


async def test_a_local_user_is_not_stopped_at_the_gate(ctx: Context) -> None:
    assert LOCAL_ONLY not in await answers(ctx, LOCAL, "create")
    assert await answers(ctx, LOCAL, "create") == await answers(ctx, f"@bob:{DOMAIN}", "create")


async def test_remote_readers_commands_answer_as_for_anyone(ctx: Context) -> None:
    assert await answers(ctx, REMOTE, "appeal") == [t("en", "appeal_usage", domain=DOMAIN)]
    (chosen,) = await answers(ctx, REMOTE, "language fa")
    assert chosen.startswith("از این پس") and t("fa", "language_name") in chosen, chosen
    assert await answers(ctx, REMOTE, "appeal") == [t("fa", "appeal_usage", domain=DOMAIN)]
    assert await answers(ctx, REMOTE, "create x") == [t("fa", "local_only", domain=DOMAIN)]


# -- who may open a chat --------------------------------------------------------------------------------


async def invited(ctx: Context, sender: str, *, direct: bool = True) -> tuple[OutboxEntry, Room | None]:
    """What the bot does when `sender` invites it to a chat: its one queued entry, and the chat's row."""
    bridge = Bridge(ctx, Leases(ctx.sessions, "test"))
    async with ctx.sessions() as session, session.begin():
        await bridge._on_bot_invite(session, invite(sender, direct=direct))
    (entry,) = await taken(ctx)
    async with ctx.sessions() as session, session.begin():
        room = await session.get(Room, ROOM_ID)
        if room is not None:
            await session.delete(room)
    return entry, room


async def welcomed(ctx: Context, sender: str) -> bool:
    entry, room = await invited(ctx, sender)
    if entry.kind == OutboxKind.JOIN_CHAT:
        assert room is not None and room.kind == RoomKind.MANAGEMENT and room.user_id == sender
        return True
    assert entry.kind == OutboxKind.LEAVE and room is None, (entry.kind, room)
    reason: Any = entry.payload["reason"]
    assert reason == REFUSED, reason
    return False


async def test_open_welcomes_every_server(ctx: Context) -> None:
    assert await welcomed(ctx, LOCAL)
    assert await welcomed(ctx, REMOTE)
    assert await welcomed(ctx, "@someone:anywhere.example:8448")


async def test_allowlist_welcomes_the_listed_servers_by_host_and_refuses_the_rest(ctx: Context) -> None:
    policy(ctx, "allowlist", "partner.example", "*.gov.example")
    assert await welcomed(ctx, LOCAL)
    assert await welcomed(ctx, REMOTE)
    assert await welcomed(ctx, "@far:partner.example:8448")  # as the server ACL: the port is not matched
    assert await welcomed(ctx, "@clerk:tax.gov.example")
    assert not await welcomed(ctx, "@far:elsewhere.example")
    assert not await welcomed(ctx, "@far:gov.example")  # `*.gov.example` names its subdomains only


async def test_closed_welcomes_only_the_servers_own_users(ctx: Context) -> None:
    policy(ctx, "closed")
    assert await welcomed(ctx, LOCAL)
    assert not await welcomed(ctx, REMOTE)


async def test_a_policy_list_server_ban_refuses_that_servers_users(ctx: Context) -> None:
    async with ctx.sessions() as session, session.begin():
        session.add(
            PolicyRule(
                room_id="!list:example.org",
                event_type="m.policy.rule.server",
                state_key="r1",
                entity="partner.example",
                recommendation="m.ban",
            )
        )
    assert not await welcomed(ctx, REMOTE)
    assert await welcomed(ctx, "@far:other.example")
    assert await welcomed(ctx, LOCAL)


async def test_a_welcome_server_must_still_invite_to_a_direct_chat(ctx: Context) -> None:
    entry, room = await invited(ctx, REMOTE, direct=False)
    assert entry.kind == OutboxKind.LEAVE and room is None
    assert entry.payload["reason"] == "Invite me to a direct chat to manage channels."
