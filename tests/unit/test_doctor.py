"""`kanal doctor`'s pure parts: every homeserver.yaml check with good and bad settings, the reading of
the homeserver's answers, exit codes, output, and that tokens never appear in it."""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from appservice.errors import MatrixRequestError, error_from_response
from bridge.cli import build_parser
from bridge.ops.doctor import (
    EXIT_FAIL,
    EXIT_PASS,
    EXIT_WARN,
    Check,
    Status,
    bot_user_check,
    check_app_service_files,
    check_default_encryption,
    check_federation,
    check_identity_server,
    check_media,
    check_report_stats,
    check_room_publication,
    check_server_name,
    check_synapse_database,
    check_trusted_key_servers,
    database_failure,
    exit_code,
    homeserver_check,
    homeserver_config_checks,
    is_inside,
    kanal_database_check,
    ping_check,
    read_homeserver_config,
    redact,
    render_json,
    render_table,
    tokens_check,
)
from bridge.ops.synapse import LocalSynapse
from bridge.runtime.config import Config, parse

AS_TOKEN = "as-token-0123456789abcdef"
HS_TOKEN = "hs-token-0123456789abcdef"
REGISTRATION = "/srv/kanal/registration.yaml"


def config(federation: str = "open", allowed: tuple[str, ...] = (), **appservice: str) -> Config:
    hosting: dict[str, Any] = {"federation": federation}
    if allowed:
        hosting["allowed_servers"] = list(allowed)
    return parse(
        {
            "homeserver": {"url": "http://127.0.0.1:8008", "domain": "example.org"},
            "appservice": {
                "as_token": AS_TOKEN,
                "hs_token": HS_TOKEN,
                "registration": REGISTRATION,
                **appservice,
            },
            "hosting": hosting,
        },
        Path("/srv/kanal/config.yaml"),
    )


OPEN = config()
ALLOWLIST = config("allowlist", ("partner.example",))
CLOSED = config("closed")


def good_homeserver() -> dict[str, Any]:
    """A sovereign homeserver.yaml for example.org, as the doctor wants it."""
    return {
        "server_name": "example.org",
        "report_stats": False,
        "listeners": [{"port": 8008, "type": "http", "resources": [{"names": ["client"]}]}],
        "database": {"name": "psycopg2", "args": {"dsn": "dbname=synapse"}},
        "media_store_path": "/var/lib/synapse/media",
        "trusted_key_servers": [],
        "room_list_publication_rules": [{"action": "allow"}],
        "app_service_config_files": [REGISTRATION],
        "federation_domain_whitelist": [],
        # A full shard (channels.shard_size, 10,000 by default) in the per-member caches.
        "caches": {"per_cache_factors": {"get_push_rules_for_user": 2, "get_user_in_room_with_profile": 10}},
    }


def hs(**changes: Any) -> dict[str, Any]:
    data = good_homeserver()
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def test_a_sovereign_homeserver_passes_every_check_under_every_policy() -> None:
    for kanal, whitelist in ((OPEN, []), (ALLOWLIST, ["partner.example"]), (CLOSED, [])):
        checks = homeserver_config_checks(hs(federation_domain_whitelist=whitelist), kanal)
        assert [c.status for c in checks] == [Status.PASS] * len(checks), checks
    assert len(checks) == 11


@pytest.mark.parametrize(
    ("host", "inside"),
    [
        ("example.org", True),
        ("media.example.org", True),
        ("example.org:8448", True),
        ("partner.example", True),
        ("s3.partner.example", True),
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("::1", True),
        ("minio", True),
        ("minio.internal", True),
        ("matrix.org", False),
        ("notexample.org", False),
        ("example.org.evil.net", False),
        ("8.8.8.8", False),
        ("s3.amazonaws.com", False),
    ],
)
def test_what_counts_as_inside(host: str, inside: bool) -> None:
    assert is_inside(host, ALLOWLIST) is inside


def test_server_name() -> None:
    assert check_server_name(hs(), OPEN).status is Status.PASS
    bad = check_server_name(hs(server_name="other.org"), OPEN)
    assert bad.status is Status.FAIL and "other.org" in bad.detail and "homeserver.domain" in bad.fix


