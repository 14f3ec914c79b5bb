"""Hook configuration: each entry of `compliance.hooks` (or of a channel's list) parsed into a spec.

Every entry is a mapping with a `type` and that type's keys; `parse_hooks` checks them all and raises
ValueError naming the exact key (`'compliance.hooks[2].timeout_ms' must be …`). Term files are read
here, so a missing or unreadable one is a config error at start, not a surprise at the first post.

Keys every hook takes: `type` (required), `name`, `category`, and either `action` (built-in hooks:
what a match does) or `on_failure` (webhook and plugin: what happens when they cannot answer).

| type    | keys                                          | `action` default    | `category` default |
|---------|-----------------------------------------------|---------------------|--------------------|
| terms   | terms, regex, files (at least one)            | hold                | other              |
| links   | deny, allow (at least one)                    | hold                | spam               |
| media   | max_bytes, types (at least one)               | reject              | other              |
| rate    | posts, per_seconds (both required)            | reject              | spam               |
| webhook | url, secret (both required), timeout_ms,      | the service answers | other              |
|         | on_failure, channels                          |                     |                    |
| plugin  | options, on_failure                           | the plugin answers  | other              |

Why these defaults: a listed term or domain needs a person to judge its context, so it holds; a file
too large or of a refused type, or one post too many, is a plain fact the poster can fix, so it is
rejected at once with the reason. Webhooks and plugins decide for themselves; when they fail,
`on_failure` applies (default `hold`: nothing is published unchecked, nothing is lost).

`name` defaults to the type; webhooks and plugins need one (a plugin's is its entry point name in the
group `kanal.hooks`). Names are unique within one list, so each verdict says which hook gave it.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from bridge.screening.normalise import host_key
from bridge.screening.terms import compile_pattern, term_key
from bridge.screening.webhook import CATEGORY, SECRET_PREFIX, decode_secret

HOOK_TYPES: Final = ("terms", "links", "media", "rate", "webhook", "plugin")
ACTIONS: Final = ("allow", "hold", "reject")
MATCH_ACTIONS: Final = ("hold", "reject")
DEFAULT_ACTION: Final = {"terms": "hold", "links": "hold", "media": "reject", "rate": "reject"}
DEFAULT_CATEGORY: Final = {
    "terms": "other",
    "links": "spam",
    "media": "other",
    "rate": "spam",
    "webhook": "other",
    "plugin": "other",
}
DEFAULT_ON_FAILURE: Final = "hold"
PLUGIN_GROUP: Final = "kanal.hooks"
DEFAULT_TIMEOUT_MS: Final = 2000
MIN_TIMEOUT_MS: Final = 100
MAX_TIMEOUT_MS: Final = 30_000
MAX_RATE_POSTS: Final = 10_000
MAX_RATE_SECONDS: Final = 7 * 24 * 3600

_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_HOST: Final = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,62})(?:\.[a-z0-9_](?:[a-z0-9_-]{0,62}))*")
_MEDIA_TYPE: Final = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/(?:\*|[a-z0-9][a-z0-9!#$&^_.+-]*)")
_HANDLE: Final = re.compile(r"[^\s:#@]+")
_COMMON_KEYS: Final = ("type", "name", "category")
_KEYS: Final = {
    "terms": ("action", "terms", "regex", "files"),
    "links": ("action", "deny", "allow"),
    "media": ("action", "max_bytes", "types"),
    "rate": ("action", "posts", "per_seconds"),
    "webhook": ("url", "secret", "timeout_ms", "on_failure", "channels"),
    "plugin": ("options", "on_failure"),
}


@dataclass(frozen=True, kw_only=True)
class TermsSpec:
    name: str
    action: str
    category: str
    terms: tuple[str, ...]
    """Literal terms as written, those of `files` after the inline ones."""
    regex: tuple[str, ...]
    files: tuple[Path, ...]
    where: str = field(default="", compare=False)

    @property
    def label(self) -> str:
        return self.name


@dataclass(frozen=True, kw_only=True)
class LinksSpec:
    name: str
    action: str
    category: str
    deny: tuple[str, ...]
    """Host names (`evil.example`: it and its subdomains; `*.evil.example`: subdomains only), as
    `host_key`s."""
    allow: tuple[str, ...]
    """When not empty, links to any other host are flagged."""
    where: str = field(default="", compare=False)

    @property
    def label(self) -> str:
        return self.name


@dataclass(frozen=True, kw_only=True)
class MediaSpec:
    name: str
    action: str
    category: str
    max_bytes: int | None
    types: tuple[str, ...]
    """`type/subtype` or `type/*`, lower case; empty: any type."""
    where: str = field(default="", compare=False)

    @property
    def label(self) -> str:
        return self.name


@dataclass(frozen=True, kw_only=True)
class RateSpec:
    name: str
    action: str
    category: str
    posts: int
    per_seconds: int
    where: str = field(default="", compare=False)

    @property
    def label(self) -> str:
        return self.name


@dataclass(frozen=True, kw_only=True)
class WebhookSpec:
    name: str
    category: str
    url: str
    secret: bytes = field(repr=False)
    """The decoded signing key; never shown."""
    timeout_ms: int
    on_failure: str
    channels: tuple[str, ...]
    """Handles this webhook is for; empty: every channel using the list."""
    where: str = field(default="", compare=False)

    @property
    def label(self) -> str:
        return f"webhook:{self.name}"


@dataclass(frozen=True, kw_only=True)
class PluginSpec:
    name: str
    """The entry point's name in the group `kanal.hooks`."""
    category: str
    options: Mapping[str, Any] = field(hash=False)
    on_failure: str
    factory: Callable[[dict[str, Any]], Any] = field(repr=False, compare=False)
    where: str = field(default="", compare=False)

    @property
    def label(self) -> str:
        return f"plugin:{self.name}"


