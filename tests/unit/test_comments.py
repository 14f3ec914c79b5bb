"""The pure parts of comments: roots, links, the discussion room's shape, catalogue entries."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from appservice.events import Event
from appservice.ids import EventID, RoomID, UserID
from bridge.audience.comments import (
    ROOT_KEY,
    comment_reported,
    discussion_power_levels,
    discussion_room_request,
    root_content,
    root_edit_content,
    thread_relation,
)
from bridge.broadcast.seam import comments_url, footer_edit_content
from bridge.moderation.hooks import PostInfo, RateHook
from bridge.screening.settings import RateSpec
from bridge.text.i18n import LOCALE_DIR, catalogue, t

GHOST = "@kanal_news:example.org"
ROOM = RoomID("!talk:example.org")
ROOT = EventID("$root")


def test_the_link_is_a_matrix_to_permalink_of_the_root() -> None:
    assert (
        comments_url(ROOM, ROOT, "example.org")
        == "https://matrix.to/#/!talk:example.org/$root?via=example.org"
    )


def test_a_root_is_the_post_without_relations_or_kanal_markers() -> None:
    content = {
        "msgtype": "m.text",
        "body": "hello",
        "m.relates_to": {"m.in_reply_to": {"event_id": "$x"}},
        "net.kanal.source": "$backstage",
    }
    event_type, root = root_content("m.room.message", content)  # type: ignore[misc]
    assert event_type == "m.room.message"
    assert root == {"msgtype": "m.text", "body": "hello"}
    assert "net.kanal.source" in content  # the post's own content is left alone
    # Our own relayed copies are recognised by this key; a root must never be taken for one.
    assert ROOT_KEY != "net.kanal.source"


def test_stickers_are_mirrored_as_stickers_and_polls_as_text() -> None:
    sticker = {"body": "cat", "url": "mxc://example.org/cat", "info": {}}
    assert root_content("m.sticker", sticker) == ("m.sticker", sticker)
    stable = {"m.poll": {}, "m.text": [{"body": "Lunch? 1. pizza 2. soup"}]}
    assert root_content("m.poll.start", stable) == (
        "m.room.message",
        {"msgtype": "m.text", "body": "📊 Lunch? 1. pizza 2. soup"},
    )
    unstable = {"org.matrix.msc3381.poll.start": {}, "org.matrix.msc1767.text": "Tea?"}
    assert root_content("org.matrix.msc3381.poll.start", unstable) == (
        "m.room.message",
        {"msgtype": "m.text", "body": "📊 Tea?"},
    )
    assert root_content("m.room.message", None) is None
    assert root_content("m.poll.end", {"body": "ended"}) is None


def test_the_link_edit_replaces_the_post_with_its_content_and_the_footer() -> None:
    url = comments_url(ROOM, ROOT, "example.org")
    edit = footer_edit_content({"msgtype": "m.text", "body": "news"}, "$post", url=url, views=1234)
    assert edit["m.relates_to"] == {"rel_type": "m.replace", "event_id": "$post"}
    new = edit["m.new_content"]
    assert new["body"] == f"news\n\n💬 Comments: {url} · 👁 1.2K"
    assert f'<a href="{url}">💬 Comments</a>' in new["formatted_body"]
    assert edit["body"] == "* " + new["body"]
    # Without a root yet (an edit that overtook it) the post is edited without a link.
    plain = footer_edit_content({"msgtype": "m.text", "body": "news"}, "$post", url=None)
    assert plain["m.new_content"] == {"msgtype": "m.text", "body": "news"}


def test_media_posts_keep_their_content_no_footer() -> None:
    image = {"msgtype": "m.image", "body": "photo.jpg", "url": "mxc://example.org/p"}
    edit = footer_edit_content(image, "$post", url=comments_url(ROOM, ROOT, "example.org"))
    assert edit["m.new_content"] == image


def test_a_root_edit_follows_the_post_but_not_for_stickers() -> None:
    edit = root_edit_content("m.room.message", {"msgtype": "m.text", "body": "fixed"}, ROOT)
    assert edit == {
        "msgtype": "m.text",
        "body": "* fixed",
        "m.new_content": {"msgtype": "m.text", "body": "fixed"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": ROOT},
    }
    assert root_edit_content("m.sticker", {"body": "cat", "url": "mxc://e/c"}, ROOT) is None


def test_the_discussion_room_is_an_ordinary_group_the_team_moderates() -> None:
    levels = discussion_power_levels(GHOST, ["@owner:example.org", "@mod:example.org", GHOST])
    assert levels["users"] == {"@owner:example.org": 50, "@mod:example.org": 50, GHOST: 100}
    assert levels["users_default"] == 0 and levels["events_default"] == 0
    assert levels["redact"] == 50 and levels["kick"] == 50 and levels["ban"] == 50
    assert levels["events"]["m.room.encryption"] == 100
    assert levels["events"]["m.room.power_levels"] == 100


def test_the_discussion_room_request_is_public_unencrypted_and_marked() -> None:
    request = discussion_room_request(
        handle="news",
        name="News — comments",
        topic="t",
        ghost=GHOST,
        moderators=[],
    )
    # Created without #news_comments: that alias is added once the room is open (create_once adds
    # the creation marker).
    assert request["preset"] == "public_chat" and "room_alias_name" not in request
    assert request["invite"] == [GHOST]
    types = {state["type"] for state in request["initial_state"]}
    assert "m.room.encryption" not in types and "net.kanal.channel" in types
    marker = next(s for s in request["initial_state"] if s["type"] == "net.kanal.channel")
    assert marker["content"] == {"handle": "news", "role": "discussion"}


def test_the_discussion_room_starts_with_the_channel_photo() -> None:
    photo = "mxc://example.org/photo"
    request = discussion_room_request(handle="news", name="n", topic="t", ghost=GHOST, moderators=[], avatar=photo)
    avatars = [s for s in request["initial_state"] if s["type"] == "m.room.avatar"]
    assert avatars == [{"type": "m.room.avatar", "state_key": "", "content": {"url": photo}}]
    without = discussion_room_request(handle="news", name="n", topic="t", ghost=GHOST, moderators=[])
    assert all(s["type"] != "m.room.avatar" for s in without["initial_state"])  # no photo: no empty avatar


def test_notices_about_a_comment_stay_in_its_thread() -> None:
    threaded = {"m.relates_to": {"rel_type": "m.thread", "event_id": ROOT}}
    assert thread_relation(threaded, "$c") == {
        "rel_type": "m.thread",
        "event_id": ROOT,
        "is_falling_back": True,
        "m.in_reply_to": {"event_id": "$c"},
    }
    assert thread_relation({}, "$c") == {"m.in_reply_to": {"event_id": "$c"}}


def _event(sender: str, content: Mapping[str, Any], event_type: str = "m.room.message") -> Event:
    return Event(EventID("$c"), RoomID(ROOM), UserID(sender), event_type, dict(content))


def test_a_reported_event_is_a_readers_comment_or_the_comment_it_edits() -> None:
    def reported(event: Event) -> str | None:
        return comment_reported(event, bot="@kanal:example.org", ghost_prefix="kanal_")

    text = {"msgtype": "m.text", "body": "hi"}
    assert reported(_event("@bob:example.org", text)) == "$c"
    assert reported(_event("@bob:example.org", {"body": "cat", "url": "mxc://x/y"}, "m.sticker")) == "$c"
    edit = {**text, "m.relates_to": {"rel_type": "m.replace", "event_id": "$original"}}
    assert reported(_event("@bob:example.org", edit)) == "$original"
    # Kanal's own messages (removal notices, restored comments) and the ghost's thread roots are not.
    assert reported(_event("@kanal:example.org", text)) is None
    assert reported(_event(GHOST, text)) is None
    assert reported(_event("@bob:example.org", {}, "m.reaction")) is None
    state = Event(
        EventID("$s"), RoomID(ROOM), UserID("@bob:example.org"), "m.room.message", text, state_key=""
    )
    assert reported(state) is None


async def test_comments_do_not_count_against_the_channels_posting_rate() -> None:
    hook = RateHook(
        RateSpec(name="rate", action="hold", category="spam", posts=1, per_seconds=60), clock=lambda: 0.0
    )

    def post(via: str) -> PostInfo:
        return PostInfo(1, "news", "News", "@a:x", "$e", "m.text", "hi", None, None, via)

    for _ in range(5):
        assert (await hook.check(post("comment"))).action == "allow"
    assert (await hook.check(post("backstage"))).action == "allow"
    assert (await hook.check(post("backstage"))).action == "hold"


def test_every_comments_message_is_in_english_and_persian() -> None:
    keys = re.findall(r'msgctxt "([^"]+)"', (LOCALE_DIR / "comments.pot").read_text())
    assert len(keys) >= 10
    persian = Path(LOCALE_DIR / "fa" / "comments.po").read_text()
    for key in keys:
        assert key in catalogue().translations["fa"], key
        assert f'msgctxt "{key}"' in persian
    assert t("en", "comments_room_name", title="News") == "News — comments"
    assert "!comments on|off" in t("en", "help_backstage", handle="news", title="News")
    assert "!نظرها (comments) on|off" in t("fa", "help_backstage", handle="news", title="News")