def test_app_service_config_files() -> None:
    assert check_app_service_files(hs(), OPEN).status is Status.PASS
    missing: list[str] | None
    for missing in (None, []):
        bad = check_app_service_files(hs(app_service_config_files=missing), OPEN)
        assert bad.status is Status.FAIL and "app_service_config_files" in bad.fix
    elsewhere = check_app_service_files(hs(app_service_config_files=["/data/other.yaml"]), OPEN)
    assert elsewhere.status is Status.WARN and "/data/other.yaml" in elsewhere.detail
    unset = parse(
        {
            "homeserver": {"url": "http://127.0.0.1:8008", "domain": "example.org"},
            "appservice": {"as_token": AS_TOKEN, "hs_token": HS_TOKEN},
        },
        Path("/srv/kanal/config.yaml"),
    )
    assert check_app_service_files(hs(), unset).status is Status.WARN


def test_trusted_key_servers_default_is_matrix_org() -> None:
    # Absent means Synapse's default, matrix.org: a foreign notary.
    for kanal, status in ((OPEN, Status.WARN), (ALLOWLIST, Status.FAIL), (CLOSED, Status.FAIL)):
        check = check_trusted_key_servers(hs(trusted_key_servers=None), kanal)
        assert check.status is status and "matrix.org" in check.detail
        assert "trusted_key_servers: []" in check.fix
    allowed = config("allowlist", ("matrix.org",))
    assert check_trusted_key_servers(hs(trusted_key_servers=None), allowed).status is Status.PASS


def test_trusted_key_servers_lists() -> None:
    def status(servers: Any, kanal: Config = ALLOWLIST) -> Status:
        return check_trusted_key_servers(hs(trusted_key_servers=servers), kanal).status

    assert status([]) is Status.PASS
    assert status([{"server_name": "partner.example"}, {"server_name": "example.org"}]) is Status.PASS
    assert status([{"server_name": "partner.example"}, {"server_name": "matrix.org"}]) is Status.FAIL
    assert status([{"server_name": "keys.elsewhere.net"}], OPEN) is Status.WARN
    assert status("matrix.org") is Status.FAIL  # Synapse refuses a non-list
    assert status([{"verify_keys": {}}]) is Status.FAIL
    legacy = hs(trusted_key_servers=None, perspectives={"servers": {"matrix.org": {}}})
    assert check_trusted_key_servers(legacy, ALLOWLIST).status is Status.FAIL


def test_report_stats() -> None:
    assert check_report_stats(hs(), OPEN).status is Status.PASS
    for value in (True, "yes"):
        bad = check_report_stats(hs(report_stats=value), OPEN)
        assert bad.status is Status.FAIL and bad.fix == "set report_stats: false"
    absent = check_report_stats(hs(report_stats=None), OPEN)
    assert absent.status is Status.FAIL and "not set" in absent.detail


def test_identity_server() -> None:
    assert check_identity_server(hs(), OPEN).status is Status.PASS
    assert (
        check_identity_server(hs(default_identity_server="https://id.example.org"), OPEN).status
        is Status.PASS
    )
    for changes in (
        {"default_identity_server": "https://vector.im"},
        {"trust_identity_server_for_password_resets": True},
        {"account_threepid_delegates": {"msisdn": "https://vector.im"}},
    ):
        bad = check_identity_server(hs(**changes), ALLOWLIST)
        assert bad.status is Status.WARN and next(iter(changes)) in bad.detail, changes
    inside = hs(account_threepid_delegates={"msisdn": "https://sydent.partner.example"})
    assert check_identity_server(inside, ALLOWLIST).status is Status.PASS


def test_federation_open_policy_passes_with_a_note() -> None:
    check = check_federation(hs(federation_domain_whitelist=None), OPEN)
    assert check.status is Status.PASS and "every server" in check.detail
    limited = check_federation(hs(federation_domain_whitelist=["a.example"]), OPEN)
    assert limited.status is Status.PASS and "only a.example" in limited.detail
    alone = check_federation(hs(federation_domain_whitelist=[]), OPEN)
    assert alone.status is Status.PASS and "no other server" in alone.detail


