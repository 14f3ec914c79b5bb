"""/metrics follows Prometheus's conventions, and deploy/'s alert rules and dashboard read what it exposes.

The real listener routes (metrics.add_routes) over loopback, on a migrated SQLite database of the
test's own, after a transaction has gone through the real AppServiceServer.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pytest_aiohttp import AiohttpClient
from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from appservice.client import HomeserverClient
from appservice.server import AppServiceServer
from bridge.app import keep_verifying_audit_log, verify_audit_log_once
from bridge.runtime.config import Config, parse
from bridge.runtime.metrics import Metrics, add_routes
from bridge.runtime.outbox import OutboxWorker
from bridge.runtime.retention import ROW_COUNT_MAX_AGE_S, Pruner
from bridge.store.db import create_engine, migrate, sessionmaker
from bridge.store.models import OutboxEntry
from tests.functional.conftest import API, make_event

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
GAUGES = {
    "kanal_audit_log_intact",
    "kanal_audit_log_verified_timestamp_seconds",
    "kanal_outbox_depth",
    "kanal_outbox_oldest_age_seconds",
    "kanal_homeserver_up",
    "kanal_table_rows",
}
HISTOGRAMS = {"kanal_homeserver_request_seconds"}


@dataclass
class Scraped:
    client: TestClient[web.Request, web.Application]
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    pruner: Pruner


@pytest.fixture
async def metrics_client(scraped: Scraped) -> TestClient[web.Request, web.Application]:
    return scraped.client


@pytest.fixture
async def scraped(aiohttp_client: AiohttpClient, appservice: AppServiceServer, tmp_path: Path) -> AsyncIterator[Scraped]:
    engine = create_engine(f"sqlite:///{tmp_path / 'kanal.db'}")
    await migrate(engine)
    sessions = sessionmaker(engine)
    config = parse(
        {"homeserver": {"url": "http://127.0.0.1:1", "domain": "example.org"},
         "appservice": {"as_token": "a" * 32, "hs_token": "h" * 32}},
        tmp_path / "config.yaml",
    )  # fmt: skip
    homeserver = HomeserverClient("http://127.0.0.1:1", "a" * 32)
    metrics = Metrics()
    metrics.observe_request("GET", 200, 0.01)
    metrics.observe_request("PUT", 502, 0.2)
    app = appservice.make_app()

    async def db_ping() -> None:
        return None

    pruner = Pruner(sessions, config)
    add_routes(app, metrics, appservice, OutboxWorker(sessions, homeserver), db_ping, pruner)
    yield Scraped(await aiohttp_client(app), engine, sessions, pruner)
    await homeserver.close()
    await engine.dispose()


async def _families(client: TestClient[web.Request, web.Application]) -> dict[str, str]:
    """Metric family name → type, as Prometheus's own parser reads /metrics."""
    async with client.get("/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {family.name: family.type for family in text_string_to_metric_families(text)}


async def test_counters_are_counters_and_histograms_histograms(
    metrics_client: TestClient[web.Request, web.Application], auth: dict[str, str]
) -> None:
    async with metrics_client.put(f"{API}/transactions/1", json={"events": [make_event(1)]}, headers=auth) as r:
        assert r.status == 200
    families = await _families(metrics_client)
    counters = {name for name, kind in families.items() if kind == "counter"}
    # The parser names a counter family without its _total suffix, as the exposition format defines it.
    assert counters == {
        "kanal_transactions",
        "kanal_events",
        "kanal_outbox_attempts",
        "kanal_homeserver_errors",
        "kanal_pruned_rows",
        "kanal_audit_verify_errors",
    }, families
    assert {name for name, kind in families.items() if kind == "histogram"} == HISTOGRAMS
    assert {name for name, kind in families.items() if kind == "gauge"} == GAUGES
    assert not [name for name, kind in families.items() if kind == "gauge" and name.endswith("_total")]


def _sample_names(families: dict[str, str]) -> set[str]:
    """Every series name a query may use: counters with _total, histograms with their three series."""
    names = set()
    for name, kind in families.items():
        if kind == "counter":
            names.add(f"{name}_total")
        elif kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        else:
            names.add(name)
    return names


def _queried_metrics(expression: str) -> set[str]:
    return set(re.findall(r"\bkanal_[a-z_]+", expression))


async def test_alert_rules_and_dashboard_query_only_what_kanal_exposes(
    metrics_client: TestClient[web.Request, web.Application],
) -> None:
    exposed = _sample_names(await _families(metrics_client))
    families = await _families(metrics_client)

    prometheus = yaml.safe_load((DEPLOY / "monitoring" / "prometheus.yml").read_text())
    assert prometheus["rule_files"] == ["kanal-alerts.yml"]
    (job,) = [scrape["job_name"] for scrape in prometheus["scrape_configs"]]
    rules = yaml.safe_load((DEPLOY / "monitoring" / "kanal-alerts.yml").read_text())
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    for alert in alerts:
        assert {"alert", "expr", "labels", "annotations"} <= set(alert), alert
        queried = _queried_metrics(alert["expr"])
        assert queried <= exposed, (alert["alert"], queried - exposed)
        # The one rule on no series of Kanal's: Prometheus's own `up` of the scrape job below.
        assert queried or alert["expr"].startswith(f'up{{job="{job}"}}'), alert
        # rate() and increase() only make sense on counters (and a histogram's series).
        for name in re.findall(r"(?:rate|increase)\((kanal_[a-z_]+)", alert["expr"]):
            base = re.sub(r"_(total|bucket|sum|count)$", "", name)
            assert families.get(base) in ("counter", "histogram"), (alert["alert"], name)
    covered = set().union(*(_queried_metrics(a["expr"]) for a in alerts))
    assert {
        "kanal_outbox_oldest_age_seconds",
        "kanal_outbox_depth",
        "kanal_homeserver_up",
        "kanal_homeserver_errors_total",
        "kanal_transactions_total",
        "kanal_audit_log_intact",
        "kanal_outbox_attempts_total",
    } <= covered, covered
    # Sends failed for good: the outcome the counter's label really has.
    (failed,) = [a for a in alerts if "kanal_outbox_attempts_total" in a["expr"]]
    assert 'outcome="failed"' in failed["expr"] and failed["labels"]["severity"] == "warning"

    dashboard = json.loads((DEPLOY / "monitoring" / "grafana-dashboard.json").read_text())
    targets = [t for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert targets
    for target in targets:
        queried = _queried_metrics(target["expr"])
        assert queried and queried <= exposed, (target["expr"], queried - exposed)
    shown = set().union(*(_queried_metrics(t["expr"]) for t in targets))
    assert {re.sub(r"_(bucket|sum|count)$", "", n) for n in shown} >= {
        *GAUGES,
        *HISTOGRAMS,
        "kanal_transactions_total",
        "kanal_outbox_attempts_total",
        "kanal_homeserver_errors_total",
    }


async def _table_rows(client: TestClient[web.Request, web.Application]) -> dict[str, float]:
    async with client.get("/metrics") as response:
        text = await response.text()
    return {m[0]: float(m[1]) for m in re.findall(r'^kanal_table_rows\{table="(\w+)"\} (\S+)$', text, re.M)}


async def test_a_scrape_costs_no_count_of_the_pruned_tables_until_a_pruning_round(
    scraped: Scraped, monkeypatch: pytest.MonkeyPatch
) -> None:
    counts: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # A count of a whole table (the outbox depth's count of waiting entries uses its index).
        if re.fullmatch(r"SELECT count\(\*\) AS \w+\s+FROM \w+\s*", statement):
            counts.append(statement)

    event.listen(scraped.engine.sync_engine, "before_cursor_execute", record)

    assert await _table_rows(scraped.client) == {"inbound_events": 0, "outbox": 0}
    counted = len(counts)
    assert counted == 2, counts  # one COUNT per table, once
    async with scraped.sessions.begin() as session:
        session.add(OutboxEntry(queue="q", kind="send", as_user="@kanal:example.org", payload={}))
    # Prometheus's next scrape: the counts of the first, no table scanned.
    assert await _table_rows(scraped.client) == {"inbound_events": 0, "outbox": 0}
    assert len(counts) == counted, counts

    # A pruning round counts again (in the process that prunes) …
    await scraped.pruner.prune()
    assert len(counts) == 2 * counted
    assert await _table_rows(scraped.client) == {"inbound_events": 0, "outbox": 1}
    assert len(counts) == 2 * counted
    # … and a process that does not prune counts at most once a minute.
    clock = [time.monotonic() + ROW_COUNT_MAX_AGE_S]
    monkeypatch.setattr(scraped.pruner.rows, "clock", lambda: clock[0])
    await _table_rows(scraped.client)
    await _table_rows(scraped.client)
    assert len(counts) == 3 * counted


# --- the audit log's verification: a verdict, or no verdict ------------------------------------------


class Blip:
    """A session factory whose database goes away while `down` is set, as in a failover."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self.down = False

    def __call__(self) -> Any:
        if self.down:
            raise OperationalError("SELECT 1", {}, ConnectionRefusedError("the database is away"))
        return self.sessions()


@pytest.fixture
async def audit_db(tmp_path: Path) -> AsyncIterator[tuple[Config, Blip]]:
    engine = create_engine(f"sqlite:///{tmp_path / 'kanal.db'}")
    await migrate(engine)
    config = parse(
        {"homeserver": {"url": "http://127.0.0.1:1", "domain": "example.org"},
         "appservice": {"as_token": "a" * 32, "hs_token": "h" * 32}},
        tmp_path / "config.yaml",
    )  # fmt: skip
    yield config, Blip(sessionmaker(engine))
    await engine.dispose()


def _audit_gauges(metrics: Metrics) -> tuple[float, float, float]:
    def value(name: str) -> float:
        found = metrics.registry.get_sample_value(name)
        assert found is not None, name
        return found

    return (
        value("kanal_audit_log_intact"),
        value("kanal_audit_log_verified_timestamp_seconds"),
        value("kanal_audit_verify_errors_total"),
    )


async def test_a_verification_that_cannot_finish_is_no_verdict_on_the_audit_log(
    audit_db: tuple[Config, Blip],
) -> None:
    """The database away during the hourly verification must not read as "the log was altered"."""
    config, sessions = audit_db
    metrics = Metrics()
    assert await verify_audit_log_once(config, sessions, metrics)
    intact, verified_at, errors = _audit_gauges(metrics)
    assert (intact, errors) == (1.0, 0.0) and verified_at > 0

    sessions.down = True
    assert not await verify_audit_log_once(config, sessions, metrics)
    # Neither gauge moves (KanalAuditLogNotIntact stays quiet; KanalAuditLogNotVerified sees the age).
    assert _audit_gauges(metrics) == (1.0, verified_at, 1.0)

    # Before any verdict (just started, database away), the rule on intact == 0 does not fire either.
    fresh = Metrics()
    assert not await verify_audit_log_once(config, sessions, fresh)
    assert _audit_gauges(fresh) == (0.0, 0.0, 1.0)
    rules = yaml.safe_load((DEPLOY / "monitoring" / "kanal-alerts.yml").read_text())
    (not_intact,) = [r for g in rules["groups"] for r in g["rules"] if r["alert"] == "KanalAuditLogNotIntact"]
    assert "kanal_audit_log_verified_timestamp_seconds > 0" in not_intact["expr"]


async def test_a_verification_that_cannot_finish_is_tried_again_soon(audit_db: tuple[Config, Blip]) -> None:
    config, sessions = audit_db
    metrics = Metrics()
    sessions.down = True
    stop = asyncio.Event()
    # An hour between verdicts; a few hundredths of a second after a failed attempt.
    task = asyncio.create_task(keep_verifying_audit_log(config, sessions, metrics, stop, interval=3600, retry=0.05))
    try:
        deadline = time.monotonic() + 10
        while _audit_gauges(metrics)[2] < 3:
            assert time.monotonic() < deadline, _audit_gauges(metrics)
            await asyncio.sleep(0.02)
        assert _audit_gauges(metrics)[:2] == (0.0, 0.0)
        sessions.down = False  # the database is back: the next try gives the verdict
        while _audit_gauges(metrics)[1] == 0.0:
            assert time.monotonic() < deadline, _audit_gauges(metrics)
            await asyncio.sleep(0.02)
        assert _audit_gauges(metrics)[0] == 1.0
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
