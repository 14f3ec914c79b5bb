"""Forwarding with attribution: a channel post forwarded into another channel's backstage.

Matrix has no "forwarded from" field, but clients forward by copying the event's content without its
relations (Element: `transformEvent` in ForwardDialog), so a relayed post keeps its `net.kanal.source`
marker — the backstage event of the original — when someone forwards it. When a backstage post carries
a marker that names a post of a channel on this server, Kanal publishes *that post's own content*
(as stored when it was published or last edited) under a "Forwarded from <channel>" header linking to
the original. Using the stored content, not the copy, keeps the attribution honest: a marker cannot be
used to put words in another channel's mouth, and a deleted or taken-down post is not republished.
Forwards from channels on other servers (which this server cannot check) are published as they are,
without a header.
"""

from __future__ import annotations

import copy
import html
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bridge.matrix.relay import SOURCE_KEY, TEXT_MSGTYPES
from bridge.store import queries
from bridge.store.models import Channel, Post

FORWARD_KEY = "net.kanal.forwarded"
MEDIA_MSGTYPES = ("m.image", "m.file", "m.audio", "m.video")
TITLE_MARK = "\x00"


@dataclass(frozen=True)
class Origin:
    channel: Channel
    post: Post
    # The copy a link opens: in the open room (where #handle leads) when the post reached it, else
    # in the first room (a channel of several rooms, a post from before the open one).
    room_id: str | None = None
    event_id: str | None = None


async def origin_of(session: AsyncSession, content: dict[str, Any]) -> Origin | Post | None:
    """The original post a forwarded backstage message copies: an Origin to attribute, the Post itself
    when it may not be republished (deleted or taken down), None when this is not a forward."""
    source = content.get(SOURCE_KEY)
    if not isinstance(source, str):
        return None
    post = await queries.post_by_source(session, source)
    if post is None:
        return None
    if post.redacted or not isinstance(post.content, dict):
        return post
    channel = await session.get(Channel, post.channel_id)
    if channel is None or channel.handle is None:
        return post
    copies = await queries.copies_of(session, post.id)
    room = channel.open_room
    if room is not None and room in copies:
        return Origin(channel, post, room, copies[room])
    return Origin(channel, post, channel.broadcast_room_id, post.relayed_event_id)


def permalink(origin: Origin, domain: str) -> str:
    alias = f"#{origin.channel.handle}:{domain}"
    if origin.event_id is None:
        return f"https://matrix.to/#/{alias}"
    if origin.room_id is None or origin.room_id == origin.channel.open_room:
        return f"https://matrix.to/#/{alias}/{origin.event_id}?via={domain}"
    return f"https://matrix.to/#/{origin.room_id}/{origin.event_id}?via={domain}"


def attributed(origin: Origin, domain: str, header: str) -> dict[str, Any]:
    """The original post's content under a header linking to it.

    `header` is the translated "Forwarded from {title}" with the title replaced by TITLE_MARK, so the
    title becomes the link in the formatted body. Text posts get the header as their first line; media
    get it as a caption (MSC2530: the file name moves to `filename`). Other kinds (stickers, polls) are
    published unchanged apart from the marker.
    """
    assert origin.post.content is not None
    out = copy.deepcopy(origin.post.content)
    link = permalink(origin, domain)
    title = origin.channel.title
    anchor = f'<a href="{html.escape(link, quote=True)}">{html.escape(title)}</a>'
    plain_header = f"{header.replace(TITLE_MARK, title)} ({link})"
    rich_header = anchor.join(html.escape(part) for part in header.split(TITLE_MARK))
    if TITLE_MARK not in header:  # a translation without the title: link the whole header
        rich_header = f'<a href="{html.escape(link, quote=True)}">{html.escape(header)}</a>'
    msgtype = out.get("msgtype")
    raw_body = out.get("body")
    body: str = raw_body if isinstance(raw_body, str) else ""
    if msgtype in TEXT_MSGTYPES:
        rich = out.get("formatted_body") if out.get("format") == "org.matrix.custom.html" else None
        rich = rich if isinstance(rich, str) else html.escape(body).replace("\n", "<br>")
        out["body"] = f"{plain_header}\n\n{body}"
        out["format"] = "org.matrix.custom.html"
        out["formatted_body"] = f"<p><em>{rich_header}</em></p>{rich}"
    elif msgtype in MEDIA_MSGTYPES:
        caption: str = body if isinstance(out.get("filename"), str) else ""
        if not isinstance(out.get("filename"), str):
            out["filename"] = body
        out["body"] = f"{plain_header}\n\n{caption}".rstrip()
        out["format"] = "org.matrix.custom.html"
        out["formatted_body"] = f"<p><em>{rich_header}</em></p>{html.escape(caption)}"
    out[FORWARD_KEY] = {
        "channel": f"#{origin.channel.handle}:{domain}",
        "event_id": origin.event_id,
    }
    out.pop(SOURCE_KEY, None)
    return out