def test_federation_closed_policy() -> None:
    assert check_federation(hs(federation_domain_whitelist=[]), CLOSED).status is Status.PASS
    assert check_federation(hs(federation_domain_whitelist=["example.org"]), CLOSED).status is Status.PASS
    # No federation listener: nobody reaches in, but Synapse still reaches out.
    no_listener = check_federation(hs(federation_domain_whitelist=None), CLOSED)
    assert no_listener.status is Status.WARN and "federation_domain_whitelist: []" in no_listener.fix
    listeners = [{"port": 8448, "type": "http", "resources": [{"names": ["client", "federation"]}]}]
    open_door = check_federation(hs(federation_domain_whitelist=None, listeners=listeners), CLOSED)
    assert open_door.status is Status.FAIL and "every server" in open_door.detail
    some = check_federation(hs(federation_domain_whitelist=["partner.example"]), CLOSED)
    assert some.status is Status.FAIL and "partner.example" in some.detail


def test_federation_allowlist_policy() -> None:
    def check(whitelist: Any) -> Check:
        return check_federation(hs(federation_domain_whitelist=whitelist), ALLOWLIST)

    assert check(["partner.example"]).status is Status.PASS
    assert check(["partner.example", "example.org"]).status is Status.PASS
    unset = check(None)
    assert unset.status is Status.FAIL and "partner.example" in unset.fix
    extra = check(["partner.example", "evil.example"])
    assert extra.status is Status.FAIL and "evil.example" in extra.detail
    assert "partner.example" not in extra.detail
    missing = check([])
    assert missing.status is Status.WARN and "partner.example" in missing.detail
    assert check("partner.example").status is Status.FAIL  # not a list


def test_federation_whitelist_names_match_exactly_ports_included() -> None:
    """Synapse admits a server only if the whitelist has its exact name: `partner.example` is not
    `partner.example:8448` (server ACLs ignore the port; the whitelist does not)."""
    ported = config("allowlist", ("partner.example:8448",))
    bare = check_federation(hs(federation_domain_whitelist=["partner.example"]), ported)
    assert bare.status is Status.WARN, bare
    assert "lists partner.example:8448, which federation_domain_whitelist blocks" in bare.detail, bare
    assert "it lists partner.example: Synapse compares the whole server name, port included" in bare.detail
    assert "[example.org, partner.example:8448]" in bare.fix, bare
    exact = check_federation(hs(federation_domain_whitelist=["partner.example:8448"]), ported)
    assert exact.status is Status.PASS and "partner.example:8448" in exact.detail, exact
    # The other way round: Kanal names the server without a port, the whitelist with one.
    other = check_federation(hs(federation_domain_whitelist=["partner.example:8448"]), ALLOWLIST)
    assert other.status is Status.WARN and "it lists partner.example:8448" in other.detail, other
    # The suggestion keeps the port, and a port-bearing entry outside the policy is named as it is.
    unset = check_federation(hs(federation_domain_whitelist=None), ported)
    assert unset.status is Status.FAIL and "[example.org, partner.example:8448]" in unset.fix, unset
    leaky = hs(federation_domain_whitelist=["partner.example:8448", "evil.example:8448"])
    leak = check_federation(leaky, ported)
    assert leak.status is Status.FAIL and "also allows evil.example:8448" in leak.detail, leak


def test_federation_whitelist_cannot_express_wildcards() -> None:
    """`*.gov.example` in hosting.allowed_servers lets every such server through the ACL, but Synapse's
    whitelist takes exact names only: doctor warns in every form and says both ways out."""
    gov = config("allowlist", ("partner.example", "*.gov.example"))

    def check(whitelist: Any) -> Check:
        return check_federation(hs(federation_domain_whitelist=whitelist), gov)

    unset = check(None)  # a choice, not a failure: the ACLs still keep other servers out of the channels
    assert unset.status is Status.WARN, unset
    assert "wildcard entries (*.gov.example)" in unset.detail, unset
    assert "federates with every server" in unset.detail, unset
    assert "[example.org, partner.example]" in unset.fix, unset
    assert "leave federation_domain_whitelist unset" in unset.fix, unset
    literal = check(["partner.example", "*.gov.example"])  # was a pass: Synapse admits no `*.gov.example`
    assert literal.status is Status.WARN, literal
    assert "lists *.gov.example, but Synapse takes no wildcards: such an entry admits no server" in (
        literal.detail
    )
    missing = check(["partner.example"])
    assert missing.status is Status.WARN, missing
    assert "the homeserver refuses every server of it" in missing.detail, missing
    named = check(["partner.example", "a.gov.example"])  # only the named one gets through
    assert named.status is Status.WARN and "every server of it but a.gov.example" in named.detail, named
    leak = check(["partner.example", "a.gov.example", "evil.example"])
    assert leak.status is Status.FAIL and "also allows evil.example" in leak.detail, leak
    # A wildcard in the whitelist admits no server under any policy: a mistake, but no leak.
    star = check_federation(hs(federation_domain_whitelist=["*"]), CLOSED)
    assert star.status is Status.WARN and "lists *, but Synapse takes no wildcards" in star.detail, star


