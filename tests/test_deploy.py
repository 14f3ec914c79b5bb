"""deploy/ agrees with the code: what no container engine or init system runs here is still checked.

The compose file, the unit and the Dockerfile are parsed and compared with Kanal's defaults (listen
ports, health path, CLI flags, shutdown grace); generate-secrets.sh runs for real in a temporary folder,
and what it writes is loaded by Kanal's and Synapse's own config parsers (worker mode too). The proxy
examples are parsed into their routes and compared with the web app's own router, and pass `nginx -t`
and `caddy validate`. tests/integration/test_deploy_live.py runs them for real, in front of a real
Kanal and Synapse, and Kanal under the systemd unit's sandbox.
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from fnmatch import fnmatch
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from aiohttp import web

from appservice.registration import generate
from bridge.app import SHUTDOWN_GRACE_S, registration_from_config
from bridge.cli import EXIT_CONFIG, build_parser
from bridge.ops.synapse_workers import CLIENT_WORKER_PATHS
from bridge.runtime.config import (
    DEFAULT_BOT_LOCALPART,
    DEFAULT_GHOST_PREFIX,
    DEFAULT_LISTEN,
    DEFAULT_WEB_LISTEN,
    parse,
    parse_listen,
)
from bridge.runtime.config import load as load_config
from bridge.runtime.context import Context
from bridge.runtime.metrics import Metrics, add_routes
from bridge.runtime.outbox import OutboxWorker
from bridge.store.db import create_engine, sessionmaker
from bridge.web import make_web_app
from bridge.web.forwarded import client_address
from tests.support import need

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DOMAIN = "chat-1.example.org"
PUBLIC_BASEURL = "https://matrix.example.org"
LISTEN_PORT = parse_listen(DEFAULT_LISTEN, "DEFAULT_LISTEN")[1]
WEB_PORT = parse_listen(DEFAULT_WEB_LISTEN, "DEFAULT_WEB_LISTEN")[1]
SYNAPSE_PORT = 8008
IMAGE_UID = 10001
SECRET_FILES = (".env", "kanal/config.yaml", "kanal/registration.yaml", "synapse/homeserver.yaml")
WORKER_FILES = (
    "synapse/conf.d/workers.yaml",
    "synapse/workers/event_persister1.yaml",
    "synapse/workers/event_persister2.yaml",
    "synapse/workers/client_worker1.yaml",
)
FLAGGER_PATH = "/_kanal/flagger/v1/notices"


# --- helpers -------------------------------------------------------------------------------------


def _code_lines(markdown: str) -> Iterator[str]:
    """Lines of the shell code blocks (```sh, or no language) of a Markdown file, continuations joined."""
    language: str | None = None
    pending = ""
    for line in markdown.splitlines():
        if line.startswith("```"):
            language = None if language is not None else line[3:].strip()
            continue
        if language not in ("", "sh", "bash"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield pending + line
        pending = ""


def _pip_installs(lines: Iterator[str]) -> list[str]:
    """The `pip install …` commands among shell lines, without comments or extra spaces."""
    found = []
    for line in lines:
        match = re.match(r"^\s*(?:RUN\s+)?(pip install\b[^#]*)", line)
        if match:
            found.append(" ".join(match.group(1).split()))
    return found


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = (DEPLOY / "Dockerfile").read_text()
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    text = re.sub(r"\\\n", " ", text)
    pairs = []
    for line in text.splitlines():
        if line.strip():
            instruction, _, args = line.strip().partition(" ")
            pairs.append((instruction.upper(), args.strip()))
    return pairs


def _instructions(name: str) -> list[str]:
    return [args for instruction, args in _dockerfile() if instruction == name]


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return data


def _ports(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host address, host port, container port) of a service's short-syntax port mappings."""
    result = []
    for entry in service.get("ports", []):
        address, host, container = str(entry).split(":")
        result.append((address, int(host), int(container)))
    return result


def _binds(service: dict[str, Any]) -> dict[str, str]:
    """Container path → host path of a service's bind mounts (those starting with ./ or ../)."""
    binds = {}
    for entry in service.get("volumes", []):
        source, target = str(entry).split(":")[:2]
        if source.startswith("."):
            binds[target] = source
    return binds


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|min|m)?", value.strip())
    assert match, f"not a duration: {value!r}"
    number, unit = float(match.group(1)), match.group(2) or "s"
    return number * {"ms": 0.001, "s": 1, "m": 60, "min": 60}[unit]


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _parse_kanal(argv: list[str]) -> argparse.Namespace:
    """Parse arguments as `kanal` does, failing the test (not exiting) when argparse refuses them.

    Options must be spelled in full: argparse also takes prefixes such as `--conf`, which break as
    soon as another option starts the same way.
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"`kanal {shlex.join(argv)}` is not a valid kanal command line")
    subparser = _subcommands()[argv[0]]
    for word in argv[1:]:  # down nested subcommands (`audit verify`)
        nested = [a for a in subparser._actions if isinstance(a, argparse._SubParsersAction)]
        if not nested or word not in nested[0].choices:
            break
        subparser = nested[0].choices[word]
    spelled = {option for action in subparser._actions for option in action.option_strings}
    for word in argv[1:]:
        option = word.split("=", 1)[0]
        if option.startswith("-"):
            assert option in spelled, f"`kanal {shlex.join(argv)}`: {option} is not one of {sorted(spelled)}"
    return args


class _KeepRepeats(dict[str, Any]):
    """A configparser section that keeps every value of a repeated key (systemd list settings)."""

    def __setitem__(self, key: str, value: Any) -> None:
        if isinstance(value, list) and isinstance(self.get(key), list):
            self[key].extend(value)
        else:
            super().__setitem__(key, value)


def _unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, dict_type=_KeepRepeats, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string((DEPLOY / "kanal.service").read_text())
    return parser


def _env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line and line[0] != "#")
    return {key: value for key, value in pairs}


def _run_generate(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(folder / "generate-secrets.sh"), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@dataclass(frozen=True)
class Generated:
    folder: Path
    run: subprocess.CompletedProcess[str]

    def yaml(self, name: str) -> Any:
        return yaml.safe_load((self.folder / name).read_text())

    @property
    def env(self) -> dict[str, str]:
        return _env_file(self.folder / ".env")


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    """generate-secrets.sh run once, as an operator would, in a copy of deploy/."""
    folder = tmp_path_factory.mktemp("deploy")
    shutil.copy2(DEPLOY / "generate-secrets.sh", folder)
    run = _run_generate(folder, DOMAIN, PUBLIC_BASEURL)
    assert run.returncode == 0, run.stderr
    return Generated(folder, run)


@pytest.fixture(scope="module")
def generated_workers(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    """generate-secrets.sh --workers: Synapse in worker mode."""
    folder = tmp_path_factory.mktemp("deploy-workers")
    shutil.copy2(DEPLOY / "generate-secrets.sh", folder)
    run = _run_generate(folder, "--workers", DOMAIN, PUBLIC_BASEURL)
    assert run.returncode == 0, run.stderr
    return Generated(folder, run)


def _web_app() -> web.Application:
    """The app `kanal run` serves on web.listen."""
    config = parse(
        {"homeserver": {"url": "http://127.0.0.1:1", "domain": DOMAIN},
         "appservice": {"as_token": "a" * 32, "hs_token": "h" * 32}, "web": {}},
        Path("/nonexistent/config.yaml"),
    )  # fmt: skip
    sessions = sessionmaker(create_engine("sqlite://"))
    # Building the router reads templates and talks to nobody: no homeserver client is needed.
    ctx = Context(config, None, sessions, OutboxWorker(sessions, None))  # type: ignore[arg-type]
    return make_web_app(ctx)


def web_routes() -> list[tuple[str, str]]:
    """(method, path pattern) of every route of Kanal's web listener, from the app `kanal run` serves."""
    app = _web_app()
    return [
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    ]


# --- Dockerfile ----------------------------------------------------------------------------------


def test_dockerfile_installs_kanal_with_the_readme_step() -> None:
    image = _pip_installs(f"RUN {args}" for args in _instructions("RUN"))
    readme = _pip_installs(_code_lines((ROOT / "README.md").read_text()))
    deploy_readme = _pip_installs(_code_lines((DEPLOY / "README.md").read_text()))
    assert len(image) == 1, f"the Dockerfile should install Kanal with one pip step, found {image}"
    assert readme, "README.md shows no `pip install` step"
    assert set(readme) == set(image), f"README.md installs with {readme}, the Dockerfile with {image}"
    assert deploy_readme and set(deploy_readme) == set(image), deploy_readme


def test_dockerfile_copies_what_pip_install_needs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {"pyproject.toml", project["project"]["readme"]}
    needed |= {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = set()
    for args in _instructions("COPY"):
        if not args.startswith("--from"):
            copied |= set(shlex.split(args)[:-1])
    assert needed <= copied, f"the build stage lacks {sorted(needed - copied)}"
    lines = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    ignored = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    hidden = {name for name in needed for pattern in ignored if fnmatch(name, pattern)}
    assert not hidden, f"Dockerfile.dockerignore hides {sorted(hidden)}, which the build copies"
    # The context is the repository root: keep the secrets generate-secrets.sh writes in deploy/ out.
    assert {"deploy", ".git", ".venv"} <= ignored


def test_dockerfile_runtime_agrees_with_the_code() -> None:
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", (DEPLOY / "Dockerfile").read_text(), re.M)
    stages = _instructions("FROM")
    assert len(stages) >= 2 and all(s.startswith("${PYTHON_IMAGE}") for s in stages), stages
    assert any(args.startswith("--from=") for args in _instructions("COPY")), "not multi-stage"

    (user,) = _instructions("USER")
    assert user.split(":")[0] == str(IMAGE_UID), "the image should run as its fixed non-root uid"
    assert re.search(rf"--uid {IMAGE_UID}\b", " ".join(_instructions("RUN")))

    assert _instructions("EXPOSE") == [f"{LISTEN_PORT} {WEB_PORT}"]
    assert f"`EXPOSE {LISTEN_PORT} {WEB_PORT}`" in (DEPLOY / "README.md").read_text()

    (healthcheck,) = _instructions("HEALTHCHECK")
    urls = re.findall(r"https?://[^'\" ]+", healthcheck)
    assert len(urls) == 1, healthcheck
    url = urlsplit(urls[0])
    assert url.hostname == "127.0.0.1" and url.port == LISTEN_PORT
    app = web.Application()
    add_routes(app, Metrics(), object(), object(), object(), object())  # type: ignore[arg-type]
    get_paths = {
        route.resource.canonical
        for route in app.router.routes()
        if route.method == "GET" and route.resource is not None
    }
    assert url.path == "/health" and url.path in get_paths, get_paths

    (volume,) = _instructions("VOLUME")
    (entrypoint,) = _instructions("ENTRYPOINT")
    (cmd,) = _instructions("CMD")
    argv = json.loads(entrypoint) + json.loads(cmd)
    assert argv[0] == "kanal"
    args = _parse_kanal(argv[1:])
    assert args.command == "run" and args.config == "/data/config.yaml"
    assert Path(args.config).parent == Path(volume)


# --- docker-compose.yml --------------------------------------------------------------------------


def test_compose_services_images_and_healthchecks() -> None:
    services = _compose()["services"]
    assert set(services) == {"postgres", "synapse", "kanal", "caddy", "element-web", *WORKER_SERVICES}
    assert services["element-web"]["profiles"] == ["element"]
    assert all(services[name]["profiles"] == ["workers"] for name in WORKER_SERVICES)
    assert all("profiles" not in services[name] for name in ("postgres", "synapse", "kanal", "caddy"))

    postgres, synapse, kanal = services["postgres"], services["synapse"], services["kanal"]
    assert postgres["image"].startswith("postgres:")
    assert "pg_isready" in postgres["healthcheck"]["test"]
    assert "--locale=C" in postgres["environment"]["POSTGRES_INITDB_ARGS"]  # Synapse needs C collation
    assert any(
        t.startswith("postgres:") and t.endswith(":/var/lib/postgresql/data") for t in postgres["volumes"]
    )
    assert "postgres" in _compose()["volumes"]
    assert _binds(postgres)["/docker-entrypoint-initdb.d/10-kanal.sh"] == "./postgres-init.sh"
    assert os.access(DEPLOY / "postgres-init.sh", os.X_OK)

    assert synapse["image"].startswith("matrixdotorg/synapse:")
    synapse_port = _ports(synapse)[0][2]
    assert f"http://localhost:{synapse_port}/health" in synapse["healthcheck"]["test"]
    assert services["caddy"]["image"].startswith("caddy:")

    assert kanal["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert (DEPLOY / kanal["build"]["context"] / kanal["build"]["dockerfile"]).resolve() == (
        DEPLOY / "Dockerfile"
    )
    assert "healthcheck" not in kanal, "the image's HEALTHCHECK (checked above) is the one to use"
    for dependency in ("postgres", "synapse"):
        assert kanal["depends_on"][dependency]["condition"] == "service_healthy"
    # In worker mode Kanal's homeserver is Caddy's internal site; Caddy waits for nobody (no cycle).
    assert kanal["depends_on"]["caddy"]["condition"] == "service_started"
    assert "kanal" not in services["caddy"].get("depends_on", {})
    # Each worker's health check asks its own listener (test_generated_worker_mode_… checks the ports),
    # not the image's default, 8008, where no worker listens.
    for name in WORKER_SERVICES - {"redis"}:
        (url,) = [word for word in services[name]["healthcheck"]["test"] if word.startswith("http")]
        assert urlsplit(url).path == "/health" and urlsplit(url).port != synapse_port, name


WORKER_SERVICES = {"redis", "synapse-event-persister1", "synapse-event-persister2", "synapse-client-worker1"}


def _caddy_ports() -> list[tuple[int, int]]:
    return [tuple(int(p) for p in str(entry).split(":")) for entry in _compose()["services"]["caddy"]["ports"]]  # type: ignore[misc]


def test_compose_ports_and_volumes_agree_with_the_code() -> None:
    services = _compose()["services"]
    kanal = services["kanal"]
    assert [p[2] for p in _ports(kanal)] == [LISTEN_PORT], "Kanal's appservice port, for local monitoring"
    # Only the TLS proxy is public: HTTP (for certificates and redirects), HTTPS, federation.
    assert sorted(_caddy_ports()) == [(80, 80), (443, 443), (8448, 8448)]
    for name, service in services.items():
        if name != "caddy":
            for address, _host, _container in _ports(service):
                assert address == "127.0.0.1", f"{name} publishes a port beyond loopback"
    caddy = services["caddy"]
    assert _binds(caddy)["/etc/caddy/Caddyfile"] == "./Caddyfile"
    env = caddy["environment"]
    # Caddy reaches Synapse and both of Kanal's listeners by their compose service names and real ports.
    assert env["SYNAPSE_UPSTREAM"] == f"synapse:{_ports(services['synapse'])[0][2]}"
    assert env["KANAL_WEB_UPSTREAM"] == f"kanal:{WEB_PORT}"
    assert env["KANAL_AS_UPSTREAM"] == f"kanal:{LISTEN_PORT}"
    placeholders = set(re.findall(r"\{\$(\w+)", (DEPLOY / "Caddyfile").read_text()))
    # Compose sets every one but the federation port, which stays the default its ports publish.
    assert placeholders - {"FEDERATION_PORT"} == set(env), placeholders ^ set(env)
    assert "{$FEDERATION_PORT:8448}" in (DEPLOY / "Caddyfile").read_text()
    # Caddy's internal site (Kanal's homeserver in worker mode): on the compose network, never published.
    assert env["SYNAPSE_INTERNAL_BIND"] == "0.0.0.0"  # noqa: S104
    assert int(env["SYNAPSE_INTERNAL_PORT"]) not in {host for host, _container in _caddy_ports()}

    (volume,) = _instructions("VOLUME")
    assert _binds(kanal) == {volume: "./kanal"}
    for name in ("synapse", *WORKER_SERVICES - {"redis"}):
        assert services[name]["volumes"] == services["synapse"]["volumes"], name
        assert services[name]["environment"] == services["synapse"]["environment"], name
        assert services[name]["image"] == services["synapse"]["image"], name
    registration_target = next(
        t for t, s in _binds(services["synapse"]).items() if s == "./kanal/registration.yaml"
    )
    assert registration_target.startswith("/")
    # Synapse's image drops to UID:GID; Kanal runs as user:. Both read the same 0600 registration.
    env = services["synapse"]["environment"]
    assert kanal["user"] == f"{env['UID']}:{env['GID']}"
    assert _seconds(kanal["stop_grace_period"]) > 2 * SHUTDOWN_GRACE_S


# --- generate-secrets.sh -------------------------------------------------------------------------


def test_generate_secrets_is_posix_sh() -> None:
    script = DEPLOY / "generate-secrets.sh"
    text = script.read_text()
    assert text.startswith("#!/bin/sh\n") and "\nset -eu\n" in text
    assert os.access(script, os.X_OK)
    for shell in ("sh", "dash"):
        if shutil.which(shell):
            check = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True, check=False)
            assert check.returncode == 0, check.stderr


def test_generate_secrets_writes_private_files_and_prints_no_secret(generated: Generated) -> None:
    folder = generated.folder
    for name in SECRET_FILES:
        mode = stat.S_IMODE((folder / name).stat().st_mode)
        assert mode == 0o600, f"{name} has mode {mode:o}"
    assert stat.S_IMODE((folder / "element/config.json").stat().st_mode) == 0o644
    for directory in ("kanal", "synapse"):
        assert stat.S_IMODE((folder / directory).stat().st_mode) == 0o700, directory

    config, hs = generated.yaml("kanal/config.yaml"), generated.yaml("synapse/homeserver.yaml")
    secrets = [
        *(v for k, v in generated.env.items() if "PASSWORD" in k),
        config["appservice"]["as_token"],
        config["appservice"]["hs_token"],
        hs["registration_shared_secret"],
        hs["macaroon_secret_key"],
        hs["form_secret"],
    ]
    assert len(set(secrets)) == len(secrets) == 7 and all(len(s) >= 32 for s in secrets)
    output = generated.run.stdout + generated.run.stderr
    assert output.strip(), "the script should say what it wrote"
    for secret in secrets:
        assert secret not in output

    run_uid = IMAGE_UID if os.getuid() == 0 else os.getuid()
    assert generated.env["RUN_UID"] == str(run_uid)
    for name in SECRET_FILES[1:]:
        assert (folder / name).stat().st_uid == run_uid, f"{name} is not readable by the containers' uid"


def test_generated_kanal_config_and_registration_are_wired_for_compose(generated: Generated) -> None:
    services = _compose()["services"]
    config = load_config(generated.folder / "kanal/config.yaml")
    registration = registration_from_config(config)  # the same check `kanal run` makes at start

    # Inside its container Kanal listens on every interface; the compose network is what confines it.
    assert (config.listen_host, config.listen_port) == ("0.0.0.0", LISTEN_PORT)  # noqa: S104
    as_url = urlsplit(config.as_url)
    assert as_url.hostname == "kanal" and "kanal" in services
    assert as_url.port == config.listen_port
    assert registration.url == config.as_url
    # The web face listens for Caddy on the compose network and knows its public address.
    assert config.web_enabled
    assert (config.web_listen_host, config.web_listen_port) == ("0.0.0.0", WEB_PORT)  # noqa: S104
    assert config.web_public_url == PUBLIC_BASEURL == generated.env["KANAL_SITE"]
    # Caddy's X-Forwarded-For is believed: it connects from the compose network, whose range Docker
    # (172.17-31.x, 192.168.x) or Podman (10.89.x) picks; a reader's own address never is.
    for caddy in ("172.18.0.5", "172.31.255.2", "192.168.16.3", "10.89.0.4", "fd00:dead::5"):
        assert client_address(caddy, ["203.0.113.9"], config.web_trusted_proxies) == "203.0.113.9", caddy
    assert client_address("203.0.113.9", ["10.0.0.1"], config.web_trusted_proxies) == "203.0.113.9"
    assert generated.env["KANAL_HOST"] == urlsplit(PUBLIC_BASEURL).hostname
    assert generated.env["SYNAPSE_CLIENT_UPSTREAM"] == services["caddy"]["environment"]["SYNAPSE_UPSTREAM"]

    expected = generate(
        as_id="kanal",
        url=config.as_url,
        domain=DOMAIN,
        sender_localpart=DEFAULT_BOT_LOCALPART,
        user_prefix=DEFAULT_GHOST_PREFIX,
    )
    assert replace(registration, as_token=expected.as_token, hs_token=expected.hs_token) == expected

    database = urlsplit(config.database_url)
    assert database.scheme == "postgresql+asyncpg" and database.hostname == "postgres"
    assert (database.username, database.path, database.port) == ("kanal", "/kanal", 5432)
    assert database.password == generated.env["KANAL_DB_PASSWORD"]
    init_sql = (DEPLOY / "postgres-init.sh").read_text()
    assert "CREATE ROLE kanal LOGIN" in init_sql and "CREATE DATABASE kanal OWNER kanal" in init_sql

    homeserver = urlsplit(config.homeserver_url)
    hs = generated.yaml("synapse/homeserver.yaml")
    assert homeserver.hostname == "synapse"
    assert homeserver.port == hs["listeners"][0]["port"] == _ports(services["synapse"])[0][2]
    # Without workers the workers' profile stays off.
    assert "COMPOSE_PROFILES" not in generated.env


def test_generated_homeserver_config_is_wired_for_compose(generated: Generated) -> None:
    services = _compose()["services"]
    hs = generated.yaml("synapse/homeserver.yaml")
    synapse, postgres = services["synapse"], services["postgres"]
    assert hs["server_name"] == DOMAIN and hs["public_baseurl"] == PUBLIC_BASEURL + "/"
    registration_target = next(t for t, s in _binds(synapse).items() if s == "./kanal/registration.yaml")
    assert hs["app_service_config_files"] == [registration_target]
    assert hs["room_list_publication_rules"] == [{"action": "allow"}]
    # Kanal reads no encrypted message: the homeserver must not encrypt its rooms on its own.
    assert hs["encryption_enabled_by_default_for_room_type"] == "off"

    data_dir = next(t for t, s in _binds(synapse).items() if s == "./synapse")
    assert synapse["command"] == ["run", f"--config-path={data_dir}/homeserver.yaml", f"--config-path={data_dir}/conf.d"]
    assert (generated.folder / "synapse/conf.d").is_dir()
    assert not list((generated.folder / "synapse/conf.d").iterdir()), "worker mode only with --workers"
    for key in ("media_store_path", "signing_key_path", "pid_file"):
        assert hs[key].startswith(data_dir + "/"), key

    db = hs["database"]["args"]
    assert hs["database"]["name"] == "psycopg2" and db["host"] == "postgres" and db["port"] == 5432
    assert (db["user"], db["dbname"]) == (
        postgres["environment"]["POSTGRES_USER"],
        postgres["environment"]["POSTGRES_DB"],
    )
    assert db["password"] == generated.env["POSTGRES_PASSWORD"]

    element = json.loads((generated.folder / "element/config.json").read_text())
    assert element["default_server_config"]["m.homeserver"] == {
        "base_url": PUBLIC_BASEURL,
        "server_name": DOMAIN,
    }
    # Every ${VAR} the compose file interpolates is defined by .env, and every bind mount exists.
    variables = set(re.findall(r"\$\{(\w+)", (DEPLOY / "docker-compose.yml").read_text()))
    assert variables and variables <= set(generated.env), variables - set(generated.env)
    for service in services.values():
        for source in _binds(service).values():
            assert (generated.folder / source).exists() or (DEPLOY / source).exists(), source


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_generated_synapse_files_load_in_synapse(generated: Generated, tmp_path: Path) -> None:
    """Synapse's own parsers accept homeserver.yaml and the registration (paths moved off /data)."""
    pytest.importorskip("synapse")
    from signedjson.key import generate_signing_key, write_signing_keys
    from synapse.config.appservice import load_appservices
    from synapse.config.homeserver import HomeServerConfig

    registration = generated.folder / "kanal/registration.yaml"
    text = (generated.folder / "synapse/homeserver.yaml").read_text()
    text = text.replace("/data/", f"{tmp_path}/").replace("/kanal/registration.yaml", str(registration))
    (tmp_path / "homeserver.yaml").write_text(text)
    with (tmp_path / "signing.key").open("w") as handle:
        write_signing_keys(handle, [generate_signing_key("a")])
    config = HomeServerConfig.load_config("", ["--config-path", str(tmp_path / "homeserver.yaml")])
    assert config.server.server_name == DOMAIN

    (service,) = load_appservices(DOMAIN, config.appservice.app_service_config_files)
    assert service.id == "kanal" and service.url == "http://kanal:29340"
    assert service.sender.to_string() == f"@{DEFAULT_BOT_LOCALPART}:{DOMAIN}"
    assert service.is_exclusive_user(f"@{DEFAULT_GHOST_PREFIX}news:{DOMAIN}")
    assert not service.is_exclusive_user(f"@alice:{DOMAIN}")
    assert service.supports_ephemeral and not service.is_rate_limited()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_generated_worker_mode_loads_in_synapse_and_matches_compose(
    generated_workers: Generated, tmp_path: Path
) -> None:
    """--workers: each worker's command line, as compose gives it, loads in Synapse's own parser."""
    pytest.importorskip("synapse")
    from signedjson.key import generate_signing_key, write_signing_keys
    from synapse.config.homeserver import HomeServerConfig

    folder = generated_workers.folder
    for name in WORKER_FILES:
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name
    assert generated_workers.env["SYNAPSE_CLIENT_UPSTREAM"] == "synapse-client-worker1:8083"
    # Every later `docker compose up -d` (the Upgrades section's too) keeps the workers and Redis.
    assert generated_workers.env["COMPOSE_PROFILES"].split(",") == ["workers"]
    # Kanal's own sends take the workers' routing: its homeserver is Caddy's internal site, which
    # splits the client API as the public site does (test_reverse_proxies_route_exactly_the_documented_paths).
    kanal = load_config(folder / "kanal/config.yaml")
    caddy_env = _compose()["services"]["caddy"]["environment"]
    homeserver = urlsplit(kanal.homeserver_url)
    assert (homeserver.scheme, homeserver.hostname) == ("http", "caddy")
    assert homeserver.port == int(caddy_env["SYNAPSE_INTERNAL_PORT"])
    assert INTERNAL_SITE in caddy_blocks((DEPLOY / "Caddyfile").read_text())
    data = tmp_path / "data"
    shutil.copytree(folder / "synapse", data)
    registration = folder / "kanal/registration.yaml"
    for path in data.rglob("*.yaml"):
        text = path.read_text().replace("/data/", f"{data}/").replace("/kanal/registration.yaml", str(registration))
        path.write_text(text)
    with (data / "signing.key").open("w") as handle:
        write_signing_keys(handle, [generate_signing_key("a")])

    services = _compose()["services"]
    workers = yaml.safe_load((folder / "synapse/conf.d/workers.yaml").read_text())
    persisters = workers["stream_writers"]["events"]
    for service_name in ("synapse", *sorted(WORKER_SERVICES - {"redis"})):
        argv = [arg.replace("/data", str(data)) for arg in services[service_name]["command"][1:]]
        config = HomeServerConfig.load_config("", argv)
        assert config.redis.redis_enabled and config.redis.redis_host == "redis"
        assert config.worker.events_shard_config.instances == persisters
        if service_name == "synapse":
            assert config.worker.instance_name == "master"
            continue
        worker = str(config.worker.worker_name)
        assert service_name == "synapse-" + worker.replace("_", "-")
        port = getattr(config.worker.worker_listeners[0], "port", None)  # a TCP listener
        # Every instance the others replicate to is named in instance_map by its compose service name.
        if worker in persisters:
            assert workers["instance_map"][worker] == {"host": service_name, "port": port}
        else:
            assert generated_workers.env["SYNAPSE_CLIENT_UPSTREAM"] == f"{service_name}:{port}"
        # Its health check asks the listener it has (Synapse serves /health on every HTTP listener).
        assert f"http://localhost:{port}/health" in services[service_name]["healthcheck"]["test"]
    assert workers["instance_map"]["main"]["host"] == "synapse"


def test_generate_secrets_refuses_to_overwrite_without_force(generated: Generated, tmp_path: Path) -> None:
    folder = tmp_path / "deploy"
    shutil.copytree(generated.folder, folder)
    before = {name: (folder / name).read_text() for name in SECRET_FILES}

    again = _run_generate(folder, DOMAIN)
    assert again.returncode == 2 and "--force" in again.stderr
    assert {name: (folder / name).read_text() for name in SECRET_FILES} == before

    (folder / ".env").chmod(0o644)
    forced = _run_generate(folder, "--force", DOMAIN)
    assert forced.returncode == 0, forced.stderr
    for name in SECRET_FILES:
        assert (folder / name).read_text() != before[name], f"{name} kept its old secrets"
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name


@pytest.mark.parametrize(
    "args",
    [("exa mple.org",), ('example.org"',), ("",), ("example.org", "ftp://x"), ("example.org", "https://a'b")],
)
def test_generate_secrets_refuses_bad_arguments(tmp_path: Path, args: tuple[str, ...]) -> None:
    shutil.copy2(DEPLOY / "generate-secrets.sh", tmp_path)
    run = _run_generate(tmp_path, *args)
    assert run.returncode == 2 and run.stderr.startswith("generate-secrets.sh: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generate-secrets.sh"]


# --- kanal.service -------------------------------------------------------------------------------

HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "CapabilityBoundingSet": "",
    "StateDirectory": "kanal",
    "StateDirectoryMode": "0700",
    "UMask": "0077",
}


