"""Reading an event's relations from the homeserver (`/relations`), as the bot: poll votes, reactions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from appservice.client import HomeserverClient, q
from appservice.ids import RoomID

RELATIONS_LIMIT: Final = 100  # relations per request


async def related_events(
    client: HomeserverClient,
    as_user: str,
    room_id: str,
    event_id: str,
    rel_type: str,
    *,
    event_type: str | None = None,
    pages: int,
    limit: int = RELATIONS_LIMIT,
) -> tuple[list[object], bool]:
    """The events relating to `event_id` with `rel_type` (newest first, at most `pages` requests), and
    whether that was all of them."""
    path = f"/_matrix/client/v1/rooms/{q(room_id)}/relations/{q(event_id)}/{q(rel_type)}"
    if event_type is not None:
        path += f"/{q(event_type)}"
    events: list[object] = []
    batch: str | None = None
    for _ in range(pages):
        query = {"limit": str(limit)}
        if batch is not None:
            query["from"] = batch
        data = await client.request("GET", path, query=query, user_id=as_user)
        chunk = data.get("chunk")
        if isinstance(chunk, list):
            events.extend(chunk)
        following = data.get("next_batch")
        if not isinstance(following, str) or not following or following == batch:
            return events, True
        batch = following
    return events, False


async def related_events_in(
    client: HomeserverClient,
    as_user: str,
    copies: Mapping[RoomID, str],
    rel_type: str,
    *,
    event_type: str | None = None,
    pages: int,
    limit: int = RELATIONS_LIMIT,
) -> tuple[list[object], bool]:
    """`related_events` over every copy of one post ({room id: event id}, one per room of a channel
    that spans several): the events together, and whether that was all of them in every room."""
    events: list[object] = []
    complete = True
    for room_id, event_id in copies.items():
        found, whole = await related_events(
            client, as_user, room_id, event_id, rel_type, event_type=event_type, pages=pages, limit=limit
        )
        events.extend(found)
        complete = complete and whole
    return events, complete
