"""Kanal's configuration: parsed once from YAML into a frozen, validated object.

Every error names the file, the key and what was expected. The operator's file is never rewritten.
Relative paths of what Kanal reads (the registration, term lists, token files) resolve against the
file's folder; relative paths of what Kanal writes (a SQLite database, the audit key, the media cache)
against the state directory, so the config's folder may be read-only (systemd's ProtectSystem=strict):

    state.directory in the file  >  $STATE_DIRECTORY (systemd's StateDirectory=)  >  the file's folder

A database or audit key already beside the config file (an install from before the state directory)
keeps being used there.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, cast

import yaml

from bridge.screening.settings import HookSpec, parse_hooks
from bridge.store.db import async_driver_url
from bridge.text.names import DEFAULT_HANDLE_PATTERN

DEFAULT_LISTEN = "127.0.0.1:29340"
DEFAULT_WEB_LISTEN = "127.0.0.1:29341"
# web.trusted_proxies: peers whose X-Forwarded-For the web listener believes (bridge/web/forwarded.py).
# Loopback only: a reverse proxy on the same machine (the bare-metal examples) works as it is, and a
# reader who reaches web.listen directly never comes from loopback.
DEFAULT_TRUSTED_PROXIES = ("127.0.0.0/8", "::1/128")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
DEFAULT_BOT_LOCALPART = "kanal"
DEFAULT_GHOST_PREFIX = "kanal_"
LANGUAGES = ("en", "fa")
CREATION_POLICIES = ("open", "approval", "token")
FEDERATION_POLICIES = ("open", "allowlist", "closed")
# Handles nobody may register unless an operator releases them (`unreserve`).
DEFAULT_RESERVED_HANDLES = (
    "abuse", "admin", "administrator", "announcements", "help", "helpdesk", "info", "kanal", "matrix",
    "moderator", "news_official", "official", "operator", "postmaster", "root", "security", "staff",
    "support", "synapse", "system", "webmaster",
)  # fmt: skip


class ConfigError(ValueError):
    """The configuration is unusable; the message is meant for the operator, verbatim."""


DEFAULT_SHARD_SIZE: Final = 10_000  # channels.shard_size
# database.inbound_retention_days / database.outbox_retention_days (see bridge/runtime/retention.py)
DEFAULT_INBOUND_RETENTION_DAYS: Final = 7
DEFAULT_OUTBOX_RETENTION_DAYS: Final = 7
# homeserver.ping_interval: how often an idle Kanal pings the homeserver, so /ready notices an outage.
DEFAULT_PING_INTERVAL_S: Final = 30
# Set by systemd for a unit with StateDirectory= (several directories: separated by colons).
STATE_DIRECTORY_ENV: Final = "STATE_DIRECTORY"
STORE_KEY_FILE: Final = "e2ee-store.key"  # encryption.store_key's default, in the state directory


@dataclass(frozen=True)
class ComplianceConfig:
    moderators: tuple[str, ...] = ()  # the moderation room's members; default: the operators
    hooks: tuple[HookSpec, ...] = ()  # parsed hook specs, in order
    channel_hooks: dict[str, tuple[HookSpec, ...]] = field(default_factory=dict)  # handle -> hook specs
    appeal_window_days: int = 14
    redress: str = ""
    audit_key: Path | None = None  # Ed25519 private key for checkpoints; created at first use (0600)
    checkpoint_every: int = 100
    homeserver_admin_token_file: Path | None = None  # to poll Synapse's event reports
    report_poll_seconds: int = 60
    policy_rooms: tuple[str, ...] = ()


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
    # Seconds between the keep-alive pings to the homeserver (homeserver.ping_interval)
    ping_interval_s: int = DEFAULT_PING_INTERVAL_S
    # Channel and handle registration
    max_channels_per_user: int = 10  # 0: no limit
    handle_pattern: str = DEFAULT_HANDLE_PATTERN
    reserved_handles: tuple[str, ...] = DEFAULT_RESERVED_HANDLES
    rename_grace_days: int = 14
    handle_cooldown_days: int = 30
    title_max_length: int = 128
    verified_topic_suffix: str = " — ✓ verified"
    # `!views-in-posts`: the least time between two view-count edits of one post
    views_edit_interval_s: int = 600
    # joined readers of a channel's open room before the next opens; 0: never
    shard_size: int = DEFAULT_SHARD_SIZE
    operators: tuple[str, ...] = ()
    # Domestic hosting
    federation: str = "open"
    allowed_servers: tuple[str, ...] = ()
    retention_days: int | None = None
    # Compliance hooks, moderation, appeals, audit log (issue 4)
    compliance: ComplianceConfig = field(default_factory=lambda: ComplianceConfig())
    # The public web face: channel pages, feeds, embeds, the publishing API (issue 7)
    web_enabled: bool = False
    web_listen_host: str = "127.0.0.1"
    web_listen_port: int = 29341
    web_public_url: str = "http://127.0.0.1:29341"
    # Peers whose X-Forwarded-For names the client (the reverse proxy): the /join rate limits key on it
    web_trusted_proxies: tuple[Network, ...] = tuple(ipaddress.ip_network(n) for n in DEFAULT_TRUSTED_PROXIES)
    # How long handled events (their ids: the dedupe of deliveries and catch-up) and sent outbox
    # entries are kept before the background pruning deletes them
    inbound_retention_days: int = DEFAULT_INBOUND_RETENTION_DAYS
    outbox_retention_days: int = DEFAULT_OUTBOX_RETENTION_DAYS
    # Where Kanal writes: a relative SQLite path, the audit key, the media cache (see the module's doc)
    state_dir: Path | None = None
    # End-to-end encryption in the private rooms the bot belongs to (bridge/runtime/e2ee.py)
    encryption_enabled: bool = False
    # The key that seals the bot's encryption keys in the database (bridge/runtime/e2ee_store.py)
    encryption_store_key: Path | None = None

    @property
    def store_key_path(self) -> Path:
        """`encryption.store_key`, or its default in the state directory."""
        return self.encryption_store_key or self.writable_dir / STORE_KEY_FILE

    @property
    def writable_dir(self) -> Path:
        """The state directory (the config file's folder unless one is set)."""
        return self.state_dir or self.path.parent

    @property
    def bot_user_id(self) -> str:
        return f"@{self.bot_localpart}:{self.domain}"


_SCHEMA: dict[str, dict[str, tuple[type | tuple[type, ...], bool]]] = {
    # section -> key -> (type, required)
    "homeserver": {"url": (str, True), "domain": (str, True), "ping_interval": (int, False)},
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
    "database": {
        "url": (str, False),
        "inbound_retention_days": (int, False),
        "outbox_retention_days": (int, False),
    },
    "channels": {
        "creation_policy": (str, False),
        "default_language": (str, False),
        "max_channels_per_user": (int, False),
        "handle_pattern": (str, False),
        "reserved_handles": (list, False),
        "rename_grace_days": (int, False),
        "handle_cooldown_days": (int, False),
        "title_max_length": (int, False),
        "verified_topic_suffix": (str, False),
        "views_edit_interval": (int, False),
        "shard_size": (int, False),
    },
    "operators": {"users": (list, False)},
    "hosting": {"federation": (str, False), "allowed_servers": (list, False), "retention_days": (int, False)},
    "web": {
        "listen": (str, False),
        "public_url": (str, False),
        "enabled": (bool, False),
        "trusted_proxies": (list, False),
    },
    "compliance": {
        "moderators": (list, False),
        "hooks": (list, False),
        "channel_hooks": (dict, False),
        "appeal_window_days": (int, False),
        "redress": (str, False),
        "audit_key": (str, False),
        "checkpoint_every": (int, False),
        "homeserver_admin_token_file": (str, False),
        "report_poll_seconds": (int, False),
        "policy_rooms": (list, False),
    },
    "logging": {"level": (str, False), "format": (str, False)},
    "state": {"directory": (str, False)},
    "encryption": {"enabled": (bool, False), "store_key": (str, False)},
}

# Keys whose values are lists of mappings, checked by their own parsers (bridge/screening/settings.py).
_STRUCTURED = frozenset({"compliance.hooks"})
DEFAULT_REDRESS = (
    "You may appeal this decision with `appeal <decision number> <your reasons>` in your chat with the "
    "bot within {days} days; a person who did not take the decision reviews it. You may also turn to an "
    "out-of-court dispute settlement body or a court."
)

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


def resolve_database_url(url: str, base: Path, legacy: Path | None = None) -> str:
    """Make a relative SQLite path absolute against `base` (the state directory), async driver named.

    `legacy`: the config file's folder, where a relative database lived before the state directory;
    a database file already there keeps being used."""
    url = async_driver_url(url)
    prefix = "sqlite+aiosqlite:///"
    if url.startswith(prefix):
        rest = url[len(prefix) :]
        if rest and not rest.startswith("/") and not rest.startswith(":memory:"):
            return prefix + str(_state_file(rest, base, legacy))
    return url


def _state_file(relative: str, state: Path, legacy: Path | None) -> Path:
    """`relative` in the state directory, or beside the config file when it already exists there."""
    if legacy is not None and legacy != state and (legacy / relative).exists():
        return (legacy / relative).resolve()
    return (state / relative).resolve()


def state_directory(raw: Mapping[str, Any], base: Path, environ: Mapping[str, str]) -> Path:
    """The state directory: `state.directory`, else systemd's $STATE_DIRECTORY, else `base`."""
    configured = raw.get("directory") or environ.get(STATE_DIRECTORY_ENV, "").split(":")[0]
    return (base / configured) if configured else base


@dataclass(frozen=True)
class _Appservice:
    id: str
    as_token: str
    hs_token: str
    listen_host: str
    listen_port: int
    url: str
    registration: str | None  # resolved against the config's folder only at the end (see parse)
    bot_localpart: str
    ghost_prefix: str


@dataclass(frozen=True)
class _Channels:
    max_channels_per_user: int
    handle_pattern: str
    reserved_handles: tuple[str, ...]
    rename_grace_days: int
    handle_cooldown_days: int
    title_max_length: int
    verified_topic_suffix: str
    views_edit_interval_s: int
    shard_size: int


@dataclass(frozen=True)
class _Web:
    enabled: bool
    listen_host: str
    listen_port: int
    public_url: str
    trusted_proxies: tuple[Network, ...]


def parse(data: Any, path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Validate the YAML document `data` read from `path` into a Config, or raise ConfigError.

    `environ`: the process's environment, for $STATE_DIRECTORY (none given: not read)."""
    values = _sections(data, path)
    base = path.parent
    state = state_directory(values["state"], base, environ or {})
    # Every value's type is checked before any section's meaning, and the sections in this order (channels
    # and hosting in two parts): a file with several mistakes always names the same one first.
    homeserver_url, domain = _homeserver(values["homeserver"], path)
    ping_interval = _at_least(values["homeserver"], "homeserver", "ping_interval", DEFAULT_PING_INTERVAL_S, 1, path)
    asv = _appservice(values["appservice"], path)
    policy, language = _channel_policy(values["channels"], path)
    log_level, log_format = _logging(values["logging"], path)
    channels = _channel_limits(values["channels"], path)
    operators = _operators(values["operators"], policy, path)
    federation, allowed = _hosting(values["hosting"], path)
    compliance = _compliance(values["compliance"], path, base, state, operators)
    web = _web(values["web"], "web" in data, (asv.listen_host, asv.listen_port), path)
    retention = _retention_days(values["hosting"], path)
    inbound_days = _at_least(
        values["database"], "database", "inbound_retention_days", DEFAULT_INBOUND_RETENTION_DAYS, 1, path
    )
    outbox_days = _at_least(
        values["database"], "database", "outbox_retention_days", DEFAULT_OUTBOX_RETENTION_DAYS, 1, path
    )
    return Config(
        path=path,
        domain=domain,
        homeserver_url=homeserver_url,
        as_id=asv.id,
        as_token=asv.as_token,
        hs_token=asv.hs_token,
        listen_host=asv.listen_host,
        listen_port=asv.listen_port,
        as_url=asv.url,
        # Paths resolve after every check: resolving can fail (a symlink loop), which must not hide a mistake.
        registration_path=(base / asv.registration).resolve() if asv.registration else None,
        bot_localpart=asv.bot_localpart,
        ghost_prefix=asv.ghost_prefix,
        database_url=_database(values["database"], state, base),
        creation_policy=policy,
        default_language=language,
        log_level=log_level,
        log_format=log_format,
        max_channels_per_user=channels.max_channels_per_user,
        handle_pattern=channels.handle_pattern,
        reserved_handles=channels.reserved_handles,
        rename_grace_days=channels.rename_grace_days,
        handle_cooldown_days=channels.handle_cooldown_days,
        title_max_length=channels.title_max_length,
        verified_topic_suffix=channels.verified_topic_suffix,
        views_edit_interval_s=channels.views_edit_interval_s,
        ping_interval_s=ping_interval,
        shard_size=channels.shard_size,
        operators=operators,
        federation=federation,
        allowed_servers=allowed,
        retention_days=retention,
        compliance=compliance,
        web_enabled=web.enabled,
        web_listen_host=web.listen_host,
        web_listen_port=web.listen_port,
        web_public_url=web.public_url,
        web_trusted_proxies=web.trusted_proxies,
        inbound_retention_days=inbound_days,
        outbox_retention_days=outbox_days,
        state_dir=state.resolve() if state != base else None,
        encryption_enabled=bool(values["encryption"].get("enabled", False)),
        encryption_store_key=_state_file(values["encryption"].get("store_key", STORE_KEY_FILE), state, base),
    )


def _sections(data: Any, path: Path) -> dict[str, dict[str, Any]]:
    """Check the document against _SCHEMA; return each section's mapping (empty when left out)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a YAML mapping at the top level, got {type(data).__name__}")
    for key in data:
        if key not in _SCHEMA:
            raise ConfigError(f"{path}: unknown key '{key}' (known: {', '.join(_SCHEMA)})")
    return {section: _section(data, section, keys, path) for section, keys in _SCHEMA.items()}


def _section(
    data: dict[Any, Any], section: str, keys: dict[str, tuple[type | tuple[type, ...], bool]], path: Path
) -> dict[str, Any]:
    """Check one section's keys and their types; return its values without the null ones."""
    raw = data.get(section, {})
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: '{section}' must be a mapping")
    for key in raw:
        if key not in keys:
            raise ConfigError(f"{path}: unknown key '{section}.{key}' (known: {', '.join(keys)})")
    for key, (expected, required) in keys.items():
        _check_type(raw.get(key), f"{section}.{key}", expected, required, path)
    # A null value (`key:` with nothing after it) takes the key's default, as if it were left out.
    return {k: v for k, v in raw.items() if v is not None}


def _check_type(
    value: Any, dotted: str, expected: type | tuple[type, ...], required: bool, path: Path
) -> None:
    """Refuse a missing required value, a value of another type, or a list holding anything but text."""
    if value is None or (required and value == ""):
        if required:
            raise ConfigError(f"{path}: '{dotted}' is required ({_type_name(expected)})")
        return
    # bool is a subclass of int, but `true` is no number of days.
    if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
        raise ConfigError(f"{path}: '{dotted}' must be {_type_name(expected)}, got {type(value).__name__}")
    if (
        expected is list
        and dotted not in _STRUCTURED
        and not all(isinstance(item, str) and item for item in cast("list[Any]", value))
    ):
        raise ConfigError(f"{path}: '{dotted}' must be a list of non-empty strings")


def _one_of(
    raw: dict[str, Any], section: str, key: str, default: str, choices: tuple[str, ...], path: Path
) -> str:
    """The value of `section.key` (or `default`), refused unless it is one of `choices`."""
    value: str = raw.get(key, default)
    if value not in choices:
        raise ConfigError(f"{path}: '{section}.{key}' must be one of {choices}, got {value!r}")
    return value


def _at_least(raw: dict[str, Any], section: str, key: str, default: int, least: int, path: Path) -> int:
    """The value of `section.key` (or `default`), refused below `least`."""
    value: int = raw.get(key, default)
    if value < least:
        raise ConfigError(f"{path}: '{section}.{key}' must be at least {least}, got {value}")
    return value


def _homeserver(hs: dict[str, Any], path: Path) -> tuple[str, str]:
    """The homeserver's URL (without a trailing slash) and its server_name."""
    if not re.match(r"^https?://", hs["url"]):
        raise ConfigError(f"{path}: 'homeserver.url' must start with http:// or https://, got {hs['url']!r}")
    return hs["url"].rstrip("/"), hs["domain"]


def _appservice(asv: dict[str, Any], path: Path) -> _Appservice:
    """The registration's values: id, tokens, listen address and URL, the bot's and ghosts' localparts."""
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
    return _Appservice(
        id=asv.get("id", "kanal"),
        as_token=asv["as_token"],
        hs_token=asv["hs_token"],
        listen_host=listen_host,
        listen_port=listen_port,
        url=asv.get("url", f"http://{listen_host}:{listen_port}"),
        registration=asv.get("registration"),
        bot_localpart=bot,
        ghost_prefix=prefix,
    )


def _database(db: dict[str, Any], state: Path, base: Path) -> str:
    """The database URL, with its async driver and a relative SQLite path made absolute."""
    return resolve_database_url(db.get("url", "sqlite:///kanal.db"), state, legacy=base)


def _channel_policy(ch: dict[str, Any], path: Path) -> tuple[str, str]:
    """Who may create channels, and the language the bot answers in when it cannot tell the user's."""
    policy = _one_of(ch, "channels", "creation_policy", "open", CREATION_POLICIES, path)
    language = _one_of(ch, "channels", "default_language", "en", LANGUAGES, path)
    return policy, language


def _channel_limits(ch: dict[str, Any], path: Path) -> _Channels:
    """The limits on channels and their handles, titles and view-count edits."""
    limits = {
        key: _at_least(ch, "channels", key, default, least, path)
        for key, default, least in (
            ("max_channels_per_user", 10, 0),
            ("rename_grace_days", 14, 0),
            ("handle_cooldown_days", 30, 0),
            ("title_max_length", 128, 1),
            ("views_edit_interval", 600, 0),
            ("shard_size", DEFAULT_SHARD_SIZE, 0),
        )
    }
    return _Channels(
        max_channels_per_user=limits["max_channels_per_user"],
        handle_pattern=_handle_pattern(ch, path),
        reserved_handles=tuple(h.lower() for h in ch.get("reserved_handles", DEFAULT_RESERVED_HANDLES)),
        rename_grace_days=limits["rename_grace_days"],
        handle_cooldown_days=limits["handle_cooldown_days"],
        title_max_length=limits["title_max_length"],
        verified_topic_suffix=ch.get("verified_topic_suffix", " — ✓ verified"),
        views_edit_interval_s=limits["views_edit_interval"],
        shard_size=limits["shard_size"],
    )


def _handle_pattern(ch: dict[str, Any], path: Path) -> str:
    """The handles' regular expression, refused if invalid or if it lets through what ids cannot hold."""
    pattern: str = ch.get("handle_pattern", DEFAULT_HANDLE_PATTERN)
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ConfigError(
            f"{path}: 'channels.handle_pattern' is not a valid regular expression: {exc}"
        ) from None
    if compiled.fullmatch("") is not None or any(compiled.fullmatch(c) for c in (":", "#", "@", " ", "A")):
        raise ConfigError(
            f"{path}: 'channels.handle_pattern' must not match an empty handle, upper case, spaces or "
            f"':', '#', '@' (handles become aliases and user ids), got {pattern!r}"
        )
    return pattern


def _logging(lg: dict[str, Any], path: Path) -> tuple[str, str]:
    """The log level (upper case) and the log format."""
    level = lg.get("level", "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"{path}: 'logging.level' must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
    fmt = lg.get("format", "text")
    if fmt not in ("text", "json"):
        raise ConfigError(f"{path}: 'logging.format' must be text or json, got {fmt!r}")
    return level, fmt


def _operators(ops: dict[str, Any], policy: str, path: Path) -> tuple[str, ...]:
    """The operators' Matrix ids; the approval policy needs at least one to review requests."""
    operators = tuple(ops.get("users", ()))
    for user in operators:
        if not re.fullmatch(r"@[^:\s]+:\S+", user):
            raise ConfigError(
                f"{path}: 'operators.users' must hold Matrix user ids like @ops:example.org, got {user!r}"
            )
    if policy == "approval" and not operators:
        raise ConfigError(
            f"{path}: 'channels.creation_policy' is approval, but 'operators.users' is empty: "
            "list who reviews channel requests (Matrix ids such as @ops:example.org)"
        )
    return operators


def _hosting(hosting: dict[str, Any], path: Path) -> tuple[str, tuple[str, ...]]:
    """The federation policy and, for allowlist, the servers allowed besides this one."""
    federation = _one_of(hosting, "hosting", "federation", "open", FEDERATION_POLICIES, path)
    allowed = tuple(hosting.get("allowed_servers", ()))
    if federation == "allowlist" and not allowed:
        raise ConfigError(
            f"{path}: 'hosting.allowed_servers' must list at least one server when 'hosting.federation' "
            "is allowlist (Kanal's own server is always allowed)"
        )
    return federation, allowed


def _retention_days(hosting: dict[str, Any], path: Path) -> int | None:
    """Days of history channel rooms keep, or None for no limit."""
    retention: int | None = hosting.get("retention_days")
    if retention is not None and retention < 1:
        raise ConfigError(
            f"{path}: 'hosting.retention_days' must be at least 1 (or left out), got {retention}"
        )
    return retention


def _web(web: dict[str, Any], present: bool, appservice_listen: tuple[str, int], path: Path) -> _Web:
    """The public web face: whether it runs, where it listens, and the URL readers use."""
    host, port = parse_listen(web.get("listen", DEFAULT_WEB_LISTEN), f"{path}: 'web.listen'")
    # Without a `web` section there is no web face (configs from before it existed stay as they were).
    enabled: bool = present and web.get("enabled", True)
    if enabled and (host, port) == appservice_listen:
        raise ConfigError(
            f"{path}: 'web.listen' must differ from 'appservice.listen' (the web face is public)"
        )
    public_url = web.get("public_url", f"http://{host}:{port}").rstrip("/")
    if not re.match(r"^https?://[^/\s]+(/\S*)?$", public_url):
        raise ConfigError(f"{path}: 'web.public_url' must be an http(s) URL, got {public_url!r}")
    trusted = _trusted_proxies(web.get("trusted_proxies", list(DEFAULT_TRUSTED_PROXIES)), path)
    return _Web(
        enabled=enabled, listen_host=host, listen_port=port, public_url=public_url, trusted_proxies=trusted
    )


def _trusted_proxies(values: list[str], path: Path) -> tuple[Network, ...]:
    """web.trusted_proxies: addresses (192.0.2.7, 2001:db8::7) or networks (10.0.0.0/8, fc00::/7)."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip()))
        except ValueError as exc:
            raise ConfigError(
                f"{path}: 'web.trusted_proxies' must list IP addresses or networks such as 127.0.0.1 or "
                f"10.0.0.0/8 (no host names), got {value!r}: {exc}"
            ) from None
    return tuple(networks)


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
    return parse(data, path.resolve(), os.environ)


def _compliance(
    raw: dict[str, Any], path: Path, base: Path, state: Path, operators: tuple[str, ...]
) -> ComplianceConfig:

    moderators = tuple(raw.get("moderators", operators))
    for user in moderators:
        if not re.fullmatch(r"@[^:\s]+:\S+", user):
            raise ConfigError(f"{path}: 'compliance.moderators' must hold Matrix user ids, got {user!r}")
    try:
        hooks = tuple(parse_hooks(raw.get("hooks", []), "compliance.hooks", base))
        channel_hooks = {
            str(handle).lower(): tuple(parse_hooks(specs, f"compliance.channel_hooks.{handle}", base))
            for handle, specs in raw.get("channel_hooks", {}).items()
        }
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    window = _at_least(raw, "compliance", "appeal_window_days", 14, 1, path)
    every = _at_least(raw, "compliance", "checkpoint_every", 100, 1, path)
    poll = _at_least(raw, "compliance", "report_poll_seconds", 60, 5, path)
    key = raw.get("audit_key", "audit-ed25519.key")
    token_file = raw.get("homeserver_admin_token_file")
    return ComplianceConfig(
        moderators=moderators,
        hooks=hooks,
        channel_hooks=channel_hooks,
        appeal_window_days=window,
        redress=raw.get("redress", DEFAULT_REDRESS).replace("{days}", str(window)),
        audit_key=_state_file(key, state, base),
        checkpoint_every=every,
        homeserver_admin_token_file=(base / token_file).resolve() if token_file else None,
        report_poll_seconds=poll,
        policy_rooms=tuple(raw.get("policy_rooms", ())),
    )