def test_media_local_and_inside_pass() -> None:
    assert check_media(hs(), OPEN).status is Status.PASS
    assert check_media(hs(media_store_path=None), OPEN).status is Status.PASS
    inside = [
        {
            "module": "s3_storage_provider.S3StorageProviderBackend",
            "store_local": True,
            "config": {"bucket": "media", "endpoint_url": "https://s3.partner.example"},
        },
        {
            "module": "synapse.media.storage_provider.FileStorageProviderBackend",
            "config": {"directory": "/mnt/backup"},
        },
        {
            "module": "s3_storage_provider.S3StorageProviderBackend",
            "config": {"endpoint_url": "http://minio:9000"},
        },
    ]
    assert check_media(hs(media_storage_providers=inside), ALLOWLIST).status is Status.PASS


def test_media_outside_fails_and_unknown_warns() -> None:
    s3 = "s3_storage_provider.S3StorageProviderBackend"
    aws = check_media(hs(media_storage_providers=[{"module": s3, "config": {"bucket": "media"}}]), ALLOWLIST)
    assert aws.status is Status.FAIL and "s3.amazonaws.com" in aws.detail
    elsewhere = [{"module": s3, "config": {"endpoint_url": "https://storage.cloud.example.com"}}]
    bad = check_media(hs(media_storage_providers=elsewhere), ALLOWLIST)
    assert bad.status is Status.FAIL and "storage.cloud.example.com" in bad.detail
    unknown = [{"module": "mystery.Backend", "config": {"bucket": "x"}}]
    assert check_media(hs(media_storage_providers=unknown), ALLOWLIST).status is Status.WARN
    assert check_media(hs(media_storage_providers="s3"), ALLOWLIST).status is Status.FAIL


@pytest.mark.parametrize(
    ("rules", "status"),
    [
        ([{"action": "allow"}], Status.PASS),
        ([{"user_id": "@kanal:example.org", "action": "allow"}, {"action": "deny"}], Status.PASS),
        ([{"user_id": "@kanal*", "action": "allow"}], Status.PASS),
        ([{"alias": "#*:example.org", "action": "allow"}], Status.PASS),
        ([{"user_id": "@admin:example.org", "action": "allow"}, {"action": "deny"}], Status.FAIL),
        ([{"user_id": "@admin:example.org", "action": "allow"}], Status.FAIL),  # no match denies
        ([{"action": "deny"}, {"action": "allow"}], Status.FAIL),  # the first match wins
        ([{"user_id": "@KANAL:example.org", "action": "deny"}, {"action": "allow"}], Status.FAIL),
        ([], Status.FAIL),
        (None, Status.FAIL),  # Synapse's default: nobody, admins included
        ([{"alias": "#news*", "action": "allow"}], Status.WARN),  # only some channels
        ([{"alias": "#news*", "action": "deny"}, {"action": "allow"}], Status.WARN),
        ([{"room_id": "!abc:example.org", "action": "allow"}], Status.WARN),
        ([{"alias": "#news:example.org", "action": "allow"}], Status.WARN),
        ([{"alias": "#*:other.org", "action": "deny"}, {"action": "allow"}], Status.PASS),
        ([{"alias": "#*:other.org", "action": "allow"}], Status.FAIL),
        ([{"action": "publish"}], Status.FAIL),
        ("allow", Status.FAIL),
    ],
)
def test_room_list_publication_rules(rules: Any, status: Status) -> None:
    check = check_room_publication(hs(room_list_publication_rules=rules), OPEN)
    assert check.status is status, check
    if status is not Status.PASS:
        assert "@kanal:example.org" in check.fix