HookSpec = TermsSpec | LinksSpec | MediaSpec | RateSpec | WebhookSpec | PluginSpec


def parse_hooks(raw: Any, where: str, base: Path) -> list[HookSpec]:
    """Validate a list of hook mappings; ValueError naming `where` and the key when one is wrong.

    Relative term file paths resolve against `base` (the config file's folder).
    """
    if not isinstance(raw, list):
        raise ValueError(f"'{where}' must be a list of hooks (mappings with a `type`)")
    specs: list[HookSpec] = []
    labels: dict[str, str] = {}
    for index, item in enumerate(raw):
        spec = _parse_hook(item, f"{where}[{index}]", base)
        if spec.label in labels:
            raise ValueError(
                f"'{spec.where}.name': {spec.label!r} is already the name of '{labels[spec.label]}'; "
                "give each hook in a list its own name"
            )
        labels[spec.label] = spec.where
        specs.append(spec)
    return specs


class _Keys:
    """One hook mapping, read key by key; every error names the key's full path."""

    def __init__(self, raw: dict[Any, Any], where: str) -> None:
        self.raw = raw
        self.where = where

    def path(self, key: str) -> str:
        return f"{self.where}.{key}"

    def error(self, key: str, problem: str) -> ValueError:
        return ValueError(f"'{self.path(key)}' {problem}")

    def text(self, key: str, default: str | None = None) -> str | None:
        value = self.raw.get(key)
        if value is None:
            return default
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, "must be a non-empty string")
        return value.strip()

    def texts(self, key: str) -> list[str]:
        value = self.raw.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.error(key, "must be a list of strings")
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise ValueError(f"'{self.path(key)}[{index}]' must be a non-empty string")
        return [item.strip() for item in value]

    def whole(self, key: str, low: int, high: int, what: str) -> int | None:
        value = self.raw.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.error(key, f"must be a whole number of {what} between {low} and {high}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.raw.get(key, default)
        if value is None:
            return default
        if value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)}, got {value!r}")
        return str(value)


