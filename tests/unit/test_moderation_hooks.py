"""Pre-publication hooks: their settings (every bad key named), each built-in hook, plugins, the pipeline."""

from __future__ import annotations

import base64
import itertools
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.moderation.hooks import (
    LinksHook,
    MediaHook,
    MediaInfo,
    Pipeline,
    PostInfo,
    RateHook,
    TermsHook,
    Verdict,
    WebhookHook,
    outcome,
)
from bridge.runtime.config import Config, ConfigError, parse
from bridge.screening.settings import (
    LinksSpec,
    MediaSpec,
    PluginSpec,
    RateSpec,
    TermsSpec,
    WebhookSpec,
    parse_hooks,
)
from bridge.screening.webhook import Answer, WebhookFailure, decode_secret, parse_answer, sign, verify

# The Standard Webhooks specification's published test vector.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_PAYLOAD = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

WEBHOOK = {"type": "webhook", "name": "modsvc", "url": "https://mod.example/check", "secret": VECTOR_SECRET}
_EVENTS = itertools.count()


def post(
    body: str = "hello",
    *,
    handle: str = "news",
    channel_id: int = 1,
    formatted_body: str | None = None,
    media: MediaInfo | None = None,
) -> PostInfo:
    return PostInfo(
        channel_id=channel_id,
        handle=handle,
        title="Daily News",
        author="@alice:example.org",
        event_id=f"$event{next(_EVENTS)}",
        msgtype="m.text" if media is None else "m.image",
        body=body,
        formatted_body=formatted_body,
        media=media,
    )


def one(raw: dict[str, Any], base: Path = Path("/nonexistent")) -> Any:
    [spec] = parse_hooks([raw], "compliance.hooks", base)
    return spec


def config(tmp_path: Path, hooks: list[Any], channel_hooks: dict[str, Any] | None = None) -> Config:
    compliance: dict[str, Any] = {"hooks": hooks}
    if channel_hooks is not None:
        compliance["channel_hooks"] = channel_hooks
    data = {
        "homeserver": {"url": "https://matrix.example.org", "domain": "example.org"},
        "appservice": {"as_token": "as-token-0123456789abcdef", "hs_token": "hs-token-0123456789abcdef"},
        "compliance": compliance,
    }
    return parse(data, tmp_path / "config.yaml")


# Settings: good hooks and their defaults


def test_every_type_parses_with_documented_defaults(tmp_path: Path) -> None:
    specs = parse_hooks(
        [
            {"type": "terms", "terms": ["spam"]},
            {"type": "links", "deny": ["Evil.Example", "*.spam.example", "bücher.example"]},
            {"type": "media", "max_bytes": 1000, "types": ["Image/*", "video/mp4"]},
            {"type": "rate", "posts": 3, "per_seconds": 60},
            dict(WEBHOOK, channels=["News", "sport"]),
        ],
        "compliance.hooks",
        tmp_path,
    )
    assert specs == [
        TermsSpec(name="terms", action="hold", category="other", terms=("spam",), regex=(), files=()),
        LinksSpec(
            name="links",
            action="hold",
            category="spam",
            deny=("evil.example", "*.spam.example", "xn--bcher-kva.example"),
            allow=(),
        ),
        MediaSpec(
            name="media", action="reject", category="other", max_bytes=1000, types=("image/*", "video/mp4")
        ),
        RateSpec(name="rate", action="reject", category="spam", posts=3, per_seconds=60),
        WebhookSpec(
            name="modsvc",
            category="other",
            url="https://mod.example/check",
            secret=decode_secret(VECTOR_SECRET),
            timeout_ms=2000,
            on_failure="hold",
            channels=("news", "sport"),
        ),
    ]
    assert [s.where for s in specs] == [f"compliance.hooks[{i}]" for i in range(5)]
    assert [s.label for s in specs] == ["terms", "links", "media", "rate", "webhook:modsvc"]


def test_the_webhook_secret_is_never_shown() -> None:
    spec = one(WEBHOOK)
    assert "MfKQ9r8" not in repr(spec)
    assert decode_secret(VECTOR_SECRET).hex() not in repr(spec)


def test_term_files_resolve_against_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "fa.txt").write_text(
        "\ufeff# Persian terms\n\nكتاب\n  spam  \n#hashtag\n#\n", encoding="utf-8"
    )
    spec = one({"type": "terms", "terms": ["inline"], "files": ["lists/fa.txt"]}, tmp_path)
    assert spec.terms == ("inline", "كتاب", "spam", "#hashtag")
    assert spec.files == ((tmp_path / "lists" / "fa.txt").resolve(),)


