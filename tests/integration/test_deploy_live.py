"""deploy/ run for real: the proxies in front of a real Kanal and Synapse, the unit's sandbox, a restore.

- nginx.conf and the Caddyfile, each started over TLS (a self-signed certificate; Caddy's own local
  authority) in front of the session's Synapse and Kanal, whose web.public_url is the proxy's address:
  every route of Kanal's web app answers from Kanal's web listener through the proxy, the client API
  from Synapse, the flagger path from Kanal's appservice listener, and nothing else reaches Kanal.
  Two readers (two loopback addresses) through the proxy have a /join rate limit each: Kanal reads
  the proxy's X-Forwarded-For (web.trusted_proxies), and ignores it from anyone else.
- kanal.service's sandbox reproduced in a mount namespace (everything read-only, as ProtectSystem=strict
  makes it, but the state directory, whose path comes in $STATE_DIRECTORY as systemd gives it): Kanal
  starts, serves, and writes only there.
- deploy/README.md's restore drill: back up the database and the files, lose both, restore into an
  empty database; the audit log still verifies with the same key, and the channel still relays.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from bridge.ops.initfiles import write_init_files
from bridge.ops.synapse import LocalSynapse
from bridge.runtime.config import DEFAULT_LISTEN, DEFAULT_WEB_LISTEN
from bridge.web.join import POSTS_PER_ADDRESS
from tests.integration.test_web import relayed
from tests.support import Env, KanalProcess, create_channel, free_port, need, reconfigured
from tests.test_deploy import DEPLOY, FLAGGER_PATH, web_routes

pytestmark = pytest.mark.integration

KANAL_CSP = "default-src 'none'"  # every answer of Kanal's web listener carries it (bridge/web)


async def _get(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, dict[str, str], str]:
    async with http.request(method, url, ssl=False, **kwargs) as response:
        return response.status, dict(response.headers), await response.text()


async def _wait_for(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(url, ssl=False) as response:
                    if response.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout} s")


@contextmanager
def _running(argv: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _audit_log_intact(port: int, timeout: float = 30) -> str:
    """kanal_audit_log_intact once the process has verified the log (it does so just after starting)."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                text = await response.text()
            if not re.search(r"^kanal_audit_log_verified_timestamp_seconds 0\.0$", text, re.M):
                return str(re.findall(r"^kanal_audit_log_intact (\S+)$", text, re.M)[0])
            await asyncio.sleep(0.2)
    raise AssertionError(f"Kanal did not verify its audit log within {timeout} s")


def _nginx(tmp: Path, https: int, federation: int, synapse: int, web: int, appservice: int) -> list[str]:
    """deploy/nginx.conf with this run's certificate, ports and upstreams; nginx in the foreground."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(tmp / "key.pem"), "-out", str(tmp / "cert.pem")],
        capture_output=True,
        check=True,
    )  # fmt: skip
    site = (DEPLOY / "nginx.conf").read_text()
    site = re.sub(r"ssl_certificate\s+\S+;", f"ssl_certificate {tmp / 'cert.pem'};", site)
    site = re.sub(r"ssl_certificate_key\s+\S+;", f"ssl_certificate_key {tmp / 'key.pem'};", site)
    site = re.sub(r"^\s*listen \[::\].*\n", "", site, flags=re.M)  # IPv6 may be missing here
    site = site.replace("listen 443 ", f"listen 127.0.0.1:{https} ").replace("listen 8448 ", f"listen 127.0.0.1:{federation} ")
    for default, port in (("127.0.0.1:8008", synapse), (DEFAULT_WEB_LISTEN, web), (DEFAULT_LISTEN, appservice)):
        assert f"server {default};" in site, default
        site = site.replace(f"server {default};", f"server 127.0.0.1:{port};")
    (tmp / "site.conf").write_text(site)
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = "".join(f"{kind}_temp_path {tmp / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (tmp / "nginx.conf").write_text(
        f"{user}daemon off;\npid {tmp}/nginx.pid;\nerror_log {tmp}/error.log;\nevents {{}}\n"
        f"http {{ access_log off;\n{temp}include {tmp}/site.conf; }}\n"
    )
    return ["nginx", "-c", str(tmp / "nginx.conf"), "-p", str(tmp)]


def _caddy(
    tmp: Path, https: int, federation: int, synapse: int, web: int, appservice: int, internal: int
) -> tuple[list[str], dict[str, str]]:
    """deploy/Caddyfile as it is, imported under this run's global options; its variables as compose sets them."""
    (tmp / "Caddyfile").write_text(
        f"{{\n\tadmin off\n\tskip_install_trust\n\thttp_port {free_port()}\n\thttps_port {https}\n}}\n"
        f"import {DEPLOY / 'Caddyfile'}\n"
    )
    env = {
        **os.environ,
        "HOME": str(tmp), "XDG_DATA_HOME": str(tmp / "data"), "XDG_CONFIG_HOME": str(tmp / "config"),
        "KANAL_SITE": f"https://127.0.0.1:{https}", "KANAL_HOST": "127.0.0.1", "FEDERATION_PORT": str(federation),
        "SYNAPSE_UPSTREAM": f"127.0.0.1:{synapse}", "SYNAPSE_CLIENT_UPSTREAM": f"127.0.0.1:{synapse}",
        "KANAL_WEB_UPSTREAM": f"127.0.0.1:{web}", "KANAL_AS_UPSTREAM": f"127.0.0.1:{appservice}",
        "SYNAPSE_INTERNAL_PORT": str(internal), "SYNAPSE_INTERNAL_BIND": "127.0.0.1",
    }  # fmt: skip
    return ["caddy", "run", "--adapter", "caddyfile", "--config", str(tmp / "Caddyfile")], env