def test_unit_runs_kanal_as_a_dedicated_user_with_hardening() -> None:
    unit = _unit()
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    for key, value in HARDENING.items():
        assert service.get(key) == value, f"{key}={service.get(key)!r}, expected {value!r}"
    assert set(service["RestrictAddressFamilies"].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert "@system-service" in service["SystemCallFilter"].splitlines()

    assert service["User"] == "kanal" and service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == str(EXIT_CONFIG), "a broken config must not restart-loop"
    # Kanal's shutdown waits up to SHUTDOWN_GRACE_S for the processor, then as long for the outbox.
    assert _seconds(service["TimeoutStopSec"]) > 2 * SHUTDOWN_GRACE_S
    assert "KillSignal" not in service, "Kanal exits 0 on SIGTERM, the default"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    # The state directory is the only writable place; nothing else is opened up.
    assert "ReadWritePaths" not in service and service["WorkingDirectory"] == "/var/lib/kanal"


def test_unit_execstart_is_a_real_kanal_command_line() -> None:
    argv = shlex.split(_unit()["Service"]["ExecStart"])
    assert Path(argv[0]).is_absolute() and Path(argv[0]).name == "kanal"
    args = _parse_kanal(argv[1:])
    assert args.command == "run" and args.config == "/etc/kanal/config.yaml"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    kanal = Path(sys.executable).parent / "kanal"
    if not kanal.exists():
        pytest.skip(f"no installed kanal script at {kanal} to stand in for /opt/kanal/bin/kanal")
    argv0 = shlex.split(_unit()["Service"]["ExecStart"])[0]
    unit = tmp_path / "kanal.service"
    unit.write_text((DEPLOY / "kanal.service").read_text().replace(argv0, str(kanal)))
    check = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True, check=False
    )
    complaints = [line for line in (check.stdout + check.stderr).splitlines() if "kanal.service" in line]
    assert check.returncode == 0 and not complaints, check.stdout + check.stderr


