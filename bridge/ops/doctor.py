"""`kanal doctor`: check a deployment and say, for each finding, what to fix.

    live (the homeserver and Kanal's own files)        homeserver.yaml (with --homeserver-config)
    ├── homeserver      answers /versions; software    ├── server_name, app_service_config_files
    ├── bot user        whoami with the as_token       ├── trusted_key_servers, report_stats
    ├── appservice ping homeserver → Kanal             ├── identity server, federation
    ├── tokens          config.yaml ↔ registration     ├── media storage, room_list_publication_rules
    └── kanal database  SQLite or PostgreSQL           ├── encryption by default, synapse database
                                                       └── caches for large rooms (channels.shard_size)

The homeserver.yaml checks are pure functions of the parsed YAML and Kanal's `Config`, so they are
unit-tested without a homeserver. "Inside" means Kanal's own domain, `hosting.allowed_servers`, their
subdomains, private or loopback addresses and single-label names: anything else is another party.
Tokens are never printed: every detail is passed through `redact` before it leaves this module.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import os
import re
import secrets
import shutil
import sys
import textwrap
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import aiohttp
import yaml
from sqlalchemy import make_url, text
from sqlalchemy.exc import SQLAlchemyError

from appservice.client import HomeserverClient
from appservice.errors import MatrixConnectionError, MatrixRequestError
from appservice.registration import RegistrationError
from appservice.registration import load as load_registration
from bridge.channels.hosting import server_acl_content, server_allowed
from bridge.ops.synapse import LARGE_ROOM_CACHES, SYNAPSE_DEFAULT_CACHE_FACTOR
from bridge.runtime.config import Config
from bridge.store.db import create_engine

PROBE_TIMEOUT_S = 15.0
EXIT_PASS = 0
EXIT_WARN = 1
EXIT_FAIL = 3  # 2 is the CLI's "broken config file"
# The appservice ping endpoint arrived in Matrix v1.7.
PING_SPEC_VERSION = (1, 7)
# Synapse's own default when neither trusted_key_servers nor perspectives is set.
SYNAPSE_DEFAULT_KEY_SERVER = "matrix.org"
# Amazon's endpoint, which synapse-s3-storage-provider uses when `endpoint_url` is not set.
AWS_S3_HOST = "s3.amazonaws.com"
# Names that never leave the operator's network (RFC 6762, RFC 8375, common private suffixes).
PRIVATE_SUFFIXES = (".localhost", ".local", ".internal", ".lan", ".home.arpa")
# Synapse's `encryption_enabled_by_default_for_room_type`: what each value encrypts at creation.
ENCRYPTION_OFF = "off"
_PRIVATE_ROOMS = "people's chats with the bot, the channels' backstage rooms and the operators' and moderation rooms"
ENCRYPTION_BREAKS = {
    "invite": _PRIVATE_ROOMS,
    "all": _PRIVATE_ROOMS + ", and the channels and their discussion rooms too",
}
# What the homeserver must send an application service for its bot to take part in encryption.
E2EE_EXPERIMENTAL = ("msc2409_to_device_messages_enabled", "msc3202_transaction_extensions")
E2EE_FIX = (
    "set encryption.enabled: true in Kanal's config; in the homeserver's config, experimental_features: "
    "{msc2409_to_device_messages_enabled: true, msc3202_transaction_extensions: true}; in the registration, "
    "receive_ephemeral: true and org.matrix.msc3202: true (`kanal init --encryption` writes both files "
    "so); restart the homeserver, then Kanal"
)
REGISTRATION_FIX = (
    "add registration.yaml to app_service_config_files in the homeserver's config and restart the homeserver"
)


class Status(StrEnum):
    PASS = "pass"  # noqa: S105 (a status, not a password)
    WARN = "warn"
    FAIL = "fail"


_RANK = {Status.PASS: 0, Status.WARN: 1, Status.FAIL: 2}


@dataclass(frozen=True)
class Check:
    """One finding: what was checked, how it went, what was seen, and what to do about it."""

    name: str
    status: Status
    detail: str
    fix: str = ""


def worst(checks: Iterable[Check]) -> Status:
    return max((c.status for c in checks), key=_RANK.__getitem__, default=Status.PASS)


def exit_code(checks: Iterable[Check]) -> int:
    return {Status.PASS: EXIT_PASS, Status.WARN: EXIT_WARN, Status.FAIL: EXIT_FAIL}[worst(checks)]


def redact(checks: Iterable[Check], secrets: Iterable[str]) -> list[Check]:
    """Mask every secret in every text, in case a message ever echoes one back."""
    masks = [s for s in secrets if s]

    def clean(value: str) -> str:
        for secret in masks:
            value = value.replace(secret, "***")
        return value

    return [replace(c, name=clean(c.name), detail=clean(c.detail), fix=clean(c.fix)) for c in checks]


# -- where things are ------------------------------------------------------------------------------


def _strip_port(server: str) -> str:
    server = server.strip().lower().rstrip(".")
    if server.startswith("["):  # [::1]:8448
        return server[1 : server.find("]")] if "]" in server else server
    host, sep, port = server.rpartition(":")
    return host if sep and port.isdigit() and ":" not in host else server


def inside_servers(config: Config) -> tuple[str, ...]:
    """Kanal's own server and the ones `hosting.allowed_servers` trusts."""
    return tuple(dict.fromkeys(_strip_port(s) for s in (config.domain, *config.allowed_servers)))


