"""The footer Kanal adds to a relayed text post: a comments link and a compact view count.

Pure functions. A footer is rebuilt from the post's own content (`Post.content`, which never holds a
footer) every time, so an edit from backstage, a new view count and the comments link never undo
each other: whoever edits the relayed post calls `decorate` with everything the footer should show.
Only text posts (m.text, m.notice, m.emote) get a footer; media, stickers and polls are left as sent.
"""

from __future__ import annotations

import copy
import html
from typing import Any

from bridge.matrix.relay import TEXT_MSGTYPES


def compact(count: int) -> str:
    """1234 -> "1.2K", 1_500_000 -> "1.5M" (the way Telegram shows view counts)."""
    for limit, suffix in ((1_000_000_000, "B"), (1_000_000, "M"), (1_000, "K")):
        if count >= limit:
            value = count / limit
            text = f"{value:.1f}".rstrip("0").rstrip(".") if value < 10 else str(int(value))
            return f"{text}{suffix}"
    return str(count)


def decorate(
    content: dict[str, Any], *, comments_url: str | None = None, views: int | None = None
) -> dict[str, Any]:
    """A copy of `content` with the footer appended (unchanged when there is nothing to add)."""
    out = copy.deepcopy(content)
    if out.get("msgtype") not in TEXT_MSGTYPES or not isinstance(out.get("body"), str):
        return out
    plain: list[str] = []
    rich: list[str] = []
    if comments_url:
        plain.append(f"💬 Comments: {comments_url}")
        rich.append(f'<a href="{html.escape(comments_url, quote=True)}">💬 Comments</a>')
    if views is not None:
        plain.append(f"👁 {compact(views)}")
        rich.append(f"👁 {compact(views)}")
    if not plain:
        return out
    if out.get("format") != "org.matrix.custom.html" or not isinstance(out.get("formatted_body"), str):
        out["format"] = "org.matrix.custom.html"
        out["formatted_body"] = html.escape(out["body"]).replace("\n", "<br>")
    out["body"] = out["body"] + "\n\n" + " · ".join(plain)
    out["formatted_body"] = out["formatted_body"] + "<br><br>" + " · ".join(rich)
    return out
