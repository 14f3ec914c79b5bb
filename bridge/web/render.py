"""What a page shows, decided without I/O: posts as views, numbers and times, and the Jinja templates.

Templates are Jinja2 with autoescaping on for every template: whatever a channel owner typed is
escaped unless it went through `sanitise` (which returns `Markup`). That keeps "forgot to escape" out
of reach of a template edit, which hand-written f-strings would not. Templates are compiled once at
start; rendering happens only when the page cache misses (see pages.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import nh3
from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template
from markupsafe import Markup

from bridge.matrix.polls import (
    Poll,
    PollTally,
    parse_poll,
)
from bridge.text.digits import localise_digits
from bridge.text.i18n import detect_language
from bridge.web.sanitise import Sanitiser, media_path, plain_html

TEMPLATES: Final = Path(__file__).parent / "templates"
STYLESHEET: Final = TEMPLATES / "kanal.css"
PAGE_SIZE: Final = 20
FEED_SIZE: Final = 50
DIRECTORY_LIMIT: Final = 200
SUMMARY_LENGTH: Final = 80
ABOUT_PREVIEW_LENGTH: Final = 200
AVATAR_HUES: Final = 8
MAX_MEDIA_DIMENSION: Final = 4096

TEXT_MSGTYPES: Final = ("m.text", "m.notice", "m.emote")
POLL_BAR_STEP: Final = 5  # the bars' widths go in steps of 5 % (one CSS class each: no inline styles)
HTML_FORMAT: Final = "org.matrix.custom.html"
MATRIX_TO: Final = "https://matrix.to/#/"

STRINGS: Final[Mapping[str, Mapping[str, str]]] = {
    "en": {
        "subscribers": "subscribers",
        "subscriber": "subscriber",
        "verified": "Verified",
        "edited": "edited",
        "open_in_matrix": "Open in a Matrix app",
        "older": "Older posts",
        "newest": "Latest posts",
        "permalink": "Link",
        "poll": "Poll",
        "results_in_matrix": "Results in Matrix",
        "voter": "voter",
        "voters": "voters",
        "poll_ended": "ended",
        "results_when_ended": "Results when the poll ends",
        "video": "Video",
        "download": "Download",
        "no_posts": "No posts yet.",
        "channels": "Channels",
        "search": "Search",
        "search_label": "Search channels",
        "no_channels": "No channels found.",
        "not_found": "Not found",
        "not_found_text": "There is no such page, or it is not public.",
        "bad_request": "Bad request",
        "bad_request_text": "This address is not one Kanal understands.",
        "back": "All channels",
        "view_in_channel": "View in the channel",
    },
    "fa": {
        "subscribers": "مشترک",
        "subscriber": "مشترک",
        "verified": "تأییدشده",
        "edited": "ویرایش‌شده",
        "open_in_matrix": "باز کردن در برنامهٔ ماتریکس",
        "older": "پست‌های قدیمی‌تر",
        "newest": "تازه‌ترین پست‌ها",
        "permalink": "پیوند",
        "poll": "نظرسنجی",
        "results_in_matrix": "نتایج در ماتریکس",
        "voter": "رأی‌دهنده",
        "voters": "رأی‌دهنده",
        "poll_ended": "پایان‌یافته",
        "results_when_ended": "نتایج پس از پایان نظرسنجی",
        "video": "ویدیو",
        "download": "دریافت",
        "no_posts": "هنوز پستی نیست.",
        "channels": "کانال‌ها",
        "search": "جستجو",
        "search_label": "جستجوی کانال‌ها",
        "no_channels": "کانالی پیدا نشد.",
        "not_found": "پیدا نشد",
        "not_found_text": "چنین صفحه‌ای نیست یا عمومی نیست.",
        "bad_request": "درخواست نادرست",
        "bad_request_text": "کانال این نشانی را نمی‌شناسد.",
        "back": "همهٔ کانال‌ها",
        "view_in_channel": "دیدن در کانال",
    },
}


@dataclass(frozen=True)
class ChannelInfo:
    """A public channel as its pages show it."""

    id: int
    handle: str
    title: str
    about: str
    verified: bool
    room_id: str
    created_at: datetime
    domain: str
    subscribers: int | None = None
    avatar: str | None = None  # the room's mxc:// avatar, when it has one

    @property
    def lang(self) -> str:
        return detect_language(f"{self.title} {self.about}", "en")

    @property
    def alias(self) -> str:
        return f"#{self.handle}:{self.domain}"

    @property
    def path(self) -> str:
        return f"/c/{self.handle}"

    @property
    def matrix_to(self) -> str:
        return MATRIX_TO + quote(self.alias, safe="")

    @property
    def avatar_path(self) -> str | None:
        return media_path(self.avatar)

    @property
    def initial(self) -> str:
        return self.title.strip()[:1].upper() or self.handle[:1].upper()

    @property
    def hue(self) -> int:
        return hashlib.blake2b(self.handle.encode(), digest_size=1).digest()[0] % AVATAR_HUES


@dataclass(frozen=True)
class PostRecord:
    """The columns of a `Post` row a page needs."""

    id: int
    event_type: str
    content: dict[str, Any] | None
    relayed_event_id: str | None
    created_at: datetime
    edited_at: datetime | None


@dataclass(frozen=True)
class Attachment:
    href: str
    label: str
    size: str | None


@dataclass(frozen=True)
class PollRow:
    text: str
    count: int
    width: int  # 0..100, a multiple of POLL_BAR_STEP: the share of voters who chose this answer


@dataclass(frozen=True)
class PollResults:
    rows: tuple[PollRow, ...]
    voters: int
    ended: bool
    hidden: bool  # an undisclosed poll still open: the total shows, the counts do not


@dataclass(frozen=True)
class PostView:
    id: int
    kind: str  # text | image | video | file | poll
    text: Markup  # the body or the media caption, safe HTML; may be empty
    plain: str  # the same as plain text (feeds)
    summary: str  # one line (titles)
    emote: bool
    image: str | None
    image_alt: str
    width: int | None
    height: int | None
    attachment: Attachment | None
    poll_question: str
    poll_answers: tuple[str, ...]
    poll_results: PollResults | None  # None: not a poll, or its votes are not known (yet)
    created: datetime
    edited: datetime | None
    permalink: str
    matrix_to: str

    @property
    def updated(self) -> datetime:
        return self.edited or self.created


class LinkStyle(Enum):
    """Where a post is shown decides how its links are written."""

    PAGE = "page"  # same-origin paths
    EMBED = "embed"  # same-origin paths, links open outside the iframe
    FEED = "feed"  # absolute URLs: feed readers live elsewhere


def utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; Kanal stores UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def iso(moment: datetime) -> str:
    return utc(moment).isoformat(timespec="seconds").replace("+00:00", "Z")


def human_time(moment: datetime, lang: str) -> str:
    moment = utc(moment)
    if lang == "fa":
        return localise_digits(f"{moment:%Y-%m-%d %H:%M}", lang) + " UTC"
    return f"{moment.day} {moment:%b %Y, %H:%M} UTC"


def number(value: int, lang: str) -> str:
    return localise_digits(f"{value:,}", lang)


def file_size(value: object) -> str | None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        return None
    size = float(value)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _dimension(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_MEDIA_DIMENSION:
        return value
    return None


def _summary(text: str) -> str:
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return line if len(line) <= SUMMARY_LENGTH else line[: SUMMARY_LENGTH - 1].rstrip() + "…"


def poll_results(poll: Poll, tally: PollTally) -> PollResults:
    """What a page shows of a tally: each shown answer's count and bar, the voters, the state."""
    counts = dict(tally.counts)
    voters = tally.voters

    def width(count: int) -> int:
        if voters <= 0:
            return 0
        steps = 100 // POLL_BAR_STEP
        return (2 * count * steps + voters) // (2 * voters) * POLL_BAR_STEP  # rounded half up

    rows = tuple(
        PollRow(a.text, count, width(count))
        for a in poll.answers
        for count in [counts.get(a.id, 0) if a.id is not None else 0]
    )
    return PollResults(rows, voters, tally.ended, hidden=not poll.disclosed and not tally.ended)


