"""Polls, pure: a poll start event read in its stable (`m.poll`) or MSC3381 form, and its votes
counted from its relations as Matrix defines them (a voter's latest response counts; the end closes)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

POLL_EVENT_TYPES: Final = ("m.poll.start", "org.matrix.msc3381.poll.start")
POLL_RESPONSE_TYPES: Final = ("m.poll.response", "org.matrix.msc3381.poll.response")
POLL_END_TYPES: Final = ("m.poll.end", "org.matrix.msc3381.poll.end")
POLL_DISCLOSED_KINDS: Final = ("m.disclosed", "org.matrix.msc3381.poll.disclosed")
MAX_POLL_ANSWERS: Final = 20  # MSC3381: clients truncate the answers to 20


@dataclass(frozen=True)
class PollAnswer:
    id: str | None  # `m.id` (stable) or `id` (MSC3381); an answer without one cannot be voted for
    text: str


@dataclass(frozen=True)
class Poll:
    """A poll start event's content, stable (`m.poll`) or MSC3381 form."""

    question: str
    answers: tuple[PollAnswer, ...]
    max_selections: int
    disclosed: bool  # results may be shown while the poll is open (unknown kinds are undisclosed)

    @property
    def answer_ids(self) -> tuple[str, ...]:
        return tuple(answer.id for answer in self.answers if answer.id is not None)


@dataclass(frozen=True)
class PollTally:
    """The votes of a poll as its relations stand: per answer id, in answer order."""

    counts: tuple[tuple[str, int], ...]
    voters: int  # senders whose counted response selects at least one answer
    ended: bool


def text_of(value: object) -> str:
    """The text of an extensible-events text block (`m.text`, MSC1767) or a plain string."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        plain = [
            b.get("body") for b in value if isinstance(b, dict) and b.get("mimetype") in (None, "text/plain")
        ]
        return next((b for b in plain if isinstance(b, str)), "")
    if isinstance(value, dict):
        for key in ("m.text", "org.matrix.msc1767.text", "body"):
            text = text_of(value.get(key))
            if text:
                return text
    return ""


def parse_poll(event_type: str, content: Mapping[str, Any]) -> Poll | None:
    """The poll of a poll start event, stable (`m.poll`) or MSC3381 form; None if it is not one."""
    if event_type not in POLL_EVENT_TYPES:
        return None
    poll = content.get("m.poll") or content.get("org.matrix.msc3381.poll.start")
    if not isinstance(poll, dict):
        return None
    question = text_of(poll.get("question")) or text_of(content)
    raw_answers = poll.get("answers")
    answers: list[PollAnswer] = []
    for raw in (raw_answers if isinstance(raw_answers, list) else [])[:MAX_POLL_ANSWERS]:
        text = text_of(raw)
        if not text:
            continue
        answer_id = (raw.get("m.id") or raw.get("id")) if isinstance(raw, dict) else None
        answers.append(PollAnswer(answer_id if isinstance(answer_id, str) and answer_id else None, text))
    if not question and not answers:
        return None
    limit = poll.get("max_selections")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        limit = 1  # the default, and what a nonsensical value falls back to
    return Poll(
        question=question,
        answers=tuple(answers),
        max_selections=limit,
        disclosed=poll.get("kind") in POLL_DISCLOSED_KINDS,
    )


def poll_of(event_type: str, content: Mapping[str, Any]) -> tuple[str, tuple[str, ...]] | None:
    """(question, answers) of a poll start event, stable (`m.poll`) or MSC3381 form."""
    poll = parse_poll(event_type, content)
    return (poll.question, tuple(a.text for a in poll.answers)) if poll is not None else None


def _selections(content: Mapping[str, Any]) -> object:
    if "m.selections" in content:
        return content["m.selections"]
    unstable = content.get("org.matrix.msc3381.poll.response")
    return unstable.get("answers") if isinstance(unstable, dict) else None


def tally_poll(
    answer_ids: Sequence[str], max_selections: int, poll_sender: str, events: Iterable[object]
) -> PollTally:
    """Count a poll's votes from the events relating to it (as /relations returns them, any order).

    As MSC3381 and the spec have it: only each sender's latest response (by `origin_server_ts`)
    counts, even an invalid one; a response's selections are cut to `max_selections`, and one that
    then names an unknown answer is spoiled (counts for nothing); an empty one takes a vote back.
    The first `m.poll.end` by the poll's sender closes the poll: responses after it never happened.
    A response stripped of `m.relates_to` (redacted) is ignored, which reverts to the one before.
    """
    known = set(answer_ids)
    limit = max(1, max_selections)
    responses: list[tuple[int, str, str, object]] = []  # (timestamp, event id, sender, selections)
    ended_at: int | None = None
    for event in events:
        if not isinstance(event, dict):
            continue
        content, sender, ts = event.get("content"), event.get("sender"), event.get("origin_server_ts")
        if not isinstance(content, dict) or not isinstance(content.get("m.relates_to"), dict):
            continue
        if not isinstance(sender, str) or not isinstance(ts, int) or isinstance(ts, bool):
            continue
        event_id = event.get("event_id")
        kind = event.get("type")
        if kind in POLL_END_TYPES and sender == poll_sender:
            ended_at = ts if ended_at is None else min(ended_at, ts)
        elif kind in POLL_RESPONSE_TYPES:
            responses.append(
                (ts, event_id if isinstance(event_id, str) else "", sender, _selections(content))
            )
    latest: dict[str, tuple[int, str, object]] = {}
    for ts, event_id, sender, selections in responses:
        if ended_at is not None and ts > ended_at:
            continue
        if sender not in latest or (ts, event_id) > latest[sender][:2]:
            latest[sender] = (ts, event_id, selections)
    counts = dict.fromkeys(answer_ids, 0)
    voters = 0
    for _, _, selections in latest.values():
        if not isinstance(selections, list):
            continue  # spoiled
        chosen = selections[:limit]
        if not chosen or not all(isinstance(s, str) and s in known for s in chosen):
            continue  # no selection, or spoiled
        voters += 1
        for answer_id in dict.fromkeys(chosen):
            counts[answer_id] += 1
    return PollTally(tuple(counts.items()), voters, ended_at is not None)
