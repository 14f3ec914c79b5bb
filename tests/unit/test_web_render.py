"""The pure parts of the web face: sanitising, post views, numbers and times, feeds, the caches."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bridge.matrix.media import parse_mxc
from bridge.matrix.polls import PollTally, parse_poll, poll_of, tally_poll
from bridge.web.cache import FreshReads, Page, PageCache, RefreshingCache
from bridge.web.feeds import atom, entry_html, tag_uri
from bridge.web.media import content_type_of, disposition_for
from bridge.web.render import (
    ChannelInfo,
    LinkStyle,
    PostRecord,
    Renderer,
    human_time,
    media_refs,
    number,
)
from bridge.web.sanitise import Sanitiser, media_path, plain_html

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
CHANNEL = ChannelInfo(
    id=7,
    handle="news_daily",
    title="Daily News",
    about="",
    verified=False,
    room_id="!room:example.org",
    created_at=T0,
    domain="example.org:8448",
)


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(public_url="https://kanal.example/", domain="example.org", default_language="en")


def record(content: dict[str, Any] | None, *, event_type: str = "m.room.message", **extra: Any) -> PostRecord:
    values: dict[str, Any] = {
        "id": 42,
        "event_type": event_type,
        "content": content,
        "relayed_event_id": "$ev:example.org",
        "created_at": T0,
        "edited_at": None,
    }
    values.update(extra)
    return PostRecord(**values)


# -- sanitising -------------------------------------------------------------------------------------


def test_the_matrix_subset_survives() -> None:
    html = (
        '<h1>t</h1><blockquote><p><b>b</b> <i>i</i> <u>u</u> <del>d</del> <strike>s</strike></p></blockquote>'
        '<ol start="3"><li>x</li></ol><ul><li>y</li></ul><pre><code class="language-python">c</code></pre>'
        '<table><caption>c</caption><thead><tr><th>h</th></tr></thead><tbody><tr><td>d</td></tr></tbody></table>'
        '<details><summary>s</summary>d</details><sup>1</sup><sub>2</sub><hr><br>'
        '<font color="#ff0000">red</font><span data-mx-spoiler="">spoiler</span>'
    )  # fmt: skip
    assert str(Sanitiser().clean(html)) == html


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ('<a href="javascript:alert(1)">x</a>', '<a rel="noopener nofollow ugc">x</a>'),
        ('<a href="data:text/html,x">x</a>', '<a rel="noopener nofollow ugc">x</a>'),
        ('<a href="/c/other">x</a>', '<a rel="noopener nofollow ugc">x</a>'),
        ('<a href="mxc://example.org/abc">x</a>', '<a rel="noopener nofollow ugc">x</a>'),
        ('<a href="https://ok.example" target="_top" rel="opener">x</a>', '<a href="https://ok.example" rel="noopener nofollow ugc">x</a>'),
        ('<a href="mailto:a@example.org">m</a>', '<a href="mailto:a@example.org" rel="noopener nofollow ugc">m</a>'),
        ('<img src="mxc://example.org/abc" alt="a" onerror="x">', '<img src="/media/example.org/abc" alt="a">'),
        ('<img src="https://tracker.example/p.png">', "<img>"),
        ('<img src="mxc://example.org/../../etc">', "<img>"),
        ('<img src="mxc://example.org/abc" width="99999" height="10">', '<img src="/media/example.org/abc" height="10">'),
        ('<font color="red" data-mx-color="#00ff00">c</font>', '<font data-mx-color="#00ff00">c</font>'),
        ('<code class="language-py evil">c</code>', "<code>c</code>"),
        ("<mx-reply><blockquote>quoted</blockquote></mx-reply>answer", "answer"),
        ("<script>alert(1)</script><style>p{}</style>ok", "ok"),
        ('<p style="color:red" class="x" id="y">p</p>', "<p>p</p>"),
        ("<svg><circle onload=alert(1)></circle></svg>s", "s"),
        ("<!-- comment -->c", "c"),
        ("<unknown>kept text</unknown>", "kept text"),
    ],
)  # fmt: skip
def test_what_the_allow_list_drops(html: str, expected: str) -> None:
    assert str(Sanitiser().clean(html)) == expected


def test_embeds_open_links_in_a_new_tab_and_feeds_get_absolute_media() -> None:
    assert 'target="_blank"' in Sanitiser(new_tab=True).clean('<a href="https://x.example">x</a>')
    feed = Sanitiser(media_base="https://kanal.example").clean('<img src="mxc://example.org/abc">')
    assert str(feed) == '<img src="https://kanal.example/media/example.org/abc">'


def test_plain_bodies_are_escaped_with_their_line_breaks() -> None:
    assert str(plain_html("a <b>\n& 'c'")) == "a &lt;b&gt;<br>\n&amp; &#39;c&#39;"


def test_web_links_in_plain_bodies_become_links_and_nothing_else_does() -> None:
    html = str(
        plain_html('see https://a.example/x?b=1&c=2. or (http://b.example/"onclick=x) javascript:alert(1)')
    )
    assert html == (
        'see <a href="https://a.example/x?b=1&amp;c=2" rel="noopener nofollow ugc">https://a.example/x?b=1&amp;c=2</a>. '
        'or (<a href="http://b.example/" rel="noopener nofollow ugc">http://b.example/</a>&#34;onclick=x) '
        "javascript:alert(1)"
    )


@pytest.mark.parametrize(
    ("uri", "path"),
    [
        ("mxc://example.org/AbC_-1", "/media/example.org/AbC_-1"),
        ("mxc://example.org:8448/abc", "/media/example.org:8448/abc"),
        ("mxc://[::1]:8448/abc", "/media/%5B::1%5D:8448/abc"),
        ("mxc://example.org/abc/def", None),
        ("mxc://example.org/../x", None),
        ("mxc://example.org/abc?x=1", None),
        ("mxc://example.org/", None),
        ("https://example.org/abc", None),
        (None, None),
        (42, None),
    ],
)
def test_only_well_formed_mxc_uris_become_media_paths(uri: object, path: str | None) -> None:
    assert media_path(uri) == path
    assert (parse_mxc(uri) is not None) == (path is not None)


# -- post views -------------------------------------------------------------------------------------


def test_a_text_post(renderer: Renderer) -> None:
    view = renderer.post_view(
        record({"msgtype": "m.text", "body": "hi <there>\nline"}), CHANNEL, LinkStyle.PAGE
    )
    assert view is not None
    assert view.kind == "text" and str(view.text) == "hi &lt;there&gt;<br>\nline"
    assert view.summary == "hi <there>" and view.plain == "hi <there>\nline"
    assert view.permalink == "/c/news_daily/42"
    assert view.matrix_to == "https://matrix.to/#/%21room%3Aexample.org/%24ev%3Aexample.org?via=example.org"
    assert view.edited is None and view.updated == T0


def test_formatted_text_is_sanitised_and_emotes_are_marked(renderer: Renderer) -> None:
    content = {
        "msgtype": "m.emote",
        "body": "waves",
        "format": "org.matrix.custom.html",
        "formatted_body": "<b>waves</b><script>x</script>",
    }
    view = renderer.post_view(record(content), CHANNEL, LinkStyle.PAGE)
    assert view is not None and view.emote and str(view.text) == "<b>waves</b>"


def test_an_image_with_a_caption_and_one_without(renderer: Renderer) -> None:
    captioned = {
        "msgtype": "m.image",
        "body": "look at this",
        "filename": "cat.jpg",
        "url": "mxc://example.org/cat",
        "info": {"w": 800, "h": 600},
    }
    view = renderer.post_view(record(captioned), CHANNEL, LinkStyle.FEED)
    assert view is not None and view.kind == "image"
    assert view.image == "https://kanal.example/media/example.org/cat"
    assert (view.width, view.height) == (800, 600)
    assert str(view.text) == "look at this" and view.image_alt == "look at this"
    assert view.permalink == "https://kanal.example/c/news_daily/42"
    bare = renderer.post_view(
        record({"msgtype": "m.image", "body": "cat.jpg", "url": "mxc://example.org/cat"}),
        CHANNEL,
        LinkStyle.PAGE,
    )
    assert bare is not None and str(bare.text) == "" and bare.image_alt == "cat.jpg"
    assert bare.width is None


def test_a_sticker_a_video_and_a_file(renderer: Renderer) -> None:
    sticker = renderer.post_view(
        record({"body": "smile", "url": "mxc://example.org/s", "info": {}}, event_type="m.sticker"),
        CHANNEL,
        LinkStyle.PAGE,
    )
    assert sticker is not None and sticker.kind == "image" and sticker.image == "/media/example.org/s"
    video = renderer.post_view(
        record({"msgtype": "m.video", "body": "clip.mp4", "url": "mxc://example.org/v",
                "info": {"thumbnail_url": "mxc://example.org/t", "size": 3 * 1024 * 1024}}),
        CHANNEL,
        LinkStyle.PAGE,
    )  # fmt: skip
    assert video is not None and video.kind == "video" and video.image == "/media/example.org/t"
    assert video.attachment is not None and video.attachment.href == "/media/example.org/v"
    assert video.attachment.size == "3.0 MB"
    file = renderer.post_view(
        record({"msgtype": "m.file", "body": "r.pdf", "url": "mxc://example.org/f", "info": {"size": 100}}),
        CHANNEL,
        LinkStyle.PAGE,
    )
    assert file is not None and file.kind == "file" and file.attachment is not None
    assert file.attachment.label == "r.pdf" and file.attachment.size == "100 B"


@pytest.mark.parametrize(
    ("event_type", "content"),
    [
        (
            "m.poll.start",
            {"m.poll": {"question": {"m.text": [{"body": "Q?"}]},
                        "answers": [{"m.id": "1", "m.text": [{"body": "A"}]}, {"m.id": "2", "m.text": [{"body": "B"}]}]}},
        ),
        (
            "org.matrix.msc3381.poll.start",
            {"org.matrix.msc3381.poll.start": {"question": {"org.matrix.msc1767.text": "Q?"},
                                               "answers": [{"id": "1", "org.matrix.msc1767.text": "A"},
                                                           {"id": "2", "org.matrix.msc1767.text": "B"}]}},
        ),
    ],
)  # fmt: skip
def test_polls_in_both_forms(renderer: Renderer, event_type: str, content: dict[str, Any]) -> None:
    assert poll_of(event_type, content) == ("Q?", ("A", "B"))
    view = renderer.post_view(record(content, event_type=event_type), CHANNEL, LinkStyle.PAGE)
    assert view is not None and view.kind == "poll" and view.summary == "Q?"


# -- poll tallies -----------------------------------------------------------------------------------

POLL_EVENT = "$poll:example.org"
GHOST = "@kanal_news_daily:example.org"


def vote(
    sender: str, ts: int, *answers: object, unstable: bool = False, selections: object = None
) -> dict[str, Any]:
    """A poll response as /relations returns it; `selections` replaces the list (malformed votes)."""
    chosen = list(answers) if selections is None else selections
    relates = {"rel_type": "m.reference", "event_id": POLL_EVENT}
    if unstable:
        content = {"m.relates_to": relates, "org.matrix.msc3381.poll.response": {"answers": chosen}}
    else:
        content = {"m.relates_to": relates, "m.selections": chosen}
    return {
        "type": "org.matrix.msc3381.poll.response" if unstable else "m.poll.response",
        "sender": sender,
        "origin_server_ts": ts,
        "event_id": f"${sender[1:].split(':')[0]}-{ts}",
        "room_id": "!room:example.org",
        "content": content,
    }


def end(sender: str, ts: int, *, unstable: bool = False) -> dict[str, Any]:
    kind = "org.matrix.msc3381.poll.end" if unstable else "m.poll.end"
    return {
        "type": kind,
        "sender": sender,
        "origin_server_ts": ts,
        "event_id": f"$end-{ts}",
        "content": {"m.relates_to": {"rel_type": "m.reference", "event_id": POLL_EVENT}, kind: {}},
    }


def tally(
    events: list[Any], *, max_selections: int = 1, answers: tuple[str, ...] = ("a", "b", "c")
) -> PollTally:
    return tally_poll(answers, max_selections, GHOST, events)


def test_only_each_senders_latest_response_counts() -> None:
    events = [
        vote("@ann:x.org", 300, "b"),
        vote("@ann:x.org", 100, "a"),
        vote("@bob:x.org", 200, "a"),
        vote("@ann:x.org", 200, "c"),
        vote("@cat:x.org", 100, "a"),
        vote("@cat:x.org", 150, selections=[]),  # took the vote back
    ]
    assert tally(events) == PollTally((("a", 1), ("b", 1), ("c", 0)), voters=2, ended=False)
    assert tally(list(reversed(events))) == tally(events)  # the order of the relations does not matter


def test_responses_after_the_end_do_not_count() -> None:
    events = [
        vote("@ann:x.org", 100, "a"),
        vote("@ann:x.org", 600, "b"),  # after the end: never happened, the earlier vote stands
        vote("@bob:x.org", 500, "b"),  # at the very moment of the end: counts
        vote("@cat:x.org", 700, "c"),
        end("@stranger:x.org", 200),  # not the poll's sender: ignored
        end(GHOST, 900),
        end(GHOST, 500),  # the first end closes the poll
    ]
    assert tally(events) == PollTally((("a", 1), ("b", 1), ("c", 0)), voters=2, ended=True)
    open_poll = tally([e for e in events if e["sender"] != GHOST])
    assert open_poll == PollTally((("a", 0), ("b", 2), ("c", 1)), voters=3, ended=False)


def test_stable_and_unstable_responses_and_ends_count_alike() -> None:
    events = [
        vote("@ann:x.org", 100, "a", unstable=True),
        vote("@bob:x.org", 100, "b"),
        vote("@bob:x.org", 200, "a", unstable=True),  # a stable vote changed with an unstable one
        vote("@cat:x.org", 400, "c", unstable=True),
        end(GHOST, 300, unstable=True),
    ]
    assert tally(events) == PollTally((("a", 2), ("b", 0), ("c", 0)), voters=2, ended=True)


def test_selections_are_cut_to_max_selections() -> None:
    events = [vote("@ann:x.org", 100, "b", "a"), vote("@bob:x.org", 100, "c", "c", "a", "b")]
    assert tally(events) == PollTally((("a", 0), ("b", 1), ("c", 1)), voters=2, ended=False)
    # Two allowed: the first two count, a repeated answer once.
    assert tally(events, max_selections=2) == PollTally((("a", 1), ("b", 1), ("c", 1)), voters=2, ended=False)


@pytest.mark.parametrize(
    "latest",
    [
        vote("@ann:x.org", 200, "zzz"),  # an unknown answer
        vote("@ann:x.org", 200, "a", "zzz", unstable=True),  # any unknown answer spoils the whole vote
        vote("@ann:x.org", 200, selections="a"),  # not a list
        vote("@ann:x.org", 200, selections=[7]),
        vote("@ann:x.org", 200, selections=None) | {"content": {"m.relates_to": {}}},  # no selections
    ],
)
def test_a_spoiled_latest_response_counts_for_nothing(latest: dict[str, Any]) -> None:
    events = [vote("@ann:x.org", 100, "a"), vote("@bob:x.org", 100, "b"), latest]
    assert tally(events, max_selections=2) == PollTally((("a", 0), ("b", 1), ("c", 0)), voters=1, ended=False)


def test_an_unknown_answer_cut_off_by_max_selections_does_not_spoil() -> None:
    assert tally([vote("@ann:x.org", 100, "a", "zzz")]) == PollTally(
        (("a", 1), ("b", 0), ("c", 0)), voters=1, ended=False
    )


def test_what_is_not_a_vote_is_ignored() -> None:
    redacted = vote("@ann:x.org", 200, "b") | {"content": {}}  # redaction strips m.relates_to
    events: list[Any] = [
        vote("@ann:x.org", 100, "a"),
        redacted,
        vote("@bob:x.org", 100, "b") | {"origin_server_ts": "100"},
        vote("@cat:x.org", 100, "b") | {"origin_server_ts": True},
        vote("@dan:x.org", 100, "b") | {"type": "m.room.message"},
        {"type": "m.poll.response", "content": {"m.selections": ["b"]}},
        "not an event",
        None,
    ]
    assert tally(events) == PollTally((("a", 1), ("b", 0), ("c", 0)), voters=1, ended=False)
    assert tally([]) == PollTally((("a", 0), ("b", 0), ("c", 0)), voters=0, ended=False)


def test_parse_poll_reads_ids_limits_and_kinds() -> None:
    stable = {
        "m.poll": {
            "kind": "m.disclosed",
            "max_selections": 2,
            "question": {"m.text": [{"body": "Q?"}]},
            "answers": [{"m.id": "1", "m.text": [{"body": "A"}]}, {"m.text": [{"body": "no id"}]}]
            + [{"m.id": str(n), "m.text": [{"body": f"N{n}"}]} for n in range(2, 30)],
        }
    }
    poll = parse_poll("m.poll.start", stable)
    assert poll is not None and poll.disclosed and poll.max_selections == 2
    assert len(poll.answers) == 20 and poll.answers[1].id is None  # MSC3381: at most 20 answers
    assert poll.answer_ids == ("1", *(str(n) for n in range(2, 20)))
    unstable = {
        "org.matrix.msc3381.poll.start": {
            "kind": "org.matrix.msc3381.poll.undisclosed",
            "max_selections": True,
            "question": {"org.matrix.msc1767.text": "Q?"},
            "answers": [{"id": "x", "org.matrix.msc1767.text": "X"}],
        }
    }
    poll = parse_poll("org.matrix.msc3381.poll.start", unstable)
    assert poll is not None and not poll.disclosed and poll.max_selections == 1
    unknown_kind = parse_poll(
        "m.poll.start", {"m.poll": {"kind": "x.y", "max_selections": 0, "answers": ["A"]}}
    )
    assert unknown_kind is not None and not unknown_kind.disclosed and unknown_kind.max_selections == 1


def poll_record(kind: str) -> PostRecord:
    return record(
        {
            "m.poll": {
                "kind": kind,
                "question": {"m.text": [{"body": "Tea or coffee?"}]},
                "answers": [
                    {"m.id": "a", "m.text": [{"body": "Tea"}]},
                    {"m.id": "b", "m.text": [{"body": "Coffee"}]},
                    {"m.id": "c", "m.text": [{"body": "Water"}]},
                ],
            }
        },
        event_type="m.poll.start",
    )


def test_a_poll_shows_its_counts_and_bars(renderer: Renderer) -> None:
    counted = PollTally((("a", 2), ("b", 1), ("c", 0)), voters=3, ended=False)
    view = renderer.post_view(poll_record("m.disclosed"), CHANNEL, LinkStyle.PAGE, counted)
    assert view is not None and view.poll_results is not None
    assert [(row.text, row.count, row.width) for row in view.poll_results.rows] == [
        ("Tea", 2, 65),
        ("Coffee", 1, 35),
        ("Water", 0, 0),
    ]
    page = renderer.post_page(CHANNEL, view).decode()
    assert '<span class="answer">Tea</span> <span class="votes">2</span>' in page
    assert '<span class="fill w-65"></span>' in page and '<span class="fill w-0"></span>' in page
    assert "3 voters" in page and "Results in Matrix" not in page and 'class="ended"' not in page
    assert " style=" not in page
    css = renderer.stylesheet.decode()
    assert all(f".w-{width} {{ width: {width}" in css for width in range(5, 101, 5))

    ended = PollTally((("a", 1), ("b", 0), ("c", 0)), voters=1, ended=True)
    view = renderer.post_view(poll_record("m.disclosed"), CHANNEL, LinkStyle.PAGE, ended)
    assert view is not None
    page = renderer.post_page(CHANNEL, view).decode()
    assert '<span class="voters">1 voter</span> · <span class="ended">ended</span>' in page
    assert "w-100" in page

    persian = ChannelInfo(1, "persian_ch", "کانال خبری", "", True, "!r:e.org", T0, "e.org")
    many = PollTally((("a", 1200), ("b", 0), ("c", 0)), voters=1200, ended=True)
    view = renderer.post_view(poll_record("m.disclosed"), persian, LinkStyle.PAGE, many)
    assert view is not None
    page = renderer.post_page(persian, view).decode()
    assert (
        '<span class="votes">۱٬۲۰۰</span>' in page
        and '<span class="voters">۱٬۲۰۰ رأی‌دهنده</span> · <span class="ended">پایان‌یافته' in page
    )


def test_an_undisclosed_poll_keeps_its_counts_until_it_ends(renderer: Renderer) -> None:
    counted = PollTally((("a", 2), ("b", 1), ("c", 0)), voters=3, ended=False)
    view = renderer.post_view(poll_record("m.undisclosed"), CHANNEL, LinkStyle.PAGE, counted)
    assert view is not None and view.poll_results is not None and view.poll_results.hidden
    page = renderer.post_page(CHANNEL, view).decode()
    assert 'class="tally"' not in page and '<li dir="auto">Tea</li>' in page
    assert '<span class="voters">3 voters</span> · Results when the poll ends' in page
    ended = PollTally(counted.counts, voters=3, ended=True)
    view = renderer.post_view(poll_record("m.undisclosed"), CHANNEL, LinkStyle.PAGE, ended)
    assert view is not None
    assert '<span class="votes">2</span>' in renderer.post_page(CHANNEL, view).decode()


def test_a_poll_without_a_tally_shows_its_answers_as_before(renderer: Renderer) -> None:
    view = renderer.post_view(poll_record("m.disclosed"), CHANNEL, LinkStyle.PAGE)
    assert view is not None and view.poll_results is None
    page = renderer.post_page(CHANNEL, view).decode()
    assert '<li dir="auto">Coffee</li>' in page and "Results in Matrix" in page and "voter" not in page


@pytest.mark.parametrize(
    "post",
    [
        record(None),
        record({"msgtype": "m.text", "body": "unsent"}, relayed_event_id=None),
        record({"msgtype": "m.text"}),
        record({"body": "x"}, event_type="m.reaction"),
        record({"m.poll": "not a poll"}, event_type="m.poll.start"),
    ],
)
def test_what_is_never_shown(renderer: Renderer, post: PostRecord) -> None:
    assert renderer.post_view(post, CHANNEL, LinkStyle.PAGE) is None


def test_an_edited_post(renderer: Renderer) -> None:
    edited = T0 + timedelta(hours=1)
    view = renderer.post_view(
        record({"msgtype": "m.text", "body": "new"}, edited_at=edited.replace(tzinfo=None)),
        CHANNEL,
        LinkStyle.PAGE,
    )
    assert view is not None and view.edited == edited and view.updated == edited


def test_media_refs_are_what_a_post_shows() -> None:
    assert media_refs("m.room.message", {"msgtype": "m.image", "url": "mxc://a.org/i"}) == {"mxc://a.org/i"}
    video = {"msgtype": "m.video", "url": "mxc://a.org/v", "info": {"thumbnail_url": "mxc://a.org/t"}}
    assert media_refs("m.room.message", video) == {"mxc://a.org/v", "mxc://a.org/t"}
    inline = {
        "msgtype": "m.text",
        "body": "mxc://a.org/mentioned",
        "format": "org.matrix.custom.html",
        "formatted_body": '<img src="mxc://a.org/in"><mx-reply><img src="mxc://a.org/reply"></mx-reply>',
    }
    # A URI mentioned in text, or only in a dropped reply fallback, is not shown: it may not be fetched.
    assert media_refs("m.room.message", inline) == {"mxc://a.org/in"}
    assert media_refs("m.room.message", {"msgtype": "m.text", "url": "mxc://a.org/x"}) == set()
    assert media_refs("m.room.message", None) == set()


# -- numbers, times, pages --------------------------------------------------------------------------


def test_numbers_and_times_in_english_and_persian() -> None:
    assert number(1234567, "en") == "1,234,567"
    assert number(1234567, "fa") == "۱٬۲۳۴٬۵۶۷"
    moment = datetime(2024, 3, 9, 8, 5)
    assert human_time(moment, "en") == "9 Mar 2024, 08:05 UTC"
    assert human_time(moment, "fa") == "۲۰۲۴-۰۳-۰۹ ۰۸:۰۵ UTC"


def test_a_persian_channel_page_is_marked_persian(renderer: Renderer) -> None:
    channel = ChannelInfo(1, "persian_ch", "کانال خبری", "", True, "!r:e.org", T0, "e.org", subscribers=1500)
    page = renderer.channel_page(channel, [], older=None, paged=False).decode()
    assert '<html lang="fa" dir="auto">' in page
    assert "۱٬۵۰۰ مشترک" in page and "هنوز پستی نیست." in page


# -- feeds ------------------------------------------------------------------------------------------


def test_tag_uris_are_stable_and_portless() -> None:
    assert tag_uri(CHANNEL) == "tag:example.org,2024-03-01:channel:7"
    assert tag_uri(CHANNEL, 42) == "tag:example.org,2024-03-01:channel:7:post:42"


def test_the_atom_feed_is_well_formed_xml_even_with_control_characters(renderer: Renderer) -> None:
    post = renderer.post_view(
        record({"msgtype": "m.text", "body": "bell \x07 <b> & ok"}), CHANNEL, LinkStyle.FEED
    )
    assert post is not None
    document = atom(CHANNEL, [post], "https://kanal.example")
    root = ET.fromstring(document)  # noqa: S314 (our own output)
    ns = "{http://www.w3.org/2005/Atom}"
    content = root.find(f"{ns}entry/{ns}content")
    assert content is not None and content.get("type") == "html"
    assert content.text == '<div dir="auto">bell  &lt;b&gt; &amp; ok</div>'


def test_entry_html_escapes_what_it_adds(renderer: Renderer) -> None:
    post = renderer.post_view(
        record({"msgtype": "m.file", "body": '<x onerror="y">.pdf', "url": "mxc://example.org/f"}),
        CHANNEL,
        LinkStyle.FEED,
    )
    assert post is not None
    html = str(entry_html(post, "en"))
    assert "<x" not in html and "&lt;x onerror=&#34;y&#34;&gt;.pdf" in html


# -- media types ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "content_type", "disposition"),
    [
        ("image/png", "image/png", "inline"),
        ("video/mp4; codecs=avc1", "video/mp4", "inline"),
        ("Audio/OGG", "audio/ogg", "inline"),
        ("application/octet-stream", "application/octet-stream", "inline"),
        ("image/svg+xml", "image/svg+xml", "attachment"),
        ("text/html; charset=utf-8", "text/html", "attachment"),
        ("application/pdf", "application/pdf", "attachment"),
        ("text/html\r\nX-Evil: 1", "application/octet-stream", "inline"),
        (None, "application/octet-stream", "inline"),
    ],
)
def test_media_types(header: str | None, content_type: str, disposition: str) -> None:
    assert content_type_of(header) == content_type
    assert disposition_for(content_type) == disposition


# -- caches -----------------------------------------------------------------------------------------


async def test_fresh_reads_never_hand_out_a_read_that_started_earlier() -> None:
    state = {"value": 0}
    started: list[int] = []
    gate = asyncio.Event()

    async def load(key: str) -> int:
        started.append(state["value"])
        seen = state["value"]
        await gate.wait()
        return seen

    reads: FreshReads[str, int] = FreshReads(load)
    first = asyncio.ensure_future(reads.get("k"))
    while not started:
        await asyncio.sleep(0)
    state["value"] = 1  # the database changes while the first read runs
    second = asyncio.ensure_future(reads.get("k"))
    third = asyncio.ensure_future(reads.get("k"))
    for _ in range(3):
        await asyncio.sleep(0)
    assert started == [0]  # the second read waits for the first to end
    gate.set()
    assert await first == 0
    assert await second == 1 and await third == 1  # both joined the read that started after them
    assert started == [0, 1]  # two reads for three requests
    assert await reads.get("k") == 1 and started == [0, 1, 1]


async def test_fresh_reads_pass_failures_to_every_waiter() -> None:
    async def load(key: str) -> int:
        raise RuntimeError("database down")

    reads: FreshReads[str, int] = FreshReads(load)
    results = await asyncio.gather(reads.get("k"), reads.get("k"), return_exceptions=True)
    assert all(isinstance(result, RuntimeError) for result in results)


def page(body: bytes, version: int, last_modified: datetime = T0) -> Page:
    return Page(200, body, {}, '"e"', last_modified, version)


def test_the_page_cache_serves_only_the_same_version_and_stays_bounded() -> None:
    cache = PageCache(max_entries=2, max_bytes=10)
    cache.put("a", page(b"aaaa", 1))
    assert cache.get("a", 1) is not None and cache.get("a", 2) is None
    cache.put("b", page(b"bbbb", 1))
    cache.get("a", 1)  # a is now the most recently used
    cache.put("c", page(b"cc", 1))
    assert cache.get("b", 1) is None and cache.get("a", 1) is not None and len(cache) == 2
    cache.put("d", page(b"dddddddd", 1))  # over the byte budget: everything older goes
    assert len(cache) == 1 and cache.get("d", 1) is not None
    cache.enabled = False
    assert cache.get("d", 1) is None


def test_last_modified_is_the_content_s_change_time_and_always_moves_forward() -> None:
    cache = PageCache()
    changed = datetime(2024, 3, 1, 12, 0, 7, 250_000, tzinfo=UTC)
    # When the content changed (whole seconds), not when the page happens to be rendered.
    assert cache.last_modified("other", changed) == datetime(2024, 3, 1, 12, 0, 7, tzinfo=UTC)
    cache.put("a", page(b"x", 1, changed.replace(microsecond=0)))
    # Another version changed in the same second, or only in values without a change time (a
    # subscriber count): a second after the rendering it replaces, never the same date.
    assert cache.last_modified("a", changed) == datetime(2024, 3, 1, 12, 0, 8, tzinfo=UTC)
    later = changed + timedelta(hours=1)
    assert cache.last_modified("a", later) == later.replace(microsecond=0)


async def test_refreshing_cache_serves_stale_values_while_it_refreshes() -> None:
    answers = [1, 2]
    calls: list[str] = []

    async def fetch(key: str) -> int:
        calls.append(key)
        return answers.pop(0)

    cache: RefreshingCache[str, int] = RefreshingCache(
        fetch, fallback=-1, ttl=0.0, wait=1.0, retry=0.0, fetch_timeout=1.0
    )
    assert await cache.get("k") == 1 and cache.generation == 1
    assert await cache.get("k") == 1  # stale: answered at once, refreshed behind
    await asyncio.sleep(0.01)
    assert cache.peek("k") == 2 and cache.generation == 2 and calls == ["k", "k"]
    await cache.close()


async def test_refreshing_cache_falls_back_and_keeps_what_it_had() -> None:
    release = asyncio.Event()
    fail = {"now": False}

    async def fetch(key: str) -> int:
        if fail["now"]:
            raise ConnectionError("homeserver down")
        await release.wait()
        return 5

    cache: RefreshingCache[str, int] = RefreshingCache(
        fetch, fallback=-1, ttl=0.0, wait=0.01, retry=60.0, fetch_timeout=5.0
    )
    assert await cache.get("k") == -1  # not there yet: the page does not wait for it
    release.set()
    await asyncio.sleep(0.01)
    assert await cache.get("k") == 5
    fail["now"] = True
    await asyncio.sleep(0.01)  # the refresh the last get started fails…
    assert cache.peek("k") == 5  # …and the last good value stays
    generation = cache.generation
    assert await cache.get("k") == 5 and cache.generation == generation
    await cache.close()