def _parse_hook(item: Any, where: str, base: Path) -> HookSpec:
    if not isinstance(item, dict):
        raise ValueError(f"'{where}' must be a mapping with a `type` ({', '.join(HOOK_TYPES)})")
    kind = item.get("type")
    if kind not in HOOK_TYPES:
        raise ValueError(f"'{where}.type' must be one of {', '.join(HOOK_TYPES)}, got {kind!r}")
    known = (*_COMMON_KEYS, *_KEYS[kind])
    for key in item:
        if key not in known:
            hint = ""
            if key == "action" and kind in ("webhook", "plugin"):
                hint = f"; a {kind} answers with its own action (`on_failure` applies when it cannot)"
            raise ValueError(
                f"'{where}.{key}' is not a key of a {kind} hook (known: {', '.join(known)}){hint}"
            )
    keys = _Keys(item, where)
    name = keys.text("name")
    if name is None and kind in ("webhook", "plugin"):
        raise keys.error("name", f"is required for a {kind} hook")
    name = name or kind
    if kind != "plugin" and not _NAME.fullmatch(name):
        raise keys.error("name", f"must be 1–64 letters, digits, '_', '.' or '-', got {name!r}")
    category = keys.text("category", DEFAULT_CATEGORY[kind]) or DEFAULT_CATEGORY[kind]
    if not CATEGORY.fullmatch(category):
        raise keys.error(
            "category", f"must be a lower-case word such as spam or illegal_content, got {category!r}"
        )
    if kind == "webhook":
        return _webhook(keys, name, category)
    if kind == "plugin":
        return _plugin(keys, name, category)
    action = keys.choice("action", MATCH_ACTIONS, DEFAULT_ACTION[kind])
    if kind == "terms":
        return _terms(keys, name, action, category, base)
    if kind == "links":
        return _links(keys, name, action, category)
    if kind == "media":
        return _media(keys, name, action, category)
    return _rate(keys, name, action, category)


def _terms(keys: _Keys, name: str, action: str, category: str, base: Path) -> TermsSpec:
    terms = keys.texts("terms")
    for index, term in enumerate(terms):
        try:
            term_key(term)
        except ValueError as exc:
            raise ValueError(f"'{keys.path('terms')}[{index}]': {exc}") from None
    patterns = keys.texts("regex")
    for index, pattern in enumerate(patterns):
        try:
            compile_pattern(pattern)
        except ValueError as exc:
            raise ValueError(f"'{keys.path('regex')}[{index}]': {exc}") from None
    files = [(base / entry).resolve() for entry in keys.texts("files")]
    for index, path in enumerate(files):
        terms.extend(_read_terms(path, f"{keys.path('files')}[{index}]"))
    if not terms and not patterns:
        raise ValueError(f"'{keys.where}' lists no terms: give `terms`, `regex` or `files`")
    return TermsSpec(
        name=name,
        action=action,
        category=category,
        terms=tuple(terms),
        regex=tuple(patterns),
        files=tuple(files),
        where=keys.where,
    )


