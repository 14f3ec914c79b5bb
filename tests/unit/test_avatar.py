"""Which events `!avatar` accepts as the channel photo (bridge.matrix.media.image_of)."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.matrix.media import image_of

PHOTO = "mxc://example.org/AbC_12-x"


@pytest.mark.parametrize(
    ("event_type", "content", "expected"),
    [
        ("m.room.message", {"msgtype": "m.image", "body": "cat.png", "url": PHOTO}, PHOTO),
        ("m.sticker", {"body": "a sticker", "url": PHOTO, "info": {}}, PHOTO),
        ("m.room.message", {"msgtype": "m.text", "body": PHOTO}, None),  # a link is not an image
        ("m.room.message", {"msgtype": "m.file", "body": "cat.png", "url": PHOTO}, None),
        ("m.room.message", {"msgtype": "m.video", "body": "v.mp4", "url": PHOTO}, None),
        ("m.room.message", {"msgtype": "m.image", "body": "enc", "file": {"url": PHOTO}}, None),  # encrypted
        ("m.room.message", {"msgtype": "m.image", "body": "x", "url": "https://example.org/cat.png"}, None),
        ("m.room.message", {"msgtype": "m.image", "body": "x", "url": "mxc://example.org/../etc"}, None),
        ("m.room.message", {"msgtype": "m.image", "body": "x", "url": "mxc://e.org/" + "a" * 250}, None),
        ("m.room.message", {"msgtype": "m.image", "body": "x", "url": 7}, None),
        ("org.matrix.msc3381.poll.start", {"url": PHOTO}, None),
    ],
)
def test_only_an_image_with_a_plain_mxc_uri_becomes_the_photo(
    event_type: str, content: dict[str, Any], expected: str | None
) -> None:
    assert image_of(event_type, content) == expected