def _sample(path: str, handle: str, post_id: str) -> str:
    """A concrete URL path for one of the web app's route patterns."""
    values = {"handle": handle, "post_id": post_id, "server": "localhost", "media_id": "abcdefghij", "token": "nope"}
    return re.sub(r"\{(\w+)(?::[^}]*)?\}", lambda m: values[m.group(1)], path)


async def _check_proxy(
    base: str, federation: str, handle: str, token: str, post: str, published: str, flagger: str
) -> None:
    async with aiohttp.ClientSession() as http:
        # Synapse: the client API (and a login) through the proxy, on 443 and on the federation port.
        status, headers, body = await _get(http, "GET", f"{base}/_matrix/client/versions")
        assert status == 200 and "versions" in body and "Content-Security-Policy" not in headers
        status, _h, body = await _get(http, "GET", f"{federation}/_matrix/client/versions")
        assert status == 200 and "versions" in body
        assert (await _get(http, "GET", f"{federation}/c/{handle}"))[0] == 404

        # Kanal's web listener: every route of its app (as `kanal run` builds it) answers through the proxy.
        for method, path in await asyncio.to_thread(web_routes):  # builds the app: reads its templates
            if method != "GET":
                continue
            url = f"{base}{_sample(path, handle, post)}"
            status, headers, body = await _get(http, "GET", url, headers={"Authorization": f"Bearer {token}"})
            assert headers.get("Content-Security-Policy", "").startswith(KANAL_CSP), (url, status, headers)
            if "{" not in path or path in ("/c/{handle}", "/c/{handle}/feed.atom", "/c/{handle}/{post_id}"):
                assert status == 200, (url, status, body[:300])

        # The publishing API through the proxy: its answer links to the proxy's address (web.public_url).
        url = f"{base}/api/v1/channels/{handle}/posts"
        status, _h, body = await _get(
            http, "POST", url, json={"text": f"over TLS {base}"}, headers={"Authorization": f"Bearer {token}"}
        )
        assert status == 201, body
        link = json.loads(body)["url"]
        assert link.startswith(f"{base}/c/{handle}/"), link
        deadline = time.monotonic() + 30
        while f"over TLS {base}" not in (await _get(http, "GET", link))[2] and time.monotonic() < deadline:
            await asyncio.sleep(0.3)
        assert f"over TLS {base}" in (await _get(http, "GET", link))[2]

        # The flagger path reaches Kanal's appservice listener: a trusted flagger's notice is taken ...
        notice = {"event_id": published, "category": "other", "explanation": f"sent through {base}"}
        status, _h, body = await _get(
            http, "POST", f"{base}{FLAGGER_PATH}", json=notice, headers={"Authorization": "Bearer not-a-flagger"}
        )
        assert status == 403 and "flagger token" in body, (status, body)
        status, _h, body = await _get(
            http, "POST", f"{base}{FLAGGER_PATH}", json=notice, headers={"Authorization": f"Bearer {flagger}"}
        )
        assert status == 202 and "notice_id" in json.loads(body), (status, body)
        # ... and nothing else of that listener does, nor any other path.
        for method, path in (("GET", "/metrics"), ("GET", "/ready"), ("GET", "/health"),
                             ("GET", "/_kanal/flagger/v1/other"), ("GET", "/_synapse/admin/v1/server_version")):  # fmt: skip
            status, headers, body = await _get(http, method, f"{base}{path}")
            assert status == 404 and "kanal_" not in body and "ready" not in body, (path, status, body[:200])
            assert "Content-Security-Policy" not in headers, path
        status, _h, body = await _get(
            http, "PUT", f"{base}/_matrix/app/v1/transactions/1", json={"events": []},
            headers={"Authorization": "Bearer x"},
        )  # fmt: skip
        assert status in (400, 404, 405) and "M_UNRECOGNIZED" in body, (status, body)  # Synapse's answer


