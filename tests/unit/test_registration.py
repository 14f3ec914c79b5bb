"""The registration file: generator, writer (0600) and validator, checked against the spec's schema."""

from __future__ import annotations

import dataclasses
import re
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from appservice.registration import (
    Namespace,
    Registration,
    RegistrationError,
    generate,
    load,
    new_token,
    parse,
    save,
)

SPEC_DEFINITIONS = Path(__file__).resolve().parents[1] / "matrix-spec" / "application-service" / "definitions"
PATH = Path("/etc/kanal/registration.yaml")


def kanal_registration(domain: str = "example.org") -> Registration:
    return generate(
        as_id="kanal",
        url="http://127.0.0.1:29340",
        domain=domain,
        sender_localpart="kanal",
        user_prefix="kanal_",
    )


def document(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": "kanal",
        "url": "http://127.0.0.1:29340",
        "as_token": "as-token-0123456789",
        "hs_token": "hs-token-0123456789",
        "sender_localpart": "kanal",
        "namespaces": {"users": [{"exclusive": True, "regex": "^@kanal_.+:example\\.org$"}]},
    }
    data.update(overrides)
    return data


# --- generate -------------------------------------------------------------------------------------


def test_generated_namespaces_are_anchored_and_escaped() -> None:
    registration = kanal_registration()

    assert [ns.regex for ns in registration.users] == [r"^@kanal:example\.org$", r"^@kanal_.+:example\.org$"]
    assert all(ns.exclusive for ns in registration.users)
    assert [ns.regex for ns in registration.aliases] == [r"^#.+:example\.org$"]
    assert registration.aliases[0].exclusive is False
    assert registration.rooms == ()


@pytest.mark.parametrize(
    "user_id",
    ["@kanal:example.org", "@kanal_news:example.org", "@kanal_a:example.org", "@kanal_news_2024:example.org"],
)
def test_our_users_match(user_id: str) -> None:
    assert kanal_registration().is_our_user(user_id)


@pytest.mark.parametrize(
    "user_id",
    [
        "@kanal_news:exampleXorg",  # the dot in the domain is literal
        "@kanal:exampleXorg",
        "@kanal_news:example.org.evil.com",  # anchored at the end
        "@kanal_news:example.orgx",
        "@kanal_:example.org",  # a ghost needs at least one character after the prefix
        "@kanalnews:example.org",  # not the ghost prefix
        "@kanal2:example.org",  # not the bot
        "@alice:example.org",
        "@alice_kanal_news:example.org",  # anchored at the start
        "x@kanal_news:example.org",
        "@kanal_news:other.org",
        "@KANAL_news:example.org",
    ],
)
def test_other_users_do_not_match(user_id: str) -> None:
    assert not kanal_registration().is_our_user(user_id)


def test_aliases_match_only_on_our_domain() -> None:
    registration = kanal_registration()

    assert registration.is_our_alias("#news:example.org")
    assert not registration.is_our_alias("#news:exampleXorg")
    assert not registration.is_our_alias("#news:other.org")
    assert not registration.is_our_alias("#:example.org")


def test_regex_metacharacters_in_the_prefix_and_domain_are_literal() -> None:
    registration = generate(
        as_id="kanal",
        url="http://localhost",
        domain="localhost:8448",
        sender_localpart="bot.x",
        user_prefix="k+.",
        alias_prefix="ch.",
    )

    assert registration.is_our_user("@k+.news:localhost:8448")
    assert not registration.is_our_user("@kkkXnews:localhost:8448")
    assert registration.is_our_user("@bot.x:localhost:8448")
    assert not registration.is_our_user("@botyx:localhost:8448")
    assert registration.is_our_alias("#ch.news:localhost:8448")
    assert not registration.is_our_alias("#chXnews:localhost:8448")


def test_exclusive_aliases_can_be_asked_for() -> None:
    registration = generate(
        as_id="k",
        url="http://x",
        domain="d.org",
        sender_localpart="k",
        user_prefix="k_",
        exclusive_aliases=True,
    )

    assert registration.aliases[0].exclusive is True


def test_namespace_matches_from_the_start_like_synapse() -> None:
    assert Namespace("kanal", True).matches("kanal_news")
    assert not Namespace("kanal", True).matches("@kanal")


def test_tokens_are_fresh_long_and_different() -> None:
    first, second = kanal_registration(), kanal_registration()

    tokens = {first.as_token, first.hs_token, second.as_token, second.hs_token}
    assert len(tokens) == 4
    for token in tokens:
        assert len(token) >= 40
        assert re.fullmatch(r"[A-Za-z0-9_\-]+", token)  # URL- and YAML-safe
    assert len(new_token()) >= 40


# --- save / load ----------------------------------------------------------------------------------