def is_inside(host: str, config: Config) -> bool:
    """Whether `host` (a server name or URL host) belongs to the operator or to a trusted server."""
    host = _strip_port(host)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return address.is_private or address.is_loopback or address.is_link_local
    if "." not in host or host.endswith(PRIVATE_SUFFIXES):
        return True
    return any(host == s or host.endswith("." + s) for s in inside_servers(config))


def _url_host(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def _list(items: Iterable[str]) -> str:
    return ", ".join(items) or "none"


# -- homeserver.yaml -------------------------------------------------------------------------------


def read_homeserver_config(path: Path) -> tuple[dict[str, Any] | None, Check]:
    """The parsed homeserver.yaml, or None and a failed check naming the path."""
    name = "homeserver.yaml"
    fix = "pass --homeserver-config the homeserver.yaml Synapse runs with (readable by this user)"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        return None, Check(name, Status.FAIL, f"cannot read {path}: {exc.strerror}", fix)
    except UnicodeDecodeError:
        return None, Check(name, Status.FAIL, f"{path} is not UTF-8 text", fix)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        return None, Check(name, Status.FAIL, f"{path} is not valid YAML{where}", fix)
    if not isinstance(data, dict):
        return None, Check(name, Status.FAIL, f"{path} is not a YAML mapping", fix)
    return data, Check(name, Status.PASS, f"read {path}")


def check_server_name(hs: Mapping[str, Any], config: Config) -> Check:
    name = "server_name"
    server_name = hs.get("server_name")
    if server_name == config.domain:
        return Check(name, Status.PASS, f"{server_name}, as homeserver.domain in Kanal's config")
    return Check(
        name,
        Status.FAIL,
        f"the homeserver is {server_name!r} but homeserver.domain in {config.path} is {config.domain!r}",
        "set homeserver.domain in Kanal's config to the homeserver's server_name",
    )


def check_app_service_files(hs: Mapping[str, Any], config: Config) -> Check:
    name = "app_service_config_files"
    files = hs.get("app_service_config_files") or []
    if not isinstance(files, list) or not files:
        return Check(name, Status.FAIL, "the homeserver loads no application service", REGISTRATION_FIX)
    if config.registration_path is None:
        return Check(
            name,
            Status.WARN,
            "appservice.registration is not set in Kanal's config, so its file cannot be looked for",
            "set appservice.registration to the registration file the homeserver loads",
        )
    if any(str(entry) == str(config.registration_path) for entry in files):
        return Check(name, Status.PASS, f"lists {config.registration_path}")
    return Check(
        name,
        Status.WARN,
        f"{config.registration_path} is not listed (listed: {_list(str(f) for f in files)})",
        f"add {config.registration_path} and restart the homeserver (if the homeserver sees the file "
        "under another path, as in a container, and the bot user check passes, nothing is wrong)",
    )


def _key_server_names(hs: Mapping[str, Any]) -> list[str] | str:
    """The key servers Synapse will ask, as it computes them, or what is wrong with the setting."""
    if "trusted_key_servers" not in hs and "perspectives" not in hs:
        return [SYNAPSE_DEFAULT_KEY_SERVER]
    servers = hs.get("trusted_key_servers", [])
    if not isinstance(servers, list):
        return "trusted_key_servers must be a list (Synapse refuses to start)"
    names: list[str] = []
    for entry in servers:
        if not isinstance(entry, dict) or not isinstance(entry.get("server_name"), str):
            return f"entry {entry!r} has no server_name (Synapse refuses to start)"
        names.append(entry["server_name"])
    legacy = (hs.get("perspectives") or {}).get("servers") or {}
    names.extend(str(server) for server in legacy)
    return names


def check_trusted_key_servers(hs: Mapping[str, Any], config: Config) -> Check:
    name = "trusted_key_servers"
    fix = "set trusted_key_servers: [] (Synapse then fetches each server's keys from that server)"
    names = _key_server_names(hs)
    if isinstance(names, str):
        return Check(name, Status.FAIL, names, fix)
    if not names:
        return Check(name, Status.PASS, "none: keys are fetched from each server itself")
    outside = [n for n in names if not is_inside(n, config)]
    if not outside:
        return Check(name, Status.PASS, f"only servers inside the allowed list: {_list(names)}")
    implicit = "trusted_key_servers" not in hs and "perspectives" not in hs
    why = (
        f"not set, so Synapse uses its default, {SYNAPSE_DEFAULT_KEY_SERVER}"
        if implicit
        else f"asks {_list(outside)}, outside the allowed servers"
    )
    # A key server learns which servers this one talks to; under an open federation policy that is
    # a choice, under a closed or allowlist one it contradicts the policy.
    status = Status.WARN if config.federation == "open" else Status.FAIL
    return Check(name, status, f"{why}; a key server learns which servers you federate with", fix)


def check_report_stats(hs: Mapping[str, Any], config: Config) -> Check:
    name = "report_stats"
    value = hs.get("report_stats")
    if value is False:
        return Check(name, Status.PASS, "false: no usage statistics leave the server")
    detail = (
        "not set (Synapse refuses to start without it)"
        if "report_stats" not in hs
        else f"{value!r}: Synapse sends usage statistics to matrix.org"
    )
    return Check(name, Status.FAIL, detail, "set report_stats: false")


def check_identity_server(hs: Mapping[str, Any], config: Config) -> Check:
    name = "identity server"
    problems: list[str] = []
    default = hs.get("default_identity_server")
    if default:
        host = _url_host(str(default))
        if host is None or not is_inside(host, config):
            problems.append(f"default_identity_server is {default}")
    if hs.get("trust_identity_server_for_password_resets"):
        problems.append(
            "trust_identity_server_for_password_resets is set (current Synapse refuses to start with it)"
        )
    delegates = hs.get("account_threepid_delegates") or {}
    if isinstance(delegates, dict):
        for medium, url in delegates.items():
            host = _url_host(str(url)) if url else ""
            if url and (host is None or not is_inside(host, config)):
                problems.append(f"account_threepid_delegates.{medium} is {url}")
    if not problems:
        return Check(name, Status.PASS, "none outside the allowed servers")
    return Check(
        name,
        Status.WARN,
        "; ".join(problems) + ": users' e-mail addresses and phone numbers go to another party",
        "remove these keys, or point them at an identity server inside the allowed servers",
    )


def _has_federation_listener(hs: Mapping[str, Any]) -> bool:
    for listener in hs.get("listeners") or []:
        if not isinstance(listener, dict) or listener.get("type", "http") != "http":
            continue
        for resource in listener.get("resources") or []:
            if isinstance(resource, dict) and "federation" in (resource.get("names") or []):
                return True
    return False


def _is_pattern(server: str) -> bool:
    """An `allowed_servers` entry with ACL wildcards (`*.gov.example`): a family of servers, not one name."""
    return "*" in server or "?" in server


def _names(servers: Iterable[str]) -> str:
    return "[" + ", ".join(servers) + "]"


def check_federation(hs: Mapping[str, Any], config: Config) -> Check:
    """Whether Synapse's `federation_domain_whitelist` agrees with `hosting.federation`.

    Synapse compares each whitelist entry exactly with the other server's full name, port included,
    and knows no wildcards: `partner.example` does not admit `partner.example:8448`, and
    `*.gov.example` admits no server at all. Kanal's server ACLs match the host only and take
    wildcards. So an entry is a leak when the ACL would keep its server out of the channel rooms,
    and an exact name in `hosting.allowed_servers` is blocked unless listed exactly as it is.
    """
    name = "federation"
    whitelist = hs.get("federation_domain_whitelist")
    policy = config.federation
    if whitelist is not None and (
        not isinstance(whitelist, list) or not all(isinstance(d, str) for d in whitelist)
    ):
        return Check(
            name, Status.FAIL, "federation_domain_whitelist is not a list of server names", "fix the list"
        )
    listener = _has_federation_listener(hs)
    if policy == "open":
        reach = (
            "every server"
            if whitelist is None
            else f"only {_list(whitelist)}"
            if whitelist
            else "no other server"
        )
        note = (
            "" if listener or whitelist == [] else " (no federation listener: other servers cannot reach it)"
        )
        return Check(
            name, Status.PASS, f"Kanal's policy is open; the homeserver federates with {reach}{note}"
        )
    trusted = config.allowed_servers if policy == "allowlist" else ()
    exact = [s for s in trusted if not _is_pattern(s)]
    patterns = [s for s in trusted if _is_pattern(s)]
    wanted = _names(dict.fromkeys([config.domain, *exact]))
    exact_fix = (
        f"set federation_domain_whitelist to {wanted} (each server exactly as it names itself, port "
        "included)"
        + (
            f", plus the name of each server of {_list(patterns)} you trust, and list those names in "
            "hosting.allowed_servers instead of the wildcard (Synapse takes no wildcards); or leave "
            "federation_domain_whitelist unset and rely on Kanal's server ACLs, which keep other servers "
            "out of the channel rooms but not out of the rest of the homeserver"
            if patterns
            else ""
        )
    )
    if whitelist is None:
        if policy == "closed" and not listener:
            return Check(
                name,
                Status.WARN,
                "Kanal's policy is closed; the homeserver has no federation listener, but without "
                "federation_domain_whitelist it still contacts other servers (a user joining a remote "
                "room, for one)",
                "set federation_domain_whitelist: []",
            )
        if patterns:
            return Check(
                name,
                Status.WARN,
                f"hosting.allowed_servers has wildcard entries ({_list(patterns)}), which "
                "federation_domain_whitelist cannot express (Synapse matches exact server names); it is "
                "not set, so the homeserver federates with every server and only the channel rooms' "
                "server ACLs keep other servers out of channels",
                exact_fix,
            )
        return Check(
            name,
            Status.FAIL,
            f"Kanal's policy is {policy} but federation_domain_whitelist is not set: the homeserver "
            "federates with every server",
            "set federation_domain_whitelist: []" if policy == "closed" else exact_fix,
        )
    acl = server_acl_content(config)
    own = config.domain
    # A wildcard entry admits no server (below); any other entry is a leak when the ACL keeps it out.
    extra = [
        d
        for d in dict.fromkeys(whitelist)
        if d != own and not _is_pattern(d) and not server_allowed(acl, d)
    ]
    if extra:
        return Check(
            name,
            Status.FAIL,
            f"Kanal's policy is {policy} but federation_domain_whitelist also allows {_list(extra)}",
            f"remove {_list(extra)} from federation_domain_whitelist, or add them to "
            "hosting.allowed_servers in Kanal's config",
        )
    listed = set(whitelist)
    problems: list[str] = []
    blocked = [s for s in dict.fromkeys(exact) if s not in listed]
    for server in blocked:
        near = [d for d in whitelist if d != server and _strip_port(d) == _strip_port(server)]
        problems.append(
            f"hosting.allowed_servers lists {server}, which federation_domain_whitelist blocks"
            + (
                f" (it lists {_list(near)}: Synapse compares the whole server name, port included)"
                if near
                else ""
            )
        )
    wildcards = [d for d in whitelist if _is_pattern(d)]
    if wildcards:
        problems.append(
            f"federation_domain_whitelist lists {_list(wildcards)}, but Synapse takes no wildcards: "
            "such an entry admits no server"
        )
    # Kanal's wildcards: the ACL lets every server of them in, the homeserver only those it names.
    for pattern in patterns:
        named = [d for d in whitelist if not _is_pattern(d) and server_allowed({"allow": [pattern]}, d)]
        problems.append(
            f"hosting.allowed_servers has {pattern}, which federation_domain_whitelist cannot express "
            "(Synapse matches exact server names, no wildcards): the homeserver refuses every server of it"
            + (f" but {_list(named)}" if named else "")
        )
    if problems:
        fix = "set federation_domain_whitelist: []" if policy == "closed" else exact_fix
        return Check(name, Status.WARN, "; ".join(problems), fix)
    others = [d for d in dict.fromkeys(whitelist) if d != own]
    return Check(
        name,
        Status.PASS,
        f"Kanal's policy is {policy}; the homeserver federates with "
        + (_list(others) if others else "no other server"),
    )


def _provider_hosts(module: str, settings: Mapping[str, Any]) -> list[str] | None:
    """Hosts a media storage provider sends files to; [] for local storage, None when unknown."""
    if module.endswith("FileStorageProviderBackend"):
        return []
    urls = [v for v in settings.values() if isinstance(v, str) and re.match(r"^[a-z][a-z0-9+.-]*://", v)]
    hosts = [h for h in (_url_host(u) for u in urls) if h]
    if "s3" in module.lower() and not settings.get("endpoint_url"):
        hosts.append(AWS_S3_HOST)
    return hosts or None


def check_media(hs: Mapping[str, Any], config: Config) -> Check:
    name = "media storage"
    store = hs.get("media_store_path", "media_store")
    providers = hs.get("media_storage_providers") or []
    if not isinstance(providers, list):
        return Check(name, Status.FAIL, "media_storage_providers is not a list", "fix the list")
    outside: list[str] = []
    unknown: list[str] = []
    for provider in providers:
        module = str(provider.get("module", "?")) if isinstance(provider, dict) else "?"
        settings = provider.get("config") if isinstance(provider, dict) else None
        hosts = _provider_hosts(module, settings if isinstance(settings, dict) else {})
        if hosts is None:
            unknown.append(module)
        outside += [f"{module} → {h}" for h in hosts or [] if not is_inside(h, config)]
    if outside:
        return Check(
            name,
            Status.FAIL,
            f"media leaves the allowed servers: {_list(outside)}",
            "store media locally (media_store_path) or on an endpoint inside the allowed servers "
            "(endpoint_url of your own S3-compatible store)",
        )
    if unknown:
        return Check(
            name,
            Status.WARN,
            f"cannot tell where {_list(unknown)} stores media",
            "make sure the provider's endpoint is inside the allowed servers",
        )
    where = f"locally in {store}" + (f" and {len(providers)} provider(s) inside" if providers else "")
    return Check(name, Status.PASS, where)


def _glob(pattern: str) -> re.Pattern[str]:
    """A Synapse directory-rule glob (`*`, `?`), anchored and case-insensitive as Synapse does."""
    parts = re.split(r"([?*]+)", pattern)
    body = "".join(
        (".{%d,}" if "*" in p else ".{%d}") % p.count("?") if p and p[0] in "?*" else re.escape(p)
        for p in parts
    )
    return re.compile(rf"\A({body})\Z", re.IGNORECASE)


def _coverage(pattern: str, probes: Sequence[str], *, possible: bool = False) -> str:
    """Whether a rule's glob matches all, some or none of the probes; `possible`: none counts as some."""
    regex = _glob(pattern)
    hits = sum(1 for p in probes if regex.match(p))
    if hits == len(probes):
        return "all"
    return "some" if hits or possible else "none"


def check_room_publication(hs: Mapping[str, Any], config: Config) -> Check:
    """Replays Synapse's rules (first match wins, no match denies) for the bot publishing a channel."""
    name = "room_list_publication_rules"
    bot = config.bot_user_id
    fix = f"put a rule allowing the bot first: room_list_publication_rules: [{{user_id: '{bot}', action: allow}}, …]"
    rules = hs.get("room_list_publication_rules")
    if rules is None:
        return Check(
            name,
            Status.FAIL,
            "not set: Synapse then lets nobody (admins included) publish rooms, so channels never "
            "appear in the room directory",
            fix,
        )
    if not isinstance(rules, list):
        return Check(name, Status.FAIL, "not a list (Synapse refuses to start)", fix)
    # Room ids are random and channel aliases are #<handle>:<domain>: a room glob other than `*`, or
    # an alias glob that can end in our domain, decides for some channels only.
    rooms = [f"!AbCdEfGhIjKlMnOp:{config.domain}", "!AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefg"]
    aliases = [f"#news:{config.domain}", f"#a1_b2_c3:{config.domain}", f"#{'z' * 32}:{config.domain}"]
    some_allow = some_deny = False
    for number, rule in enumerate(rules, 1):
        action = rule.get("action") if isinstance(rule, dict) else None
        globs = [rule.get(k, "*") for k in ("user_id", "room_id", "alias")] if isinstance(rule, dict) else []
        if action not in ("allow", "deny") or not all(isinstance(g, str) for g in globs):
            return Check(name, Status.FAIL, f"rule {number} is malformed (Synapse refuses to start)", fix)
        alias_possible = globs[2].endswith(("*", "?")) or globs[2].lower().endswith(":" + config.domain)
        kinds = {
            _coverage(globs[0], [bot]),
            _coverage(globs[1], rooms, possible=True),
            _coverage(globs[2], aliases, possible=alias_possible),
        }
        if "none" in kinds:
            continue
        if kinds == {"all"}:
            if action == "allow":
                if some_deny:
                    return Check(
                        name,
                        Status.WARN,
                        f"rule {number} allows {bot}, but earlier rules deny some channels",
                        fix,
                    )
                return Check(name, Status.PASS, f"rule {number} allows {bot} to publish channels")
            if some_allow:
                return Check(
                    name, Status.WARN, f"rule {number} denies {bot}; only some channels can be published", fix
                )
            return Check(name, Status.FAIL, f"rule {number} denies {bot} publishing channels", fix)
        some_allow, some_deny = some_allow or action == "allow", some_deny or action == "deny"
    if some_allow:
        return Check(name, Status.WARN, f"only some channels can be published by {bot}", fix)
    return Check(name, Status.FAIL, f"no rule allows {bot}, and Synapse denies what no rule allows", fix)


def _e2ee_gaps(hs: Mapping[str, Any], config: Config) -> list[str]:
    """What keeps Kanal's bot from taking part in encryption: its config, the homeserver's experimental
    application-service extensions (MSC2409, MSC3202) and the registration's opt-ins."""
    gaps: list[str] = []
    if not config.encryption_enabled:
        gaps.append("encryption.enabled is not true in Kanal's config")
    features = hs.get("experimental_features")
    features = features if isinstance(features, dict) else {}
    for flag in E2EE_EXPERIMENTAL:
        if features.get(flag) is not True:
            gaps.append(f"experimental_features.{flag} is not true in the homeserver's config")
    if config.registration_path is not None:
        try:
            registration = load_registration(config.registration_path)
        except (RegistrationError, OSError):
            return gaps  # the registration's own check says what is wrong with it
        if not registration.receive_ephemeral:
            gaps.append("receive_ephemeral is not true in the registration")
        if not registration.device_keys:
            gaps.append("org.matrix.msc3202 is not true in the registration")
    return gaps


def check_default_encryption(hs: Mapping[str, Any], config: Config) -> Check:
    """`encryption_enabled_by_default_for_room_type`: Synapse encrypts new rooms of those presets at
    creation, whatever their creator asks. `invite` works when Kanal's bot takes part in encryption
    (bridge/runtime/e2ee.py); `all` never does: it encrypts the public channels too."""
    name = "encryption by default"
    key = "encryption_enabled_by_default_for_room_type"
    value = hs.get(key, ENCRYPTION_OFF)
    gaps = _e2ee_gaps(hs, config)
    if value is False or value == ENCRYPTION_OFF:  # YAML reads an unquoted `off` as false
        if config.encryption_enabled and gaps:
            return Check(
                name,
                Status.FAIL,
                "off, but Kanal's encryption is on and cannot get its keys: " + "; ".join(gaps),
                E2EE_FIX,
            )
        return Check(
            name, Status.PASS, "off: the homeserver encrypts no new room on its own; Kanal's rooms stay readable"
        )
    if value == "all":
        return Check(
            name,
            Status.FAIL,
            f"{key} is all: the homeserver encrypts {ENCRYPTION_BREAKS['all']} when they are created "
            "(Synapse counts the public_chat preset among its encrypted ones), so a channel cannot be "
            "public and unencrypted, and sending a channel's room keys to every subscriber's device does "
            "not scale",
            f"set {key}: invite (with Kanal's encryption set up: {E2EE_FIX}) or off, and restart the "
            "homeserver. Rooms created while it was all stay encrypted: make new channels",
        )
    if not isinstance(value, str) or value not in ENCRYPTION_BREAKS:
        return Check(name, Status.FAIL, f"{key} is {value!r} (Synapse refuses to start)", f"set {key}: invite or off")
    if not gaps:
        return Check(
            name,
            Status.PASS,
            f"invite: the homeserver encrypts {_PRIVATE_ROOMS}; Kanal's bot takes part in their encryption "
            "(channels stay public and unencrypted)",
        )
    return Check(
        name,
        Status.FAIL,
        f"{key} is invite: the homeserver encrypts {_PRIVATE_ROOMS} when they are created, and Kanal cannot "
        "take part in their encryption: " + "; ".join(gaps) + ". Commands and posts sent there are answered "
        "only with a note that they could not be read",
        f"{E2EE_FIX}; or set {key}: off and restart the homeserver",
    )


def check_synapse_database(hs: Mapping[str, Any], config: Config) -> Check:
    name = "synapse database"
    sections = hs.get("databases")
    if isinstance(sections, dict) and sections:
        engines = {str(s.get("name", "sqlite3")) if isinstance(s, dict) else "?" for s in sections.values()}
    else:
        database = hs.get("database")
        engines = {str(database.get("name", "sqlite3")) if isinstance(database, dict) else "sqlite3"}
    unknown = engines - {"sqlite3", "psycopg2"}
    if unknown:
        return Check(
            name,
            Status.FAIL,
            f"unknown database engine {_list(sorted(unknown))} (Synapse knows sqlite3 and psycopg2)",
            "set database.name: psycopg2",
        )
    if "sqlite3" in engines:
        return Check(
            name,
            Status.WARN,
            "SQLite: fine for trying out, too slow and fragile for production",
            "move Synapse to PostgreSQL (synapse_port_db) and set database.name: psycopg2",
        )
    return Check(name, Status.PASS, "PostgreSQL (psycopg2)")




def _cache_factors(hs: Mapping[str, Any]) -> tuple[float, dict[str, float]] | str:
    """caches.global_factor and caches.per_cache_factors as Synapse reads them, or what is wrong."""
    caches = hs.get("caches") or {}
    if not isinstance(caches, dict):
        return "caches is not a mapping (Synapse refuses to start)"
    factor = caches.get("global_factor", SYNAPSE_DEFAULT_CACHE_FACTOR)
    per_cache = caches.get("per_cache_factors") or {}
    if isinstance(factor, bool) or not isinstance(factor, int | float):
        return "caches.global_factor is not a number (Synapse refuses to start)"
    if not isinstance(per_cache, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in per_cache.values()
    ):
        return "caches.per_cache_factors is not a mapping of numbers (Synapse refuses to start)"
    # Synapse canonicalises the names: lower case ("*" and "." kept).
    return float(factor), {str(k).lower(): float(v) for k, v in per_cache.items()}


def check_large_room_caches(hs: Mapping[str, Any], config: Config) -> Check:
    """Whether Synapse's per-member caches hold a full shard (`channels.shard_size` members)."""
    name = "caches for large rooms"
    factors = _cache_factors(hs)
    if isinstance(factors, str):
        return Check(name, Status.FAIL, factors, "fix the caches section of homeserver.yaml")
    global_factor, per_cache = factors
    held = {
        cache: int(base * per_cache.get(cache, global_factor)) for cache, base, _what in LARGE_ROOM_CACHES
    }
    smallest = min(held.values())
    size = config.shard_size
    if size and all(entries >= size for entries in held.values()):
        return Check(
            name,
            Status.PASS,
            f"{_list(f'{c} holds {n:,}' for c, n in held.items())}: "
            f"a full shard of {size:,} members (channels.shard_size) fits",
        )
    short = [(c, base, what) for c, base, what in LARGE_ROOM_CACHES if not size or held[c] < size]
    needed = {c: math.ceil(max(size, 1) / base * 100) / 100 for c, base, _what in short}
    if size:
        detail = (
            f"channels.shard_size is {size:,}, but "
            + _list(f"{c} holds {held[c]:,} ({what})" for c, _base, what in short)
            + f": each post to a full shard reloads them for every member (a room over {smallest:,} "
            "members costs the homeserver more per member on every post)"
        )
        settings = ", ".join(f"{c}: {needed[c]:g}" for c in needed)
        fix = (
            f"in homeserver.yaml set caches: {{per_cache_factors: {{{settings}}}}} and restart Synapse "
            f"(every worker), or lower channels.shard_size to {smallest:,}"
        )
    else:
        detail = (
            "channels.shard_size is 0: a channel's room grows without limit, and past "
            f"{smallest:,} members ({_list(f'{c} holds {held[c]:,}' for c, _b, _w in short)}) every post "
            "reloads every member's push rules and profile"
        )
        fix = (
            f"set channels.shard_size (at most {smallest:,} with these caches), or raise "
            "caches.per_cache_factors for these caches to hold your largest channel"
        )
    return Check(name, Status.WARN, detail, fix)


HOMESERVER_CONFIG_CHECKS: tuple[Callable[[Mapping[str, Any], Config], Check], ...] = (
    check_server_name,
    check_app_service_files,
    check_trusted_key_servers,
    check_report_stats,
    check_identity_server,
    check_federation,
    check_media,
    check_room_publication,
    check_default_encryption,
    check_synapse_database,
    check_large_room_caches,
)


def homeserver_config_checks(hs: Mapping[str, Any], config: Config) -> list[Check]:
    return [check(hs, config) for check in HOMESERVER_CONFIG_CHECKS]


# -- the live deployment ---------------------------------------------------------------------------


def _spec_versions(body: Any) -> list[tuple[int, int]]:
    versions = body.get("versions") if isinstance(body, dict) else None
    found = []
    for v in versions if isinstance(versions, list) else []:
        match = re.fullmatch(r"v(\d+)\.(\d+)", str(v))
        if match:
            found.append((int(match[1]), int(match[2])))
    return sorted(found)


def homeserver_check(url: str, versions: Any, server_header: str | None, federation: Any) -> Check:
    """What /versions, the `Server` header and /federation/v1/version say about the homeserver."""
    name = "homeserver"
    if not isinstance(versions, dict) or not isinstance(versions.get("versions"), list):
        return Check(
            name,
            Status.FAIL,
            f"{url} answers, but not as a Matrix homeserver (/_matrix/client/versions)",
            "set homeserver.url to the homeserver's client-server API",
        )
    spec = _spec_versions(versions)
    newest = f"v{spec[-1][0]}.{spec[-1][1]}" if spec else "none"
    software = None
    match = re.search(r"\bSynapse/(\S+)", server_header or "")
    if match:
        software = f"Synapse {match[1]}"
    elif isinstance(federation, dict) and isinstance(federation.get("server"), dict):
        server = federation["server"]
        software = f"{server.get('name', '?')} {server.get('version', '?')}"
    if not spec or spec[-1] < PING_SPEC_VERSION:
        return Check(
            name,
            Status.WARN,
            f"{software or 'the homeserver'} at {url} speaks Matrix up to {newest}, without the "
            "appservice ping (v1.7)",
            "upgrade the homeserver",
        )
    if software is None:
        return Check(
            name,
            Status.WARN,
            f"{url} speaks Matrix up to {newest} but does not say which software and version it runs",
            "nothing to do if you know it is a current Synapse (a proxy may hide its Server header)",
        )
    return Check(name, Status.PASS, f"{software} at {url}, Matrix up to {newest}")


async def _json(response: aiohttp.ClientResponse) -> Any:
    try:
        return await response.json(content_type=None)
    except ValueError:
        return None


async def _probe_homeserver(config: Config) -> Check:
    url = config.homeserver_url
    federation: Any = None
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)) as http:
            async with http.get(url + "/_matrix/client/versions") as response:
                server = response.headers.get("Server")
                versions = await _json(response) if response.status == 200 else None
            # Behind a proxy the Server header may name the proxy; the federation API names the software.
            if not re.search(r"\bSynapse/", server or ""):
                async with http.get(url + "/_matrix/federation/v1/version") as response:
                    federation = await _json(response) if response.status == 200 else None
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return Check(
            "homeserver",
            Status.FAIL,
            f"cannot reach {url}: {_reason(exc)}",
            f"start the homeserver, or fix homeserver.url in {config.path}",
        )
    return homeserver_check(url, versions, server, federation)


