"""The registration file an application service hands its homeserver: model, generator, validator."""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TOKEN_BYTES = 32


class RegistrationError(ValueError):
    """A registration file is missing, unreadable or malformed; the message names the file and key."""


@dataclass(frozen=True)
class Namespace:
    regex: str
    exclusive: bool
    _compiled: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compiled", re.compile(self.regex))

    def matches(self, value: str) -> bool:
        # Synapse matches from the start of the string only (re.match); we do the same.
        return self._compiled.match(value) is not None


@dataclass(frozen=True)
class Registration:
    id: str
    url: str | None
    as_token: str
    hs_token: str
    sender_localpart: str
    users: tuple[Namespace, ...] = ()
    aliases: tuple[Namespace, ...] = ()
    rooms: tuple[Namespace, ...] = ()
    rate_limited: bool = False
    receive_ephemeral: bool = True
    protocols: tuple[str, ...] = field(default_factory=tuple)
    # MSC3202: one-time-key counts and device-list changes in transactions (end-to-end encryption)
    device_keys: bool = False

    def is_our_user(self, user_id: str) -> bool:
        return any(ns.matches(user_id) for ns in self.users)

    def is_our_alias(self, alias: str) -> bool:
        return any(ns.matches(alias) for ns in self.aliases)

    def to_dict(self) -> dict[str, Any]:
        def nss(items: tuple[Namespace, ...]) -> list[dict[str, Any]]:
            return [{"exclusive": ns.exclusive, "regex": ns.regex} for ns in items]

        data: dict[str, Any] = {
            "id": self.id,
            "url": self.url,
            "as_token": self.as_token,
            "hs_token": self.hs_token,
            "sender_localpart": self.sender_localpart,
            "namespaces": {"users": nss(self.users), "aliases": nss(self.aliases), "rooms": nss(self.rooms)},
            "rate_limited": self.rate_limited,
            "receive_ephemeral": self.receive_ephemeral,
            # Older Synapse versions read the MSC2409 name.
            "de.sorunome.msc2409.push_ephemeral": self.receive_ephemeral,
        }
        if self.protocols:
            data["protocols"] = list(self.protocols)
        if self.device_keys:
            data["org.matrix.msc3202"] = True
        return data


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def generate(
    *,
    as_id: str,
    url: str,
    domain: str,
    sender_localpart: str,
    user_prefix: str,
    alias_prefix: str = "",
    exclusive_aliases: bool = False,
    device_keys: bool = False,
) -> Registration:
    """A registration with fresh tokens and anchored, escaped namespace regexes.

    Users: the bot itself and every `@<user_prefix>…:domain` ghost, exclusively ours.
    Aliases: `#<alias_prefix>…:domain`, non-exclusive by default so people keep their own aliases,
    but Kanal may still create channel aliases (Synapse refuses aliases outside every namespace).
    """
    dom = re.escape(domain)
    users = (
        Namespace(rf"^@{re.escape(sender_localpart)}:{dom}$", True),
        Namespace(rf"^@{re.escape(user_prefix)}.+:{dom}$", True),
    )
    aliases = (Namespace(rf"^#{re.escape(alias_prefix)}.+:{dom}$", exclusive_aliases),)
    return Registration(
        id=as_id,
        url=url,
        as_token=new_token(),
        hs_token=new_token(),
        sender_localpart=sender_localpart,
        users=users,
        aliases=aliases,
        device_keys=device_keys,
    )


def _namespaces(data: Any, path: Path, key: str) -> tuple[Namespace, ...]:
    if data is None:
        return ()
    if not isinstance(data, list):
        raise RegistrationError(f"{path}: namespaces.{key} must be a list")
    result = []
    for index, item in enumerate(data):
        where = f"{path}: namespaces.{key}[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("regex"), str):
            raise RegistrationError(f"{where} must be a mapping with a string 'regex'")
        if not isinstance(item.get("exclusive"), bool):
            raise RegistrationError(f"{where}.exclusive must be true or false")
        try:
            re.compile(item["regex"])
        except re.error as exc:
            raise RegistrationError(f"{where}.regex is not a valid regular expression: {exc}") from exc
        result.append(Namespace(item["regex"], item["exclusive"]))
    return tuple(result)


def parse(data: Any, path: Path) -> Registration:
    """Validate a loaded registration document (the spec's required keys and their types)."""
    if not isinstance(data, dict):
        raise RegistrationError(f"{path}: expected a YAML mapping at the top level")
    for key in ("id", "as_token", "hs_token", "sender_localpart"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise RegistrationError(f"{path}: '{key}' is required and must be a non-empty string")
    url = data.get("url")
    if url is not None and not isinstance(url, str):
        raise RegistrationError(f"{path}: 'url' must be a string or null")
    if data["as_token"] == data["hs_token"]:
        raise RegistrationError(f"{path}: 'as_token' and 'hs_token' must differ")
    namespaces = data.get("namespaces")
    if not isinstance(namespaces, dict):
        raise RegistrationError(f"{path}: 'namespaces' is required and must be a mapping")
    ephemeral = data.get("receive_ephemeral", data.get("de.sorunome.msc2409.push_ephemeral", False))
    rate_limited = data.get("rate_limited", True)
    device_keys = data.get("org.matrix.msc3202", False)
    for key, value in (
        ("receive_ephemeral", ephemeral),
        ("rate_limited", rate_limited),
        ("org.matrix.msc3202", device_keys),
    ):
        if not isinstance(value, bool):
            raise RegistrationError(f"{path}: '{key}' must be true or false")
    protocols = data.get("protocols") or []
    if not isinstance(protocols, list) or not all(isinstance(p, str) for p in protocols):
        raise RegistrationError(f"{path}: 'protocols' must be a list of strings")
    return Registration(
        id=data["id"],
        url=url,
        as_token=data["as_token"],
        hs_token=data["hs_token"],
        sender_localpart=data["sender_localpart"],
        users=_namespaces(namespaces.get("users"), path, "users"),
        aliases=_namespaces(namespaces.get("aliases"), path, "aliases"),
        rooms=_namespaces(namespaces.get("rooms"), path, "rooms"),
        rate_limited=bool(rate_limited),
        receive_ephemeral=bool(ephemeral),
        protocols=tuple(protocols),
        device_keys=bool(device_keys),
    )


def load(path: Path) -> Registration:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RegistrationError(f"{path}: cannot read the registration file: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise RegistrationError(f"{path}: the registration file is not UTF-8 text") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RegistrationError(f"{path}: not valid YAML: {exc}") from exc
    return parse(data, path)


def write_secret_file(path: Path, text: str) -> None:
    """Write a file that holds secrets, readable by its owner only (0600 from the first byte)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def save(registration: Registration, path: Path) -> None:
    write_secret_file(path, yaml.safe_dump(registration.to_dict(), sort_keys=False))
