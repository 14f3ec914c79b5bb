"""The channel photo, as an editor sets it in a Matrix client and readers see it (real Synapse, nio).

`!avatar` as a reply to an image in backstage makes it the avatar of every room of the channel (two
rooms here: `channels.shard_size: 2`, and the discussion room), the ghost's profile picture and the
web page's image.
"""

from __future__ import annotations

import asyncio
import io
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import nio
import pytest
import yaml

from tests.support import Channel, Env, User, create_channel, reconfigured

pytestmark = pytest.mark.integration

TIMEOUT = 30.0
PNG = b"\x89PNG\r\n\x1a\n" + b"kanal channel photo" * 4


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"{what} did not happen within {timeout} s")


async def upload(user: User, data: bytes, mime: str = "image/png", name: str = "photo.png") -> str:
    response, _keys = await user.client.upload(
        io.BytesIO(data), content_type=mime, filename=name, filesize=len(data)
    )
    assert isinstance(response, nio.UploadResponse), response
    return str(response.content_uri)


def reply_to(event_id: str, body: str) -> dict[str, Any]:
    return {"msgtype": "m.text", "body": body, "m.relates_to": {"m.in_reply_to": {"event_id": event_id}}}


async def ask_in_reply(user: User, room: str, event_id: str, body: str, expect: str) -> str:
    """Reply `body` to `event_id` and wait for the bot's answer containing `expect`."""
    before = {e["event_id"] for e in await user.messages(room)}
    await user.send(room, reply_to(event_id, body))
    answer = await user.wait_for(
        room,
        lambda e: e["event_id"] not in before
        and e.get("sender") == user.env.bot
        and expect in e.get("content", {}).get("body", ""),
    )
    return str(answer["content"]["body"])


async def room_avatar(user: User, room_id: str) -> dict[str, Any]:
    response = await user.client.room_get_state_event(room_id, "m.room.avatar")
    if isinstance(response, nio.RoomGetStateEventError):
        return {}
    content: dict[str, Any] = response.content
    return content


async def profile_avatar(user: User, user_id: str) -> str | None:
    """The profile picture of `user_id`, as a client reads it (None: none)."""
    url = f"{user.env.homeserver}/_matrix/client/v3/profile/{quote(user_id)}"
    headers = {"Authorization": f"Bearer {user.client.access_token}"}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as response:
        assert response.status == 200, await response.text()
        avatar = (await response.json()).get("avatar_url")
    return str(avatar) if avatar else None


def web_base(env: Env) -> str:
    config = yaml.safe_load(env.kanal.config_path.read_text())
    return f"http://{config['web']['listen']}"


