"""Handles and titles: the handle rule, confusable skeletons, bidi and invisible characters, title keys."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.text.names import (
    BIDI_CONTROLS,
    DEFAULT_HANDLE_MAX_LENGTH,
    DEFAULT_HANDLE_MIN_LENGTH,
    DEFAULT_HANDLE_PATTERN,
    InvalidHandle,
    InvalidTitle,
    clean_title,
    handle_skeleton,
    normalise_handle,
    skeleton,
    title_collides,
    title_key,
)

ZWNJ = "\u200c"
ZWJ = "\u200d"
PERSIAN_TO_ASCII = str.maketrans("۰۱۲۳۴۵۶۷۸۹", "0123456789")
SHORT_PATTERN = r"[a-z][a-z0-9_]{3,31}"


# Handles


@pytest.mark.parametrize(
    ("text", "handle"),
    [
        ("daily_news", "daily_news"),
        ("DailyNews", "dailynews"),
        ("#news1", "news1"),
        ("@NewsDaily:example.org", "newsdaily"),
        ("  #News1:Example.org:8448  ", "news1"),
        ("a" * 32, "a" * 32),
    ],
)
def test_valid_handles(text: str, handle: str) -> None:
    assert normalise_handle(text) == handle


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "it is shorter than 5 characters"),
        ("@News:example.org", "it is shorter than 5 characters"),
        ("a" * 33, "it is longer than 32 characters"),
        ("1news", "it must start with a letter a–z"),
        ("_news", "it must start with a letter a–z"),
        ("news-daily", "it contains '-' (U+002D)"),
        ("news daily", "it contains U+0020 (SPACE)"),
        ("##news", "it must start with a letter a–z"),
    ],
)
def test_invalid_handles_say_why_and_what_is_allowed(text: str, reason: str) -> None:
    with pytest.raises(InvalidHandle) as refused:
        normalise_handle(text)
    message = str(refused.value)
    assert f"is not a valid handle: {reason}." in message
    assert "A handle has 5–32 characters from a–z, 0–9 and _" in message
    # Each message says the rule once, and each sentence ends with one period.
    assert ".." not in message and message.count("letter") == 1


def test_default_rule_spelled_out_matches_the_pattern() -> None:
    assert re.fullmatch(DEFAULT_HANDLE_PATTERN, "a" * DEFAULT_HANDLE_MIN_LENGTH)
    assert not re.fullmatch(DEFAULT_HANDLE_PATTERN, "a" * (DEFAULT_HANDLE_MIN_LENGTH - 1))
    assert re.fullmatch(DEFAULT_HANDLE_PATTERN, "a" * DEFAULT_HANDLE_MAX_LENGTH)
    assert not re.fullmatch(DEFAULT_HANDLE_PATTERN, "a" * (DEFAULT_HANDLE_MAX_LENGTH + 1))


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("نیوز_روز", "'ن' (U+0646)"),
        ("nеws_daily", "'е' (U+0435)"),  # Cyrillic е
        ("Ａbcdef", "'Ａ' (U+FF21)"),
        ("e\u0301cole", "U+0301 (COMBINING ACUTE ACCENT)"),
    ],
)
def test_non_ascii_handles_are_refused_not_lower_cased(text: str, shown: str) -> None:
    with pytest.raises(InvalidHandle, match="handles use only the Latin letters a–z") as refused:
        normalise_handle(text)
    assert f"it contains {shown}" in str(refused.value)


def test_handle_messages_show_control_characters_as_code_points() -> None:
    with pytest.raises(InvalidHandle) as refused:
        normalise_handle("news\u202e_daily\x00")
    message = str(refused.value)
    assert "'news<U+202E>_daily<U+0000>'" in message
    assert "U+202E (RIGHT-TO-LEFT OVERRIDE)" in message
    assert "\u202e" not in message and "\x00" not in message


def test_long_handle_input_is_quoted_shortened() -> None:
    with pytest.raises(InvalidHandle) as refused:
        normalise_handle("x" * 1000)
    assert len(str(refused.value)) < 300


def test_custom_pattern() -> None:
    assert normalise_handle("@News:example.org", SHORT_PATTERN) == "news"
    assert normalise_handle("#Radio-7", r"[a-z][a-z0-9-]{2,15}") == "radio-7"
    with pytest.raises(InvalidHandle) as refused:
        normalise_handle("ab", SHORT_PATTERN)
    assert str(refused.value) == f"'ab' is not a valid handle: it must match the pattern {SHORT_PATTERN}."


def test_custom_pattern_still_refuses_non_ascii() -> None:
    with pytest.raises(InvalidHandle, match=r"only ASCII characters and must match the pattern \.\+"):
        normalise_handle("café", r".+")


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("modern_news", "rnodern_news"),
        ("google", "g00gle"),
        ("goo1e_news", "goole_news"),
        ("paypal", "paypa1"),
        ("daily_news", "daily__news"),
        ("DailyNews", "dailynews"),
    ],
)
def test_confusable_handles_share_a_skeleton(first: str, second: str) -> None:
    assert handle_skeleton(first) == handle_skeleton(second)


@pytest.mark.parametrize(("first", "second"), [("daily_news", "dailynews"), ("news1", "news2")])
def test_distinct_handles_keep_distinct_skeletons(first: str, second: str) -> None:
    assert handle_skeleton(first) != handle_skeleton(second)


# Skeletons (UTS #39)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("rn", "m"),
        ("1", "l"),
        ("I", "l"),
        ("0", "O"),
        ("\u0430", "a"),  # Cyrillic а, Latin a
        ("\u0440\u0430\u0443\u0440\u0430l", "paypal"),  # Cyrillic р а у р а, Latin l
        ("a\u200bb", "ab"),  # default-ignorable characters are dropped
    ],
)
def test_skeleton_confusables(first: str, second: str) -> None:
    assert skeleton(first) == skeleton(second)
    assert first != second


def test_skeleton_keeps_different_letters_apart() -> None:
    assert skeleton("m") != skeleton("n")
    assert skeleton("0").casefold() == skeleton("o").casefold()


# Titles: cleaning


def test_whitespace_collapses() -> None:
    assert clean_title("  Daily \t News\n\u00a0today ") == "Daily News today"


@pytest.mark.parametrize("control", sorted(BIDI_CONTROLS))
def test_each_bidi_control_is_refused_by_name(control: str) -> None:
    with pytest.raises(InvalidTitle) as refused:
        clean_title(f"Daily{control} News")
    message = str(refused.value)
    assert f"U+{ord(control):04X} ({unicodedata.name(control)})" in message
    assert "misleading order" in message
    assert control not in message


def test_bidi_controls_are_exactly_the_listed_ones() -> None:
    listed = {0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}
    assert {ord(c) for c in BIDI_CONTROLS} == listed


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("news\x00", "U+0000"),
        ("news\x1b[31m", "U+001B"),
        ("news\x9b", "U+009B"),
        ("news\x1f", "U+001F"),
    ],
)
def test_control_characters_are_refused(text: str, shown: str) -> None:
    with pytest.raises(InvalidTitle, match=re.escape(f"control character {shown}")):
        clean_title(text)


@pytest.mark.parametrize(
    "invisible", ["\u200b", "\u2060", "\ufeff", "\u00ad", "\u3164", "\u115f", "\u034f", "\U000e0041"]
)
def test_invisible_spoofing_characters_are_refused(invisible: str) -> None:
    with pytest.raises(InvalidTitle, match=f"U\\+{ord(invisible):04X}.*two different titles look the same"):
        clean_title(f"Daily{invisible}News")


def test_zwnj_is_kept_between_persian_letters() -> None:
    assert clean_title("می\u200cخواهم") == "می\u200cخواهم"
    assert clean_title("کتاب\u200cها") == "کتاب\u200cها"
    # Through a vowel mark on the letter before it, and as one ZWNJ out of a run.
    assert clean_title("مِ\u200cی") == "مِ\u200cی"
    assert clean_title("می\u200c\u200cخواهم") == "می\u200cخواهم"


@pytest.mark.parametrize(
    ("text", "cleaned"),
    [
        ("Daily\u200cNews", "DailyNews"),
        ("\u200cخبر", "خبر"),
        ("خبر\u200c", "خبر"),
        ("خبر \u200c روز", "خبر روز"),
        ("خبر\u200c1", "خبر1"),
        ("Daily\u200c خبر", "Daily خبر"),
    ],
)
def test_zwnj_is_removed_elsewhere(text: str, cleaned: str) -> None:
    assert clean_title(text) == cleaned


def test_zwj_is_kept_in_emoji_sequences_only() -> None:
    for emoji in ("👩\u200d💻", "👩🏽\u200d💻", "🏳️\u200d🌈", "👨\u200d👩\u200d👧"):
        assert clean_title(f"News {emoji}") == f"News {emoji}"
    assert clean_title("Dai\u200dly") == "Daily"
    assert clean_title("خب\u200dر") == "خبر"
    assert clean_title("👩\u200dx") == "👩x"


def test_emoji_flags_and_presentation_selectors_stay() -> None:
    scotland = "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"
    assert clean_title(f"Scotland {scotland}") == f"Scotland {scotland}"
    assert clean_title("Love ❤️") == "Love ❤️"


def test_tatweel_stays_in_a_title() -> None:
    assert clean_title("خبـــر") == "خبـــر"


@pytest.mark.parametrize("text", ["", "   ", "\n\t", ZWNJ, f" {ZWJ} "])
def test_empty_titles_are_refused(text: str) -> None:
    with pytest.raises(InvalidTitle, match="empty"):
        clean_title(text)


def test_length_counts_code_points_after_cleaning() -> None:
    assert clean_title("ab  " + "x" * 125) == "ab " + "x" * 125
    assert clean_title("a" * 10, max_length=10) == "a" * 10
    with pytest.raises(InvalidTitle, match="11 characters long; the limit is 10"):
        clean_title("a" * 11, max_length=10)
    assert len(clean_title("ب" * 128)) == 128


# Titles: comparison keys


@pytest.mark.parametrize(
    "variants",
    [
        ("Daily News", "DAILY  NEWS", "Dai1y News", "daily news", " Daily\nNews "),
        ("كتاب", "کتاب"),  # Arabic kaf, Persian keheh
        ("علي", "علی", "على"),  # Arabic yeh, Persian yeh, alef maksura
        ("خبر ۱۲", "خبر 12", "خبر ١٢"),  # Persian, ASCII, Arabic-Indic digits
        ("می\u200cخواهم", "میخواهم", "مي\u200dخواهم"),
        ("خبر", "خبـــر", "خَبَر"),  # tatweel, harakat
        ("أخبار", "إخبار", "اخبار", "آخبار"),  # hamza and madda on alef
        ("مدرسة", "مدرسه"),  # teh marbuta, heh
        ("ﻛﺘﺎﺏ", "کتاب"),  # presentation forms
        ("Ｎｅｗｓ", "News"),  # full width
        ("modern", "rnodern"),
        ("Paypal", "\u0420\u0430\u0443\u0440\u0430l"),  # Cyrillic Р а у р а
        ("Daily\u200bNews", "DailyNews"),
    ],
)
def test_title_keys_match_across_spellings(variants: tuple[str, ...]) -> None:
    assert len({title_key(v) for v in variants}) == 1


@pytest.mark.parametrize(
    ("first", "second"), [("کتاب", "کباب"), ("Daily News", "Daily Mews"), ("خبر 12", "خبر 13")]
)
def test_different_titles_keep_different_keys(first: str, second: str) -> None:
    assert title_key(first) != title_key(second)


def test_title_collides_names_the_verified_title() -> None:
    verified = ["Daily News", "اخبار روز", "BBC فارسی"]
    assert title_collides("DAI1Y NEWS", verified) == "Daily News"
    assert title_collides("أخبار روز", verified) == "اخبار روز"
    assert title_collides("BBC فارسي", verified) == "BBC فارسی"
    assert title_collides("Weekly News", verified) is None
    assert title_collides("Daily News", []) is None


# Properties


@given(st.text())
def test_clean_title_never_returns_bidi_controls_or_controls(text: str) -> None:
    try:
        title = clean_title(text)
    except InvalidTitle as refused:
        assert not BIDI_CONTROLS & set(str(refused))
        return
    assert title and title == title.strip()
    assert not BIDI_CONTROLS & set(title)
    assert not any(unicodedata.category(c) == "Cc" for c in title)


@given(st.text())
def test_title_key_ignores_case(text: str) -> None:
    assert title_key(text.casefold()) == title_key(text)
    assert title_key(text.upper()) == title_key(text)


@given(st.text(alphabet=st.sampled_from("خبر روز ۰۱۲۳۴۵۶۷۸۹ News ١٢٣")) | st.text())
def test_title_key_ignores_persian_or_ascii_digits(text: str) -> None:
    assert title_key(text.translate(PERSIAN_TO_ASCII)) == title_key(text)


handle_like = st.from_regex(r"[#@]?[A-Za-z0-9_]{0,40}(:[a-z.]{1,20})?", fullmatch=True)


@given(handle_like | st.text())
def test_normalise_handle_output_matches_the_default_pattern(text: str) -> None:
    try:
        handle = normalise_handle(text)
    except InvalidHandle as refused:
        assert str(refused).isprintable()
        return
    assert re.fullmatch(DEFAULT_HANDLE_PATTERN, handle)


@given(handle_like | st.text())
def test_normalise_handle_output_matches_a_custom_pattern(text: str) -> None:
    try:
        handle = normalise_handle(text, SHORT_PATTERN)
    except InvalidHandle as refused:
        assert str(refused).isprintable()
        return
    assert re.fullmatch(SHORT_PATTERN, handle)


@given(st.from_regex(DEFAULT_HANDLE_PATTERN, fullmatch=True))
def test_every_handle_of_the_pattern_is_accepted_in_any_case(handle: str) -> None:
    assert normalise_handle(f"@{handle.upper()}:example.org") == handle
    assert handle_skeleton(handle.upper()) == handle_skeleton(handle)


def test_refusals_are_told_in_the_users_language() -> None:
    with pytest.raises(InvalidHandle) as refused:
        normalise_handle("ab")
    assert str(refused.value) == refused.value.text("en")
    persian = refused.value.text("fa")
    assert persian.startswith("'ab' شناسهٔ معتبری نیست") and "۵ تا ۳۲" in persian
    with pytest.raises(InvalidTitle) as empty:
        clean_title("   ")
    assert empty.value.text("fa") == "عنوان خالی است. لطفاً دست‌کم یک نویسهٔ دیدنی بنویسید."