def test_synapse_database() -> None:
    assert check_synapse_database(hs(), OPEN).status is Status.PASS
    sqlite: list[dict[str, Any]] = [
        {"database": {"name": "sqlite3"}},
        {"database": None},
        {"database": {"args": {}}},
    ]
    for changes in sqlite:
        bad = check_synapse_database(hs(**changes), OPEN)
        assert bad.status is Status.WARN and "psycopg2" in bad.fix, changes
    split = {"main": {"name": "psycopg2"}, "state": {"name": "psycopg2"}}
    assert check_synapse_database(hs(database=None, databases=split), OPEN).status is Status.PASS
    split["state"] = {"name": "sqlite3"}
    assert check_synapse_database(hs(database=None, databases=split), OPEN).status is Status.WARN
    assert check_synapse_database(hs(database={"name": "mysql"}), OPEN).status is Status.FAIL


@pytest.mark.parametrize("value", [None, "off", False])
def test_no_encryption_by_default_passes(value: Any) -> None:
    check = check_default_encryption(hs(encryption_enabled_by_default_for_room_type=value), OPEN)
    assert check.status is Status.PASS, check


def test_encryption_by_default_invite_fails_while_kanal_cannot_take_part() -> None:
    check = check_default_encryption(hs(encryption_enabled_by_default_for_room_type="invite"), OPEN)
    assert check.status is Status.FAIL
    assert "people's chats with the bot, the channels' backstage rooms" in check.detail
    assert "Kanal cannot take part in their encryption" in check.detail
    assert "encryption.enabled is not true in Kanal's config" in check.detail
    assert "experimental_features.msc3202_transaction_extensions is not true" in check.detail
    assert "set encryption.enabled: true" in check.fix
    assert "set encryption_enabled_by_default_for_room_type: off" in check.fix


ENCRYPTING = dataclasses.replace(OPEN, encryption_enabled=True, registration_path=None)
KEYS_FLAGS = {"msc2409_to_device_messages_enabled": True, "msc3202_transaction_extensions": True}


def test_encryption_by_default_invite_passes_when_kanal_takes_part() -> None:
    homeserver = hs(encryption_enabled_by_default_for_room_type="invite", experimental_features=KEYS_FLAGS)
    check = check_default_encryption(homeserver, ENCRYPTING)
    assert check.status is Status.PASS, check
    assert "Kanal's bot takes part in their encryption" in check.detail


def test_encryption_by_default_all_always_fails() -> None:
    homeserver = hs(encryption_enabled_by_default_for_room_type="all", experimental_features=KEYS_FLAGS)
    check = check_default_encryption(homeserver, ENCRYPTING)
    assert check.status is Status.FAIL
    assert "the channels and their discussion rooms too" in check.detail
    assert "public_chat preset" in check.detail and "does not scale" in check.detail
    assert "set encryption_enabled_by_default_for_room_type: invite" in check.fix


def test_kanal_encryption_without_the_homeserver_extensions_fails() -> None:
    check = check_default_encryption(hs(encryption_enabled_by_default_for_room_type="off"), ENCRYPTING)
    assert check.status is Status.FAIL
    assert "msc2409_to_device_messages_enabled is not true" in check.detail


def test_the_synapse_kanal_starts_never_encrypts_rooms_by_default(tmp_path: Path) -> None:
    # `kanal up` (scripts/up) and the tests: said explicitly, so no Synapse default can change it.
    homeserver = LocalSynapse(tmp_path / "synapse").config()
    assert homeserver["encryption_enabled_by_default_for_room_type"] == "off"
    assert check_default_encryption(homeserver, OPEN).status is Status.PASS


@pytest.mark.parametrize("value", ["yes", True, ["invite"], 1])
def test_a_malformed_encryption_default_fails(value: Any) -> None:
    check = check_default_encryption(hs(encryption_enabled_by_default_for_room_type=value), OPEN)
    assert check.status is Status.FAIL and "Synapse refuses to start" in check.detail


