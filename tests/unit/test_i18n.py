"""The bot's replies: both languages for every message, and every template fits the code that fills it.

The call sites are read from bridge/*.py with `ast`, so a new `reply(..., "key", name=...)` whose
template needs a value the code does not pass fails here rather than in front of a user.
"""

from __future__ import annotations

import ast
import string
from dataclasses import dataclass
from pathlib import Path

import pytest

import bridge
from bridge.i18n import MESSAGES, detect_language, t

LANGUAGES = ("en", "fa")
BRIDGE_DIR = Path(bridge.__file__).parent

# The Persian refusal names the handle instead of repeating the English reason; the code passes both.
FA_ONLY_PLACEHOLDERS = {"invalid_handle": {"handle"}}


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
    """Every `reply(session, ctx, room, lang, KEY, **kw)` and `t(lang, KEY, **kw)` in bridge/."""
    sites = []
    for path in sorted(BRIDGE_DIR.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
                continue
            if node.func.id == "reply":
                key_index, implicit = 4, {"domain"}  # context.reply always passes domain
            elif node.func.id == "t":
                key_index, implicit = 1, set()
            elif node.func.id == "Refusal":
                # Refusal("key", {"name": ...}): the values a refusal's message is filled with.
                values = node.args[1] if len(node.args) > 1 else None
                names = (
                    {k.value for k in values.keys if isinstance(k, ast.Constant)}
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


@pytest.mark.parametrize("key", sorted(MESSAGES))
def test_every_message_has_english_and_persian(key: str) -> None:
    assert set(MESSAGES[key]) == set(LANGUAGES)
    for lang in LANGUAGES:
        assert MESSAGES[key][lang].strip()


@pytest.mark.parametrize("key", sorted(MESSAGES))
def test_persian_placeholders_are_a_subset_of_english(key: str) -> None:
    extra = placeholders(MESSAGES[key]["fa"]) - placeholders(MESSAGES[key]["en"])

    assert extra == FA_ONLY_PLACEHOLDERS.get(key, set())


@pytest.mark.parametrize("site", CALL_SITES, ids=lambda s: f"{s.where}:{s.key}")
def test_every_call_site_uses_a_known_key_and_passes_every_placeholder(site: CallSite) -> None:
    assert site.key in MESSAGES, f"{site.where}: unknown message key {site.key!r}"
    for lang in LANGUAGES:
        missing = placeholders(MESSAGES[site.key][lang]) - site.kwargs
        assert not missing, f"{site.where}: {site.key}/{lang} needs {sorted(missing)}"


@pytest.mark.parametrize("site", CALL_SITES, ids=lambda s: f"{s.where}:{s.key}")
@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_call_site_formats(site: CallSite, lang: str) -> None:
    values = {name: f"<{name}>" for name in site.kwargs}

    text = t(lang, site.key, **values)

    assert "{" not in text
    for name in placeholders(MESSAGES[site.key][lang]):
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

    assert set(MESSAGES) - used == set()


def test_values_are_not_formatted_again() -> None:
    text = t("en", "title_set", handle="news1", title="{domain} {0}")

    assert text == "#news1 is now titled “{domain} {0}”."


def test_unknown_language_falls_back_to_english() -> None:
    assert t("de", "cancelled") == MESSAGES["cancelled"]["en"]


def test_persian_is_chosen_when_asked() -> None:
    assert t("fa", "cancelled") == "لغو شد؛ چیزی تغییر نکرد."


def test_unknown_key_fails_loudly() -> None:
    with pytest.raises(KeyError):
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
    ],
)
def test_detect_language(text: str, default: str, expected: str) -> None:
    assert detect_language(text, default) == expected