# --- reverse proxy and README --------------------------------------------------------------------


def _active_lines(path: Path) -> list[str]:
    return [line.split("#")[0] for line in path.read_text().splitlines() if line.split("#")[0].strip()]


def _web_prefixes() -> set[str]:
    """The path prefixes of Kanal's web routes: `/` alone, else the first segment (two under /api)."""
    prefixes = set()
    for _method, path in web_routes():
        parts = path.split("/")
        prefixes.add("/" if path == "/" else "/".join(parts[: 3 if parts[1] == "api" else 2]) + "/")
    return prefixes


def nginx_routes(text: str) -> dict[str, str]:
    """The first server block's locations → their upstream's address (or `return <status>`)."""
    upstreams = dict(re.findall(r"upstream (\w+) \{\s*server (\S+);", text))
    first_server = text[text.index("server {") :]
    routes = {}
    for location, body in re.findall(r"location ([^{]+?) \{([^}]*)\}", first_server.split("\nserver {")[0]):
        target = re.search(r"proxy_pass http://(\w+);|return (\d+);", body)
        assert target, body
        routes[location.strip()] = upstreams[target.group(1)] if target.group(1) else target.group(0)
    return routes


def caddy_blocks(text: str) -> dict[str, str]:
    """The Caddyfile's top-level blocks (sites, and snippets as `(name)`) → their bodies, each snippet a
    site imports written in its place."""
    blocks = dict(re.findall(r"^(\S[^\n]*) \{\n(.*?)^\}$", text, re.M | re.S))
    snippets = {name[1:-1]: body for name, body in blocks.items() if name.startswith("(")}

    def expand(body: str) -> str:
        return re.sub(r"^\timport (\w+)$", lambda m: snippets[m.group(1)].rstrip("\n"), body, flags=re.M)

    return {name: expand(body) for name, body in blocks.items()}