def _reason(exc: BaseException) -> str:
    return (str(exc).splitlines() or [""])[0] or type(exc).__name__


def bot_user_check(config: Config, user_id: str | None, error: MatrixRequestError | None) -> Check:
    """The homeserver's answer to whoami with Kanal's as_token."""
    name = "bot user"
    if error is not None:
        if error.status in (401, 403):
            return Check(
                name,
                Status.FAIL,
                f"the homeserver rejects Kanal's as_token ({error.errcode}): it has not loaded Kanal's "
                "registration, or loaded one with other tokens",
                REGISTRATION_FIX,
            )
        return Check(name, Status.FAIL, f"whoami failed: {error}", "see the homeserver's log")
    if user_id != config.bot_user_id:
        return Check(
            name,
            Status.FAIL,
            f"the homeserver knows Kanal's as_token as {user_id}, not {config.bot_user_id}",
            "make appservice.bot_localpart and homeserver.domain match the registration's sender_localpart "
            "and the homeserver's server_name",
        )
    return Check(name, Status.PASS, f"the homeserver accepts Kanal's as_token as {user_id}")


def ping_check(config: Config, error: MatrixRequestError | None, duration_ms: int | None = None) -> Check:
    """The homeserver's answer to `POST /_matrix/client/v1/appservice/{id}/ping`."""
    name = "appservice ping"
    if error is None:
        took = f" in {duration_ms} ms" if duration_ms is not None else ""
        return Check(name, Status.PASS, f"the homeserver reached Kanal{took}")
    if error.errcode in ("M_CONNECTION_FAILED", "M_CONNECTION_TIMEOUT"):
        # The homeserver found our registration and tried: Kanal is merely not running (yet).
        return Check(
            name,
            Status.WARN,
            "the registration is loaded, but the homeserver could not reach Kanal at the registration's "
            f"url: is Kanal running? ({error.message})",
            f"start Kanal (kanal run -c {config.path}), or fix `url` in the registration file",
        )
    if error.errcode == "M_BAD_STATUS":
        status = error.extra.get("status")
        if status in (401, 403):
            return Check(
                name,
                Status.FAIL,
                f"Kanal refused the homeserver's hs_token (HTTP {status}): the homeserver loaded a "
                "registration file whose tokens differ from Kanal's config",
                "point app_service_config_files at Kanal's registration.yaml and restart the homeserver",
            )
        return Check(
            name,
            Status.WARN,
            f"something answered the homeserver's ping with HTTP {status}: is it Kanal?",
            "check `url` in the registration file",
        )
    if error.errcode == "M_URL_NOT_SET":
        return Check(name, Status.FAIL, "the registration has no url", "set `url` in the registration file")
    if error.status in (401, 403):
        mismatch = "ID in path" in error.message
        return Check(
            name,
            Status.FAIL,
            f"the homeserver refused the ping ({error.errcode}: {error.message})",
            f"set appservice.id in {config.path} to the registration's id" if mismatch else REGISTRATION_FIX,
        )
    return Check(name, Status.FAIL, f"the ping failed: {error}", "see the homeserver's log")


