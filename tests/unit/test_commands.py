"""What people type to the bot: command word, arguments, and the raw rest (titles keep their spacing)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.text.commands import Command, command_key, parse_command, parse_duration
from bridge.text.digits import ascii_digits


def test_docstring_example() -> None:
    command = parse_command("create news Daily News", require_bang=False)

    assert command == Command("create", ("news", "Daily", "News"), "news Daily News")


@pytest.mark.parametrize("body", ["help", "!help", "  help  ", " !help", "HELP", "!Help"])
def test_management_bang_is_optional(body: str) -> None:
    command = parse_command(body, require_bang=False)

    assert command is not None
    assert command.name == "help"
    assert command.args == ()


def test_backstage_needs_the_bang() -> None:
    assert parse_command("silent hello", require_bang=True) is None
    assert parse_command("Hello everyone! Big news today.", require_bang=True) is None

    command = parse_command("!silent hello", require_bang=True)
    assert command is not None
    assert command.name == "silent"
    assert command.rest == "hello"


@pytest.mark.parametrize("body", ["", "   ", "!", "  !  ", "\n"])
@pytest.mark.parametrize("require_bang", [False, True])
def test_nothing_to_parse(body: str, require_bang: bool) -> None:
    assert parse_command(body, require_bang=require_bang) is None


def test_only_one_bang_is_removed() -> None:
    command = parse_command("!!pin", require_bang=True)

    assert command is not None
    assert command.name == "!pin"


def test_arguments_are_split_on_any_whitespace() -> None:
    command = parse_command("promote news   @bob:example.org", require_bang=False)

    assert command is not None
    assert command.args == ("news", "@bob:example.org")
    assert command.arg(0) == "news"
    assert command.arg(1) == "@bob:example.org"
    assert command.arg(2) is None


def test_arguments_keep_their_case() -> None:
    command = parse_command("CREATE News Daily", require_bang=False)

    assert command is not None
    assert command.name == "create"
    assert command.args == ("News", "Daily")


def test_rest_after_keeps_the_spacing_of_titles() -> None:
    command = parse_command("title news   Daily   News  —  Morning ", require_bang=False)

    assert command is not None
    assert command.rest_after(1) == "Daily   News  —  Morning"
    assert command.rest_after(2) == "News  —  Morning"
    assert command.rest_after(0) == "news   Daily   News  —  Morning"


def test_rest_after_beyond_the_arguments_is_empty() -> None:
    command = parse_command("create news", require_bang=False)

    assert command is not None
    assert command.rest_after(1) == ""
    assert command.rest_after(5) == ""


def test_rest_after_with_no_arguments() -> None:
    command = parse_command("list", require_bang=False)

    assert command is not None
    assert command.rest == ""
    assert command.rest_after(0) == ""
    assert command.rest_after(1) == ""


def test_newline_after_the_command_word() -> None:
    command = parse_command("!silent\nFirst line\nSecond line", require_bang=True)

    assert command is not None
    assert command.name == "silent"
    assert command.args == ("First", "line", "Second", "line")
    assert command.rest_after(0) == "First line\nSecond line"


def test_newlines_inside_the_text_are_kept() -> None:
    command = parse_command("about news Line one\n\nLine  two", require_bang=False)

    assert command is not None
    assert command.rest_after(1) == "Line one\n\nLine  two"


def test_blank_line_after_the_command_word_is_kept() -> None:
    command = parse_command("!silent\n\nHello", require_bang=True)

    assert command is not None
    assert command.name == "silent"
    assert command.rest_after(0) == "Hello"
    assert "\n" in command.rest


def test_handle_on_the_next_line() -> None:
    command = parse_command("create\nnews Daily News", require_bang=False)

    assert command is not None
    assert command.name == "create"
    assert command.args == ("news", "Daily", "News")
    assert command.rest_after(1) == "Daily News"


def test_a_leading_space_escapes_the_bang_in_backstage() -> None:
    assert parse_command(" !important: read this", require_bang=True) is None


def test_a_tab_after_the_command_word_separates_it() -> None:
    command = parse_command("create\tnews Daily", require_bang=False)

    assert command is not None
    assert command.name == "create"
    assert command.args == ("news", "Daily")


@given(st.text(max_size=60), st.booleans())
def test_parse_never_raises_and_args_are_the_words_of_rest(body: str, require_bang: bool) -> None:
    command = parse_command(body, require_bang=require_bang)
    if command is None:
        return
    assert command.name
    assert command.name == command.name.lower()
    assert command.args == tuple(ascii_digits(command.rest).split())
    for count in range(len(command.args) + 2):
        remaining = command.rest_after(count)
        assert tuple(ascii_digits(remaining).split()) == command.args[count:]


@pytest.mark.parametrize("typed", ["retention news ۳۰", "retention news ٣٠", "retention news 30"])
def test_persian_and_arabic_indic_digits_are_read_as_ascii(typed: str) -> None:
    command = parse_command(typed, require_bang=False)

    assert command is not None and command.args == ("news", "30")


def test_the_text_after_the_arguments_keeps_its_digits() -> None:
    # Titles and reasons are published as written: only the arguments are read with ASCII digits.
    command = parse_command("title news۱ اخبار ۱۴۰۳", require_bang=False)

    assert command is not None
    assert command.args == ("news1", "اخبار", "1403")
    assert command.rest_after(1) == "اخبار ۱۴۰۳"


@pytest.mark.parametrize("typed", ["۷d", "٧d", "7d"])
def test_durations_in_any_digits(typed: str) -> None:
    assert parse_duration(typed) == timedelta(days=7)


@pytest.mark.parametrize(
    ("typed", "written"),
    [("تایید", "تأیید"), ("پیشنویس", "پیش\u200cنویس"), ("ويرايش", "ویرایش"), ("HELP", "help"), ("كانال", "کانال")],
)
def test_command_words_compare_as_any_keyboard_types_them(typed: str, written: str) -> None:
    assert command_key(typed) == command_key(written)