def _missing_entry_point() -> dict[str, Any]:
    return {"type": "plugin", "name": "no-such-plugin"}


@pytest.mark.parametrize(
    ("hooks", "message"),
    [
        ({"type": "terms"}, "'compliance.hooks' must be a list of hooks"),
        (["terms"], "'compliance.hooks[0]' must be a mapping with a `type`"),
        ([{"type": "regex"}], "'compliance.hooks[0].type' must be one of terms, links, media, rate, webhook, plugin"),
        ([{"type": "terms", "term": ["x"]}], "'compliance.hooks[0].term' is not a key of a terms hook"),
        ([{"type": "terms"}], "'compliance.hooks[0]' lists no terms"),
        ([{"type": "terms", "terms": "spam"}], "'compliance.hooks[0].terms' must be a list of strings"),
        ([{"type": "terms", "terms": ["ok", ""]}], "'compliance.hooks[0].terms[1]' must be a non-empty string"),
        ([{"type": "terms", "terms": ["ok", "\u0640*"]}], "'compliance.hooks[0].terms[1]': the term"),
        ([{"type": "terms", "regex": ["ok", "("]}], "'compliance.hooks[0].regex[1]': the pattern '('"),
        ([{"type": "terms", "terms": ["x"], "action": "allow"}], "'compliance.hooks[0].action' must be one of hold, reject"),
        ([{"type": "terms", "terms": ["x"], "category": "Hate Speech"}], "'compliance.hooks[0].category' must be a lower-case word"),
        ([{"type": "terms", "terms": ["x"], "name": "a b"}], "'compliance.hooks[0].name' must be 1–64 letters"),
        ([{"type": "links"}], "'compliance.hooks[0]' lists no hosts"),
        ([{"type": "links", "deny": ["https://evil.example/"]}], "'compliance.hooks[0].deny[0]' must be a host name"),
        ([{"type": "links", "allow": ["ok.example", "a b"]}], "'compliance.hooks[0].allow[1]' must be a host name"),
        ([{"type": "media"}], "'compliance.hooks[0]' sets no limit"),
        ([{"type": "media", "max_bytes": 0}], "'compliance.hooks[0].max_bytes' must be a whole number of bytes"),
        ([{"type": "media", "max_bytes": "20MB"}], "'compliance.hooks[0].max_bytes' must be a whole number of bytes"),
        ([{"type": "media", "types": ["image"]}], "'compliance.hooks[0].types[0]' must be a media type"),
        ([{"type": "rate", "per_seconds": 60}], "'compliance.hooks[0].posts' is required"),
        ([{"type": "rate", "posts": 5}], "'compliance.hooks[0].per_seconds' is required"),
        ([{"type": "rate", "posts": True, "per_seconds": 60}], "'compliance.hooks[0].posts' must be a whole number"),
        ([{"type": "rate", "posts": 5, "per_seconds": 1.5}], "'compliance.hooks[0].per_seconds' must be a whole number of seconds"),
        ([{k: v for k, v in WEBHOOK.items() if k != "name"}], "'compliance.hooks[0].name' is required for a webhook hook"),
        ([{k: v for k, v in WEBHOOK.items() if k != "url"}], "'compliance.hooks[0].url' is required"),
        ([dict(WEBHOOK, url="ftp://mod.example")], "'compliance.hooks[0].url' must be an http:// or https:// URL"),
        ([dict(WEBHOOK, url="https://[::1")], "'compliance.hooks[0].url' must be an http:// or https:// URL"),
        ([{k: v for k, v in WEBHOOK.items() if k != "secret"}], "'compliance.hooks[0].secret' is required"),
        ([dict(WEBHOOK, secret="whsec_not*base64")], "'compliance.hooks[0].secret' must be a Standard Webhooks secret"),
        ([dict(WEBHOOK, secret="whsec_" + base64.b64encode(b"short").decode())], "(it holds 5 bytes)"),
        ([dict(WEBHOOK, timeout_ms=50)], "'compliance.hooks[0].timeout_ms' must be a whole number of milliseconds between 100 and 30000"),
        ([dict(WEBHOOK, timeout_ms=2.5)], "'compliance.hooks[0].timeout_ms' must be a whole number of milliseconds between 100 and 30000"),
        ([dict(WEBHOOK, on_failure="open")], "'compliance.hooks[0].on_failure' must be one of allow, hold, reject"),
        ([dict(WEBHOOK, action="hold")], "'compliance.hooks[0].action' is not a key of a webhook hook"),
        ([dict(WEBHOOK, channels=["ok", "two words"])], "'compliance.hooks[0].channels[1]' must be a channel handle"),
        ([_missing_entry_point()], "'compliance.hooks[0].name' names no installed plugin: 'no-such-plugin'"),
        ([{"type": "plugin", "name": "x", "options": ["a"]}], "'compliance.hooks[0].options' must be a mapping"),
        (
            [{"type": "terms", "terms": ["x"]}, {"type": "links", "deny": ["a.example"]}, {"type": "terms", "terms": ["y"]}],
            "'compliance.hooks[2].name': 'terms' is already the name of 'compliance.hooks[0]'",
        ),
    ],
)  # fmt: skip
def test_each_bad_key_is_named(hooks: Any, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_hooks(hooks, "compliance.hooks", Path("/nonexistent"))
    assert message in str(caught.value)
    assert "MfKQ9r8" not in str(caught.value)


def test_a_missing_term_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'compliance.hooks\[0\].files\[0\]': no such file: .*missing.txt"):
        one({"type": "terms", "files": ["missing.txt"]}, tmp_path)


def test_a_bad_line_in_a_term_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("ok\n\u0640\u0640\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"'compliance.hooks\[0\].files\[0\]' \(.*t.txt, line 2\): the term"):
        one({"type": "terms", "files": ["t.txt"]}, tmp_path)


def test_a_term_file_must_be_utf8(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_bytes("كتاب".encode("cp1256"))
    with pytest.raises(ValueError, match="is not UTF-8 text"):
        one({"type": "terms", "files": ["t.txt"]}, tmp_path)


def test_config_errors_name_the_file_and_the_channel_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        config(tmp_path, [], {"News": [dict(WEBHOOK, timeout_ms=0)]})
    assert str(caught.value).startswith(
        f"{tmp_path / 'config.yaml'}: 'compliance.channel_hooks.News[0].timeout_ms'"
    )


# Plugins, through a real entry point


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An installed distribution with a `kanal.hooks` entry point (`shout-<id>`); returns its name."""
    suffix = uuid.uuid4().hex[:8]
    module, name = f"kanal_plugin_{suffix}", f"shout-{suffix}"
    (tmp_path / f"{module}.py").write_text(
        "from bridge.moderation.hooks import Verdict\n"
        "class Shout:\n"
        "    name = 'shout'\n"
        "    def __init__(self, options):\n"
        "        self.word = options['word']\n"
        "    async def check(self, post):\n"
        "        if post.body == 'boom':\n"
        "            raise RuntimeError('plugin bug')\n"
        "        if post.body == 'nonsense':\n"
        "            return 'hold'\n"
        "        action = 'reject' if self.word in post.body else 'allow'\n"
        "        return Verdict(action, 'anything', 'illegal_content', f'shouted {self.word}')\n"
        "def factory(options):\n"
        "    return Shout(options)\n"
        "not_callable = 42\n",
        encoding="utf-8",
    )
    dist = tmp_path / f"kanal_plugin_{suffix}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: kanal-plugin-{suffix}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        f"[kanal.hooks]\n{name} = {module}:factory\nbroken-{suffix} = {module}_missing:factory\n"
        f"number-{suffix} = {module}:not_callable\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(module, None)


async def test_a_plugin_is_loaded_from_its_entry_point(tmp_path: Path, plugin: str) -> None:
    loaded = config(tmp_path, [{"type": "plugin", "name": plugin, "options": {"word": "loud"}}])
    [spec] = loaded.compliance.hooks
    assert isinstance(spec, PluginSpec)
    pipeline = Pipeline(loaded)

    [allowed] = await pipeline.check(post("quiet"))
    [rejected] = await pipeline.check(post("very loud"))

    assert allowed.action == "allow"
    assert rejected == Verdict("reject", f"plugin:{plugin}", "illegal_content", "shouted loud")


async def test_a_failing_plugin_gets_its_on_failure_verdict(tmp_path: Path, plugin: str) -> None:
    hooks = [{"type": "plugin", "name": plugin, "options": {"word": "x"}, "on_failure": "reject"}]
    pipeline = Pipeline(config(tmp_path, hooks))

    [raised] = await pipeline.check(post("boom"))
    [nonsense] = await pipeline.check(post("nonsense"))

    assert (raised.action, raised.hook, raised.category) == ("reject", f"plugin:{plugin}", "other")
    assert "failed" in raised.reason
    assert nonsense.action == "reject" and "gave no verdict" in nonsense.reason


def test_plugin_problems_are_config_errors(tmp_path: Path, plugin: str) -> None:
    suffix = plugin.removeprefix("shout-")
    with pytest.raises(
        ValueError,
        match=rf"'compliance.hooks\[0\].name' names the plugin 'broken-{suffix}', which could not be loaded",
    ):
        one({"type": "plugin", "name": f"broken-{suffix}"})
    with pytest.raises(ValueError, match="which is not a factory"):
        one({"type": "plugin", "name": f"number-{suffix}"})
    with pytest.raises(ValueError, match=rf"installed: .*{plugin}"):
        one({"type": "plugin", "name": "absent"})
    with pytest.raises(ConfigError, match=r"the plugin .* could not be set up: KeyError\('word'\)"):
        Pipeline(config(tmp_path, [{"type": "plugin", "name": plugin}]))


# Built-in hooks


async def test_terms_hook_reads_body_and_formatted_body() -> None:
    hook = TermsHook(
        one({"type": "terms", "terms": ["علي"], "category": "illegal_content", "action": "reject"})
    )

    clean = await hook.check(post("سلام"))
    in_body = await hook.check(post("سلام علی"))
    in_formatted = await hook.check(post("سلام", formatted_body="سلام <b>علی</b>"))

    assert clean == Verdict("allow", "terms", "none", "contains no listed term")
    assert in_body == Verdict("reject", "terms", "illegal_content", "contains the listed term 'علي'")
    assert in_formatted == in_body


async def test_terms_hook_names_the_pattern() -> None:
    hook = TermsHook(one({"type": "terms", "regex": [r"casino\d+"]}))
    verdict = await hook.check(post("CASINO777"))
    assert verdict == Verdict("hold", "terms", "other", "matches the listed pattern 'casino\\\\d+'")


@pytest.mark.parametrize(
    ("body", "formatted", "reason"),
    [
        ("see https://evil.example/x", None, "links to evil.example, a denied host"),
        ("see https://www.EVIL.example", None, "links to www.evil.example, a denied host"),
        ("type evil.example in your browser", None, "links to evil.example, a denied host"),
        (
            "click",
            '<a href="https://cdn.spam.example/x">click</a>',
            "links to cdn.spam.example, a denied host",
        ),
        ("https://bücher.example", None, "links to xn--bcher-kva.example, a denied host"),
    ],
)
async def test_links_hook_denies_hosts_and_subdomains(body: str, formatted: str | None, reason: str) -> None:
    hook = LinksHook(one({"type": "links", "deny": ["evil.example", "*.spam.example", "bücher.example"]}))
    verdict = await hook.check(post(body, formatted_body=formatted))
    assert verdict == Verdict("hold", "links", "spam", reason)


@pytest.mark.parametrize(
    "body",
    [
        "see https://spam.example/",  # *.spam.example is for subdomains only
        "see https://notevil.example/",  # a suffix, but not on a label boundary
        "no links at all",
    ],
)
async def test_links_hook_lets_other_hosts_through(body: str) -> None:
    hook = LinksHook(one({"type": "links", "deny": ["evil.example", "*.spam.example"]}))
    assert (await hook.check(post(body))).action == "allow"


async def test_links_hook_with_an_allow_list() -> None:
    hook = LinksHook(
        one(
            {
                "type": "links",
                "allow": ["news.example", "matrix.to"],
                "deny": ["bad.news.example"],
                "action": "reject",
            }
        )
    )

    ok = await hook.check(
        post("https://news.example/a https://www.news.example https://matrix.to/#/#x:y readme.md")
    )
    other = await hook.check(post("x", formatted_body='<a href="https://other.example">x</a>'))
    denied = await hook.check(post("https://bad.news.example"))  # deny wins over allow

    assert ok.action == "allow"
    assert other == Verdict(
        "reject", "links", "spam", "links to other.example, which is not on the list of allowed hosts"
    )
    assert denied.reason == "links to bad.news.example, a denied host"


@pytest.mark.parametrize(
    ("media", "action", "reason"),
    [
        (None, "allow", "has no media"),
        (MediaInfo("image/png", 500, "mxc://s/a"), "allow", "has media within the limits"),
        (MediaInfo("IMAGE/JPEG; q=1", None, "mxc://s/a"), "allow", "has media within the limits"),
        (MediaInfo("video/mp4", 1000, "mxc://s/a"), "allow", "has media within the limits"),
        (MediaInfo("video/webm", 10, "mxc://s/a"), "reject", "has media of type video/webm, which is not accepted (accepted: image/*, video/mp4)"),
        (MediaInfo(None, 10, "mxc://s/a"), "reject", "has media of type unknown, which is not accepted (accepted: image/*, video/mp4)"),
        (MediaInfo("image/png", 1001, "mxc://s/a"), "reject", "has a file of 1,001 bytes; the limit is 1,000 bytes"),
    ],
)  # fmt: skip
async def test_media_hook(media: MediaInfo | None, action: str, reason: str) -> None:
    hook = MediaHook(one({"type": "media", "max_bytes": 1000, "types": ["image/*", "video/mp4"]}))
    verdict = await hook.check(post("file", media=media))
    assert (verdict.action, verdict.reason) == (action, reason)


async def test_rate_hook_counts_per_channel_in_a_sliding_window() -> None:
    now = [1000.0]
    hook = RateHook(one({"type": "rate", "posts": 2, "per_seconds": 60}), clock=lambda: now[0])

    first = await hook.check(post(channel_id=1))
    now[0] += 10
    second = await hook.check(post(channel_id=1))
    third = await hook.check(post(channel_id=1))
    other_channel = await hook.check(post(channel_id=2))
    now[0] += 50  # the first post leaves the window
    fourth = await hook.check(post(channel_id=1))
    fifth = await hook.check(post(channel_id=1))

    assert [v.action for v in (first, second, third, other_channel, fourth, fifth)] == [
        "allow", "allow", "reject", "allow", "allow", "reject",
    ]  # fmt: skip
    assert third.reason == (
        "the channel already published 2 posts in the last 60 seconds, the limit; "
        "the next may follow in 50 seconds"
    )
    assert third.category == "spam"


# Webhook signing and answers


def test_standard_webhooks_test_vector() -> None:
    key = decode_secret(VECTOR_SECRET)
    assert sign(key, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_PAYLOAD) == VECTOR_SIGNATURE
    assert verify(key, VECTOR_ID, str(VECTOR_TIMESTAMP), VECTOR_PAYLOAD, f"v1,bogus {VECTOR_SIGNATURE}")
    assert not verify(key, VECTOR_ID, str(VECTOR_TIMESTAMP + 1), VECTOR_PAYLOAD, VECTOR_SIGNATURE)
    assert not verify(key, VECTOR_ID, str(VECTOR_TIMESTAMP), b'{"test": 2432232315}', VECTOR_SIGNATURE)


def test_the_secret_prefix_is_optional() -> None:
    assert decode_secret(VECTOR_SECRET.removeprefix("whsec_")) == decode_secret(VECTOR_SECRET)


@pytest.mark.parametrize(
    ("raw", "answer"),
    [
        (b'{"action": "allow"}', Answer("allow", None, None)),
        (b'{"action": "hold", "category": "spam", "reason": " looks like spam "}', Answer("hold", "spam", "looks like spam")),
        ('{"action": "reject", "reason": "نه"}'.encode(), Answer("reject", None, "نه")),
    ],
)  # fmt: skip
def test_webhook_answers(raw: bytes, answer: Answer) -> None:
    assert parse_answer(raw) == answer


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"<html>", "sent an answer that is not JSON"),
        (b"\xff\xfe", "sent an answer that is not JSON"),
        (b'["allow"]', "sent an answer without an action"),
        (b'{"action": "ALLOW"}', "sent an answer without an action"),
        (b'{"action": "hold", "category": 5}', "sent a category that is not a lower-case word"),
        (b'{"action": "hold", "reason": ["x"]}', "sent a reason that is not text"),
    ],
)
def test_webhook_answers_not_understood(raw: bytes, reason: str) -> None:
    with pytest.raises(WebhookFailure, match=reason):
        parse_answer(raw)


# The pipeline


class Recording:
    """A hook that gives a fixed verdict and counts its calls."""

    def __init__(self, name: str, action: str = "allow") -> None:
        self.name = name
        self.action = action
        self.calls = 0

    async def check(self, post: PostInfo) -> Verdict:
        self.calls += 1
        return Verdict(self.action, self.name, "none" if self.action == "allow" else "spam", "recorded")


class Exploding:
    name = "exploding"

    async def check(self, post: PostInfo) -> Verdict:
        raise RuntimeError("bug")


async def test_pipeline_stops_at_the_first_verdict_that_is_not_allow(tmp_path: Path) -> None:
    pipeline = Pipeline(config(tmp_path, []))
    hooks = [Recording("a"), Recording("b", "hold"), Recording("c", "reject")]
    pipeline._hooks = tuple(hooks)

    verdicts = await pipeline.check(post())

    assert [(v.hook, v.action) for v in verdicts] == [("a", "allow"), ("b", "hold")]
    assert hooks[2].calls == 0
    assert outcome(verdicts) == verdicts[1]


async def test_pipeline_without_hooks_allows_everything(tmp_path: Path) -> None:
    pipeline = Pipeline(config(tmp_path, []))
    verdicts = await pipeline.check(post())
    assert verdicts == []
    assert outcome(verdicts) is None
    await pipeline.close()


async def test_a_hook_that_raises_holds_the_post(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pipeline = Pipeline(config(tmp_path, []))
    pipeline._hooks = (Recording("a"), Exploding(), Recording("c"))

    verdicts = await pipeline.check(post())

    assert [(v.hook, v.action, v.category) for v in verdicts] == [
        ("a", "allow", "none"),
        ("exploding", "hold", "other"),
    ]
    assert "compliance hook exploding failed" in caplog.text


async def test_built_in_hooks_run_in_the_configured_order(tmp_path: Path) -> None:
    pipeline = Pipeline(
        config(
            tmp_path,
            [
                {"type": "media", "types": ["image/*"]},
                {"type": "links", "deny": ["evil.example"], "name": "bad-links"},
                {"type": "terms", "terms": ["spam"]},
                {"type": "rate", "posts": 100, "per_seconds": 60},
            ],
        )
    )

    clean = await pipeline.check(post("hello"))
    linked = await pipeline.check(post("spam at evil.example"))

    assert [v.hook for v in clean] == ["media", "bad-links", "terms", "rate"]
    assert all(v.action == "allow" for v in clean)
    assert [(v.hook, v.action) for v in linked] == [("media", "allow"), ("bad-links", "hold")]


async def test_channel_hooks_replace_the_deployment_list(tmp_path: Path) -> None:
    pipeline = Pipeline(
        config(
            tmp_path,
            [{"type": "terms", "terms": ["spam"]}],
            {"Sport": [{"type": "terms", "terms": ["goal"], "action": "reject"}]},
        )
    )

    news = await pipeline.check(post("spam goal", handle="news"))
    sport = await pipeline.check(post("spam goal", handle="sport"))

    assert outcome(news) == Verdict("hold", "terms", "other", "contains the listed term 'spam'")
    assert outcome(sport) == Verdict("reject", "terms", "other", "contains the listed term 'goal'")
    assert pipeline.hooks_for("SPORT") == pipeline.hooks_for("sport")


def test_hooks_are_built_once(tmp_path: Path) -> None:
    pipeline = Pipeline(config(tmp_path, [{"type": "terms", "terms": ["spam"]}, WEBHOOK]))
    first, second = pipeline.hooks_for("news"), pipeline.hooks_for("news")
    assert [type(h) for h in first] == [TermsHook, WebhookHook]
    assert all(a is b for a, b in zip(first, second, strict=True))


def test_scoped_webhooks_are_left_out_for_other_channels(tmp_path: Path) -> None:
    pipeline = Pipeline(
        config(
            tmp_path,
            [{"type": "terms", "terms": ["spam"]}, dict(WEBHOOK, channels=["news"])],
            {"sport": [dict(WEBHOOK, channels=["news"])]},
        )
    )
    assert [h.name for h in pipeline.hooks_for("news")] == ["terms", "webhook:modsvc"]
    assert [h.name for h in pipeline.hooks_for("weather")] == ["terms"]
    assert [h.name for h in pipeline.hooks_for("sport")] == []


def test_a_verdict_needs_a_known_action() -> None:
    with pytest.raises(ValueError, match="allow, hold, reject"):
        Verdict("block", "terms", "spam", "no")