async def _live_homeserver_checks(config: Config) -> list[Check]:
    async with HomeserverClient(config.homeserver_url, config.as_token, attempts=1) as client:
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                data = await client.request("GET", "/_matrix/client/v3/account/whoami")
            bot = bot_user_check(config, str(data.get("user_id")), None)
        except MatrixRequestError as exc:
            bot = bot_user_check(config, None, exc)
        except (MatrixConnectionError, TimeoutError) as exc:
            bot = Check("bot user", Status.FAIL, f"whoami: {_reason(exc)}", "see the homeserver's log")
        started = time.monotonic()
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                await client.ping(config.as_id, f"kanal-doctor-{secrets.token_hex(8)}")
            ping = ping_check(config, None, int((time.monotonic() - started) * 1000))
        except MatrixRequestError as exc:
            ping = ping_check(config, exc)
        except (MatrixConnectionError, TimeoutError) as exc:
            ping = Check("appservice ping", Status.FAIL, f"ping: {_reason(exc)}", "see the homeserver's log")
    return [bot, ping]


def tokens_check(config: Config) -> Check:
    """Kanal's config against the registration file it points at, naming every key that differs."""
    name = "tokens"
    path = config.registration_path
    if path is None:
        return Check(
            name,
            Status.WARN,
            "appservice.registration is not set: Kanal cannot compare its tokens with the homeserver's file",
            "set appservice.registration to the registration file the homeserver loads",
        )
    try:
        registration = load_registration(path)
    except RegistrationError as exc:
        return Check(name, Status.FAIL, f"appservice.registration: {exc}", f"fix {path} or run `kanal init`")
    # The same agreement `kanal run` insists on (app.registration_from_config), all of it at once.
    differ = [
        f"appservice.{key}"
        for key in ("as_token", "hs_token")
        if not secrets.compare_digest(getattr(registration, key).encode(), getattr(config, key).encode())
    ]
    if registration.sender_localpart != config.bot_localpart:
        differ.append("appservice.bot_localpart (sender_localpart)")
    if registration.id != config.as_id:
        differ.append("appservice.id")
    if differ:
        return Check(
            name,
            Status.FAIL,
            f"{_list(differ)} in {config.path} differ from {path}",
            "make them equal (`kanal init --force` makes a fresh pair of files; then give the homeserver the "
            "new registration and restart it)",
        )
    return Check(name, Status.PASS, f"{config.path.name} and {path} agree")


