"""Pre-publication hooks: every backstage post passes an ordered list of them before it is relayed.

    PostInfo ─▶ Pipeline.check ─▶ hooks_for(handle): compliance.channel_hooks[handle] or compliance.hooks,
                   │               without webhooks scoped to other channels
                   │  each hook in order ─▶ Verdict(allow | hold | reject, hook, category, reason)
                   │  the first hold or reject ends the run
                   ▼
               [Verdict, …]  (every verdict given, for the audit log) ─▶ outcome(): the deciding one

Hooks are configured in `settings` (keys, defaults). Built in: `terms` (term lists; what matches is
described in `terms`), `links` (denied and allowed hosts), `media` (type and size), `rate` (posts
per channel in a sliding window, counted in this process: several Kanal processes each count their
own). `webhook:<name>` asks an operator's service (`webhook`); `plugin:<name>` comes from a factory
registered in the entry point group `kanal.hooks`, called as `factory(options) -> Hook` once, when
the pipeline is built.

A hook that raises is logged and its verdict is `hold`, so a bug never publishes a post unchecked;
webhooks and plugins that fail get their configured `on_failure` instead.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from bridge.runtime.config import Config, ConfigError
from bridge.screening.normalise import formatted_parts, link_hosts, post_text
from bridge.screening.settings import (
    ACTIONS,
    HookSpec,
    LinksSpec,
    MediaSpec,
    PluginSpec,
    RateSpec,
    TermsSpec,
    WebhookSpec,
)
from bridge.screening.terms import TermList
from bridge.screening.webhook import WebhookFailure, WebhookSender

log = logging.getLogger(__name__)

ALLOW_CATEGORY: Final = "none"
FAILURE_CATEGORY: Final = "other"
WEBHOOK_EVENT_TYPE: Final = "kanal.post.check"


@dataclass(frozen=True)
class MediaInfo:
    mimetype: str | None
    size: int | None
    url: str | None


@dataclass(frozen=True)
class PostInfo:
    channel_id: int
    handle: str
    title: str
    author: str
    event_id: str
    msgtype: str
    body: str
    formatted_body: str | None
    media: MediaInfo | None
    via: str = "backstage"  # or "api", or "comment" (a reader's, in a discussion room)


@dataclass(frozen=True)
class Verdict:
    action: str
    """allow, hold (a moderator decides) or reject."""
    hook: str
    """The hook's name: "terms", "links", "webhook:<name>", "plugin:<name>"…"""
    category: str
    """Such as spam, illegal_hate_speech or other; "none" when allowed."""
    reason: str
    """For people: it goes into the statement of reasons."""
    automated: bool = True

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"a verdict's action is one of {', '.join(ACTIONS)}, not {self.action!r}")


class Hook(Protocol):
    name: str

    async def check(self, post: PostInfo) -> Verdict: ...


def outcome(verdicts: list[Verdict]) -> Verdict | None:
    """The deciding verdict (the first that is not allow), or None when the post may be published."""
    return next((v for v in verdicts if v.action != "allow"), None)


class TermsHook:
    """Flags a post whose text (body and formatted body) contains a listed term or pattern."""

    def __init__(self, spec: TermsSpec) -> None:
        self.name = spec.label
        self._spec = spec
        self._terms = TermList(spec.terms, spec.regex)

    async def check(self, post: PostInfo) -> Verdict:
        found = self._terms.find(post_text(post.body, post.formatted_body))
        if found is None:
            return Verdict("allow", self.name, ALLOW_CATEGORY, "contains no listed term")
        what = "matches the listed pattern" if found.regex else "contains the listed term"
        return Verdict(self._spec.action, self.name, self._spec.category, f"{what} {found.term!r}")


class _HostSet:
    """Host names and their subdomains (`evil.example`), or subdomains only (`*.evil.example`)."""

    def __init__(self, entries: Sequence[str]) -> None:
        self._with_subdomains = frozenset(e for e in entries if not e.startswith("*."))
        self._subdomains_only = frozenset(e[2:] for e in entries if e.startswith("*."))

    def __bool__(self) -> bool:
        return bool(self._with_subdomains or self._subdomains_only)

    def __contains__(self, host: object) -> bool:
        if not isinstance(host, str):
            return False
        if host in self._with_subdomains:
            return True
        dot = host.find(".")
        while dot != -1:
            parent = host[dot + 1 :]
            if parent in self._with_subdomains or parent in self._subdomains_only:
                return True
            dot = host.find(".", dot + 1)
        return False