async def get(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.read()


def media_path(mxc: str) -> str:
    server, media_id = mxc.removeprefix("mxc://").split("/", 1)
    return f"/media/{server}/{media_id}"


async def editor_of(env: Env, owner: User, channel: Channel) -> User:
    editor = await env.user("editor")
    await owner.ask(channel.management, f"promote {channel.handle} {editor.user_id} editor", "is now editor of")
    await editor.join(await editor.wait_invite(lambda rid, _room: rid == channel.backstage))
    return editor


@pytest.fixture
async def two_readers_a_room(env: Env) -> AsyncIterator[None]:
    def two(config: dict[str, Any]) -> None:
        config.setdefault("channels", {})["shard_size"] = 2

    async with reconfigured(env, two):
        yield


async def test_an_editor_sets_the_photo_of_every_room_the_ghost_and_the_web_page(
    env: Env, two_readers_a_room: None
) -> None:
    owner = await env.user("owner")
    channel = await create_channel(env, owner, env.handle("photo"), "Photo Desk")
    editor = await editor_of(env, owner, channel)
    ghost = f"@{env.ghost_prefix}{channel.handle}:{env.domain}"
    page = f"{web_base(env)}/c/{channel.handle}"
    _, before = await get(page)
    assert b'class="avatar' in before and b'<img class="avatar"' not in before  # the letter

    # The image is kept as a draft (not published), then made the photo.
    await editor.ask(channel.backstage, "!draft on", "Draft mode is on")
    first = await upload(editor, PNG)
    image = await editor.send(channel.backstage, {"msgtype": "m.image", "body": "photo.png", "url": first})
    await ask_in_reply(editor, channel.backstage, image, "!avatar", "The photo of")

    async def rooms_show(mxc: str, rooms: list[str]) -> bool:
        return all([(await room_avatar(owner, room)).get("url") == mxc for room in rooms])

    await eventually(lambda: rooms_show(first, [channel.broadcast, channel.backstage]), "the room avatars")
    await eventually(lambda: _equal(profile_avatar(owner, ghost), first), "the ghost's profile picture")

    # The discussion room (#<handle>_comments), made after the photo was set, starts with it.
    ready = await owner.ask(channel.backstage, "!comments on", "is ready:", timeout=TIMEOUT)
    found = re.search(r"\((![^)\s]+)\)", ready)
    assert found is not None, ready
    discussion = found.group(1)
    assert await owner.join(f"#{channel.handle}_comments:{env.domain}") == discussion
    await eventually(lambda: rooms_show(first, [discussion]), "the photo in the discussion room")

    # Two readers fill the first room: the second room opens with the photo.
    alias = f"#{channel.handle}:{env.domain}"
    for n in range(2):
        await (await env.user(f"reader{n}")).join(alias)

    async def second_room() -> bool:
        response = await owner.client.room_resolve_alias(alias)
        return isinstance(response, nio.RoomResolveAliasResponse) and response.room_id != channel.broadcast

    await eventually(second_room, "a second room")
    resolved = await owner.client.room_resolve_alias(alias)
    assert isinstance(resolved, nio.RoomResolveAliasResponse)
    public_rooms = [channel.broadcast, str(resolved.room_id)]
    await eventually(lambda: rooms_show(first, public_rooms), "the photo in the new room")
    rooms = [*public_rooms, discussion]

    # A new photo reaches both public rooms, the discussion room, the ghost and the page.
    second = await upload(editor, PNG + b"second", name="second.png")
    image = await editor.send(channel.backstage, {"msgtype": "m.image", "body": "second.png", "url": second})
    await ask_in_reply(editor, channel.backstage, image, "!avatar", "The photo of")
    await eventually(lambda: rooms_show(second, rooms), "the new photo in every room")
    await eventually(lambda: _equal(profile_avatar(owner, ghost), second), "the ghost's new picture")
    status, html = await get(page)
    assert status == 200 and f'<img class="avatar" src="{media_path(second)}"'.encode() in html
    assert await get(f"{web_base(env)}{media_path(second)}") == (200, PNG + b"second")
    assert (await get(f"{web_base(env)}{media_path(first)}"))[0] == 404  # the old photo is closed
    published = [
        e.get("content", {}).get("url")
        for e in await owner.all_messages(channel.broadcast)
        if e["type"] == "m.room.message"
    ]
    assert first not in published and second not in published  # drafts: never published

    # Removed: the letter again, everywhere.
    await editor.ask(channel.backstage, "!avatar remove", "has no photo now")
    await eventually(lambda: rooms_show_none(owner, rooms), "the photo removed from every room")
    await eventually(lambda: _equal(profile_avatar(owner, ghost), None), "the ghost's picture removed")
    _, html = await get(page)
    assert b'<img class="avatar"' not in html
    assert (await get(f"{web_base(env)}{media_path(second)}"))[0] == 404


async def rooms_show_none(user: User, rooms: list[str]) -> bool:
    return all(["url" not in await room_avatar(user, room) for room in rooms])


async def _equal(value: Awaitable[str | None], expected: str | None) -> bool:
    return await value == expected


async def test_avatar_explains_itself_and_refuses_what_is_not_an_image(env: Env) -> None:
    owner = await env.user("owner")
    channel = await create_channel(env, owner, env.handle("photo"), "Photo Help")
    moderator = await env.user("moderator")
    await owner.ask(
        channel.management, f"promote {channel.handle} {moderator.user_id} moderator", "is now moderator"
    )
    await moderator.join(await moderator.wait_invite(lambda rid, _room: rid == channel.backstage))

    usage = await owner.ask(channel.backstage, "!avatar", "reply !avatar to it")
    assert f"#{channel.handle}" in usage and "!avatar remove" in usage
    await owner.ask(channel.backstage, "!draft on", "Draft mode is on")
    text = await owner.text(channel.backstage, "not a picture")
    await ask_in_reply(owner, channel.backstage, text, "!avatar", "needs a reply to an image")
    pdf = await upload(owner, b"%PDF-1.4 not an image", "application/pdf", "doc.pdf")
    document = await owner.send(channel.backstage, {"msgtype": "m.file", "body": "doc.pdf", "url": pdf})
    await ask_in_reply(owner, channel.backstage, document, "!avatar", "needs a reply to an image")
    # Moderators care for readers; the photo is the owner's and the editors'.
    photo = await upload(owner, PNG)
    image = await owner.send(channel.backstage, {"msgtype": "m.image", "body": "p.png", "url": photo})
    await ask_in_reply(moderator, channel.backstage, image, "!avatar", "may do that: owner, editor")
    assert await room_avatar(owner, channel.broadcast) == {}
    # In Persian for a Persian speaker.
    await owner.ask(channel.backstage, "!language fa", "")
    await owner.ask(channel.backstage, "!avatar", "!avatar بنویسید")