async def kanal_database_check(config: Config) -> Check:
    name = "kanal database"
    url = make_url(config.database_url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        return Check(
            name,
            Status.WARN,
            f"SQLite ({url.database}): fine for trying out; use PostgreSQL in production",
            f"kanal migrate-db -c {config.path} --to postgresql://…, then set database.url",
        )
    where = url.render_as_string(hide_password=True)
    if backend != "postgresql":
        return Check(name, Status.WARN, f"{backend} ({where}) is neither SQLite nor PostgreSQL")
    engine = create_engine(config.database_url)
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S), engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        # SQLAlchemy wraps the driver's error; the driver's own first line is the readable part.
        reason = _reason(getattr(exc, "orig", None) or exc)
        return database_failure(config, where, reason, url.username, _system_user())
    finally:
        await engine.dispose()
    return Check(name, Status.PASS, f"PostgreSQL at {where} answers")


def _system_user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def database_failure(config: Config, where: str, reason: str, db_user: str | None, system_user: str) -> Check:
    """Kanal's PostgreSQL refused or did not answer. Peer authentication (a Unix socket URL without a
    password, as deploy/README.md's) admits only the system user of the same name: run as another
    (root, for --homeserver-config), the database is not checked rather than broken."""
    name = "kanal database"
    if "peer authentication failed" in reason.lower() and db_user and db_user != system_user:
        kanal = Path(sys.executable).parent / "kanal"
        return Check(
            name,
            Status.WARN,
            f"not checked as {system_user}: PostgreSQL at {where} admits only the system user {db_user} "
            f"over its socket (peer authentication: {reason})",
            f"sudo -u {db_user} {kanal} doctor -c {config.path}",
        )
    return Check(name, Status.FAIL, f"PostgreSQL at {where} does not answer: {reason}", "check database.url")


