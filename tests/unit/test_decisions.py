"""Statements of reasons, grounds, and reading what people type in reports: no database, no network."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bridge.moderation.decisions import Ground, statement_of_reasons
from bridge.moderation.notices import CATEGORIES, event_id_in, split_category
from bridge.store.models import Channel, Decision, Notice

REDRESS = "Appeal within 14 days."


def _decision(**values: object) -> Decision:
    defaults: dict[str, object] = {
        "id": 7,
        "kind": "take_down",
        "target": "$copy",
        "own_initiative": False,
        "automated": False,
        "ground": "terms",
        "ground_reference": "4.2",
        "explanation": "It insults a group of people.",
        "category": "hate_speech",
        "until": None,
        "decided_by": "@mod:example.org",
        "reverses_id": None,
        "created_at": datetime(2026, 11, 1, tzinfo=UTC),
    }
    defaults.update(values)
    return Decision(**defaults)


CHANNEL = Channel(handle="dailynews", title="Daily News", former_handle=None)


def test_a_statement_has_every_article_17_element() -> None:
    notice = Notice(
        id=3, source="command", category="hate_speech", received_at=datetime(2026, 10, 31, tzinfo=UTC)
    )
    data = statement_of_reasons(
        _decision(), channel=CHANNEL, notice=notice, redress=REDRESS, domain="example.org"
    )
    text = data["text"]
    assert "decision #7" in text
    assert "What: The post was removed from the channel. ($copy in #dailynews:example.org)" in text
    assert "Facts and circumstances: It insults a group of people." in text
    assert "Started by: a user's report (notice #3, 2026-10-31, category hate_speech)" in text
    assert "Automated means: No automated means were used; a person decided." in text
    assert "Ground: the terms of service: 4.2" in text
    assert f"Your options: {REDRESS}" in text
    assert data["automated_detection"] is False and data["automated_decision"] is False
    assert data["ground"] == "terms" and data["category"] == "hate_speech"


def test_own_initiative_restriction_with_its_end() -> None:
    until = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    decision = _decision(
        kind="restrict", ground="law", ground_reference="Media Act §5", until=until, target=None
    )
    text = statement_of_reasons(
        decision, channel=CHANNEL, notice=None, redress=REDRESS, domain="example.org"
    )["text"]
    assert "Posting in the channel is suspended until 2026-12-01 12:00 UTC." in text
    assert "Started by: Kanal's own initiative" in text
    assert "Ground: the law: Media Act §5" in text


def test_an_automatic_rejection_says_so() -> None:
    decision = _decision(kind="reject_post", automated=True, decided_by="hook:banned")
    data = statement_of_reasons(decision, channel=CHANNEL, notice=None, redress=REDRESS, domain="example.org")
    assert "Automated means detected the content; the decision was taken automatically." in data["text"]
    assert data["automated_decision"] is True


@pytest.mark.parametrize(
    ("text", "expected"),
    [("terms:4.2", Ground("terms", "4.2")), ("LAW:Penal Code 12", Ground("law", "Penal Code 12"))],
)
def test_grounds(text: str, expected: Ground) -> None:
    assert Ground.parse(text) == expected


@pytest.mark.parametrize("text", ["4.2", "terms:", "rules:4", ""])
def test_bad_grounds_explain_the_form(text: str) -> None:
    with pytest.raises(ValueError, match="law:<the law and article> or terms:<the clause>"):
        Ground.parse(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$abc:example.org", "$abc:example.org"),
        ("https://matrix.to/#/!room:example.org/$Ev3nt_id-x?via=example.org", "$Ev3nt_id-x"),
        ("https://matrix.to/#/%21room%3Aexample.org/%24Ev3nt", "$Ev3nt"),
        ("no event here", None),
    ],
)
def test_event_ids_in_links(text: str, expected: str | None) -> None:
    assert event_id_in(text) == expected


def test_categories_are_read_from_the_reason() -> None:
    assert split_category("spam: the same ad") == ("spam", "the same ad")
    assert split_category("SPAM : shouting") == ("spam", "shouting")
    assert split_category("note: not a category") == ("other", "note: not a category")
    assert split_category("plain reason") == ("other", "plain reason")
    assert "other" in CATEGORIES