def caddy_routes(text: str, site: str | None = None) -> dict[str, str]:
    """A site's (default: the first's) named matchers (their paths) → the upstream each `handle` proxies
    to; `*` for the `handle` without a matcher, when it proxies."""
    blocks = {name: body for name, body in caddy_blocks(text).items() if not name.startswith("(")}
    body = blocks[site or next(iter(blocks))]
    matchers = dict(re.findall(r"^\t@(\w+) (.+)$", body, re.M))
    routes = {}
    for name, inner in re.findall(r"^\thandle(?: @(\w+))? \{\n(.*?)^\t\}", body, re.M | re.S):
        upstreams = re.findall(r"reverse_proxy \{\$\w+:(\S+)\}", inner)
        if name:
            (routes[matchers[name]],) = upstreams
        elif upstreams:
            (routes["*"],) = upstreams
    return routes


INTERNAL_SITE = "http://:{$SYNAPSE_INTERNAL_PORT:8009}"


def test_reverse_proxies_route_exactly_the_documented_paths() -> None:
    """Both examples send the client API to Synapse, every web route to Kanal's web listener, the
    flagger endpoint alone to the appservice listener, and nothing else anywhere."""
    synapse = f"127.0.0.1:{SYNAPSE_PORT}"
    assert SYNAPSE_PORT == _ports(_compose()["services"]["synapse"])[0][2]
    web_prefixes = _web_prefixes()
    assert web_prefixes == {"/", "/c/", "/media/", "/static/", "/api/v1/", "/join/"}, web_prefixes

    nginx = nginx_routes((DEPLOY / "nginx.conf").read_text())
    expected = {
        "~ ^(/_matrix|/_synapse/client)": synapse,
        f"= {FLAGGER_PATH}": DEFAULT_LISTEN,
        "/": "return 404;",
        **{("= /" if p == "/" else p): DEFAULT_WEB_LISTEN for p in web_prefixes},
    }
    assert nginx == expected

    caddy = caddy_routes((DEPLOY / "Caddyfile").read_text())
    worker_regex = "^(?:" + "|".join(f"(?:{p})" for p in CLIENT_WORKER_PATHS) + ")"
    assert caddy == {
        f"path_regexp {worker_regex}": synapse,
        "path /_matrix/* /_synapse/client/*": synapse,
        "path " + " ".join(p if p == "/" else p + "*" for p in sorted(web_prefixes, key=_order)): DEFAULT_WEB_LISTEN,
        f"path {FLAGGER_PATH}": DEFAULT_LISTEN,
    }
    assert re.search(r"^\thandle \{\n\t\trespond 404\n\t\}$", (DEPLOY / "Caddyfile").read_text(), re.M)
    # The site Kanal itself uses in worker mode: the same split, everything else to Synapse's main process.
    assert caddy_routes((DEPLOY / "Caddyfile").read_text(), INTERNAL_SITE) == {
        f"path_regexp {worker_regex}": synapse,
        "*": synapse,
    }
    # Kanal's per-reader limits read X-Forwarded-For: nginx sets it for every location of the site (a
    # location with a proxy_set_header of its own would drop it), Caddy's reverse_proxy by default.
    site = (DEPLOY / "nginx.conf").read_text().split("\nserver {")[1]
    before_locations = site.split("location")[0]
    assert re.search(r"^    proxy_set_header X-Forwarded-For \$remote_addr;$", before_locations, re.M)
    assert "proxy_set_header" not in site.split("location", 1)[1]
    assert "X-Forwarded-For" not in "".join(_active_lines(DEPLOY / "Caddyfile")), "Caddy sets it itself"
    for text in ((DEPLOY / "nginx.conf").read_text(), (DEPLOY / "Caddyfile").read_text()):
        assert "/_synapse/admin" not in text.replace("Not /_synapse/admin", "")