async def live_checks(config: Config) -> list[Check]:
    homeserver = await _probe_homeserver(config)
    if homeserver.status is Status.FAIL:
        skipped = "not checked: the homeserver did not answer"
        remote = [Check(n, Status.FAIL, skipped) for n in ("bot user", "appservice ping")]
    else:
        remote = await _live_homeserver_checks(config)
    return [homeserver, *remote, tokens_check(config), await kanal_database_check(config)]


async def run_checks(config: Config, homeserver_config: Path | None = None) -> list[Check]:
    """Every check for this deployment, secrets masked."""
    checks = await live_checks(config)
    if homeserver_config is not None:
        hs, read = read_homeserver_config(homeserver_config)
        checks.append(read)
        if hs is not None:
            checks += homeserver_config_checks(hs, config)
    return redact(checks, (config.as_token, config.hs_token))


# -- output ----------------------------------------------------------------------------------------


def wants_colour(stream: TextIO) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (no-color.org)."""
    return stream.isatty() and "NO_COLOR" not in os.environ


_COLOURS = {Status.PASS: "\033[32m", Status.WARN: "\033[33m", Status.FAIL: "\033[31m"}


def _wrap(text: str, width: int, subsequent_indent: str = "") -> list[str]:
    # Paths, URLs and host names stay whole, so they can be copied from the table.
    return textwrap.wrap(
        text, width, subsequent_indent=subsequent_indent, break_long_words=False, break_on_hyphens=False
    )


def render_table(checks: Sequence[Check], *, colour: bool = False, width: int | None = None) -> str:
    """An aligned plain-text table: check, status, detail, and a `fix:` line under what needs one."""
    width = width or shutil.get_terminal_size((120, 24)).columns
    name_w = max([len("CHECK"), *(len(c.name) for c in checks)])
    status_w = len("STATUS")
    indent = name_w + status_w + 4
    text_w = max(width - indent, 40)
    lines = [f"{'CHECK':<{name_w}}  {'STATUS':<{status_w}}  DETAIL"]
    for check in checks:
        status = f"{check.status.value:<{status_w}}"
        if colour:
            status = f"{_COLOURS[check.status]}{status}\033[0m"
        body = _wrap(check.detail, text_w) or [""]
        if check.fix and check.status is not Status.PASS:
            body += _wrap(f"fix: {check.fix}", text_w, subsequent_indent="     ")
        lines.append(f"{check.name:<{name_w}}  {status}  {body[0]}")
        lines += [" " * indent + line for line in body[1:]]
    counts = {s: sum(1 for c in checks if c.status is s) for s in Status}
    lines.append("")
    lines.append(
        f"{worst(checks).value.upper()}: {counts[Status.PASS]} pass, {counts[Status.WARN]} warn, "
        f"{counts[Status.FAIL]} fail"
    )
    return "\n".join(lines)


def render_json(checks: Sequence[Check]) -> str:
    return json.dumps(
        {
            "status": worst(checks).value,
            "exit_code": exit_code(checks),
            "checks": [{**asdict(c), "status": c.status.value} for c in checks],
        },
        indent=2,
        ensure_ascii=False,
    )