async def _check_internal_site(url: str, env: Env) -> None:
    """Caddy's internal site, Kanal's homeserver.url in compose's worker mode, answers as Synapse does
    for what Kanal asks: a worker path with Kanal's token, the appservice ping's and the admin API's
    paths (to the main process), all in plain HTTP."""
    config = yaml.safe_load(env.kanal.config_path.read_text())
    as_token = config["appservice"]["as_token"]
    auth = {"Authorization": f"Bearer {as_token}"}
    async with aiohttp.ClientSession() as http:
        status, _h, body = await _get(http, "GET", f"{url}/_matrix/client/v3/account/whoami", headers=auth)
        assert status == 200 and json.loads(body)["user_id"] == env.bot, (status, body)
        as_id = config["appservice"].get("id", "kanal")
        status, _h, body = await _get(
            http, "POST", f"{url}/_matrix/client/v1/appservice/{as_id}/ping", json={}, headers=auth
        )
        assert status == 200 and "duration_ms" in body, (status, body)
        status, _h, body = await _get(http, "GET", f"{url}/_synapse/admin/v1/server_version")
        assert status == 200 and "server_version" in body, (status, body)


async def _join_posts(base: str, reader: str, token: str, count: int, forwarded_for: str | None = None) -> list[int]:
    """The statuses of `count` invite-link forms posted from the loopback address `reader`."""
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    statuses = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(reader, 0))) as http:
        for _ in range(count):
            status, _h, _b = await _get(
                http, "POST", f"{base}/join/{token}", data={"user_id": "@reader:localhost", "form": "0.0"},
                headers=headers,
            )  # fmt: skip
            statuses.append(status)
    return statuses


async def _readers_limited_each(base: str, first: str, second: str) -> None:
    """/join's POST limit through the proxy: one reader's burst used up slows down only that reader."""
    burst = int(POSTS_PER_ADDRESS.burst)
    token = "kanal_inv_" + secrets.token_urlsafe(18)  # a link's shape, of no link: answered 404
    assert await _join_posts(base, first, token, burst + 1) == [404] * burst + [429]
    # What the reader writes in X-Forwarded-For itself changes nothing: the proxy's word is the last.
    assert await _join_posts(base, first, token, 1, "203.0.113.77") == [429]
    assert await _join_posts(base, second, token, 1) == [404], f"{second} shares {first}'s bucket behind {base}"