def media_refs(event_type: str, content: Mapping[str, Any] | None) -> set[str]:
    """The `mxc://` URIs a post shows: only these may be fetched through the media proxy."""
    if content is None:
        return set()
    refs: set[str] = set()
    if event_type == "m.sticker" or content.get("msgtype") in ("m.image", "m.video", "m.audio", "m.file"):
        if isinstance(content.get("url"), str):
            refs.add(content["url"])
    info = content.get("info")
    if content.get("msgtype") == "m.video" and isinstance(info, dict):
        if isinstance(info.get("thumbnail_url"), str):
            refs.add(info["thumbnail_url"])
    formatted = content.get("formatted_body")
    if content.get("format") == HTML_FORMAT and isinstance(formatted, str) and "mxc://" in formatted:
        refs.update(_inline_images(formatted))
    return {ref for ref in refs if media_path(ref) is not None}


def _inline_images(html: str) -> set[str]:
    """The mxc:// sources of `<img>` elements that survive sanitising."""
    found: set[str] = set()

    def record(tag: str, attribute: str, value: str) -> str | None:
        if tag == "img" and attribute == "src":
            found.add(value.strip())
        return None

    nh3.clean(
        html,
        tags={"img"},
        attributes={"img": {"src"}},
        url_schemes={"mxc"},
        attribute_filter=record,
        clean_content_tags={"mx-reply", "script", "style"},
    )
    return found