class LinksHook:
    """Flags links to denied hosts and, with an allow list, links to any host not on it.

    Denied hosts are looked for in links and in any host name written in the text (`visit
    evil.example`); the allow list applies to links only (http(s) URLs, `www.` names, hrefs), so
    a file name such as readme.md is not taken for a link.
    """

    def __init__(self, spec: LinksSpec) -> None:
        self.name = spec.label
        self._spec = spec
        self._deny = _HostSet(spec.deny)
        self._allow = _HostSet(spec.allow)

    async def check(self, post: PostInfo) -> Verdict:
        text, hrefs = post.body, tuple[str, ...]()
        if post.formatted_body:
            parts = formatted_parts(post.formatted_body)
            text, hrefs = f"{post.body}\n{parts.text}", parts.links
        linked, named = link_hosts(text, hrefs)
        for host in sorted(named):
            if host in self._deny:
                return self._flag(f"links to {host}, a denied host")
        if self._allow:
            for host in sorted(linked):
                if host not in self._allow:
                    return self._flag(f"links to {host}, which is not on the list of allowed hosts")
        return Verdict("allow", self.name, ALLOW_CATEGORY, "links to no refused host")

    def _flag(self, reason: str) -> Verdict:
        return Verdict(self._spec.action, self.name, self._spec.category, reason)


class MediaHook:
    """Flags media of a type not accepted or larger than allowed (as the post declares them).

    A post without media passes; so does media whose size the post does not declare (the
    homeserver's upload limit still applies).
    """

    def __init__(self, spec: MediaSpec) -> None:
        self.name = spec.label
        self._spec = spec
        self._exact = frozenset(t for t in spec.types if not t.endswith("/*"))
        self._families = frozenset(t[:-1] for t in spec.types if t.endswith("/*"))  # "image/"

    async def check(self, post: PostInfo) -> Verdict:
        media = post.media
        if media is None:
            return Verdict("allow", self.name, ALLOW_CATEGORY, "has no media")
        if self._spec.types:
            mimetype = (media.mimetype or "").split(";", 1)[0].strip().lower()
            family = mimetype.split("/", 1)[0] + "/"
            if mimetype not in self._exact and family not in self._families:
                return self._flag(
                    f"has media of type {mimetype or 'unknown'}, which is not accepted "
                    f"(accepted: {', '.join(self._spec.types)})"
                )
        limit = self._spec.max_bytes
        if limit is not None and media.size is not None and media.size > limit:
            return self._flag(f"has a file of {media.size:,} bytes; the limit is {limit:,} bytes")
        return Verdict("allow", self.name, ALLOW_CATEGORY, "has media within the limits")

    def _flag(self, reason: str) -> Verdict:
        return Verdict(self._spec.action, self.name, self._spec.category, reason)


