"""The statement of reasons in two languages: stored in English as before, sent in the reader's language."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bridge.moderation.decisions import (
    Ground,
    StatementFacts,
    render_statement,
    statement_facts,
    statement_of_reasons,
)
from bridge.runtime.config import DEFAULT_REDRESS
from bridge.store.models import Channel, Decision, Notice
from bridge.text.i18n import catalogue, t
from tests.unit.test_decisions import _decision

DAYS = 14
REDRESS = DEFAULT_REDRESS.replace("{days}", str(DAYS))
CHANNEL = Channel(handle="dailynews", title="Daily News", former_handle=None)
NOTICE = Notice(
    id=3, source="command", category="hate_speech", received_at=datetime(2026, 10, 31, tzinfo=UTC)
)

# The stored text of a take-down on a user's report, as Kanal has always written it.
STORED = (
    "Statement of reasons — decision #7\n"
    "What: The post was removed from the channel. ($copy in #dailynews:example.org)\n"
    "Facts and circumstances: It insults a group of people.\n"
    "Started by: a user's report (notice #3, 2026-10-31, category hate_speech)\n"
    "Automated means: No automated means were used; a person decided.\n"
    "Ground: the terms of service: 4.2\n"
    "Your options: You may appeal this decision with `appeal <decision number> <your reasons>` in your "
    "chat with the bot within 14 days; a person who did not take the decision reviews it. You may also turn "
    "to an out-of-court dispute settlement body or a court."
)


def _facts(decision: Decision, notice: Notice | None = NOTICE, redress: str = REDRESS) -> StatementFacts:
    return statement_facts(
        decision, channel=CHANNEL, notice=notice, redress=redress, domain="example.org", appeal_days=DAYS
    )


def test_the_stored_statement_is_the_english_text_it_always_was() -> None:
    data = statement_of_reasons(
        _decision(), channel=CHANNEL, notice=NOTICE, redress=REDRESS, domain="example.org", appeal_days=DAYS
    )

    assert data["text"] == STORED
    assert data["what"] == "The post was removed from the channel. ($copy in #dailynews:example.org)"
    assert data["initiated_by"] == "a user's report (notice #3, 2026-10-31, category hate_speech)"
    assert data["redress"] == REDRESS
    assert render_statement("en", _facts(_decision())) == STORED


def test_the_default_redress_text_is_the_catalogues_english() -> None:
    assert catalogue().english["sor_redress_default"] == DEFAULT_REDRESS


def test_a_persian_statement_says_the_same_facts_in_persian() -> None:
    text = render_statement("fa", _facts(_decision()))

    lines = text.split("\n")
    assert lines[0] == "بیانیهٔ دلایل — تصمیم #۷"
    assert lines[1] == "آنچه انجام شد: پست از کانال حذف شد. ($copy در #dailynews:example.org)"
    assert lines[2] == "واقعیت‌ها و شرایط: It insults a group of people."  # the moderator's words, as typed
    assert lines[3] == "آغاز رسیدگی: گزارش یک کاربر (گزارش #۳، ۲۰۲۶-۱۰-۳۱، دستهٔ hate_speech)"
    assert lines[4] == "ابزارهای خودکار: از هیچ ابزار خودکاری استفاده نشد؛ تصمیم را یک انسان گرفت."
    assert lines[5] == "مبنای تصمیم: شرایط استفاده از خدمت: 4.2"
    assert lines[6].startswith("راه‌های پیش روی شما: می‌توانید ظرف ۱۴ روز با فرمان `appeal <شمارهٔ تصمیم>")
    assert "نهاد حل اختلاف" in lines[6]
    assert "Statement" not in text and "What:" not in text


def test_a_persian_restriction_keeps_its_end_the_law_and_the_automated_means() -> None:
    until = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    decision = _decision(
        id=12,
        kind="restrict",
        target=None,
        ground="law",
        ground_reference="Media Act §5",
        until=until,
        automated=True,
        decided_by="hook:banned",
    )

    text = render_statement("fa", _facts(decision, notice=None))

    assert "تصمیم #۱۲" in text
    assert "انتشار در کانال تا ۲۰۲۶-۱۲-۰۱ ۱۲:۰۰ UTC متوقف شده است. (#dailynews:example.org)" in text
    assert "آغاز رسیدگی: به ابتکار خود Kanal" in text
    assert "ابزارهای خودکار این محتوا را تشخیص دادند؛ تصمیم به‌طور خودکار گرفته شد." in text
    assert "مبنای تصمیم: قانون: Media Act §5" in text


def test_a_reversal_names_the_decision_it_reverses_in_persian() -> None:
    text = render_statement("fa", _facts(_decision(id=9, kind="reinstate", reverses_id=7), notice=None))

    assert "تصمیم پیشین #۷ لغو شد" in text


@pytest.mark.parametrize("source", ["command", "homeserver", "flagger"])
def test_every_notice_source_is_put_into_persian(source: str) -> None:
    notice = Notice(id=4, source=source, category="spam", received_at=datetime(2026, 10, 30, tzinfo=UTC))

    english = render_statement("en", _facts(_decision(), notice=notice))
    persian = render_statement("fa", _facts(_decision(), notice=notice))

    assert "(notice #4, 2026-10-30, category spam)" in english
    assert "(گزارش #۴، ۲۰۲۶-۱۰-۳۰، دستهٔ spam)" in persian


def test_an_operators_own_redress_text_is_kept_as_written() -> None:
    custom = "Write to appeals@example.org within 30 days."

    text = render_statement("fa", _facts(_decision(), redress=custom))

    assert text.endswith(f"راه‌های پیش روی شما: {custom}")


def test_a_redress_for_another_window_is_not_mistaken_for_the_default() -> None:
    other = DEFAULT_REDRESS.replace("{days}", "30")

    assert render_statement("fa", _facts(_decision(), redress=other)).endswith(other)


def test_grounds_are_described_in_either_language_with_their_reference_untouched() -> None:
    assert Ground("law", "DSA Art. 16").describe() == "the law: DSA Art. 16"
    assert Ground("terms", "4.2").describe("fa") == "شرایط استفاده از خدمت: 4.2"
    assert Ground("law", "DSA Art. 16").describe("fa") == "قانون: DSA Art. 16"


def test_the_notifier_hears_of_the_decision_in_persian() -> None:
    statement = render_statement("fa", _facts(_decision()))

    text = t("fa", "mod_notice_decided", notice=3, statement=statement)

    assert text.startswith("دربارهٔ گزارش #۳ شما تصمیم گرفته شد.\nبیانیهٔ دلایل — تصمیم #۷")