def test_save_writes_an_owner_only_file(tmp_path: Path) -> None:
    path = tmp_path / "registration.yaml"

    save(kanal_registration(), path)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_save_tightens_the_mode_of_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "registration.yaml"
    path.write_text("old")
    path.chmod(0o644)

    save(kanal_registration(), path)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "old" not in path.read_text()


def test_save_then_load_gives_the_same_registration(tmp_path: Path) -> None:
    path = tmp_path / "registration.yaml"
    registration = kanal_registration()

    save(registration, path)

    assert load(path) == registration


def test_saved_file_sets_both_ephemeral_keys(tmp_path: Path) -> None:
    path = tmp_path / "registration.yaml"
    save(kanal_registration(), path)

    data = yaml.safe_load(path.read_text())

    assert data["receive_ephemeral"] is True
    assert data["de.sorunome.msc2409.push_ephemeral"] is True


def test_protocols_are_written_only_when_present() -> None:
    registration = kanal_registration()

    assert "protocols" not in registration.to_dict()
    with_protocols = dataclasses.replace(registration, protocols=("kanal",))
    assert with_protocols.to_dict()["protocols"] == ["kanal"]


# --- the spec's schema ----------------------------------------------------------------------------


def _schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((SPEC_DEFINITIONS / name).read_text())
    return loaded


def test_generated_registration_has_every_key_the_spec_requires() -> None:
    schema = _schema("registration.yaml")
    data = kanal_registration().to_dict()

    assert set(schema["required"]) <= set(data)
    for key, spec in schema["properties"].items():
        if key not in data:
            continue
        allowed = spec.get("type")
        allowed = allowed if isinstance(allowed, list) else [allowed]
        python_types = {"string": str, "boolean": bool, "object": dict, "array": list, "null": type(None)}
        if None not in allowed:
            assert isinstance(data[key], tuple(python_types[t] for t in allowed)), key
    item_required = _schema("namespace_list.yaml")["items"]["required"]
    for kind in ("users", "aliases", "rooms"):
        for item in data["namespaces"][kind]:
            assert set(item_required) <= set(item)


def test_generated_registration_validates_against_the_spec_json_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    referencing = pytest.importorskip("referencing")
    from referencing.jsonschema import DRAFT202012

    base = "https://spec.example/application-service/definitions/"
    registry = referencing.Registry().with_resources(
        (base + path.name, DRAFT202012.create_resource(_schema(path.name)))
        for path in SPEC_DEFINITIONS.glob("*.yaml")
    )
    schema = {**_schema("registration.yaml"), "$id": base + "registration.yaml"}
    validator = jsonschema.Draft202012Validator(schema, registry=registry)

    validator.validate(kanal_registration().to_dict())
    # The validator really follows the $ref into namespace_list.yaml:
    broken = kanal_registration().to_dict()
    broken["namespaces"]["users"][0]["exclusive"] = "yes"
    assert not validator.is_valid(broken)


# --- parse / load errors --------------------------------------------------------------------------


def test_parse_accepts_a_minimal_document() -> None:
    registration = parse(document(), PATH)

    assert registration.id == "kanal"
    assert registration.users == (Namespace("^@kanal_.+:example\\.org$", True),)
    assert registration.aliases == ()
    assert registration.rate_limited is True  # Synapse's default when absent
    assert registration.receive_ephemeral is False  # the spec's default when absent


def test_parse_reads_the_msc2409_ephemeral_key() -> None:
    assert parse(document(**{"de.sorunome.msc2409.push_ephemeral": True}), PATH).receive_ephemeral is True


def test_url_may_be_null() -> None:
    assert parse(document(url=None), PATH).url is None


@pytest.mark.parametrize("key", ["id", "as_token", "hs_token", "sender_localpart"])
@pytest.mark.parametrize("value", [None, "", 5, ["x"], True])
def test_required_string_keys(key: str, value: Any) -> None:
    with pytest.raises(RegistrationError) as caught:
        parse(document(**{key: value}), PATH)

    assert str(PATH) in str(caught.value)
    assert f"'{key}'" in str(caught.value)


@pytest.mark.parametrize("key", ["id", "as_token", "hs_token", "sender_localpart", "namespaces"])
def test_missing_required_keys(key: str) -> None:
    data = document()
    del data[key]

    with pytest.raises(RegistrationError, match=re.escape(f"{PATH}: '{key}'")):
        parse(data, PATH)


def test_url_of_the_wrong_type() -> None:
    with pytest.raises(RegistrationError, match=re.escape(f"{PATH}: 'url'")):
        parse(document(url=29340), PATH)