class RateHook:
    """Flags a channel's post beyond `posts` in the last `per_seconds` (a sliding window, this process).

    Only posts this hook lets through are counted, so a flagged post does not extend the wait.
    """

    def __init__(self, spec: RateSpec, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = spec.label
        self._spec = spec
        self._clock = clock
        self._recent: dict[int, deque[float]] = {}

    async def check(self, post: PostInfo) -> Verdict:
        if post.via == "comment":
            return Verdict("allow", self.name, ALLOW_CATEGORY, "readers' comments are not counted as posts")
        now = self._clock()
        recent = self._recent.setdefault(post.channel_id, deque(maxlen=self._spec.posts))
        while recent and recent[0] <= now - self._spec.per_seconds:
            recent.popleft()
        if len(recent) >= self._spec.posts:
            wait = max(1, round(recent[0] + self._spec.per_seconds - now))
            return Verdict(
                self._spec.action,
                self.name,
                self._spec.category,
                f"the channel already published {self._spec.posts} posts in the last "
                f"{self._spec.per_seconds} seconds, the limit; the next may follow in {wait} seconds",
            )
        recent.append(now)
        return Verdict("allow", self.name, ALLOW_CATEGORY, "within the channel's posting rate")


class WebhookHook:
    """Asks the operator's service; on no usable answer, the configured `on_failure` decides."""

    def __init__(self, spec: WebhookSpec, sender: WebhookSender) -> None:
        self.name = spec.label
        self._spec = spec
        self._sender = sender
        self._channels = frozenset(spec.channels)

    def serves(self, handle: str) -> bool:
        """Whether posts of this channel may be sent to the service (its `channels`, or all)."""
        return not self._channels or handle.lower() in self._channels

    async def check(self, post: PostInfo) -> Verdict:
        if not self.serves(post.handle):  # `Pipeline.hooks_for` leaves it out; this is a second lock
            return Verdict("allow", self.name, ALLOW_CATEGORY, "not configured for this channel")
        spec = self._spec
        msg_id = "msg_" + hashlib.sha256(f"{self.name}\n{post.event_id}".encode()).hexdigest()[:32]
        try:
            answer = await self._sender.send(
                spec.url, spec.secret, msg_id, int(time.time()), webhook_payload(post), spec.timeout_ms / 1000
            )
        except WebhookFailure as failure:
            log.warning(
                "compliance webhook %s (%s) failed: %s%s; verdict: %s",
                spec.name,
                spec.where,
                failure.reason,
                f" ({failure.detail})" if failure.detail else "",
                spec.on_failure,
            )
            return Verdict(
                spec.on_failure,
                self.name,
                ALLOW_CATEGORY if spec.on_failure == "allow" else spec.category,
                f"the moderation service {spec.name!r} {failure.reason}; "
                f"when it cannot answer, the configured verdict is {spec.on_failure}",
            )
        if answer.action == "allow":
            return Verdict("allow", self.name, ALLOW_CATEGORY, answer.reason or f"allowed by {spec.name!r}")
        return Verdict(
            answer.action,
            self.name,
            answer.category or spec.category,
            answer.reason or f"flagged by the moderation service {spec.name!r}",
        )


def webhook_payload(post: PostInfo) -> dict[str, Any]:
    """The JSON a webhook receives: a Standard Webhooks envelope around the post and its channel."""
    media = post.media
    return {
        "type": WEBHOOK_EVENT_TYPE,
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "data": {
            "channel": {"id": post.channel_id, "handle": post.handle, "title": post.title},
            "post": {
                "event_id": post.event_id,
                "author": post.author,
                "msgtype": post.msgtype,
                "body": post.body,
                "formatted_body": post.formatted_body,
                "media": None
                if media is None
                else {"mimetype": media.mimetype, "size": media.size, "url": media.url},
                "via": post.via,
            },
        },
    }


class PluginHook:
    """A hook from a plugin, held to the rules: its verdicts carry its name, failures get `on_failure`."""

    def __init__(self, spec: PluginSpec, inner: Hook) -> None:
        self.name = spec.label
        self._spec = spec
        self._inner = inner

    async def check(self, post: PostInfo) -> Verdict:
        try:
            verdict = await self._inner.check(post)
        except Exception:
            log.exception("compliance plugin %s (%s) failed", self._spec.name, self._spec.where)
            return self._failed("failed")
        if not isinstance(verdict, Verdict):
            log.error("compliance plugin %s returned %r, not a Verdict", self._spec.name, type(verdict))
            return self._failed("gave no verdict")
        return replace(verdict, hook=self.name)

    def _failed(self, what: str) -> Verdict:
        action = self._spec.on_failure
        return Verdict(
            action,
            self.name,
            ALLOW_CATEGORY if action == "allow" else self._spec.category,
            f"the plugin {self._spec.name!r} {what}; when it cannot answer, the configured verdict is {action}",
        )


class Pipeline:
    """The hooks of a deployment and of its channels, built once from the config and reused."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._sender = WebhookSender()
        compliance = config.compliance
        self._hooks = tuple(self._build(spec) for spec in compliance.hooks)
        self._channel_hooks = {
            handle.lower(): tuple(self._build(spec) for spec in specs)
            for handle, specs in compliance.channel_hooks.items()
        }

    def hooks_for(self, handle: str) -> Sequence[Hook]:
        """The hooks a channel's posts pass: its own list when it has one, else the deployment's."""
        handle = handle.lower()
        hooks = self._channel_hooks.get(handle, self._hooks)
        return tuple(h for h in hooks if not isinstance(h, WebhookHook) or h.serves(handle))

    async def check(self, post: PostInfo) -> list[Verdict]:
        """Every verdict given, in order, up to the first that is not allow; empty without hooks."""
        verdicts: list[Verdict] = []
        for hook in self.hooks_for(post.handle):
            try:
                verdict = await hook.check(post)
            except Exception:
                log.exception("compliance hook %s failed on %s", hook.name, post.event_id)
                verdict = Verdict(
                    "hold",
                    hook.name,
                    FAILURE_CATEGORY,
                    f"the {hook.name} check failed unexpectedly, so a moderator looks at the post",
                )
            verdicts.append(verdict)
            if verdict.action != "allow":
                break
        return verdicts

    async def close(self) -> None:
        """Close the webhooks' HTTP session."""
        await self._sender.close()

    def _build(self, spec: HookSpec) -> Hook:
        if isinstance(spec, TermsSpec):
            return TermsHook(spec)
        if isinstance(spec, LinksSpec):
            return LinksHook(spec)
        if isinstance(spec, MediaSpec):
            return MediaHook(spec)
        if isinstance(spec, RateSpec):
            return RateHook(spec)
        if isinstance(spec, WebhookSpec):
            return WebhookHook(spec, self._sender)
        try:
            inner = spec.factory(dict(spec.options))
        except Exception as exc:  # the plugin's own code: the operator must see why
            raise ConfigError(
                f"{self._config.path}: '{spec.where}': the plugin {spec.name!r} could not be set up: {exc!r}"
            ) from exc
        if not callable(getattr(inner, "check", None)):
            raise ConfigError(
                f"{self._config.path}: '{spec.where}': the plugin {spec.name!r} made {inner!r}, "
                "which has no check(post) method"
            )
        return PluginHook(spec, inner)
