"""The bot's replies: the catalogues parse, every message is translated, every template fits its code.

The catalogues are checked as `msgfmt --check` would (every domain, including ones added later): each
Persian entry exists, is not fuzzy, translates the current English text and keeps its placeholders.
The call sites are read from bridge/*.py with `ast`, so a new `reply(..., "key", name=...)` whose
template needs a value the code does not pass fails here rather than in front of a user.
"""

from __future__ import annotations

import ast
import string
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path

import polib
import pytest

import bridge
from bridge.runtime.dispatch import WORD_KEY_PREFIX
from bridge.text.digits import Numeral
from bridge.text.i18n import LOCALE_DIR, CatalogueError, catalogue, detect_language, load_catalogue, t

LANGUAGES = ("en", "fa")
TRANSLATIONS = ("fa",)
BRIDGE_DIR = Path(bridge.__file__).parent
DOMAINS = sorted(path.stem for path in LOCALE_DIR.glob("*.pot"))
ENGLISH = catalogue().english


@dataclass(frozen=True)
class CallSite:
    where: str
    key: str
    kwargs: frozenset[str]


def placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def _literal_keys(node: ast.expr) -> list[str]:
    """`"key"` → [key]; `"a" if cond else "b"` → [a, b]; anything computed → []."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        return _literal_keys(node.body) + _literal_keys(node.orelse)
    return []


def call_sites() -> list[CallSite]:
    """Every `reply(session, ctx, room, lang, KEY, **kw)`, `call.reply(KEY, **kw)` (a command's
    answer, bridge.runtime.dispatch.CommandCall), `t(lang, KEY, **kw)` and
    `tell_moderators(ctx, session, KEY, **kw)` in bridge/."""
    sites = []
    for path in sorted(BRIDGE_DIR.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            if isinstance(node.func, ast.Attribute) and node.func.attr == "reply" and node.args:
                kwargs = {kw.arg for kw in node.keywords if kw.arg is not None} | {"domain"}
                for key in _literal_keys(node.args[0]):
                    where = f"{path.relative_to(BRIDGE_DIR.parent)}:{node.lineno}"
                    sites.append(CallSite(where, key, frozenset(kwargs)))
                continue
            if not isinstance(node.func, ast.Name):
                continue
            if node.func.id == "reply":
                key_index, implicit = 4, {"domain"}  # context.reply always passes domain
            elif node.func.id == "t":
                key_index, implicit = 1, set()
            elif node.func.id == "tell_moderators":
                key_index, implicit = 2, set()  # bridge/moderation/gate.py: (ctx, session, KEY, **values)
            elif node.func.id in ("InvalidHandle", "InvalidTitle"):
                key_index, implicit = 0, set()  # bridge/text/names.py: InvalidHandle("key", **values)
            elif node.func.id == "Refusal":
                # Refusal("key", {"name": ...}): the values a refusal's message is filled with.
                values = node.args[1] if len(node.args) > 1 else None
                names = (
                    {k.value for k in values.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
                    if isinstance(values, ast.Dict)
                    else set()
                )
                for key in _literal_keys(node.args[0]):
                    where = f"{path.relative_to(BRIDGE_DIR.parent)}:{node.lineno}"
                    sites.append(CallSite(where, key, frozenset(names)))
                continue
            else:
                continue
            if len(node.args) <= key_index:
                continue
            kwargs = {kw.arg for kw in node.keywords if kw.arg is not None} | implicit
            for key in _literal_keys(node.args[key_index]):
                where = f"{path.relative_to(BRIDGE_DIR.parent)}:{node.lineno}"
                sites.append(CallSite(where, key, frozenset(kwargs)))
    return sites


CALL_SITES = call_sites()


def test_the_call_sites_were_found() -> None:
    # Guards the tests below against passing because the scan found nothing.
    assert len(CALL_SITES) >= 40
    assert {"help", "created", "create_failed", "pinned", "unpinned", "on", "off"} <= {
        s.key for s in CALL_SITES
    }


def template(lang: str, key: str) -> str:
    return catalogue().template(lang, key)


def test_the_catalogues_were_found() -> None:
    assert "kanal" in DOMAINS
    assert len(ENGLISH) >= 100
    assert catalogue().languages == LANGUAGES


@pytest.mark.parametrize("domain", DOMAINS)
@pytest.mark.parametrize("lang", TRANSLATIONS)
def test_every_domain_has_a_translation_file_that_polib_reads(domain: str, lang: str) -> None:
    source = polib.pofile(str(LOCALE_DIR / f"{domain}.pot"))
    translation = polib.pofile(str(LOCALE_DIR / lang / f"{domain}.po"))

    assert translation.metadata.get("Content-Type", "").lower().endswith("charset=utf-8")
    assert {e.msgctxt for e in translation if not e.obsolete} == {e.msgctxt for e in source}


@pytest.mark.parametrize("domain", DOMAINS)
def test_every_english_entry_has_a_key_and_marks_its_placeholders(domain: str) -> None:
    for entry in polib.pofile(str(LOCALE_DIR / f"{domain}.pot")):
        assert entry.msgctxt, f"{domain}.pot:{entry.linenum}: no msgctxt"
        assert entry.msgstr == "", f"{domain}.pot:{entry.linenum}: the template has a translation"
        if placeholders(entry.msgid):
            assert "python-brace-format" in entry.flags, f"{domain}.pot:{entry.linenum}: {entry.msgctxt}"


@pytest.mark.parametrize("key", sorted(ENGLISH))
@pytest.mark.parametrize("lang", TRANSLATIONS)
def test_every_message_is_translated(key: str, lang: str) -> None:
    # Only a usable translation is loaded: present, not fuzzy, made for the current English text.
    translated = catalogue().translations[lang].get(key)

    assert translated, f"{key}: no {lang} translation, or a fuzzy or outdated one"
    assert translated.strip()
    assert ENGLISH[key].strip()


@pytest.mark.parametrize("key", sorted(ENGLISH))
@pytest.mark.parametrize("lang", TRANSLATIONS)
def test_translations_keep_the_english_placeholders(key: str, lang: str) -> None:
    assert placeholders(template(lang, key)) == placeholders(ENGLISH[key])


@pytest.mark.parametrize("site", CALL_SITES, ids=lambda s: f"{s.where}:{s.key}")
def test_every_call_site_uses_a_known_key_and_passes_every_placeholder(site: CallSite) -> None:
    assert site.key in ENGLISH, f"{site.where}: unknown message key {site.key!r}"
    for lang in LANGUAGES:
        missing = placeholders(template(lang, site.key)) - site.kwargs
        assert not missing, f"{site.where}: {site.key}/{lang} needs {sorted(missing)}"


@pytest.mark.parametrize("site", CALL_SITES, ids=lambda s: f"{s.where}:{s.key}")
@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_call_site_formats(site: CallSite, lang: str) -> None:
    values = {name: f"<{name}>" for name in site.kwargs}

    text = t(lang, site.key, **values)

    assert "{" not in text
    for name in placeholders(template(lang, site.key)):
        assert f"<{name}>" in text


def test_reply_is_never_given_the_domain_it_passes_itself() -> None:
    # context.reply passes domain=ctx.domain; passing it again is a TypeError at run time.
    explicit = []
    for path in sorted(BRIDGE_DIR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "reply":
                if any(kw.arg == "domain" for kw in node.keywords):
                    explicit.append(f"{path.name}:{node.lineno}")
    assert explicit == []


def test_every_message_is_used() -> None:
    used = {site.key for site in CALL_SITES}
    # Command words are read by bridge.runtime.dispatch (tests/unit/test_command_registry.py).
    words = {key for key in ENGLISH if key.startswith(WORD_KEY_PREFIX)}

    assert words and set(ENGLISH) - used - words == set()


def test_values_are_not_formatted_again() -> None:
    text = t("en", "title_set", handle="news1", title="{domain} {0}")

    assert text == "#news1 is now titled “{domain} {0}”."


def test_unknown_language_falls_back_to_english() -> None:
    assert t("de", "cancelled") == ENGLISH["cancelled"] == "Cancelled; nothing was changed."


def test_persian_is_chosen_when_asked() -> None:
    assert t("fa", "cancelled") == "لغو شد؛ چیزی تغییر نکرد."


def test_unknown_key_fails_loudly() -> None:
    with pytest.raises(KeyError, match="no_such_message"):
        t("en", "no_such_message")


@pytest.mark.parametrize(
    ("text", "default", "expected"),
    [
        ("create news", "en", "en"),
        ("create news", "fa", "fa"),
        ("سلام", "en", "fa"),
        ("create news اخبار روز", "en", "fa"),
        ("ساخت کانال", "en", "fa"),
        ("گ", "en", "fa"),  # Persian-only letters (U+06AF) are in the Arabic block
        ("\ufb8a", "en", "fa"),  # Arabic presentation forms
        ("\ufefb", "en", "fa"),
        ("", "en", "en"),
        ("Привет", "en", "en"),
        ("12345 !@#", "fa", "fa"),
        ("decision d۴۲", "en", "en"),  # digits copied from a Persian reply are not Persian writing
        ("appeal ٤٢ unfair", "en", "en"),
        ("نگهداری news ۳۰", "en", "fa"),
    ],
)
def test_detect_language(text: str, default: str, expected: str) -> None:
    assert detect_language(text, default) == expected


# -- the loader, on catalogues written for the test ----------------------------------------------------


def write_catalogue(
    path: Path, entries: list[tuple[str, str, str]], *, fuzzy: AbstractSet[str] = frozenset()
) -> None:
    """(key, English, translation) entries; a .pot gets empty translations."""
    path.parent.mkdir(parents=True, exist_ok=True)
    catalogue_file = polib.POFile()
    catalogue_file.metadata = {"Content-Type": "text/plain; charset=UTF-8"}
    for key, english, translated in entries:
        flags = ["fuzzy"] if key in fuzzy else []
        catalogue_file.append(
            polib.POEntry(
                msgctxt=key, msgid=english, msgstr="" if path.suffix == ".pot" else translated, flags=flags
            )
        )
    catalogue_file.save(str(path))


def test_domains_are_merged(tmp_path: Path) -> None:
    write_catalogue(tmp_path / "one.pot", [("a", "A {x}", "")])
    write_catalogue(tmp_path / "two.pot", [("b", "B", "")])
    write_catalogue(tmp_path / "fa" / "one.po", [("a", "A {x}", "آ {x}")])
    write_catalogue(tmp_path / "fa" / "two.po", [("b", "B", "ب")])

    loaded = load_catalogue(tmp_path)

    assert loaded.english == {"a": "A {x}", "b": "B"}
    assert loaded.template("fa", "a") == "آ {x}"
    assert loaded.template("fa", "b") == "ب"
    assert loaded.languages == ("en", "fa")


def test_a_key_in_two_domains_is_an_error(tmp_path: Path) -> None:
    write_catalogue(tmp_path / "kanal.pot", [("help", "Help", "")])
    write_catalogue(tmp_path / "links.pot", [("help", "Other help", "")])

    with pytest.raises(CatalogueError, match=r"'help' is in both kanal\.pot and links\.pot"):
        load_catalogue(tmp_path)


def test_a_key_translated_in_two_domains_is_an_error(tmp_path: Path) -> None:
    write_catalogue(tmp_path / "kanal.pot", [("help", "Help", "")])
    write_catalogue(tmp_path / "fa" / "kanal.po", [("help", "Help", "راهنما")])
    write_catalogue(tmp_path / "fa" / "links.po", [("help", "Help", "کمک")])

    with pytest.raises(CatalogueError, match="'help'"):
        load_catalogue(tmp_path)


def test_an_entry_without_a_key_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "kanal.pot").write_text('msgid "Help"\nmsgstr ""\n', encoding="utf-8")

    with pytest.raises(CatalogueError, match="msgctxt"):
        load_catalogue(tmp_path)


def test_a_broken_file_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "kanal.pot").write_text(
        'msgctxt "help"\nmsgid "Help"\nmsgstr ""\nstray words\n', encoding="utf-8"
    )

    with pytest.raises(CatalogueError, match=r"kanal\.pot"):
        load_catalogue(tmp_path)


def test_missing_empty_fuzzy_and_outdated_translations_fall_back_to_english(tmp_path: Path) -> None:
    entries = [(key, f"English {key}", "") for key in ("missing", "empty", "fuzzy", "outdated", "good")]
    write_catalogue(tmp_path / "kanal.pot", entries)
    write_catalogue(
        tmp_path / "fa" / "kanal.po",
        [
            ("empty", "English empty", ""),
            ("fuzzy", "English fuzzy", "فازی"),
            ("outdated", "The English text before it changed", "قدیمی"),
            ("good", "English good", "خوب"),
        ],
        fuzzy={"fuzzy"},
    )

    loaded = load_catalogue(tmp_path)

    assert [loaded.template("fa", key) for key, _, _ in entries] == [
        "English missing",
        "English empty",
        "English fuzzy",
        "English outdated",
        "خوب",
    ]


# -- values are inserted as they are ---------------------------------------------------------------------

RTL_VALUES = [
    "اخبار روز",
    "می‌خواهم",  # ZWNJ inside a Persian word
    "‫نقل قول‬",  # embedding controls a post may carry
    "‏سلام‏ abc ‎123",  # RLM and LRM marks
    "שלום עולם",
    "مرحبا {domain} {0} %s",  # looks like a template, is not one
]


@pytest.mark.parametrize("value", RTL_VALUES)
@pytest.mark.parametrize("lang", LANGUAGES)
def test_right_to_left_values_come_out_untouched(value: str, lang: str) -> None:
    text = t(lang, "title_set", handle="news1", title=value)

    assert value in text
    before, after = template(lang, "title_set").split("{title}")
    assert text == before.replace("{handle}", "news1") + value + after.replace("{handle}", "news1")


def test_numbers_in_persian_replies_are_written_in_persian_digits() -> None:
    assert t("fa", "report_received", id=1234) == t("fa", "report_received", id="۱۲۳۴")
    assert "۱۲۳۴" in t("fa", "report_received", id=1234)
    assert "1234" in t("en", "report_received", id=1234)


def test_only_numbers_get_persian_digits() -> None:
    # Handles, ids and titles with digits are text: they come out as they went in.
    text = t("fa", "title_set", handle="news1", title="2026")

    assert "news1" in text and "2026" in text


@pytest.mark.parametrize(("value", "digits"), [(7, "۷"), (1.5, "۱.۵"), (0, "۰")])
def test_number_values_of_any_kind_are_localised(value: float, digits: str) -> None:
    assert digits in t("fa", "report_received", id=value)


def test_a_numeral_made_before_the_language_was_known_gets_the_readers_digits() -> None:
    assert "۲۰۲۶-۰۳-۱۴" in t("fa", "title_set", handle="news1", title=Numeral("2026-03-14"))
    assert "2026-03-14" in t("en", "title_set", handle="news1", title=Numeral("2026-03-14"))


def test_a_boolean_is_not_a_number() -> None:
    assert "True" in t("fa", "report_received", id=True)


def _ascii_date(node: ast.expr) -> bool:
    """A date or time written in ASCII digits: `x.strftime(...)`, `f"{x:%Y-%m-%d}"`, `local_time(...)`."""
    if isinstance(node, ast.Call):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        return name in ("strftime", "local_time")
    if isinstance(node, ast.JoinedStr):
        return any(
            isinstance(part, ast.FormattedValue) and part.format_spec is not None and "%" in ast.unparse(part.format_spec)
            for part in node.values
        )
    if isinstance(node, ast.IfExp):
        return _ascii_date(node.body) or _ascii_date(node.orelse)
    return False


def test_a_date_in_a_message_is_written_in_the_readers_digits() -> None:
    # A date is formatted to text before it reaches `t`, so `t` cannot localise its digits: each one
    # goes through bridge.text.digits.localise_digits (a Persian reply says ۲۰۲۶-۰۳-۱۴, not 2026-03-14).
    unlocalised = []
    for path in sorted(BRIDGE_DIR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name not in ("t", "reply", "tell_moderators", "Refusal"):
                continue
            values = [kw.value for kw in node.keywords]
            if name == "Refusal" and len(node.args) > 1 and isinstance(node.args[1], ast.Dict):
                values += [v for v in node.args[1].values if v is not None]
            unlocalised += [f"{path.relative_to(BRIDGE_DIR.parent)}:{v.lineno}" for v in values if _ascii_date(v)]
    assert unlocalised == []