def test_same_as_and_hs_token() -> None:
    with pytest.raises(RegistrationError, match="'as_token' and 'hs_token' must differ") as caught:
        parse(document(as_token="same-token-123456", hs_token="same-token-123456"), PATH)

    assert str(PATH) in str(caught.value)


@pytest.mark.parametrize("top", [None, [], "id: kanal", 3])
def test_top_level_must_be_a_mapping(top: Any) -> None:
    with pytest.raises(RegistrationError, match=re.escape(f"{PATH}: expected a YAML mapping")):
        parse(top, PATH)


@pytest.mark.parametrize("namespaces", [None, [], "users"])
def test_namespaces_must_be_a_mapping(namespaces: Any) -> None:
    with pytest.raises(RegistrationError, match="'namespaces'"):
        parse(document(namespaces=namespaces), PATH)


@pytest.mark.parametrize(
    ("users", "where"),
    [
        ("^@kanal_.*", "namespaces.users"),
        ({"regex": "x", "exclusive": True}, "namespaces.users"),
        (["^@kanal_.*"], "namespaces.users[0]"),
        ([{"exclusive": True}], "namespaces.users[0]"),
        ([{"regex": 5, "exclusive": True}], "namespaces.users[0]"),
        ([{"regex": "^@a", "exclusive": True}, {"regex": "^@b"}], "namespaces.users[1].exclusive"),
        ([{"regex": "^@a", "exclusive": "true"}], "namespaces.users[0].exclusive"),
        ([{"regex": "^@kanal_(.*:example\\.org$", "exclusive": True}], "namespaces.users[0].regex"),
    ],
)
def test_bad_namespaces_name_the_entry(users: Any, where: str) -> None:
    with pytest.raises(RegistrationError) as caught:
        parse(document(namespaces={"users": users}), PATH)

    assert str(caught.value).startswith(f"{PATH}: {where}")


def test_bad_regex_says_so() -> None:
    with pytest.raises(RegistrationError, match="not a valid regular expression"):
        parse(document(namespaces={"aliases": [{"regex": "#[a-", "exclusive": False}]}), PATH)


def test_load_names_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"

    with pytest.raises(RegistrationError, match=re.escape(f"{path}: cannot read the registration file")):
        load(path)


def test_load_names_a_directory(tmp_path: Path) -> None:
    with pytest.raises(RegistrationError, match=re.escape(f"{tmp_path}: cannot read")):
        load(tmp_path)


def test_load_names_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "registration.yaml"
    path.write_bytes(b"id: kanal\nas_token: \xff\xfe\n")

    with pytest.raises(RegistrationError, match=re.escape(str(path))):
        load(path)


def test_load_names_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "registration.yaml"
    path.write_text("id: kanal\nnamespaces: {users: [\n")

    with pytest.raises(RegistrationError, match=re.escape(f"{path}: not valid YAML")):
        load(path)


def test_load_refuses_python_tags(tmp_path: Path) -> None:
    path = tmp_path / "registration.yaml"
    path.write_text("id: !!python/object/apply:os.getcwd []\n")

    with pytest.raises(RegistrationError, match="not valid YAML"):
        load(path)


def test_load_validates_what_it_read(tmp_path: Path) -> None:
    path = tmp_path / "registration.yaml"
    path.write_text(yaml.safe_dump(document(hs_token=None)))

    with pytest.raises(RegistrationError, match=re.escape(f"{path}: 'hs_token'")):
        load(path)


def test_protocols_that_are_not_a_list_are_refused_by_name() -> None:
    with pytest.raises(RegistrationError, match="'protocols'"):
        parse(document(protocols=5), PATH)


def test_protocols_as_a_string_is_refused() -> None:
    with pytest.raises(RegistrationError, match="'protocols'"):
        parse(document(protocols="irc"), PATH)


@pytest.mark.parametrize("key", ["rate_limited", "receive_ephemeral"])
def test_boolean_keys_refuse_strings(key: str) -> None:
    with pytest.raises(RegistrationError, match=f"'{key}'"):
        parse(document(**{key: "false"}), PATH)


def test_device_keys_opt_in_round_trips(tmp_path: Path) -> None:
    """Issue 17: `org.matrix.msc3202: true` asks Synapse for key counts and device lists; written only
    when Kanal's encryption is on, read back, and refused when not a boolean."""
    assert "org.matrix.msc3202" not in kanal_registration().to_dict()
    registration = dataclasses.replace(kanal_registration(), device_keys=True)
    assert registration.to_dict()["org.matrix.msc3202"] is True
    assert parse(document(**{"org.matrix.msc3202": True}), PATH).device_keys is True
    assert parse(document(), PATH).device_keys is False
    with pytest.raises(RegistrationError, match=r"org\.matrix\.msc3202"):
        parse(document(**{"org.matrix.msc3202": "yes"}), PATH)