async def test_nginx_and_caddy_examples_serve_synapse_and_kanal_over_tls(env: Env, tmp_path: Path) -> None:
    need("nginx", "caddy", "openssl")
    alice = await env.user("alice")
    channel = await create_channel(env, alice, env.handle("proxied"), "Proxied")
    await alice.text(channel.backstage, "!token new proxybot")
    notice = await alice.wait_for(channel.backstage, lambda e: "kanal_api_" in e.get("content", {}).get("body", ""))
    token = re.search(r"kanal_api_\S+", notice["content"]["body"]).group(0)  # type: ignore[union-attr]
    await alice.text(channel.backstage, "a post before the proxy")
    published = (await relayed(alice, env, channel.broadcast, channel.handle, "a post before the proxy"))["event_id"]
    flagger = (await env.run_cli("flagger", "add", f"Hotline {secrets.token_hex(3)}")).splitlines()[0]

    config = yaml.safe_load(env.kanal.config_path.read_text())
    web_port = int(config["web"]["listen"].rsplit(":", 1)[1])
    https, federation = free_port(), free_port()
    base = f"https://127.0.0.1:{https}"
    ports = (https, federation, env.synapse.port, web_port, env.kanal.port)

    def public_url(data: dict[str, Any]) -> None:
        data["web"]["public_url"] = base
        # The proxies connect from 127.0.0.1; the readers below come from other loopback addresses.
        data["web"]["trusted_proxies"] = ["127.0.0.1"]

    async with reconfigured(env, public_url):
        await _wait_for(f"http://127.0.0.1:{web_port}/")  # it starts after the appservice listener
        async with aiohttp.ClientSession() as http:
            status, _h, body = await _get(
                http, "GET", f"http://127.0.0.1:{web_port}/api/v1/channels/{channel.handle}/posts",
                headers={"Authorization": f"Bearer {token}"},
            )  # fmt: skip
            assert status == 200, body
            post = str(json.loads(body)["posts"][0]["id"])
        # Straight to the web listener, from a peer that is not trusted: X-Forwarded-For is ignored.
        link = "kanal_inv_" + secrets.token_urlsafe(18)
        burst = int(POSTS_PER_ADDRESS.burst)
        direct = f"http://127.0.0.1:{web_port}"
        assert await _join_posts(direct, "127.0.0.9", link, burst, "203.0.113.1") == [404] * burst
        assert await _join_posts(direct, "127.0.0.9", link, 1, "203.0.113.2") == [429]
        (tmp_path / "nginx").mkdir()
        with _running(_nginx(tmp_path / "nginx", *ports), tmp_path / "nginx.log"):
            await _wait_for(f"{base}/")
            await _check_proxy(
                base, f"https://127.0.0.1:{federation}", channel.handle, token, post, published, flagger
            )
            await _readers_limited_each(base, "127.0.0.2", "127.0.0.3")
        (tmp_path / "caddy").mkdir()
        internal = free_port()
        argv, caddy_env = _caddy(tmp_path / "caddy", *ports, internal)
        with _running(argv, tmp_path / "caddy.log", caddy_env):
            await _wait_for(f"{base}/", 60)
            await _check_proxy(
                base, f"https://127.0.0.1:{federation}", channel.handle, token, post, published, flagger
            )
            await _readers_limited_each(base, "127.0.0.4", "127.0.0.5")
            await _check_internal_site(f"http://127.0.0.1:{internal}", env)


# --- the systemd unit's sandbox, and the restore drill: a Synapse and a Kanal of their own ---------------


@pytest.fixture(scope="module")
async def deployment(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[LocalSynapse, Path, int]]:
    """A Synapse that loads the registration of a config written as deploy/README.md writes it."""
    root = tmp_path_factory.mktemp("deployment")
    port = free_port()
    synapse_port = free_port()
    config_path, registration = write_init_files(
        root / "etc-kanal",
        domain="localhost",
        homeserver_url=f"http://127.0.0.1:{synapse_port}",
        listen=f"127.0.0.1:{port}",
        web_listen=f"127.0.0.1:{free_port()}",
    )
    synapse = LocalSynapse(
        root / "synapse", server_name="localhost", port=synapse_port, app_service_config_files=[registration]
    )
    await synapse.start()
    try:
        yield synapse, config_path.parent, port
    finally:
        await synapse.stop()


def _unit_service() -> dict[str, str]:
    from tests.test_deploy import _unit

    return dict(_unit()["Service"])


