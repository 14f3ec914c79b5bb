"""A channel's posts as Atom 1.0 (RFC 4287) and JSON Feed 1.1; pure functions over views.

Ids are tag URIs (RFC 4151) made of the domain, the channel's creation date and the channel's and
post's row ids, so they survive a channel rename (permalinks, which carry the handle, do not).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from typing import Any, Final

from markupsafe import Markup

from bridge.web.render import STRINGS, ChannelInfo, PostView, iso, utc

ATOM_NS: Final = "http://www.w3.org/2005/Atom"
XML_LANG: Final = "{http://www.w3.org/XML/1998/namespace}lang"
JSON_FEED_VERSION: Final = "https://jsonfeed.org/version/1.1"
ATOM_TYPE: Final = "application/atom+xml; charset=utf-8"
JSON_FEED_TYPE: Final = "application/feed+json; charset=utf-8"
GENERATOR: Final = "Kanal"

# Characters XML 1.0 forbids (C0 controls other than tab and newlines, lone surrogates, U+FFFE/F).
_NOT_XML: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml(text: str) -> str:
    return _NOT_XML.sub("", text)


def tag_uri(channel: ChannelInfo, post_id: int | None = None) -> str:
    authority = channel.domain.split(":", 1)[0]
    specific = f"channel:{channel.id}" + (f":post:{post_id}" if post_id is not None else "")
    return f"tag:{authority},{utc(channel.created_at):%Y-%m-%d}:{specific}"


def entry_html(post: PostView, lang: str) -> Markup:
    """One post as an HTML fragment for a feed reader (absolute links, no styles)."""
    t = STRINGS[lang]
    parts: list[Markup] = []
    if post.kind == "image" and post.image:
        parts.append(Markup('<p><img src="{}" alt="{}"></p>').format(post.image, post.image_alt))
    elif post.kind == "video" and post.attachment:
        poster = (
            Markup('<img src="{}" alt="{}"><br>').format(post.image, post.image_alt) if post.image else ""
        )
        parts.append(
            Markup('<p><a href="{}">{}▶ {}</a></p>').format(post.attachment.href, poster, t["video"])
        )
    elif post.kind == "file" and post.attachment:
        size = f" ({post.attachment.size})" if post.attachment.size else ""
        parts.append(
            Markup('<p><a href="{}">{}</a>{}</p>').format(post.attachment.href, post.attachment.label, size)
        )
    elif post.kind == "poll":
        answers = Markup("").join(Markup("<li>{}</li>").format(a) for a in post.poll_answers)
        parts.append(
            Markup("<p>{}: {}</p><ul>{}</ul><p><em>{}</em></p>").format(
                t["poll"], post.poll_question, answers, t["results_in_matrix"]
            )
        )
    if post.text:
        parts.append(Markup('<div dir="auto">{}</div>').format(post.text))
    if post.edited:
        parts.append(Markup("<p><em>{}</em></p>").format(t["edited"]))
    return Markup("\n").join(parts)


def atom(channel: ChannelInfo, posts: Sequence[PostView], public_url: str) -> bytes:
    home = public_url + channel.path
    lang = channel.lang
    feed = ET.Element("feed", {"xmlns": ATOM_NS, XML_LANG: lang})

    def add(parent: ET.Element, name: str, text: str | None = None, **attributes: str) -> ET.Element:
        element = ET.SubElement(parent, name, attributes)
        if text is not None:
            element.text = _xml(text)
        return element

    add(feed, "id", tag_uri(channel))
    add(feed, "title", channel.title)
    if channel.about:
        add(feed, "subtitle", channel.about)
    updated = max((p.updated for p in posts), default=utc(channel.created_at))
    add(feed, "updated", iso(updated))
    add(feed, "link", rel="alternate", type="text/html", href=home)
    add(feed, "link", rel="self", type="application/atom+xml", href=home + "/feed.atom")
    author = add(feed, "author")
    add(author, "name", channel.title)
    add(author, "uri", home)
    add(feed, "generator", GENERATOR)
    if channel.avatar_path:
        add(feed, "icon", public_url + channel.avatar_path)
    for post in posts:
        entry = add(feed, "entry")
        add(entry, "id", tag_uri(channel, post.id))
        add(entry, "title", post.summary or f"#{post.id}")
        add(entry, "link", rel="alternate", type="text/html", href=post.permalink)
        add(entry, "published", iso(post.created))
        add(entry, "updated", iso(post.updated))
        add(entry, "content", str(entry_html(post, lang)), type="html")
    document: bytes = ET.tostring(feed, encoding="utf-8", xml_declaration=True)
    return document


def json_feed(channel: ChannelInfo, posts: Sequence[PostView], public_url: str) -> bytes:
    home = public_url + channel.path
    feed: dict[str, Any] = {
        "version": JSON_FEED_VERSION,
        "title": channel.title,
        "home_page_url": home,
        "feed_url": home + "/feed.json",
        "language": channel.lang,
        "authors": [{"name": channel.title, "url": home}],
        "items": [_json_item(channel, post) for post in posts],
    }
    if channel.about:
        feed["description"] = channel.about
    if channel.avatar_path:
        feed["icon"] = feed["favicon"] = public_url + channel.avatar_path
    return json.dumps(feed, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _json_item(channel: ChannelInfo, post: PostView) -> Mapping[str, Any]:
    item: dict[str, Any] = {
        "id": tag_uri(channel, post.id),
        "url": post.permalink,
        "content_html": str(entry_html(post, channel.lang)),
        "date_published": iso(post.created),
        "date_modified": iso(post.updated),
    }
    if post.plain:
        item["content_text"] = post.plain
    if post.summary:
        item["summary"] = post.summary
    if post.image:
        item["image"] = post.image
    return item
