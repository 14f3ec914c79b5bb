"""The "Forwarded from" header: pure content transformation."""

from __future__ import annotations

from bridge.matrix.relay import SOURCE_KEY
from bridge.publishing.forwarding import FORWARD_KEY, TITLE_MARK, Origin, attributed, permalink
from bridge.store.models import Channel, Post

HEADER = f"Forwarded from {TITLE_MARK}"


def _origin(content: dict[str, object], relayed: str | None = "$orig", title: str = "Daily <News>") -> Origin:
    channel = Channel(id=1, handle="dailynews", title=title, owner="@o:x", ghost_user_id="@g:x")
    post = Post(
        channel_id=1, source_event_id="$src", relayed_event_id=relayed, author="@o:x", content=content
    )
    return Origin(channel, post, None, relayed)


def test_a_post_from_an_older_room_of_a_channel_links_to_that_room() -> None:
    # A channel of several rooms: #handle leads to the newest, which the post never reached.
    channel = Channel(
        id=1,
        handle="dailynews",
        title="Daily",
        owner="@o:x",
        ghost_user_id="@g:x",
        broadcast_room_id="!first:example.org",
        shard_rooms=["!second:example.org"],
    )
    post = Post(channel_id=1, source_event_id="$src", relayed_event_id="$orig", author="@o:x", content={})
    old = Origin(channel, post, "!first:example.org", "$orig")
    assert permalink(old, "example.org") == "https://matrix.to/#/!first:example.org/$orig?via=example.org"
    new = Origin(channel, post, "!second:example.org", "$copy")
    assert permalink(new, "example.org") == "https://matrix.to/#/#dailynews:example.org/$copy?via=example.org"


def test_text_post_gets_a_linked_header_and_keeps_its_formatting() -> None:
    origin = _origin(
        {
            "msgtype": "m.text",
            "body": "hello",
            "format": "org.matrix.custom.html",
            "formatted_body": "<b>hello</b>",
        }
    )
    out = attributed(origin, "example.org", HEADER)
    link = "https://matrix.to/#/#dailynews:example.org/$orig?via=example.org"
    assert out["body"] == f"Forwarded from Daily <News> ({link})\n\nhello"
    assert out["formatted_body"] == (
        f'<p><em>Forwarded from <a href="{link}">Daily &lt;News&gt;</a></em></p><b>hello</b>'
    )
    assert out[FORWARD_KEY] == {"channel": "#dailynews:example.org", "event_id": "$orig"}
    assert SOURCE_KEY not in out


def test_plain_text_is_escaped_into_the_formatted_body() -> None:
    out = attributed(_origin({"msgtype": "m.text", "body": "<script>\nx"}), "example.org", HEADER)
    assert out["formatted_body"].endswith("&lt;script&gt;<br>x")
    assert "<script>" not in out["formatted_body"]


def test_media_gets_a_caption_and_keeps_its_file_name() -> None:
    origin = _origin({"msgtype": "m.image", "body": "cat.png", "url": "mxc://x/y"})
    out = attributed(origin, "example.org", HEADER)
    assert out["filename"] == "cat.png" and out["url"] == "mxc://x/y"
    assert out["body"].startswith("Forwarded from Daily <News> (https://matrix.to/")
    captioned = attributed(
        _origin({"msgtype": "m.image", "body": "a caption", "filename": "cat.png", "url": "mxc://x/y"}),
        "example.org",
        HEADER,
    )
    assert captioned["body"].endswith("\n\na caption") and captioned["filename"] == "cat.png"


def test_the_original_is_not_changed_and_an_unsent_post_links_to_the_channel() -> None:
    content: dict[str, object] = {"msgtype": "m.text", "body": "hello"}
    origin = _origin(content, relayed=None)
    attributed(origin, "example.org", HEADER)
    assert content == {"msgtype": "m.text", "body": "hello"}
    assert permalink(origin, "example.org") == "https://matrix.to/#/#dailynews:example.org"


def test_a_translation_without_the_title_links_the_whole_header() -> None:
    out = attributed(_origin({"msgtype": "m.text", "body": "x"}), "example.org", "Forwarded")
    assert out["formatted_body"].startswith('<p><em><a href="https://matrix.to/')