# Reproduces ProtectSystem=strict with StateDirectory=: in a private mount namespace every mount is made
# read-only but /proc, /sys, /dev and the state directory (bound onto itself first, so it is a mount of
# its own and stays writable). Then it proves the config is read-only and runs Kanal as the unit does.
SANDBOX = r"""
set -eu
mount --make-rprivate /
mount --bind "$STATE_DIRECTORY" "$STATE_DIRECTORY"
awk '{print $5}' /proc/self/mountinfo | sort -u | while read -r point; do
    case $point in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*|"$STATE_DIRECTORY") continue ;; esac
    mount -o remount,bind,ro "$point" 2>/dev/null || true
done
if touch "$CONFIG_DIR/probe" 2>/dev/null; then echo "the config directory is writable"; exit 97; fi
touch "$STATE_DIRECTORY/probe" && rm "$STATE_DIRECTORY/probe"
cd "$STATE_DIRECTORY"
umask 0077
exec "$@"
"""


async def test_kanal_starts_and_serves_in_the_units_sandbox(
    deployment: tuple[LocalSynapse, Path, int], tmp_path: Path
) -> None:
    need("unshare")
    service = _unit_service()
    assert service["ProtectSystem"] == "strict" and "ReadWritePaths" not in service
    state_name = service["StateDirectory"]
    argv = shlex.split(service["ExecStart"])
    assert Path(argv[argv.index("-c") + 1]).parent == Path("/etc/kanal")  # the config: outside the state
    assert service["WorkingDirectory"] == f"/var/lib/{state_name}"

    _synapse, config_dir, port = deployment
    state = tmp_path / "var-lib" / state_name  # stands in for /var/lib/kanal
    state.mkdir(parents=True, mode=0o700)
    before = sorted(p.name for p in config_dir.iterdir())
    env = {**os.environ, "STATE_DIRECTORY": str(state), "CONFIG_DIR": str(config_dir)}
    command = ["unshare", "--mount", "sh", "-c", SANDBOX, "sandbox",
               sys.executable, "-m", "bridge.cli", "run", "-c", str(config_dir / "config.yaml")]  # fmt: skip
    kanal_log = tmp_path / "kanal.log"
    with _running(command, kanal_log, env) as process:
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as http:
            while True:
                assert process.poll() is None, kanal_log.read_text()
                try:
                    async with http.get(f"http://127.0.0.1:{port}/ready") as response:
                        if response.status == 200:
                            ready = await response.json()
                            break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, kanal_log.read_text()
                await asyncio.sleep(0.2)
            assert ready == {"status": "ready", "homeserver": "reachable"}
            web = yaml.safe_load((config_dir / "config.yaml").read_text())["web"]["listen"]
            await _wait_for(f"http://{web}/")  # the web listener starts after the appservice listener
            async with http.get(f"http://{web}/") as response:
                assert response.status == 200 and "Content-Security-Policy" in response.headers
            assert await _audit_log_intact(port) == "1.0"
        assert process.poll() is None
    log = kanal_log.read_text()
    assert "Read-only file system" not in log and "Homeserver ping succeeded" in log, log
    # Everything Kanal wrote is in the state directory; nothing beside the config.
    assert {"kanal.db", "audit-ed25519.key"} <= {p.name for p in state.iterdir()}
    assert sorted(p.name for p in config_dir.iterdir()) == before