def test_reading_the_homeserver_config(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    data, check = read_homeserver_config(missing)
    assert data is None and check.status is Status.FAIL and str(missing) in check.detail
    broken = tmp_path / "broken.yaml"
    broken.write_text("server_name: [unclosed\n")
    data, check = read_homeserver_config(broken)
    assert data is None and check.status is Status.FAIL and "not valid YAML at line" in check.detail
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just text\n")
    assert read_homeserver_config(scalar)[1].status is Status.FAIL
    good = tmp_path / "homeserver.yaml"
    good.write_text("server_name: example.org\nreport_stats: false\n")
    data, check = read_homeserver_config(good)
    assert data == {"server_name": "example.org", "report_stats": False} and check.status is Status.PASS


def test_reading_the_homeserver_answers() -> None:
    versions = {"versions": ["r0.6.1", "v1.1", "v1.10", "v1.7"]}
    url = "http://hs"
    synapse = homeserver_check(url, versions, "Synapse/1.163.2 (b=main,a750fd2)", None)
    assert synapse.status is Status.PASS and "Synapse 1.163.2" in synapse.detail and "v1.10" in synapse.detail
    conduit = homeserver_check(url, versions, "nginx", {"server": {"name": "Conduit", "version": "0.9"}})
    assert conduit.status is Status.PASS and "Conduit 0.9" in conduit.detail
    assert homeserver_check(url, versions, "nginx", None).status is Status.WARN
    old = homeserver_check(url, {"versions": ["r0.6.1", "v1.1"]}, "Synapse/1.60.0", None)
    assert old.status is Status.WARN and "v1.7" in old.detail
    assert homeserver_check(url, None, None, None).status is Status.FAIL
    assert homeserver_check(url, {"error": "x"}, "Synapse/1.163.2", None).status is Status.FAIL


def error(http_status: int, errcode: str, message: str = "", **extra: Any) -> MatrixRequestError:
    return error_from_response(http_status, {"errcode": errcode, "error": message, **extra})


def test_reading_whoami() -> None:
    assert bot_user_check(OPEN, "@kanal:example.org", None).status is Status.PASS
    for status, errcode in ((401, "M_UNKNOWN_TOKEN"), (403, "M_FORBIDDEN")):
        bad = bot_user_check(OPEN, None, error(status, errcode))
        assert bad.status is Status.FAIL and "app_service_config_files" in bad.fix and "restart" in bad.fix
    other = bot_user_check(OPEN, "@bridge:example.org", None)
    assert other.status is Status.FAIL and "@bridge:example.org" in other.detail


def test_reading_the_ping() -> None:
    assert ping_check(OPEN, None, 12).status is Status.PASS
    # The homeserver knows the registration and tried to reach Kanal: Kanal is merely down.
    down = ping_check(OPEN, error(502, "M_CONNECTION_FAILED", "ConnectionRefusedError"))
    assert down.status is Status.WARN and "registration is loaded" in down.detail and "kanal run" in down.fix
    assert ping_check(OPEN, error(504, "M_CONNECTION_TIMEOUT", "timed out")).status is Status.WARN
    wrong_hs_token = ping_check(OPEN, error(502, "M_BAD_STATUS", "HTTP 403", status=403))
    assert wrong_hs_token.status is Status.FAIL and "hs_token" in wrong_hs_token.detail
    assert ping_check(OPEN, error(502, "M_BAD_STATUS", "HTTP 500", status=500)).status is Status.WARN
    for status, errcode in ((401, "M_UNKNOWN_TOKEN"), (403, "M_FORBIDDEN")):
        bad = ping_check(OPEN, error(status, errcode, "Invalid access token passed."))
        assert bad.status is Status.FAIL and "app_service_config_files" in bad.fix
    other_id = ping_check(OPEN, error(403, "M_FORBIDDEN", "Mismatching application service ID in path"))
    assert other_id.status is Status.FAIL and "appservice.id" in other_id.fix
    assert ping_check(OPEN, error(400, "M_URL_NOT_SET")).status is Status.FAIL


def write_registration(folder: Path, as_token: str = AS_TOKEN, as_id: str = "kanal") -> Config:
    registration = folder / "registration.yaml"
    registration.write_text(
        json.dumps(
            {
                "id": as_id,
                "url": "http://127.0.0.1:29340",
                "as_token": as_token,
                "hs_token": HS_TOKEN,
                "sender_localpart": "kanal",
                "namespaces": {"users": [], "aliases": [], "rooms": []},
            }
        )
    )
    return config(registration=str(registration))


def test_tokens(tmp_path: Path) -> None:
    assert tokens_check(write_registration(tmp_path)).status is Status.PASS
    differ = tokens_check(write_registration(tmp_path, as_token="another-token-0123456789"))
    assert differ.status is Status.FAIL and "as_token" in differ.detail
    assert "another-token" not in differ.detail + differ.fix and AS_TOKEN not in differ.detail + differ.fix
    assert tokens_check(write_registration(tmp_path, as_id="other")).status is Status.FAIL
    (tmp_path / "registration.yaml").unlink()
    assert tokens_check(config(registration=str(tmp_path / "registration.yaml"))).status is Status.FAIL


async def test_kanal_database(tmp_path: Path) -> None:
    sqlite = await kanal_database_check(config())
    assert sqlite.status is Status.WARN and "PostgreSQL in production" in sqlite.detail
    assert "kanal migrate-db" in sqlite.fix
    # Nothing listens on port 1: a PostgreSQL that does not answer fails, its password never shown.
    nobody = parse(
        {
            "homeserver": {"url": "http://127.0.0.1:8008", "domain": "example.org"},
            "appservice": {"as_token": AS_TOKEN, "hs_token": HS_TOKEN},
            "database": {"url": "postgresql://kanal:secret-password@127.0.0.1:1/kanal"},
        },
        tmp_path / "config.yaml",
    )
    down = await kanal_database_check(nobody)
    assert down.status is Status.FAIL and "does not answer" in down.detail
    assert "secret-password" not in down.detail and "127.0.0.1:1/kanal" in down.detail


def test_peer_authentication_as_another_user_is_not_a_broken_database() -> None:
    """deploy/README.md's database URL (the Unix socket, peer authentication) admits only the system user
    kanal: doctor run as root (for --homeserver-config) says how to check it instead of failing."""
    where = "postgresql://kanal@/kanal?host=/var/run/postgresql"
    peer = 'FATAL:  Peer authentication failed for user "kanal"'
    as_root = database_failure(config(), where, peer, "kanal", "root")
    assert as_root.status is Status.WARN and as_root.detail.startswith("not checked as root")
    assert "peer authentication" in as_root.detail
    sudo, flag, user, kanal, *rest = shlex.split(as_root.fix)
    assert (sudo, flag, user) == ("sudo", "-u", "kanal") and rest == ["doctor", "-c", "/srv/kanal/config.yaml"]
    args = build_parser().parse_args(rest)
    assert (args.command, args.config) == ("doctor", "/srv/kanal/config.yaml")
    assert Path(kanal).name == "kanal" and Path(kanal).exists(), "the command printed must run"
    # As kanal itself, peer authentication failing is a real problem; so is any other refusal.
    assert database_failure(config(), where, peer, "kanal", "kanal").status is Status.FAIL
    refused = database_failure(config(), where, "password authentication failed", "kanal", "root")
    assert refused.status is Status.FAIL and "does not answer" in refused.detail


def test_exit_codes() -> None:
    ok, warn, fail = (Check("x", s, "") for s in (Status.PASS, Status.WARN, Status.FAIL))
    assert exit_code([]) == exit_code([ok]) == EXIT_PASS == 0
    assert exit_code([ok, warn]) == EXIT_WARN == 1
    assert exit_code([fail, warn, ok]) == EXIT_FAIL == 3


def test_output_masks_tokens_and_aligns() -> None:
    checks = redact(
        [
            Check("bot user", Status.PASS, "fine"),
            Check("appservice ping", Status.FAIL, f"echoed {AS_TOKEN} and {HS_TOKEN}", "do something " * 20),
        ],
        (AS_TOKEN, HS_TOKEN),
    )
    table = render_table(checks, width=80)
    for output in (table, render_json(checks)):
        assert AS_TOKEN not in output and HS_TOKEN not in output and "***" in output
    lines = table.splitlines()
    assert lines[0].split() == ["CHECK", "STATUS", "DETAIL"]
    assert lines[1].index("pass") == lines[2].index("fail") == lines[0].index("STATUS")
    assert "fix: do something" in table and "\033[" not in table
    assert all(len(line) <= 80 for line in lines)
    assert lines[-1] == "FAIL: 1 pass, 0 warn, 1 fail"
    assert "\033[31m" in render_table(checks, colour=True)
    data = json.loads(render_json(checks))
    assert data["exit_code"] == 3 and [c["status"] for c in data["checks"]] == ["pass", "fail"]
