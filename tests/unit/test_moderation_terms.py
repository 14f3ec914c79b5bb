"""Term lists: normalisation of Persian and Arabic spellings, word edges and clitics, the formatted body."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.screening.normalise import formatted_parts, host_key, link_hosts, normalise, post_text
from bridge.screening.terms import (
    ARABIC_PREFIXES,
    ARABIC_SUFFIXES,
    Found,
    TermList,
    compile_pattern,
    term_key,
)

ZWNJ = "\u200c"
ZWJ = "\u200d"
TATWEEL = "\u0640"
FATHA = "\u064e"
SUPERSCRIPT_ALEF = "\u0670"


def found(literals: list[str], text: str, patterns: tuple[str, ...] = ()) -> str | None:
    result = TermList(literals, patterns).find(normalise(text))
    return None if result is None else result.term


# Normalisation


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("كتاب", "کتاب"),  # ARABIC KAF → KEHEH
        ("علي", "علی"),  # ARABIC YEH → FARSI YEH
        ("مصطفى", "مصطفی"),  # ALEF MAKSURA → FARSI YEH
        ("مدرسة", "مدرسه"),  # TEH MARBUTA → HEH
        ("٠١٢٣٤٥٦٧٨٩ ۰۱۲۳۴۵۶۷۸۹", "0123456789 0123456789"),
        (f"می{ZWNJ}خواهم", "میخواهم"),
        (f"ک{ZWJ}تاب", "کتاب"),
        (f"ک{TATWEEL}{TATWEEL}تاب", "کتاب"),
        (f"ك{FATHA}تاب", "کتاب"),
        (f"رحم{SUPERSCRIPT_ALEF}ن", "رحمن"),
        ("  Free\t\nMONEY  ", "free money"),
        ("Ｆｒｅｅ", "free"),  # NFKC: fullwidth letters
        ("\ufedb\ufe98\ufe8e\ufe8f", "کتاب"),  # NFKC: Arabic presentation forms
        ("Straße", "strasse"),  # case folding, not just lower case
        ("a\u00adb", "ab"),  # soft hyphen: default-ignorable
    ],
)
def test_normalise(text: str, normalised: str) -> None:
    assert normalise(text) == normalised


@given(st.text())
def test_normalise_is_idempotent(text: str) -> None:
    assert normalise(normalise(text)) == normalise(text)


# Persian and Arabic spellings of one term


@pytest.mark.parametrize(
    ("term", "post"),
    [
        ("علي", "سلام علی جان"),  # the term with ي, the post with ی
        ("علی", "سلام علي جان"),  # and the other way round
        ("كتاب", "این کتاب خوب است"),
        ("کتاب", "هذا كتاب جيد"),
        ("مدرسة", "مدرسه ما"),
        ("۱۴۰۳", "سال 1403"),  # Persian digits in the term, ASCII in the post
        ("1403", "سال ۱۴۰۳"),
        ("1403", "سال ١٤٠٣"),  # Arabic-Indic digits
        ("میخواهم", f"من می{ZWNJ}خواهم"),  # ZWNJ in the post
        (f"می{ZWNJ}خواهم", "من میخواهم"),  # ZWNJ in the term
        ("کتاب", f"این ک{ZWNJ}تاب"),  # ZWNJ inserted to hide the word
        ("کتاب", f"این ک{TATWEEL}ت{TATWEEL}{TATWEEL}اب"),  # tatweel inserted
        ("کتاب", f"این ک{FATHA}تاب"),  # a diacritic
        ("SPAM", "buy spam now"),
        ("spam", "BUY SPAM NOW"),
    ],
)
def test_spellings_of_one_term_match(term: str, post: str) -> None:
    assert found([term], post) == term


# Word edges


@pytest.mark.parametrize(
    ("term", "post", "matches"),
    [
        ("spam", "Spam!", True),
        ("spam", "(spam)", True),
        ("spam", "spam's", True),
        ("spam", "spammer", False),
        ("spam", "antispam", False),
        ("spam", "spam_bot", False),
        ("spam", "spam2", False),
        ("spam*", "spammer", True),
        ("*spam", "antispam", True),
        ("*spam*", "antispammers", True),
        ("free money", "get FREE   money!", True),
        ("free money", "freemoney", False),
        ("18+", "only 18+ please", True),
        ("18+", "2018+", False),
        ("#promo", "see #PROMO", True),
        ("#promo", "see x#promo", True),  # the term starts with a sign: nothing to keep apart
        ("#promo", "see #promotion", False),
        ("中文", "我爱中文字", True),  # Han has no spaces between words
        ("ภาษา", "เรียนภาษาไทย", True),  # nor has Thai
    ],
)
def test_latin_and_other_terms_match_whole_words(term: str, post: str, matches: bool) -> None:
    assert (found([term], post) == term) is matches


@pytest.mark.parametrize(
    ("post", "matches"),
    [
        ("کتاب", True),
        ("کتاب‌ها", True),  # plural, with ZWNJ
        ("کتابها", True),  # plural, without
        ("کتابهایم", True),  # plural + possessive
        ("کتابم", True),  # possessive
        ("کتابی", True),  # indefinite
        ("والکتاب", True),  # conjunction + article
        ("بالکتاب", True),
        ("للکتاب", True),
        ("کتابخانه", False),  # another word: library
        ("خودکتاب", False),  # not a clitic before it
        ("کتابهاییکه", False),  # too much attached
        ("والکتابها", True),  # clitics on both sides
    ],
)
def test_arabic_script_terms_take_clitics(post: str, matches: bool) -> None:
    assert (found(["کتاب"], post) == "کتاب") is matches


def test_short_arabic_script_terms_match_whole_words_only() -> None:
    # Two letters plus a clitic is too often another word: کس (a vulgarity) is not in کسی (someone).
    assert found(["کس"], "کسی آمد") is None
    assert found(["کس"], "یک کس آمد") == "کس"


def test_clitic_lists_are_written_in_normalised_form() -> None:
    for clitic in ARABIC_PREFIXES | ARABIC_SUFFIXES:
        assert normalise(clitic) == clitic


def test_wildcard_opens_arabic_script_edges_too() -> None:
    assert found(["کتاب*"], "کتابخانه") == "کتاب*"
    assert found(["*کتاب"], "خودکتاب") == "*کتاب"


def test_a_match_needs_only_one_fitting_occurrence() -> None:
    assert found(["spam"], "spammer and spam") == "spam"


def test_the_first_term_by_position_is_reported() -> None:
    assert found(["zeta", "alpha"], "alpha then zeta") == "alpha"


def test_variants_of_one_term_are_all_kept() -> None:
    # Both normalise to "spam"; each keeps its own edges and spelling.
    assert found(["spam", "Spam*"], "spammer") == "Spam*"


# Regular expressions


def test_patterns_run_on_the_normalised_text() -> None:
    assert found([], "Casino۷۷۷ tonight", (r"\bcasino\d{3}\b",)) == r"\bcasino\d{3}\b"
    assert found([], "علي", ("علي",)) == "علي"  # ي in the pattern is folded like the text's
    assert found([], "CASINO", ("casino",)) == "casino"
    assert found([], "casino", ("Casino",)) == "Casino"  # capitals in a pattern: case-insensitive
    assert found([], "digits 12", (r"\D+\d+",)) == r"\D+\d+"  # escapes are not capitals
    assert found([], "nothing here", ("casino",)) is None


def test_literal_terms_are_tried_before_patterns() -> None:
    assert TermList(["spam"], ["s.am"]).find("spam") == Found("spam", regex=False)
    assert TermList(["spam"], ["s.am"]).find("scam") == Found("s.am", regex=True)


def test_bad_terms_and_patterns_are_refused() -> None:
    with pytest.raises(ValueError, match="empty once normalised"):
        term_key(f"{ZWNJ}{TATWEEL} *")
    with pytest.raises(ValueError, match="not a valid regular expression"):
        compile_pattern("casino(")


def test_an_empty_list_finds_nothing() -> None:
    assert TermList([]).find("anything") is None


# The multi-pattern matcher finds what each term finds alone


_ALPHABET = "ab کتاه "


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.text(alphabet="abکتاه", min_size=1, max_size=4), min_size=1, max_size=8, unique=True),
    st.text(alphabet=_ALPHABET, max_size=40),
)
def test_one_automaton_finds_what_each_term_finds_alone(literals: list[str], text: str) -> None:
    text = normalise(text)
    literals = list(dict.fromkeys(literals))
    by_automaton = {w for w in literals if TermList([w]).find(text) is not None}
    together = TermList(literals).find(text)
    assert (together is not None) == bool(by_automaton)
    if together is not None:
        assert together.term in by_automaton


def test_positions_count_characters_not_bytes() -> None:
    # Matches are reported in code points; multi-byte letters and emoji before them must not shift the
    # word-edge checks.
    assert found(["spam"], "😀😀 کتاب spam") == "spam"
    assert found(["spam"], "😀😀 کتاب xspam") is None


def test_ten_thousand_terms_still_find_the_one_that_is_there() -> None:
    rng = random.Random(7)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = sorted({"".join(rng.choices(letters, k=rng.randint(6, 10))) for _ in range(10_000)})
    listed = TermList(words)
    needle = words[4321]
    assert listed.find(f"nothing to see here, except {needle}.") == Found(needle, regex=False)
    assert listed.find("nothing to see here") is None


# The formatted body


def test_formatted_text_joins_inline_elements_and_separates_blocks() -> None:
    parts = formatted_parts("<p>buy <b>sp</b>am</p><p>now</p>tea&amp;cake<br>x")
    assert normalise(parts.text) == "buy spam now tea&cake x"


def test_formatted_text_skips_the_reply_fallback() -> None:
    html = '<mx-reply><blockquote><a href="https://quoted.example">q</a> spam</blockquote></mx-reply>fresh'
    parts = formatted_parts(html)
    assert parts.text == "fresh"
    assert parts.links == ()


def test_formatted_links_are_the_hrefs() -> None:
    parts = formatted_parts('<a href="https://one.example/x">one</a> <a name="n">two</a> <a href="">e</a>')
    assert parts.links == ("https://one.example/x",)


def test_post_text_adds_the_formatted_text_when_it_differs() -> None:
    assert post_text("Hello", "<b>Hello</b>") == "hello"
    assert post_text("Hello", "<b>Goodbye</b> spam") == "hello\ngoodbye spam"
    assert post_text("Hello", None) == "hello"


def test_a_term_does_not_match_across_body_and_formatted_text() -> None:
    text = post_text("free", "<i>money</i>")
    assert TermList(["free money"]).find(text) is None


# Hosts


def test_host_key_is_idna_and_lower_case() -> None:
    assert host_key("Bücher.Example.") == "xn--bcher-kva.example"
    assert host_key("EVIL．example") == "evil.example"


def test_link_hosts_separates_links_from_names() -> None:
    linked, named = link_hosts(
        "see https://A.example/x, www.b.example and c.example or readme.md; mail me@d.example",
        ("https://e.example:8443/p", "mxc://server/media", "mailto:x@f.example"),
    )
    assert linked == {"a.example", "www.b.example", "e.example"}
    assert named == linked | {"c.example", "readme.md", "d.example"}