async def test_restore_drill_into_an_empty_database(
    deployment: tuple[LocalSynapse, Path, int], tmp_path: Path
) -> None:
    """deploy/README.md's backup and restore drill: the audit log verifies with its key, channels relay."""
    need("tar", "sqlite3", *(("pg_dump", "pg_restore", "psql") if os.environ.get("KANAL_TEST_POSTGRES") else ()))
    synapse, original, port = deployment
    conf, state = tmp_path / "etc-kanal", tmp_path / "var-lib-kanal"
    shutil.copytree(original, conf)
    state.mkdir(mode=0o700)
    data = yaml.safe_load((conf / "config.yaml").read_text())
    data["state"] = {"directory": str(state)}
    data.setdefault("compliance", {})["checkpoint_every"] = 1  # every audit entry signed: the key matters
    server = os.environ.get("KANAL_TEST_POSTGRES", "").replace("postgresql+asyncpg://", "postgresql://")
    dsn = f"{server.rsplit('/', 1)[0]}/kanal_drill_{secrets.token_hex(4)}" if server else ""
    data["database"] = {"url": dsn or "sqlite:///kanal.db"}
    (conf / "config.yaml").write_text(yaml.safe_dump(data))

    def run(*argv: str, stdin: Path | None = None) -> str:
        with (stdin or Path(os.devnull)).open("rb") as given:
            done = subprocess.run(argv, stdin=given, capture_output=True, timeout=120, check=False)
        out, err = done.stdout.decode(), done.stderr.decode()
        assert done.returncode == 0, f"{shlex.join(argv)}: {out}{err}"
        return out

    def create_empty_database() -> None:
        run("psql", server, "-v", "ON_ERROR_STOP=1", "-c", f'CREATE DATABASE "{dsn.rsplit("/", 1)[1]}"')

    def drop_database() -> None:
        run("psql", server, "-c", f'DROP DATABASE IF EXISTS "{dsn.rsplit("/", 1)[1]}" WITH (FORCE)')

    kanal_cli = [sys.executable, "-m", "bridge.cli"]
    if dsn:
        create_empty_database()
    kanal = KanalProcess(conf / "config.yaml", port, tmp_path / "kanal.log")
    env = Env(synapse, kanal, "localhost", "@kanal:localhost", "kanal_", tmp_path)
    try:
        await kanal.start()
        alice = await env.user("alice")
        channel = await create_channel(env, alice, env.handle("drill"), "Drill")
        await alice.text(channel.backstage, "before the backup")
        await relayed(alice, env, channel.broadcast, channel.handle, "before the backup")
        verified = run(*kanal_cli, "audit", "verify", "-c", str(conf / "config.yaml"))
        key_line = next(line for line in verified.splitlines() if line.startswith("Checkpoints signed by key"))
        assert re.search(r"Audit log intact: (\d+) entries, (\d+) checkpoints", verified), verified

        # Back up, as deploy/README.md says (Kanal keeps running): the database, then the files (with
        # SQLite, the database's consistent copy goes in with them).
        files = ["etc-kanal", "var-lib-kanal/audit-ed25519.key"]
        if dsn:
            run("pg_dump", "-Fc", "-f", str(tmp_path / "kanal.dump"), dsn)
        else:
            run("sqlite3", str(state / "kanal.db"), f".backup {state / 'kanal.db.backup'}")
            files.append("var-lib-kanal/kanal.db.backup")
        run("tar", "czf", str(tmp_path / "kanal-files.tgz"), "-C", str(tmp_path), *files)
        await kanal.stop()

        # Lose everything: the database, the config and the state directory.
        shutil.rmtree(conf)
        shutil.rmtree(state)
        if dsn:
            drop_database()
        # Restore into an empty database (the dump read from standard input, as the shell gives it to
        # `sudo -u kanal pg_restore … < kanal.dump`), and the files.
        state.mkdir(mode=0o700)
        if dsn:
            create_empty_database()
            run("pg_restore", "--no-owner", "-d", dsn, stdin=tmp_path / "kanal.dump")
            run("tar", "xzf", str(tmp_path / "kanal-files.tgz"), "-C", str(tmp_path))
        else:
            # A stale write-ahead log beside the database would be read into the restored one: removed.
            (state / "kanal.db-wal").write_bytes(b"stale")
            run("tar", "xzf", str(tmp_path / "kanal-files.tgz"), "-C", str(tmp_path))
            run("rm", "-f", str(state / "kanal.db-wal"), str(state / "kanal.db-shm"))
            run("cp", str(state / "kanal.db.backup"), str(state / "kanal.db"))
        await kanal.start()

        again = run(*kanal_cli, "audit", "verify", "-c", str(conf / "config.yaml"))
        assert key_line in again.splitlines(), (verified, again)  # the same key signed the checkpoints
        assert re.search(r"Audit log intact: (\d+) entries, [1-9]\d* checkpoints", again), again
        await alice.text(channel.backstage, "after the restore")
        await relayed(alice, env, channel.broadcast, channel.handle, "after the restore")
        bodies = [e.get("content", {}).get("body", "") for e in await alice.all_messages(channel.broadcast)]
        assert sum("before the backup" in b for b in bodies) == 1 and sum("after the restore" in b for b in bodies) == 1
        assert await _audit_log_intact(port) == "1.0"
    finally:
        for client in env.users:
            await client.close()
        await kanal.stop()
        if dsn:
            drop_database()