def _web_client_max_size() -> int:
    """The largest request body Kanal's web listener takes (its aiohttp client_max_size)."""
    return int(_web_app()._client_max_size)


def _order(prefix: str) -> int:
    return ["/", "/c/", "/media/", "/static/", "/api/v1/", "/join/"].index(prefix)


def _caddy_env(tmp_path: Path) -> dict[str, str]:
    """Caddy's environment for a run that leaves nothing in the real home directory."""
    return {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data"),
            "XDG_CONFIG_HOME": str(tmp_path / "config")}  # fmt: skip


def test_caddy_example_passes_caddy_validate(tmp_path: Path) -> None:
    need("caddy")  # skipped here without it; in CI (scripts/test installs it) a failure
    for environment in ({}, {"KANAL_SITE": "https://chat.example.net", "KANAL_HOST": "chat.example.net"}):
        check = subprocess.run(
            ["caddy", "validate", "--adapter", "caddyfile", "--config", str(DEPLOY / "Caddyfile")],
            capture_output=True,
            text=True,
            check=False,
            env={**_caddy_env(tmp_path), **environment},
            cwd=tmp_path,
        )
        assert check.returncode == 0 and "Valid configuration" in check.stdout + check.stderr, check.stderr
    fmt = subprocess.run(
        ["caddy", "fmt", str(DEPLOY / "Caddyfile")], capture_output=True, text=True, check=True, env=_caddy_env(tmp_path)
    )
    assert fmt.stdout == (DEPLOY / "Caddyfile").read_text(), "the Caddyfile is not as `caddy fmt` writes it"
    # Uploads: Caddy takes what Kanal's web listener takes (50 MiB: Caddy reads "50MB" as 50,000,000).
    adapted = subprocess.run(
        ["caddy", "adapt", "--adapter", "caddyfile", "--config", str(DEPLOY / "Caddyfile")],
        capture_output=True, text=True, check=True, env=_caddy_env(tmp_path), cwd=tmp_path,
    )  # fmt: skip
    sizes = {int(size) for size in re.findall(r'"max_size":\s*(\d+)', adapted.stdout)}
    assert sizes == {_web_client_max_size()}, sizes


