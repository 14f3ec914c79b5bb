"""What a backstage event becomes in the broadcast room: pure functions, no I/O.

Posts are relayed unchanged (same msgtype, body, formatting and `mxc://` media) except:
relations are re-pointed at the relayed copies, reply fallbacks (which would reveal the admin's
account) are removed, an optional signature is appended, and `net.kanal.source` records the backstage
event so the mapping can be rebuilt from our own echo after a crash.
"""

from __future__ import annotations

import copy
import html
import re
from dataclasses import dataclass
from typing import Any

SOURCE_KEY = "net.kanal.source"
REF_PLACEHOLDER = "$kanal:ref"
TEXT_MSGTYPES = ("m.text", "m.notice", "m.emote")
POLL_START_TYPES = ("m.poll.start", "org.matrix.msc3381.poll.start")  # stable, and as Element sends it
POLL_END_TYPES = ("m.poll.end", "org.matrix.msc3381.poll.end")
RELAYED_EVENT_TYPES = ("m.room.message", "m.sticker", *POLL_START_TYPES, *POLL_END_TYPES)

_MX_REPLY = re.compile(r"^<mx-reply>.*?</mx-reply>", re.DOTALL)


@dataclass(frozen=True)
class RelayPlan:
    event_type: str
    content: dict[str, Any]
    ref_source: str | None
    """The backstage event whose relayed copy replaces `REF_PLACEHOLDER` at send time."""
    is_edit: bool


def strip_reply_fallback(content: dict[str, Any]) -> None:
    body = content.get("body")
    if isinstance(body, str) and body.startswith("> "):
        lines = body.split("\n")
        index = 0
        while index < len(lines) and lines[index].startswith(">"):
            index += 1
        if index < len(lines) and lines[index] == "":
            content["body"] = "\n".join(lines[index + 1 :])
    formatted = content.get("formatted_body")
    if isinstance(formatted, str):
        content["formatted_body"] = _MX_REPLY.sub("", formatted, count=1)


def sign(content: dict[str, Any], author_name: str) -> None:
    """Append `— author` to a text post (and to its formatted body when there is one)."""
    if content.get("msgtype") not in TEXT_MSGTYPES or not isinstance(content.get("body"), str):
        return
    content["body"] = f"{content['body']}\n— {author_name}"
    if content.get("format") == "org.matrix.custom.html" and isinstance(content.get("formatted_body"), str):
        content["formatted_body"] = f"{content['formatted_body']}<br>— {html.escape(author_name)}"


def plan_relay(
    event_type: str,
    content: dict[str, Any],
    *,
    source_event_id: str,
    known_source: set[str],
    signature: str | None = None,
) -> RelayPlan | None:
    """Turn a backstage message into the content to send as the ghost, or None to relay nothing.

    `known_source` holds the backstage events (among those this one refers to) that were published,
    so a reply to a command or to an unpublished message is relayed as a plain post.
    """
    if event_type not in RELAYED_EVENT_TYPES:
        return None
    out = copy.deepcopy(content)
    relates = out.pop("m.relates_to", None)
    relates = relates if isinstance(relates, dict) else {}
    ref: str | None = None
    is_edit = False

    if relates.get("rel_type") == "m.replace" and isinstance(relates.get("event_id"), str):
        target = relates["event_id"]
        if target not in known_source:
            return None
        new_content = out.get("m.new_content")
        if not isinstance(new_content, dict):
            return None
        new_content.pop("m.relates_to", None)
        if signature:
            sign(new_content, signature)
            sign(out, signature)
        out["m.relates_to"] = {"rel_type": "m.replace", "event_id": REF_PLACEHOLDER}
        return RelayPlan(event_type, out, target, True)

    if event_type in POLL_END_TYPES:
        # Ending a poll in backstage ends its published copy (a reference to it, as the ghost).
        target = relates.get("event_id")
        if (
            relates.get("rel_type") != "m.reference"
            or not isinstance(target, str)
            or target not in known_source
        ):
            return None
        out["m.relates_to"] = {"rel_type": "m.reference", "event_id": REF_PLACEHOLDER}
        return RelayPlan(event_type, out, target, True)

    reply = relates.get("m.in_reply_to")
    if isinstance(reply, dict) and isinstance(reply.get("event_id"), str):
        strip_reply_fallback(out)
        if reply["event_id"] in known_source:
            ref = reply["event_id"]
            out["m.relates_to"] = {"m.in_reply_to": {"event_id": REF_PLACEHOLDER}}
    out.pop("m.new_content", None)
    if signature:
        sign(out, signature)
    out[SOURCE_KEY] = source_event_id
    return RelayPlan(event_type, out, ref, is_edit)


def replace_ref(value: Any, relayed_event_id: str) -> Any:
    """Put the relayed event id wherever the placeholder stands (recursively)."""
    if value == REF_PLACEHOLDER:
        return relayed_event_id
    if isinstance(value, dict):
        return {k: replace_ref(v, relayed_event_id) for k, v in value.items()}
    if isinstance(value, list):
        return [replace_ref(v, relayed_event_id) for v in value]
    return value


def silent_content(text: str) -> dict[str, Any]:
    return {"msgtype": "m.notice", "body": text}


def with_text(current: dict[str, Any], text: dict[str, Any]) -> dict[str, Any]:
    """A post's content with new text (`text`: msgtype, body and maybe formatting): a text post keeps
    its msgtype; media keep the file and take the text as caption (MSC2530: the name moves to
    `filename`)."""
    msgtype = current.get("msgtype")
    if not isinstance(msgtype, str) or msgtype in TEXT_MSGTYPES:
        return {**text, "msgtype": msgtype if isinstance(msgtype, str) else "m.text"}
    media = {k: v for k, v in current.items() if k not in ("body", "format", "formatted_body")}
    if "filename" not in media and isinstance(current.get("body"), str):
        media["filename"] = current["body"]  # before, the body named the file; now it is a caption
    return media | {k: v for k, v in text.items() if k != "msgtype"}