def _read_terms(path: Path, where: str) -> list[str]:
    """A term file: UTF-8, one literal term a line; blank lines and lines starting `# ` are skipped.

    A lone `#` followed by a letter is a term (a hashtag), not a comment.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ValueError(f"'{where}': no such file: {path}") from None
    except OSError as exc:
        raise ValueError(f"'{where}': cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"'{where}': {path} is not UTF-8 text") from None
    terms: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        term = line.strip()
        if not term or term == "#" or term.startswith("# "):
            continue
        try:
            term_key(term)
        except ValueError as exc:
            raise ValueError(f"'{where}' ({path}, line {number}): {exc}") from None
        terms.append(term)
    return terms


def _links(keys: _Keys, name: str, action: str, category: str) -> LinksSpec:
    lists: dict[str, tuple[str, ...]] = {}
    for key in ("deny", "allow"):
        entries: list[str] = []
        for index, entry in enumerate(keys.texts(key)):
            wildcard = entry.startswith("*.")
            host = host_key(entry[2:] if wildcard else entry)
            if not _HOST.fullmatch(host):
                raise ValueError(
                    f"'{keys.path(key)}[{index}]' must be a host name such as evil.example or "
                    f"*.evil.example (not a URL), got {entry!r}"
                )
            entries.append(f"*.{host}" if wildcard else host)
        lists[key] = tuple(entries)
    if not lists["deny"] and not lists["allow"]:
        raise ValueError(f"'{keys.where}' lists no hosts: give `deny`, `allow` or both")
    return LinksSpec(
        name=name,
        action=action,
        category=category,
        deny=lists["deny"],
        allow=lists["allow"],
        where=keys.where,
    )


def _media(keys: _Keys, name: str, action: str, category: str) -> MediaSpec:
    max_bytes = keys.whole("max_bytes", 1, 2**53, "bytes")
    types = [t.strip().lower() for t in keys.texts("types")]
    for index, media_type in enumerate(types):
        if not _MEDIA_TYPE.fullmatch(media_type):
            raise ValueError(
                f"'{keys.path('types')}[{index}]' must be a media type such as image/png or image/*, "
                f"got {media_type!r}"
            )
    if max_bytes is None and not types:
        raise ValueError(f"'{keys.where}' sets no limit: give `max_bytes`, `types` or both")
    return MediaSpec(
        name=name, action=action, category=category, max_bytes=max_bytes, types=tuple(types), where=keys.where
    )


def _rate(keys: _Keys, name: str, action: str, category: str) -> RateSpec:
    posts = keys.whole("posts", 1, MAX_RATE_POSTS, "posts")
    seconds = keys.whole("per_seconds", 1, MAX_RATE_SECONDS, "seconds")
    if posts is None:
        raise keys.error("posts", "is required: how many posts a channel may publish per `per_seconds`")
    if seconds is None:
        raise keys.error("per_seconds", "is required: the length of the window `posts` are counted in")
    return RateSpec(
        name=name, action=action, category=category, posts=posts, per_seconds=seconds, where=keys.where
    )


def _webhook(keys: _Keys, name: str, category: str) -> WebhookSpec:
    url = keys.text("url")
    if url is None:
        raise keys.error("url", "is required: the address of the moderation service (https://…)")
    try:
        parts = urlsplit(url)
        usable = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # a malformed port or IPv6 literal
        usable = False
    if not usable:
        raise keys.error("url", f"must be an http:// or https:// URL with a host, got {url!r}")
    timeout = keys.whole("timeout_ms", MIN_TIMEOUT_MS, MAX_TIMEOUT_MS, "milliseconds")
    channels = [c.strip().lower() for c in keys.texts("channels")]
    for index, handle in enumerate(channels):
        if not _HANDLE.fullmatch(handle):
            raise ValueError(f"'{keys.path('channels')}[{index}]' must be a channel handle, got {handle!r}")
    return WebhookSpec(
        name=name,
        category=category,
        url=url,
        secret=_secret(keys),
        timeout_ms=DEFAULT_TIMEOUT_MS if timeout is None else timeout,
        on_failure=keys.choice("on_failure", ACTIONS, DEFAULT_ON_FAILURE),
        channels=tuple(dict.fromkeys(channels)),
        where=keys.where,
    )


def _secret(keys: _Keys) -> bytes:
    value = keys.raw.get("secret")
    if not isinstance(value, str) or not value.strip():
        raise keys.error(
            "secret", f"is required: the Standard Webhooks secret ({SECRET_PREFIX}…) shared with the service"
        )
    try:
        return decode_secret(value)
    except ValueError as exc:
        raise keys.error("secret", str(exc)) from None


def _plugin(keys: _Keys, name: str, category: str) -> PluginSpec:
    options = keys.raw.get("options") or {}
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise keys.error("options", "must be a mapping (it is given to the plugin's factory)")
    found = importlib.metadata.entry_points(group=PLUGIN_GROUP, name=name)
    if not found:
        installed = sorted(ep.name for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP))
        raise keys.error(
            "name",
            f"names no installed plugin: {name!r} is not an entry point in the group {PLUGIN_GROUP} "
            f"(installed: {', '.join(installed) or 'none'})",
        )
    entry_point = next(iter(found))
    try:
        factory = entry_point.load()
    except Exception as exc:  # the plugin's own import failed: the operator must see why
        raise keys.error("name", f"names the plugin {name!r}, which could not be loaded: {exc!r}") from None
    if not callable(factory):
        raise keys.error("name", f"names {entry_point.value}, which is not a factory (a callable)")
    return PluginSpec(
        name=name,
        category=category,
        options=dict(options),
        on_failure=keys.choice("on_failure", ACTIONS, DEFAULT_ON_FAILURE),
        factory=factory,
        where=keys.where,
    )