def template_environment() -> Environment:
    """A Jinja environment over TEMPLATES, as every page and form of the web face renders, with every
    template read now (not from disk inside the event loop on a first request)."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    for name in env.list_templates(extensions=["html"]):
        env.get_template(name)
    return env


class Renderer:
    """Jinja templates and sanitisers, built once; turns views into page bytes."""

    def __init__(self, *, public_url: str, domain: str, default_language: str) -> None:
        self.public_url = public_url.rstrip("/")
        self.domain = domain
        self.default_language = default_language if default_language in STRINGS else "en"
        self._env = template_environment()
        self._env.globals["number"] = number
        self._env.globals["human_time"] = human_time
        self._env.globals["iso"] = iso
        names = ("directory.html", "channel.html", "post.html", "embed.html", "error.html")
        self._templates: dict[str, Template] = {name: self._env.get_template(name) for name in names}
        self.stylesheet = STYLESHEET.read_bytes()
        digest = hashlib.sha256(self.stylesheet)
        for path in sorted(TEMPLATES.iterdir()):
            digest.update(path.read_bytes())
        # Changes with the templates and the stylesheet, so an upgrade is never hidden by a cached ETag.
        self.fingerprint = digest.hexdigest()[:16]
        self.stylesheet_path = f"/static/kanal.css?v={self.fingerprint}"
        self._sanitisers = {
            LinkStyle.PAGE: Sanitiser(),
            LinkStyle.EMBED: Sanitiser(new_tab=True),
            LinkStyle.FEED: Sanitiser(media_base=self.public_url),
        }

    # -- posts -------------------------------------------------------------------------------------

    def post_view(
        self, post: PostRecord, channel: ChannelInfo, style: LinkStyle, tally: PollTally | None = None
    ) -> PostView | None:
        """How a post shows, or None for what a page never shows (no content yet, unknown kinds).

        `tally`: a poll's votes, when they are known.
        """
        content = post.content
        if not isinstance(content, dict) or post.relayed_event_id is None:
            return None
        base = self.public_url if style is LinkStyle.FEED else ""
        sanitiser = self._sanitisers[style]

        def link(uri: object) -> str | None:
            path = media_path(uri)
            return base + path if path is not None else None

        body = content.get("body") if isinstance(content.get("body"), str) else ""
        assert isinstance(body, str)
        formatted = content.get("formatted_body")
        html_body = formatted if content.get("format") == HTML_FORMAT and isinstance(formatted, str) else None
        info = content.get("info") if isinstance(content.get("info"), dict) else {}
        assert isinstance(info, dict)
        msgtype = content.get("msgtype")
        filename = content.get("filename") if isinstance(content.get("filename"), str) else None

        def text(source: str, source_html: str | None) -> Markup:
            return sanitiser.clean(source_html) if source_html is not None else plain_html(source)

        kind = "text"
        shown_text, plain = body, body
        image: str | None = None
        attachment: Attachment | None = None
        question = ""
        answers: tuple[str, ...] = ()
        results: PollResults | None = None
        poll = parse_poll(post.event_type, content)
        if poll is not None:
            kind = "poll"
            question, answers = poll.question, tuple(a.text for a in poll.answers)
            results = poll_results(poll, tally) if tally is not None else None
            shown_text, plain, html_body = "", question, None
        elif post.event_type == "m.sticker" or msgtype == "m.image":
            kind = "image"
            image = link(content.get("url"))
        elif msgtype in ("m.video", "m.audio", "m.file"):
            kind = "video" if msgtype == "m.video" else "file"
            image = link(info.get("thumbnail_url")) if msgtype == "m.video" else None
            href = link(content.get("url"))
            if href is not None:
                attachment = Attachment(href, filename or body or "file", file_size(info.get("size")))
        elif post.event_type != "m.room.message" or not isinstance(msgtype, str) or not body:
            return None
        caption = kind in ("image", "video", "file")
        if caption:
            # Since Matrix 1.10 a media body is a caption when `filename` is set and differs from it.
            has_caption = filename is not None and body != filename and post.event_type != "m.sticker"
            shown_text, plain = (body, body) if has_caption else ("", "")
            html_body = html_body if has_caption else None
        permalink = f"{base}/c/{channel.handle}/{post.id}"
        return PostView(
            id=post.id,
            kind=kind,
            text=text(shown_text, html_body) if shown_text or html_body else Markup(""),
            plain=plain,
            summary=_summary(plain or question or filename or body),
            emote=msgtype == "m.emote",
            image=image,
            image_alt=body if caption else "",
            width=_dimension(info.get("w")) if image and kind == "image" else None,
            height=_dimension(info.get("h")) if image and kind == "image" else None,
            attachment=attachment,
            poll_question=question,
            poll_answers=answers,
            poll_results=results,
            created=utc(post.created_at),
            edited=utc(post.edited_at) if post.edited_at is not None else None,
            permalink=permalink,
            matrix_to=(
                MATRIX_TO
                + f"{quote(channel.room_id, safe='')}/{quote(post.relayed_event_id, safe='')}"
                + f"?via={quote(self.domain, safe='')}"
            ),
        )

    def post_views(
        self,
        posts: Sequence[PostRecord],
        channel: ChannelInfo,
        style: LinkStyle,
        tallies: Mapping[int, PollTally | None] | None = None,
    ) -> list[PostView]:
        """`tallies`: the known votes of the polls among `posts`, by post id."""
        tallies = tallies or {}
        return [
            view
            for post in posts
            if (view := self.post_view(post, channel, style, tallies.get(post.id))) is not None
        ]

    # -- pages -------------------------------------------------------------------------------------

    def _render(self, name: str, lang: str, **values: Any) -> bytes:
        return (
            self._templates[name]
            .render(lang=lang, t=STRINGS[lang], css=self.stylesheet_path, **values)
            .encode("utf-8")
        )

    def directory(self, channels: Sequence[ChannelInfo], query: str) -> bytes:
        lang = detect_language(query, self.default_language)
        return self._render(
            "directory.html",
            lang,
            channels=channels,
            query=query,
            about_length=ABOUT_PREVIEW_LENGTH,
            strings=STRINGS,
        )

    def channel_page(
        self, channel: ChannelInfo, posts: Sequence[PostView], *, older: int | None, paged: bool
    ) -> bytes:
        """`older`: the `before=` of the next page back, if any; `paged`: this is not the newest page."""
        return self._render(
            "channel.html", channel.lang, channel=channel, posts=posts, older=older, paged=paged
        )

    def post_page(self, channel: ChannelInfo, post: PostView) -> bytes:
        return self._render("post.html", channel.lang, channel=channel, post=post)

    def embed(self, channel: ChannelInfo, post: PostView) -> bytes:
        return self._render(
            "embed.html", channel.lang, channel=channel, post=post, public_url=self.public_url
        )

    def error(self, status: int, lang: str | None = None) -> bytes:
        key = "not_found" if status == 404 else "bad_request"
        return self._render("error.html", lang or self.default_language, status=status, key=key)
