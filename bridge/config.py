"""Kanal's configuration: parsed once from YAML into a frozen, validated object.

Every error names the file, the key and what was expected. The operator's file is never rewritten.
Relative paths inside the file resolve against the file's folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .store.db import async_driver_url

DEFAULT_LISTEN = "127.0.0.1:29340"
DEFAULT_BOT_LOCALPART = "kanal"
DEFAULT_GHOST_PREFIX = "kanal_"
LANGUAGES = ("en", "fa")
CREATION_POLICIES = ("open",)


class ConfigError(ValueError):
    """The configuration is unusable; the message is meant for the operator, verbatim."""


@dataclass(frozen=True)
class Config:
    path: Path
    domain: str
    homeserver_url: str
    as_id: str
    as_token: str
    hs_token: str
    listen_host: str
    listen_port: int
    as_url: str
    registration_path: Path | None
    bot_localpart: str
    ghost_prefix: str
    database_url: str
    creation_policy: str
    default_language: str
    log_level: str
    log_format: str

    @property
    def bot_user_id(self) -> str:
        return f"@{self.bot_localpart}:{self.domain}"


_SCHEMA: dict[str, dict[str, tuple[type | tuple[type, ...], bool]]] = {
    # section -> key -> (type, required)
    "homeserver": {"url": (str, True), "domain": (str, True)},
    "appservice": {
        "id": (str, False),
        "as_token": (str, True),
        "hs_token": (str, True),
        "listen": (str, False),
        "url": (str, False),
        "registration": (str, False),
        "bot_localpart": (str, False),
        "ghost_prefix": (str, False),
    },
    "database": {"url": (str, False)},
    "channels": {"creation_policy": (str, False), "default_language": (str, False)},
    "logging": {"level": (str, False), "format": (str, False)},
}

_LOCALPART = re.compile(r"^[a-z0-9._=\-/]+$")


def _type_name(expected: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", bool: "true or false", list: "a list"}
    if isinstance(expected, tuple):
        return " or ".join(names.get(t, t.__name__) for t in expected)
    return names.get(expected, expected.__name__)


def parse_listen(value: str, where: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{where}: expected HOST:PORT (for example {DEFAULT_LISTEN}), got {value!r}")
    return host.strip("[]"), int(port)


def resolve_database_url(url: str, base: Path) -> str:
    """Make a relative SQLite path absolute against `base` (the config file's folder), async driver named."""
    url = async_driver_url(url)
    prefix = "sqlite+aiosqlite:///"
    if url.startswith(prefix):
        rest = url[len(prefix) :]
        if rest and not rest.startswith("/") and not rest.startswith(":memory:"):
            return prefix + str((base / rest).resolve())
    return url


def parse(data: Any, path: Path) -> Config:
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a YAML mapping at the top level, got {type(data).__name__}")
    values: dict[str, dict[str, Any]] = {}
    for key in data:
        if key not in _SCHEMA:
            raise ConfigError(f"{path}: unknown key '{key}' (known: {', '.join(_SCHEMA)})")
    for section, keys in _SCHEMA.items():
        raw = data.get(section, {})
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: '{section}' must be a mapping")
        for key in raw:
            if key not in keys:
                raise ConfigError(f"{path}: unknown key '{section}.{key}' (known: {', '.join(keys)})")
        for key, (expected, required) in keys.items():
            if key not in raw or raw[key] is None or (required and raw[key] == ""):
                if required:
                    raise ConfigError(f"{path}: '{section}.{key}' is required ({_type_name(expected)})")
                continue
            if not isinstance(raw[key], expected) or (isinstance(raw[key], bool) and expected is not bool):
                raise ConfigError(
                    f"{path}: '{section}.{key}' must be {_type_name(expected)}, got {type(raw[key]).__name__}"
                )
        values[section] = {k: v for k, v in raw.items() if v is not None}

    hs, asv, db, ch, lg = (values[s] for s in ("homeserver", "appservice", "database", "channels", "logging"))
    base = path.parent
    if not re.match(r"^https?://", hs["url"]):
        raise ConfigError(f"{path}: 'homeserver.url' must start with http:// or https://, got {hs['url']!r}")
    for key in ("as_token", "hs_token"):
        if len(asv[key]) < 16:
            raise ConfigError(f"{path}: 'appservice.{key}' is too short (at least 16 characters)")
    if asv["as_token"] == asv["hs_token"]:
        raise ConfigError(f"{path}: 'appservice.as_token' and 'appservice.hs_token' must differ")
    listen_host, listen_port = parse_listen(asv.get("listen", DEFAULT_LISTEN), f"{path}: 'appservice.listen'")
    bot = asv.get("bot_localpart", DEFAULT_BOT_LOCALPART)
    prefix = asv.get("ghost_prefix", DEFAULT_GHOST_PREFIX)
    for key, value in (("bot_localpart", bot), ("ghost_prefix", prefix)):
        if not _LOCALPART.fullmatch(value):
            raise ConfigError(f"{path}: 'appservice.{key}' must use only a-z 0-9 . _ = - /, got {value!r}")
    policy = ch.get("creation_policy", "open")
    if policy not in CREATION_POLICIES:
        raise ConfigError(
            f"{path}: 'channels.creation_policy' must be one of {CREATION_POLICIES}, got {policy!r}"
        )
    language = ch.get("default_language", "en")
    if language not in LANGUAGES:
        raise ConfigError(f"{path}: 'channels.default_language' must be one of {LANGUAGES}, got {language!r}")
    level = lg.get("level", "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"{path}: 'logging.level' must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
    fmt = lg.get("format", "text")
    if fmt not in ("text", "json"):
        raise ConfigError(f"{path}: 'logging.format' must be text or json, got {fmt!r}")
    registration = asv.get("registration")
    return Config(
        path=path,
        domain=hs["domain"],
        homeserver_url=hs["url"].rstrip("/"),
        as_id=asv.get("id", "kanal"),
        as_token=asv["as_token"],
        hs_token=asv["hs_token"],
        listen_host=listen_host,
        listen_port=listen_port,
        as_url=asv.get("url", f"http://{listen_host}:{listen_port}"),
        registration_path=(base / registration).resolve() if registration else None,
        bot_localpart=bot,
        ghost_prefix=prefix,
        database_url=resolve_database_url(db.get("url", "sqlite:///kanal.db"), base),
        creation_policy=policy,
        default_language=language,
        log_level=level,
        log_format=fmt,
    )


def load(path: Path) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (create one with `kanal init`)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the file is not UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    return parse(data, path.resolve())