def test_nginx_example_passes_nginx_t(tmp_path: Path) -> None:
    need("nginx", "openssl")  # skipped here without them; in CI (scripts/test installs them) a failure
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test",
            "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem"),
        ],
        capture_output=True,
        check=True,
    )  # fmt: skip
    site = (DEPLOY / "nginx.conf").read_text()
    site = re.sub(r"ssl_certificate\s+\S+;", f"ssl_certificate {tmp_path / 'cert.pem'};", site)
    site = re.sub(r"ssl_certificate_key\s+\S+;", f"ssl_certificate_key {tmp_path / 'key.pem'};", site)
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{ access_log off; include {tmp_path}/site.conf; }}\n"
    )
    # Uploads: nginx takes what Kanal's web listener takes (nginx's M is MiB).
    (limit,) = re.findall(r"client_max_body_size (\d+)M;", site)
    assert int(limit) * 1024 * 1024 == _web_client_max_size()
    check = subprocess.run(
        ["nginx", "-t", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr


def test_tools_scripts_test_installs_are_required_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """`nginx -t`, `caddy validate` (and the live tests): skipped on a machine without the tool, failed
    in CI, where scripts/test installs it, so CI never passes by checking less."""
    monkeypatch.setattr(shutil, "which", lambda _tool: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        need("caddy")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="caddy missing: scripts/test installs"):
        need("caddy")
    script = (ROOT / "scripts" / "test").read_text()
    for tool in ("nginx", "caddy"):
        assert f"command -v {tool} >/dev/null 2>&1 || missing+=({tool})" in script, tool
    assert "command -v promtool >/dev/null 2>&1 || lean+=(prometheus)" in script


def test_alert_rules_and_scrape_job_pass_promtool() -> None:
    """Prometheus's own tool (Debian's prometheus package, which scripts/test installs): the scrape job
    and the rules load, and the rules' unit tests (kanal-alerts.test.yml) pass, with a case that fires
    and one that stays quiet for every alert."""
    need("promtool")
    monitoring = DEPLOY / "monitoring"
    for argv in (
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "kanal-alerts.yml"],
        ["test", "rules", "kanal-alerts.test.yml"],
    ):
        run = subprocess.run(
            ["promtool", *argv], cwd=monitoring, capture_output=True, text=True, timeout=120, check=False
        )
        assert run.returncode == 0, f"promtool {shlex.join(argv)}:\n{run.stdout}{run.stderr}"

    alerts = {
        rule["alert"]
        for group in yaml.safe_load((monitoring / "kanal-alerts.yml").read_text())["groups"]
        for rule in group["rules"]
    }
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load((monitoring / "kanal-alerts.test.yml").read_text())["tests"]:
        instances = {m for series in case["input_series"] for m in re.findall(r'instance="([^"]+)"', series["series"])}
        for check in case["alert_rule_test"]:
            expected = {alert["exp_labels"]["instance"] for alert in check["exp_alerts"]}
            if expected:
                fires.add(check["alertname"])
            if not expected or instances - expected:
                quiet.add(check["alertname"])
    assert fires == alerts, alerts ^ fires
    assert quiet == alerts, alerts ^ quiet


def test_deploy_readme_kanal_commands_parse() -> None:
    """Every `kanal …` line in deploy/README.md is accepted by the real CLI (doctor once it exists)."""
    subcommands = _subcommands()
    checked = set()
    for line in _code_lines((DEPLOY / "README.md").read_text()):
        words = shlex.split(line, comments=True)
        for i, word in enumerate(words[:-1]):
            if Path(word).name == "kanal" and words[i + 1] in {*subcommands, "doctor"}:
                if words[i + 1] in subcommands:
                    _parse_kanal(words[i + 1 :])
                    checked.add(words[i + 1])
                break
    assert {"init", "migrate-db", "audit"} <= checked, checked
    text = (DEPLOY / "README.md").read_text()
    assert "generate-secrets.sh" in text and "kanal.service" in text and "kanal doctor" in text


def test_one_statement_of_what_is_exposed_to_whom() -> None:
    """deploy/README.md says once which listener each party reaches; the other docs point at it."""
    text = (DEPLOY / "README.md").read_text()
    section = text.split("## What is exposed to whom", 1)[1].split("\n## ", 1)[0]
    for port in (LISTEN_PORT, WEB_PORT, SYNAPSE_PORT):
        assert f"127.0.0.1:{port}" in section
    for prefix in _web_prefixes() - {"/"}:
        assert f"`{prefix}…`" in section, prefix
    assert FLAGGER_PATH in section and "/metrics" in section and "/_matrix/app" in section
    readme = (ROOT / "README.md").read_text()
    assert readme.count("deploy/README.md#what-is-exposed-to-whom") >= 2
    # What the docs said before there was one statement: Kanal "never exposed", pages "not yet" served.
    for doc in (text, readme, (DEPLOY / "nginx.conf").read_text(), (DEPLOY / "Caddyfile").read_text()):
        assert "never exposed" not in doc and "pages (not yet)" not in doc
    for proxy in ("nginx.conf", "Caddyfile"):
        assert '"What is exposed to whom"' in (DEPLOY / proxy).read_text(), proxy
