"""plan_relay: what a backstage event becomes in the broadcast room."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.matrix.relay import (
    REF_PLACEHOLDER,
    SOURCE_KEY,
    RelayPlan,
    plan_relay,
    replace_ref,
    silent_content,
)

SOURCE = "$backstage-post"
PUBLISHED = "$published-earlier"
UNPUBLISHED = "$never-published"


def plan(
    content: dict[str, Any],
    event_type: str = "m.room.message",
    *,
    known: set[str] | None = None,
    signature: str | None = None,
) -> RelayPlan | None:
    return plan_relay(
        event_type,
        content,
        source_event_id=SOURCE,
        known_source={PUBLISHED} if known is None else known,
        signature=signature,
    )


def relayed(content: dict[str, Any], event_type: str = "m.room.message", **kwargs: Any) -> RelayPlan:
    result = plan(content, event_type, **kwargs)
    assert result is not None
    return result


# --- plain posts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        {"msgtype": "m.text", "body": "Hello subscribers"},
        {"msgtype": "m.notice", "body": "quiet"},
        {"msgtype": "m.emote", "body": "waves"},
        {
            "msgtype": "m.text",
            "body": "**bold**",
            "format": "org.matrix.custom.html",
            "formatted_body": "<strong>bold</strong>",
        },
        {"msgtype": "m.text", "body": "x", "m.mentions": {"user_ids": []}},
    ],
)
def test_text_posts_are_relayed_unchanged(content: dict[str, Any]) -> None:
    original = copy.deepcopy(content)

    result = relayed(content)

    assert result == RelayPlan("m.room.message", {**original, SOURCE_KEY: SOURCE}, None, False)
    assert content == original  # the input is not touched


@pytest.mark.parametrize(
    "content",
    [
        {
            "msgtype": "m.image",
            "body": "photo.jpg",
            "url": "mxc://example.org/AbCdEf",
            "info": {
                "mimetype": "image/jpeg",
                "w": 800,
                "h": 600,
                "size": 12345,
                "thumbnail_url": "mxc://example.org/thumb",
                "thumbnail_info": {"w": 80, "h": 60},
            },
        },
        {
            "msgtype": "m.file",
            "body": "report.pdf",
            "filename": "report.pdf",
            "url": "mxc://example.org/file",
            "info": {"mimetype": "application/pdf"},
        },
        {
            "msgtype": "m.audio",
            "body": "voice.ogg",
            "url": "mxc://example.org/audio",
            "info": {"duration": 3000},
        },
        {
            "msgtype": "m.video",
            "body": "clip.mp4",
            "url": "mxc://example.org/video",
            "info": {"duration": 9000},
        },
        {
            "msgtype": "m.image",
            "body": "A caption",
            "filename": "p.png",
            "url": "mxc://example.org/captioned",
        },
    ],
)
def test_media_keeps_its_mxc_url_and_info(content: dict[str, Any]) -> None:
    result = relayed(content, signature="Alice")  # signatures never touch media

    assert result.content == {**content, SOURCE_KEY: SOURCE}
    assert result.ref_source is None
    assert not result.is_edit


def test_stickers_are_relayed() -> None:
    content = {"body": "A cat", "url": "mxc://example.org/sticker", "info": {"w": 256, "h": 256}}

    result = relayed(content, "m.sticker", signature="Alice")

    assert result == RelayPlan("m.sticker", {**content, SOURCE_KEY: SOURCE}, None, False)


@pytest.mark.parametrize(
    "event_type",
    [
        "m.reaction",
        "m.room.redaction",
        "m.room.member",
        "m.room.encrypted",
        "m.room.name",
        "m.call.invite",
    ],
)
def test_other_event_types_are_not_relayed(event_type: str) -> None:
    assert plan({"body": "x", "msgtype": "m.text"}, event_type) is None


def test_a_stray_new_content_on_a_post_is_dropped() -> None:
    result = relayed({"msgtype": "m.text", "body": "x", "m.new_content": {"body": "y"}})

    assert "m.new_content" not in result.content


def test_a_spoofed_source_key_is_overwritten() -> None:
    result = relayed({"msgtype": "m.text", "body": "x", SOURCE_KEY: "$someone-else"})

    assert result.content[SOURCE_KEY] == SOURCE


def test_silent_content_is_a_notice() -> None:
    assert silent_content("shh") == {"msgtype": "m.notice", "body": "shh"}


# --- signatures -----------------------------------------------------------------------------------


@pytest.mark.parametrize("msgtype", ["m.text", "m.notice", "m.emote"])
def test_signature_is_appended_to_text_types(msgtype: str) -> None:
    result = relayed({"msgtype": msgtype, "body": "News!"}, signature="Alice")

    assert result.content["body"] == "News!\n— Alice"
    assert "formatted_body" not in result.content


def test_signature_is_html_escaped_in_the_formatted_body() -> None:
    content = {
        "msgtype": "m.text",
        "body": "News",
        "format": "org.matrix.custom.html",
        "formatted_body": "<p>News</p>",
    }

    result = relayed(content, signature='<b>Al & "Bo"</b>')

    assert result.content["body"] == 'News\n— <b>Al & "Bo"</b>'
    assert result.content["formatted_body"] == "<p>News</p><br>— &lt;b&gt;Al &amp; &quot;Bo&quot;&lt;/b&gt;"


def test_formatted_body_of_another_format_is_not_touched() -> None:
    content = {"msgtype": "m.text", "body": "News", "format": "com.example.md", "formatted_body": "*News*"}

    result = relayed(content, signature="Alice")

    assert result.content["formatted_body"] == "*News*"
    assert result.content["body"] == "News\n— Alice"


@pytest.mark.parametrize(
    "content",
    [
        {"msgtype": "m.image", "body": "photo.jpg", "url": "mxc://example.org/x"},
        {"msgtype": "m.location", "body": "here", "geo_uri": "geo:1,2"},
        {"msgtype": "m.text"},  # no body
        {"msgtype": "m.text", "body": 5},
        {"body": "no msgtype"},
    ],
)
def test_signature_leaves_non_text_content_alone(content: dict[str, Any]) -> None:
    result = relayed(content, signature="Alice")

    assert result.content == {**content, SOURCE_KEY: SOURCE}


def test_no_signature_when_none_or_empty() -> None:
    assert relayed({"msgtype": "m.text", "body": "x"}, signature="").content["body"] == "x"
    assert relayed({"msgtype": "m.text", "body": "x"}, signature=None).content["body"] == "x"


# --- replies --------------------------------------------------------------------------------------


def reply_content(target: str, **extra: Any) -> dict[str, Any]:
    return {
        "msgtype": "m.text",
        "body": "> <@alice:example.org> the original\n> second line\n\nmy answer",
        "format": "org.matrix.custom.html",
        "formatted_body": (
            '<mx-reply><blockquote><a href="https://matrix.to/#/!r/$x">In reply to</a> '
            '<a href="https://matrix.to/#/@alice:example.org">@alice:example.org</a><br>the original'
            "</blockquote></mx-reply>my <b>answer</b>"
        ),
        "m.relates_to": {"m.in_reply_to": {"event_id": target}},
        **extra,
    }


def test_reply_to_a_published_post_points_at_its_relayed_copy() -> None:
    result = relayed(reply_content(PUBLISHED))

    assert result.ref_source == PUBLISHED
    assert result.content["m.relates_to"] == {"m.in_reply_to": {"event_id": REF_PLACEHOLDER}}
    assert result.content[SOURCE_KEY] == SOURCE
    assert not result.is_edit


def test_reply_fallbacks_are_stripped_so_the_admin_stays_private() -> None:
    result = relayed(reply_content(PUBLISHED))

    assert result.content["body"] == "my answer"
    assert result.content["formatted_body"] == "my <b>answer</b>"
    assert "@alice" not in str(result.content)


def test_reply_to_an_unpublished_message_becomes_a_plain_post() -> None:
    result = relayed(reply_content(UNPUBLISHED))

    assert result.ref_source is None
    assert "m.relates_to" not in result.content
    assert result.content["body"] == "my answer"
    assert result.content["formatted_body"] == "my <b>answer</b>"
    assert UNPUBLISHED not in str(result.content)


def test_reply_without_a_fallback_is_kept_whole() -> None:
    content = {
        "msgtype": "m.text",
        "body": "> quoting myself",
        "m.relates_to": {"m.in_reply_to": {"event_id": PUBLISHED}},
    }

    result = relayed(content)

    # No blank line after the quote: this is the author's own quote, not a fallback.
    assert result.content["body"] == "> quoting myself"


def test_a_quote_in_a_plain_post_is_not_mistaken_for_a_fallback() -> None:
    content = {
        "msgtype": "m.text",
        "body": "> a quote\n\nmy comment",
        "formatted_body": "<mx-reply>x</mx-reply>y",
    }

    result = relayed(content)

    assert result.content["body"] == "> a quote\n\nmy comment"
    assert result.content["formatted_body"] == "<mx-reply>x</mx-reply>y"


def test_only_a_leading_mx_reply_is_removed() -> None:
    content = reply_content(PUBLISHED)
    content["formatted_body"] = "<mx-reply>a</mx-reply>text <mx-reply>b</mx-reply>"

    assert relayed(content).content["formatted_body"] == "text <mx-reply>b</mx-reply>"


def test_signed_reply_has_the_signature_after_the_stripped_text() -> None:
    result = relayed(reply_content(PUBLISHED), signature="Alice")

    assert result.content["body"] == "my answer\n— Alice"
    assert result.content["formatted_body"] == "my <b>answer</b><br>— Alice"


@pytest.mark.parametrize(
    "relates_to",
    [
        {"rel_type": "m.thread", "event_id": PUBLISHED},
        {"rel_type": "m.annotation", "event_id": PUBLISHED, "key": "👍"},
        {"m.in_reply_to": "not-an-object"},
        {"m.in_reply_to": {"event_id": 5}},
        "garbage",
    ],
)
def test_other_relations_are_dropped(relates_to: Any) -> None:
    result = relayed({"msgtype": "m.text", "body": "x", "m.relates_to": relates_to})

    assert "m.relates_to" not in result.content
    assert result.ref_source is None


# --- edits ----------------------------------------------------------------------------------------


def edit_content(target: str, **new_content: Any) -> dict[str, Any]:
    return {
        "msgtype": "m.text",
        "body": "* fixed text",
        "m.new_content": {"msgtype": "m.text", "body": "fixed text", **new_content},
        "m.relates_to": {"rel_type": "m.replace", "event_id": target},
    }


def test_edit_of_a_published_post_targets_its_relayed_copy() -> None:
    result = relayed(edit_content(PUBLISHED))

    assert result == RelayPlan(
        "m.room.message",
        {
            "msgtype": "m.text",
            "body": "* fixed text",
            "m.new_content": {"msgtype": "m.text", "body": "fixed text"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": REF_PLACEHOLDER},
        },
        PUBLISHED,
        True,
    )
    assert SOURCE_KEY not in result.content


def test_edit_of_an_unpublished_message_is_not_relayed() -> None:
    assert plan(edit_content(UNPUBLISHED)) is None


@pytest.mark.parametrize("new_content", [None, "text", ["x"]])
def test_edit_without_usable_new_content_is_not_relayed(new_content: Any) -> None:
    content = edit_content(PUBLISHED)
    content["m.new_content"] = new_content

    assert plan(content) is None


def test_edit_drops_relations_inside_new_content() -> None:
    content = edit_content(
        PUBLISHED, **{"m.relates_to": {"m.in_reply_to": {"event_id": "$backstage-secret"}}}
    )

    result = relayed(content)

    assert "m.relates_to" not in result.content["m.new_content"]
    assert "$backstage-secret" not in str(result.content)


def test_signed_edit_signs_both_the_fallback_and_the_new_content() -> None:
    content = edit_content(PUBLISHED, format="org.matrix.custom.html", formatted_body="<i>fixed</i>")

    result = relayed(content, signature="Alice & Bob")

    assert result.content["body"] == "* fixed text\n— Alice & Bob"
    assert result.content["m.new_content"]["body"] == "fixed text\n— Alice & Bob"
    assert result.content["m.new_content"]["formatted_body"] == "<i>fixed</i><br>— Alice &amp; Bob"


def test_edit_of_a_caption_keeps_the_media() -> None:
    new = {"msgtype": "m.image", "body": "new caption", "url": "mxc://example.org/img"}
    content = {
        "msgtype": "m.image",
        "body": "* new caption",
        "url": "mxc://example.org/img",
        "m.new_content": new,
        "m.relates_to": {"rel_type": "m.replace", "event_id": PUBLISHED},
    }

    result = relayed(content, signature="Alice")

    assert result.content["m.new_content"] == new
    assert result.content["url"] == "mxc://example.org/img"


def test_edit_input_is_not_mutated() -> None:
    content = edit_content(PUBLISHED, **{"m.relates_to": {"rel_type": "m.thread", "event_id": "$x"}})
    original = copy.deepcopy(content)

    relayed(content, signature="Alice")

    assert content == original


# --- replace_ref ----------------------------------------------------------------------------------


def test_replace_ref_is_recursive() -> None:
    payload = {
        "room_id": "!broadcast",
        "content": {
            "m.relates_to": {"m.in_reply_to": {"event_id": REF_PLACEHOLDER}},
            "list": [REF_PLACEHOLDER, {"deep": [REF_PLACEHOLDER]}, 3, None],
        },
        "event_id": REF_PLACEHOLDER,
    }
    original = copy.deepcopy(payload)

    resolved = replace_ref(payload, "$relayed")

    assert resolved == {
        "room_id": "!broadcast",
        "content": {
            "m.relates_to": {"m.in_reply_to": {"event_id": "$relayed"}},
            "list": ["$relayed", {"deep": ["$relayed"]}, 3, None],
        },
        "event_id": "$relayed",
    }
    assert payload == original


def test_replace_ref_only_replaces_whole_values() -> None:
    payload = {"body": f"see {REF_PLACEHOLDER}", REF_PLACEHOLDER: "key stays"}

    assert replace_ref(payload, "$relayed") == payload


def test_replace_ref_of_the_placeholder_itself() -> None:
    assert replace_ref(REF_PLACEHOLDER, "$relayed") == "$relayed"
    assert replace_ref(5, "$relayed") == 5


def test_relayed_plans_resolve_to_real_relations() -> None:
    reply = relayed(reply_content(PUBLISHED))
    edit = relayed(edit_content(PUBLISHED))

    assert replace_ref(reply.content, "$copy")["m.relates_to"] == {"m.in_reply_to": {"event_id": "$copy"}}
    assert replace_ref(edit.content, "$copy")["m.relates_to"] == {
        "rel_type": "m.replace",
        "event_id": "$copy",
    }


# --- properties -----------------------------------------------------------------------------------

JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20)),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
_IDS = st.sampled_from([PUBLISHED, UNPUBLISHED, "$other"])
RELATES_TO = st.one_of(
    JSON,
    st.fixed_dictionaries(
        {"rel_type": st.sampled_from(["m.replace", "m.thread", "m.annotation"]), "event_id": _IDS}
    ),
    st.fixed_dictionaries({"m.in_reply_to": st.fixed_dictionaries({"event_id": _IDS})}),
)
CONTENT = st.dictionaries(
    st.sampled_from(
        ["msgtype", "body", "format", "formatted_body", "url", "m.new_content", "m.relates_to", "x"]
    ),
    st.one_of(JSON, st.sampled_from(["m.text", "m.notice", "m.image", "org.matrix.custom.html"])),
    max_size=8,
).flatmap(
    lambda base: st.fixed_dictionaries(
        {
            "m.relates_to": RELATES_TO,
            "m.new_content": st.one_of(JSON, st.dictionaries(st.text(max_size=5), JSON)),
        }
    ).map(lambda extra: {**base, **extra})
)


def _relation_targets(value: Any) -> list[Any]:
    found: list[Any] = []
    if isinstance(value, dict):
        relates = value.get("m.relates_to")
        if isinstance(relates, dict):
            found.append(relates.get("event_id"))
            reply = relates.get("m.in_reply_to")
            if isinstance(reply, dict):
                found.append(reply.get("event_id"))
        for inner in value.values():
            found.extend(_relation_targets(inner))
    return [f for f in found if f is not None]


@given(CONTENT, st.sampled_from(["m.room.message", "m.sticker"]), st.one_of(st.none(), st.text(max_size=10)))
def test_relayed_relations_only_ever_point_at_the_placeholder(
    content: dict[str, Any], event_type: str, signature: str | None
) -> None:
    original = copy.deepcopy(content)

    result = plan_relay(
        event_type, content, source_event_id=SOURCE, known_source={PUBLISHED}, signature=signature
    )

    assert content == original
    if result is None:
        return
    assert result.event_type == event_type
    assert set(_relation_targets(result.content)) <= {REF_PLACEHOLDER}
    assert (result.ref_source is None) == (REF_PLACEHOLDER not in str(result.content))
    assert result.ref_source in (None, PUBLISHED)
    if result.is_edit:
        assert SOURCE_KEY not in result.content
    else:
        assert result.content[SOURCE_KEY] == SOURCE


POLL = {
    "org.matrix.msc3381.poll.start": {
        "question": {"org.matrix.msc1767.text": "Tea or coffee?"},
        "kind": "org.matrix.msc3381.poll.disclosed",
        "max_selections": 1,
        "answers": [
            {"id": "tea", "org.matrix.msc1767.text": "Tea"},
            {"id": "coffee", "org.matrix.msc1767.text": "Coffee"},
        ],
    },
    "org.matrix.msc1767.text": "Tea or coffee?\n1. Tea\n2. Coffee",
}


@pytest.mark.parametrize("event_type", ["m.poll.start", "org.matrix.msc3381.poll.start"])
def test_polls_are_relayed_as_they_are(event_type: str) -> None:
    result = plan(POLL, event_type)
    assert result is not None and result.event_type == event_type and not result.is_edit
    assert result.content["org.matrix.msc3381.poll.start"] == POLL["org.matrix.msc3381.poll.start"]


@pytest.mark.parametrize("event_type", ["m.poll.end", "org.matrix.msc3381.poll.end"])
def test_ending_a_published_poll_ends_its_copy(event_type: str) -> None:
    content = {
        "m.relates_to": {"rel_type": "m.reference", "event_id": "$poll"},
        "org.matrix.msc1767.text": "Ended",
    }
    result = plan_relay(event_type, content, source_event_id="$end", known_source={"$poll"})
    assert result is not None and result.ref_source == "$poll"
    assert result.content["m.relates_to"] == {"rel_type": "m.reference", "event_id": REF_PLACEHOLDER}
    assert plan_relay(event_type, content, source_event_id="$end", known_source=set()) is None
