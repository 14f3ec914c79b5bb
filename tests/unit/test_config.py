"""The operator's config file: one good file, and every way it can be wrong, each naming file and key."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.runtime.config import (
    DEFAULT_LISTEN,
    DEFAULT_REDRESS,
    ComplianceConfig,
    Config,
    ConfigError,
    load,
    parse,
    parse_listen,
    resolve_database_url,
)

AS_TOKEN = "as-token-0123456789abcdef"
HS_TOKEN = "hs-token-0123456789abcdef"


def good() -> dict[str, Any]:
    return {
        "homeserver": {"url": "https://matrix.example.org/", "domain": "example.org"},
        "appservice": {"as_token": AS_TOKEN, "hs_token": HS_TOKEN},
    }


def with_value(dotted: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(good())
    section, key = dotted.split(".")
    data.setdefault(section, {})[key] = value
    return data


def write(folder: Path, data: Any, name: str = "config.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def load_error(folder: Path, data: Any) -> tuple[Path, str]:
    path = write(folder, data)
    with pytest.raises(ConfigError) as caught:
        load(path)
    return path, str(caught.value)


# --- a good file ----------------------------------------------------------------------------------


def test_minimal_config_gets_the_documented_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, good())

    config = load(path)

    assert config == Config(
        path=path.resolve(),
        domain="example.org",
        homeserver_url="https://matrix.example.org",
        as_id="kanal",
        as_token=AS_TOKEN,
        hs_token=HS_TOKEN,
        listen_host="127.0.0.1",
        listen_port=29340,
        as_url="http://127.0.0.1:29340",
        registration_path=None,
        bot_localpart="kanal",
        ghost_prefix="kanal_",
        database_url=f"sqlite+aiosqlite:///{tmp_path.resolve() / 'kanal.db'}",
        creation_policy="open",
        default_language="en",
        log_level="INFO",
        log_format="text",
        compliance=ComplianceConfig(
            audit_key=(tmp_path / "audit-ed25519.key").resolve(),
            redress=DEFAULT_REDRESS.replace("{days}", "14"),
        ),
        encryption_store_key=(tmp_path / "e2ee-store.key").resolve(),
    )
    assert config.bot_user_id == "@kanal:example.org"


def test_full_config(tmp_path: Path) -> None:
    data = {
        "homeserver": {"url": "http://synapse:8008", "domain": "chat.example.ir", "ping_interval": 5},
        "appservice": {
            "id": "channels",
            "as_token": AS_TOKEN,
            "hs_token": HS_TOKEN,
            "listen": "192.0.2.10:9000",
            "url": "http://kanal:9000",
            "registration": "reg/registration.yaml",
            "bot_localpart": "channels",
            "ghost_prefix": "ch_",
        },
        "database": {
            "url": "postgresql://kanal:secret@db/kanal",
            "inbound_retention_days": 30,
            "outbox_retention_days": 1,
        },
        "channels": {"creation_policy": "open", "default_language": "fa"},
        "logging": {"level": "debug", "format": "json"},
    }

    config = load(write(tmp_path, data))

    assert config.as_id == "channels"
    assert (config.listen_host, config.listen_port) == ("192.0.2.10", 9000)
    assert config.as_url == "http://kanal:9000"
    assert config.ping_interval_s == 5
    assert config.registration_path == (tmp_path / "reg" / "registration.yaml").resolve()
    assert config.bot_user_id == "@channels:chat.example.ir"
    assert config.ghost_prefix == "ch_"
    assert config.database_url == "postgresql+asyncpg://kanal:secret@db/kanal"
    assert (config.inbound_retention_days, config.outbox_retention_days) == (30, 1)
    assert config.default_language == "fa"
    assert config.log_level == "DEBUG"
    assert config.log_format == "json"


def test_empty_optional_sections_are_allowed(tmp_path: Path) -> None:
    data = {**good(), "database": None, "channels": {}, "logging": None}

    assert load(write(tmp_path, data)).log_level == "INFO"


@pytest.mark.parametrize(
    "dotted",
    [
        "appservice.id",
        "appservice.listen",
        "appservice.url",
        "appservice.registration",
        "appservice.bot_localpart",
        "appservice.ghost_prefix",
        "database.url",
        "channels.creation_policy",
        "channels.default_language",
        "logging.level",
        "logging.format",
    ],
)
def test_null_optional_values_take_their_defaults(tmp_path: Path, dotted: str) -> None:
    # `listen:` with nothing after it (e.g. a value commented out) is null in YAML.
    expected = load(write(tmp_path, good(), name="defaults.yaml"))

    config = load(write(tmp_path, with_value(dotted, None), name="defaults.yaml"))

    assert config == expected


def test_as_url_follows_the_listen_address(tmp_path: Path) -> None:
    config = load(write(tmp_path, with_value("appservice.listen", "10.0.0.5:8080")))

    assert config.as_url == "http://10.0.0.5:8080"


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load(write(tmp_path, good()))

    with pytest.raises(AttributeError):
        config.domain = "other.org"  # type: ignore[misc]


def test_loading_never_rewrites_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    text = "# operator's notes\n" + yaml.safe_dump(good())
    path.write_text(text)

    load(path)

    assert path.read_text() == text


# --- database urls --------------------------------------------------------------------------------


def test_relative_sqlite_path_resolves_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc" / "kanal"
    folder.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # somewhere else entirely

    config = load(write(folder, with_value("database.url", "sqlite:///data/kanal.db")))

    assert config.database_url == f"sqlite+aiosqlite:///{folder.resolve() / 'data' / 'kanal.db'}"


def test_config_path_given_relatively_still_resolves_against_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    write(folder, with_value("appservice.registration", "registration.yaml"))
    monkeypatch.chdir(tmp_path)

    config = load(Path("conf/config.yaml"))

    assert config.registration_path == (folder / "registration.yaml").resolve()
    assert config.database_url == f"sqlite+aiosqlite:///{(folder / 'kanal.db').resolve()}"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:////var/lib/kanal/kanal.db", "sqlite+aiosqlite:////var/lib/kanal/kanal.db"),
        ("sqlite+aiosqlite:////var/lib/kanal.db", "sqlite+aiosqlite:////var/lib/kanal.db"),
        ("sqlite:///:memory:", "sqlite+aiosqlite:///:memory:"),
        ("sqlite+aiosqlite:///rel.db", "sqlite+aiosqlite:///{base}/rel.db"),
        ("postgres://u:p@db:5432/kanal", "postgresql+asyncpg://u:p@db:5432/kanal"),
        ("postgresql://u@db/kanal", "postgresql+asyncpg://u@db/kanal"),
        ("postgresql+asyncpg://u@db/kanal", "postgresql+asyncpg://u@db/kanal"),
    ],
)
def test_resolve_database_url(tmp_path: Path, url: str, expected: str) -> None:
    assert resolve_database_url(url, tmp_path) == expected.format(base=tmp_path.resolve())


# --- listen ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:29340", ("127.0.0.1", 29340)),
        ("localhost:1", ("localhost", 1)),
        ("[::1]:8080", ("::1", 8080)),
        ("192.0.2.10:65535", ("192.0.2.10", 65535)),
    ],
)
def test_parse_listen(value: str, expected: tuple[str, int]) -> None:
    assert parse_listen(value, "where") == expected


@pytest.mark.parametrize(
    "value",
    ["29340", ":29340", "localhost", "localhost:", "localhost:0", "localhost:65536", "host:http", "host:-1"],
)
def test_bad_listen(tmp_path: Path, value: str) -> None:
    path, message = load_error(tmp_path, with_value("appservice.listen", value))

    assert message.startswith(f"{path}: 'appservice.listen'")
    assert repr(value) in message
    assert DEFAULT_LISTEN in message  # shows what is expected


# --- errors, each naming the file and the key -----------------------------------------------------


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, {**good(), "homserver": {}})

    assert message.startswith(f"{path}: unknown key 'homserver'")
    assert "homeserver" in message  # lists the known keys


def test_unknown_nested_key(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, with_value("appservice.hs_tokn", "x"))

    assert message.startswith(f"{path}: unknown key 'appservice.hs_tokn'")
    assert "hs_token" in message


def test_section_that_is_not_a_mapping(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, {**good(), "logging": "debug"})

    assert message == f"{path}: 'logging' must be a mapping"


@pytest.mark.parametrize("top", [[], "text", 5])
def test_top_level_that_is_not_a_mapping(tmp_path: Path, top: Any) -> None:
    path, message = load_error(tmp_path, top)

    assert message.startswith(f"{path}: expected a YAML mapping")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("")

    with pytest.raises(ConfigError, match=re.escape(f"{path.resolve()}: expected a YAML mapping")):
        load(path)


@pytest.mark.parametrize(
    ("dotted", "value", "type_name"),
    [
        ("homeserver.url", 8008, "int"),
        ("homeserver.domain", ["example.org"], "list"),
        ("appservice.as_token", 1234567890123456789, "int"),
        ("appservice.listen", 29340, "int"),
        ("appservice.id", True, "bool"),
        ("database.url", {"path": "x"}, "dict"),
        ("logging.level", 10, "int"),
        ("channels.default_language", False, "bool"),
    ],
)
def test_wrong_type(tmp_path: Path, dotted: str, value: Any, type_name: str) -> None:
    path, message = load_error(tmp_path, with_value(dotted, value))

    assert message == f"{path}: '{dotted}' must be a string, got {type_name}"


@pytest.mark.parametrize(
    "dotted", ["homeserver.url", "homeserver.domain", "appservice.as_token", "appservice.hs_token"]
)
def test_missing_required_key(tmp_path: Path, dotted: str) -> None:
    data = good()
    section, key = dotted.split(".")
    del data[section][key]

    path, message = load_error(tmp_path, data)

    assert message == f"{path}: '{dotted}' is required (a string)"


def test_missing_required_section(tmp_path: Path) -> None:
    data = good()
    del data["appservice"]

    path, message = load_error(tmp_path, data)

    assert message.startswith(f"{path}: 'appservice.as_token' is required")


@pytest.mark.parametrize("key", ["as_token", "hs_token"])
def test_too_short_token(tmp_path: Path, key: str) -> None:
    path, message = load_error(tmp_path, with_value(f"appservice.{key}", "x" * 15))

    assert message == f"{path}: 'appservice.{key}' is too short (at least 16 characters)"


def test_sixteen_character_tokens_are_enough(tmp_path: Path) -> None:
    data = with_value("appservice.as_token", "a" * 16)
    data["appservice"]["hs_token"] = "b" * 16

    assert load(write(tmp_path, data)).as_token == "a" * 16


def test_same_tokens(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, with_value("appservice.hs_token", AS_TOKEN))

    assert message == f"{path}: 'appservice.as_token' and 'appservice.hs_token' must differ"


@pytest.mark.parametrize("url", ["matrix.example.org", "ftp://matrix.example.org"])
def test_homeserver_url_needs_a_scheme(tmp_path: Path, url: str) -> None:
    path, message = load_error(tmp_path, with_value("homeserver.url", url))

    assert message.startswith(f"{path}: 'homeserver.url' must start with http:// or https://")


def test_empty_homeserver_url(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, with_value("homeserver.url", ""))

    assert message.startswith(f"{path}: 'homeserver.url'")


@pytest.mark.parametrize("level", ["TRACE", "verbose", "", "CRITICAL"])
def test_bad_log_level(tmp_path: Path, level: str) -> None:
    path, message = load_error(tmp_path, with_value("logging.level", level))

    assert message.startswith(f"{path}: 'logging.level' must be DEBUG, INFO, WARNING or ERROR")


@pytest.mark.parametrize("level", ["debug", "Info", "WARNING", "error"])
def test_log_level_is_case_insensitive(tmp_path: Path, level: str) -> None:
    assert load(write(tmp_path, with_value("logging.level", level))).log_level == level.upper()


def test_bad_log_format(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, with_value("logging.format", "xml"))

    assert message.startswith(f"{path}: 'logging.format' must be text or json")


def test_bad_language(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, with_value("channels.default_language", "de"))

    assert message.startswith(f"{path}: 'channels.default_language' must be one of")
    assert "'de'" in message


def test_bad_creation_policy(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, with_value("channels.creation_policy", "closed"))

    assert message.startswith(f"{path}: 'channels.creation_policy' must be one of")


@pytest.mark.parametrize("key", ["bot_localpart", "ghost_prefix"])
@pytest.mark.parametrize("value", ["Kanal", "kanal bot", "kanal:", "", "ک"])
def test_bad_localparts(tmp_path: Path, key: str, value: str) -> None:
    path, message = load_error(tmp_path, with_value(f"appservice.{key}", value))

    assert message.startswith(f"{path}: 'appservice.{key}' must use only")


@pytest.mark.parametrize("key", ["bot_localpart", "ghost_prefix"])
def test_localparts_with_a_trailing_newline_are_refused(tmp_path: Path, key: str) -> None:
    path, message = load_error(tmp_path, with_value(f"appservice.{key}", "kanal_\n"))

    assert message.startswith(f"{path}: 'appservice.{key}'")


def test_empty_domain_is_refused(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, with_value("homeserver.domain", ""))

    assert message.startswith(f"{path}: 'homeserver.domain'")


# --- the file itself ------------------------------------------------------------------------------


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("homeserver:\n  url: http://x\n  domain: [example.org\nappservice: {}\n")

    with pytest.raises(ConfigError) as caught:
        load(path)

    message = str(caught.value)
    assert message.startswith(f"{path}: not valid YAML at line ")
    line = int(re.search(r"at line (\d+)", message).group(1))  # type: ignore[union-attr]
    assert line in (3, 4)


def test_bad_indentation_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("homeserver:\n  url: http://x\n domain: example.org\n")

    with pytest.raises(ConfigError, match=re.escape(f"{path}: not valid YAML at line 3")):
        load(path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"

    with pytest.raises(ConfigError, match=re.escape(f"{path}: no such file")) as caught:
        load(path)

    assert "kanal init" in str(caught.value)


def test_a_directory_is_not_readable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path}: cannot read the file")):
        load(tmp_path)


def test_a_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"homeserver:\n  domain: \xe9xample.org\n")

    with pytest.raises(ConfigError, match=re.escape(f"{path}: the file is not UTF-8 text")):
        load(path)


def test_python_tags_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("homeserver: !!python/object/apply:os.getcwd []\n")

    with pytest.raises(ConfigError, match="not valid YAML"):
        load(path)


def test_parse_uses_the_path_it_is_given() -> None:
    with pytest.raises(ConfigError, match=re.escape("/srv/kanal/config.yaml: unknown key 'x'")):
        parse({"x": 1}, Path("/srv/kanal/config.yaml"))


# --- each section's checks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dotted", "value", "expected"),
    [
        ("channels.max_channels_per_user", -1, "'channels.max_channels_per_user' must be at least 0, got -1"),
        ("channels.rename_grace_days", -1, "'channels.rename_grace_days' must be at least 0, got -1"),
        ("channels.handle_cooldown_days", -1, "'channels.handle_cooldown_days' must be at least 0, got -1"),
        ("channels.title_max_length", 0, "'channels.title_max_length' must be at least 1, got 0"),
        ("channels.views_edit_interval", -1, "'channels.views_edit_interval' must be at least 0, got -1"),
        (
            "channels.max_channels_per_user",
            True,
            "'channels.max_channels_per_user' must be an integer, got bool",
        ),
        ("channels.reserved_handles", "admin", "'channels.reserved_handles' must be a list, got str"),
        (
            "channels.handle_pattern",
            "[a-z]*",
            "'channels.handle_pattern' must not match an empty handle, upper case, spaces or ':', '#', '@' "
            "(handles become aliases and user ids), got '[a-z]*'",
        ),
        (
            "channels.creation_policy",
            "approval",
            "'channels.creation_policy' is approval, but 'operators.users' is empty: "
            "list who reviews channel requests (Matrix ids such as @ops:example.org)",
        ),
        (
            "operators.users",
            ["ops"],
            "'operators.users' must hold Matrix user ids like @ops:example.org, got 'ops'",
        ),
        (
            "operators.users",
            ["@ops:example.org", ""],
            "'operators.users' must be a list of non-empty strings",
        ),
        (
            "hosting.federation",
            "none",
            "'hosting.federation' must be one of ('open', 'allowlist', 'closed'), got 'none'",
        ),
        (
            "hosting.federation",
            "allowlist",
            "'hosting.allowed_servers' must list at least one server when 'hosting.federation' is allowlist "
            "(Kanal's own server is always allowed)",
        ),
        ("hosting.retention_days", 0, "'hosting.retention_days' must be at least 1 (or left out), got 0"),
        ("homeserver.ping_interval", 0, "'homeserver.ping_interval' must be at least 1, got 0"),
        ("database.inbound_retention_days", 0, "'database.inbound_retention_days' must be at least 1, got 0"),
        ("database.outbox_retention_days", 0, "'database.outbox_retention_days' must be at least 1, got 0"),
        ("database.outbox_retention_days", "7d", "'database.outbox_retention_days' must be an integer, got str"),
        ("compliance.moderators", ["mods"], "'compliance.moderators' must hold Matrix user ids, got 'mods'"),
        ("compliance.appeal_window_days", 0, "'compliance.appeal_window_days' must be at least 1, got 0"),
        ("compliance.checkpoint_every", 0, "'compliance.checkpoint_every' must be at least 1, got 0"),
        ("compliance.report_poll_seconds", 4, "'compliance.report_poll_seconds' must be at least 5, got 4"),
        ("web.enabled", "yes", "'web.enabled' must be true or false, got str"),
        (
            "web.listen",
            "web",
            "'web.listen': expected HOST:PORT (for example 127.0.0.1:29340), got 'web'",
        ),
        (
            "web.listen",
            DEFAULT_LISTEN,
            "'web.listen' must differ from 'appservice.listen' (the web face is public)",
        ),
        (
            "web.public_url",
            "channels.example.org",
            "'web.public_url' must be an http(s) URL, got 'channels.example.org'",
        ),
        ("web.trusted_proxies", "127.0.0.1", "'web.trusted_proxies' must be a list, got str"),
        ("web.trusted_proxies", [""], "'web.trusted_proxies' must be a list of non-empty strings"),
        (
            "web.trusted_proxies",
            ["caddy"],
            "'web.trusted_proxies' must list IP addresses or networks such as 127.0.0.1 or 10.0.0.0/8 "
            "(no host names), got 'caddy': 'caddy' does not appear to be an IPv4 or IPv6 network",
        ),
        (
            "web.trusted_proxies",
            ["10.0.0.1/8"],
            "'web.trusted_proxies' must list IP addresses or networks such as 127.0.0.1 or 10.0.0.0/8 "
            "(no host names), got '10.0.0.1/8': 10.0.0.1/8 has host bits set",
        ),
    ],
)
def test_section_errors(tmp_path: Path, dotted: str, value: Any, expected: str) -> None:
    path, message = load_error(tmp_path, with_value(dotted, value))

    assert message == f"{path}: {expected}"


def test_invalid_handle_pattern(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, with_value("channels.handle_pattern", "("))

    assert message.startswith(f"{path}: 'channels.handle_pattern' is not a valid regular expression: ")


def test_without_a_web_section_there_is_no_web_face(tmp_path: Path) -> None:
    # Even on the address the web face would take, since it does not run.
    config = load(write(tmp_path, with_value("appservice.listen", "127.0.0.1:29341")))

    assert not config.web_enabled


def test_an_empty_web_section_enables_the_web_face_with_its_defaults(tmp_path: Path) -> None:
    config = load(write(tmp_path, {**good(), "web": None}))

    assert config.web_enabled
    assert (config.web_listen_host, config.web_listen_port) == ("127.0.0.1", 29341)
    assert config.web_public_url == "http://127.0.0.1:29341"


def test_trusted_proxies_default_to_loopback_and_take_addresses_and_networks(tmp_path: Path) -> None:
    default = load(write(tmp_path, {**good(), "web": None})).web_trusted_proxies
    assert [str(n) for n in default] == ["127.0.0.0/8", "::1/128"]
    data = with_value("web.trusted_proxies", ["10.0.0.0/8", "192.0.2.7", "fc00::/7"])
    assert [str(n) for n in load(write(tmp_path, data)).web_trusted_proxies] == [
        "10.0.0.0/8",
        "192.0.2.7/32",
        "fc00::/7",
    ]
    # An empty list trusts no peer: X-Forwarded-For is never read.
    assert load(write(tmp_path, with_value("web.trusted_proxies", []))).web_trusted_proxies == ()


def test_a_disabled_web_face_may_share_the_appservice_address(tmp_path: Path) -> None:
    data = with_value("web.listen", DEFAULT_LISTEN)
    data["web"]["enabled"] = False

    assert not load(write(tmp_path, data)).web_enabled


# --- several mistakes: always the same one is named -----------------------------------------------


def test_a_wrong_type_is_named_before_a_wrong_value(tmp_path: Path) -> None:
    data = with_value("homeserver.url", "ftp://matrix.example.org")
    data["logging"] = {"level": 10}

    path, message = load_error(tmp_path, data)

    assert message == f"{path}: 'logging.level' must be a string, got int"


@pytest.mark.parametrize(
    ("first", "then"),
    [
        (("channels.default_language", "de"), ("logging.level", "TRACE")),
        (("logging.format", "xml"), ("channels.title_max_length", 0)),
        (("channels.handle_pattern", "[a-z]*"), ("operators.users", ["ops"])),
        (("hosting.federation", "none"), ("compliance.appeal_window_days", 0)),
        (("compliance.checkpoint_every", 0), ("web.public_url", "x")),
        (("web.public_url", "x"), ("hosting.retention_days", 0)),
    ],
)
def test_mistakes_are_named_in_a_fixed_order(
    tmp_path: Path, first: tuple[str, Any], then: tuple[str, Any]
) -> None:
    data = with_value(*then)
    section, key = first[0].split(".")
    data.setdefault(section, {})[key] = first[1]

    path, message = load_error(tmp_path, data)

    assert message.startswith(f"{path}: '{first[0]}'")


# --- the state directory: where Kanal writes ---------------------------------------------------------


def _written_paths(config: Config) -> tuple[str, Path | None, Path]:
    return config.database_url, config.compliance.audit_key, config.writable_dir


def test_what_kanal_writes_goes_to_state_directory_not_beside_the_config(tmp_path: Path) -> None:
    etc, state = tmp_path / "etc", tmp_path / "var-lib"
    etc.mkdir()
    config = load(write(etc, with_value("state.directory", str(state))))
    assert _written_paths(config) == (
        f"sqlite+aiosqlite:///{state.resolve() / 'kanal.db'}",
        state.resolve() / "audit-ed25519.key",
        state.resolve(),
    )
    # What Kanal reads stays relative to the config file.
    data = with_value("state.directory", "../var-lib")
    data["appservice"]["registration"] = "registration.yaml"
    relative = load(write(etc, data))
    assert relative.writable_dir == state.resolve()
    assert relative.registration_path == (etc / "registration.yaml").resolve()


def test_systemd_state_directory_is_the_default_and_the_config_key_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    etc, state, other = tmp_path / "etc", tmp_path / "state", tmp_path / "other"
    etc.mkdir()
    monkeypatch.setenv("STATE_DIRECTORY", f"{state}:{other}")  # systemd: one per StateDirectory= entry
    config = load(write(etc, good()))
    assert _written_paths(config) == (
        f"sqlite+aiosqlite:///{state.resolve() / 'kanal.db'}",
        state.resolve() / "audit-ed25519.key",
        state.resolve(),
    )
    assert load(write(etc, with_value("state.directory", str(other)))).writable_dir == other.resolve()
    monkeypatch.delenv("STATE_DIRECTORY")
    assert load(write(etc, good())).writable_dir == etc.resolve()


def test_an_existing_database_and_key_beside_the_config_keep_being_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    etc, state = tmp_path / "etc", tmp_path / "state"
    etc.mkdir()
    (etc / "kanal.db").write_bytes(b"")
    (etc / "audit-ed25519.key").write_bytes(b"")
    monkeypatch.setenv("STATE_DIRECTORY", str(state))
    config = load(write(etc, good()))
    assert config.database_url == f"sqlite+aiosqlite:///{etc.resolve() / 'kanal.db'}"
    assert config.compliance.audit_key == etc.resolve() / "audit-ed25519.key"
    assert config.writable_dir == state.resolve()  # the media cache, which is only a cache, moves


def test_state_directory_must_be_a_string(tmp_path: Path) -> None:
    path, message = load_error(tmp_path, with_value("state.directory", 3))
    assert message == f"{path.resolve()}: 'state.directory' must be a string, got int"


def test_encryption_is_off_unless_enabled(tmp_path: Path) -> None:
    """Issue 17: `encryption.enabled` turns on the bot's part in end-to-end encryption; off by default."""
    assert load(write(tmp_path, good())).encryption_enabled is False
    assert load(write(tmp_path, with_value("encryption.enabled", True))).encryption_enabled is True
    _path, error = load_error(tmp_path, with_value("encryption.enabled", "yes"))
    assert "encryption" in error and "enabled" in error
