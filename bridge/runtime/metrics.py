"""Prometheus metrics, liveness and readiness: what an operator scrapes and probes.

/metrics  transactions and events by outcome, outbox depth and age, homeserver latency and errors,
          rows kept and pruned in the tables that retention bounds, the audit log's last verification (and
          the attempts that could not finish)
/health   liveness: the process answers
/ready    readiness: taking transactions, and the database answers

Readiness does not depend on the homeserver. While it is unreachable Kanal still serves pages and feeds
from its database and takes API posts, queueing what it must send until the homeserver answers. Every
process shares the one homeserver, so taking them out of a load balancer would refuse all that and gain
nothing. `/ready` says `"homeserver": "unreachable"` then, and `kanal_homeserver_up` is 0, for
monitoring to alert on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from appservice.server import AppServiceServer
from bridge.runtime.outbox import OutboxWorker
from bridge.runtime.retention import Pruner

# No `…_created` series beside each counter and histogram: in the text format they are extra gauge
# families that no rule or dashboard reads (a restart shows as a counter reset anyway).
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus_client


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.homeserver_seconds = Histogram(
            "kanal_homeserver_request_seconds",
            "Requests Kanal made to the homeserver, by method.",
            ["method"],
            registry=self.registry,
        )
        self.homeserver_errors = Counter(
            "kanal_homeserver_errors_total",
            "Failed homeserver requests, by HTTP status (0: unreachable).",
            ["status"],
            registry=self.registry,
        )

        self.audit_intact = Gauge(
            "kanal_audit_log_intact",
            "1 when this process last verified the audit log intact (hash chain and signed "
            "checkpoints), 0 when it was not.",
            registry=self.registry,
        )
        self.audit_verified = Gauge(
            "kanal_audit_log_verified_timestamp_seconds",
            "When this process last finished verifying the audit log (Unix time).",
            registry=self.registry,
        )
        self.audit_verify_errors = Counter(
            "kanal_audit_verify_errors_total",
            "Verifications of the audit log that could not finish (the database away, say): no verdict "
            "on the log, which the two gauges above keep from the last one that did.",
            registry=self.registry,
        )

    def audit_verified_now(self, intact: bool) -> None:
        """The verdict of a verification of the audit log that finished (intact or not)."""
        self.audit_intact.set(1 if intact else 0)
        self.audit_verified.set_to_current_time()

    def observe_request(self, method: str, status: int | None, seconds: float) -> None:
        """The HomeserverClient's observer hook."""
        self.homeserver_seconds.labels(method).observe(seconds)
        if status is None or status >= 400:
            self.homeserver_errors.labels(str(status or 0)).inc()


class _ServiceCollector(Collector):
    """Reads counters kept by the server, processor and outbox at scrape time (no double bookkeeping)."""

    def __init__(
        self,
        server: AppServiceServer,
        outbox: OutboxWorker,
        depth: Callable[[], tuple[int, float]],
        pruner: Pruner,
        rows: Callable[[], dict[str, int]],
    ) -> None:
        self.server = server
        self.outbox = outbox
        self.depth = depth
        self.pruner = pruner
        self.rows = rows

    def collect(self) -> Iterator[Metric]:
        # Counters (`…_total`) only grow while the process runs and start at 0 with it: Prometheus's
        # rate() and increase() read a restart as a reset. The rest are gauges: what holds now.
        stats = self.server.stats
        txns = CounterMetricFamily(
            "kanal_transactions_total", "Transactions from the homeserver, by outcome.", labels=["outcome"]
        )
        txns.add_metric(["ok"], stats.transactions)
        txns.add_metric(["duplicate"], stats.duplicate_transactions)
        txns.add_metric(["failed"], stats.failed_transactions)
        yield txns
        events = CounterMetricFamily("kanal_events_total", "Events received, by outcome.", labels=["outcome"])
        events.add_metric(["accepted"], stats.events)
        events.add_metric(["malformed"], stats.skipped_events)
        yield events
        sent = CounterMetricFamily(
            "kanal_outbox_attempts_total", "Outbox attempts, by outcome.", labels=["outcome"]
        )
        sent.add_metric(["done"], self.outbox.sent)
        sent.add_metric(["failed"], self.outbox.failed)
        sent.add_metric(["retry"], self.outbox.retried)
        yield sent
        yield GaugeMetricFamily(
            "kanal_homeserver_up",
            "1 while the homeserver answers, 0 while Kanal finds it unreachable (sends wait).",
            value=0 if self.outbox.homeserver_down else 1,
        )
        count, age = self.depth()
        yield GaugeMetricFamily("kanal_outbox_depth", "Outbox entries waiting to be sent.", value=count)
        yield GaugeMetricFamily(
            "kanal_outbox_oldest_age_seconds",
            "Age of the oldest entry that should have been sent by now: not counting those that wait on "
            "purpose (a statement until its reader on another server joins) and what queues behind them.",
            value=age,
        )
        rows = GaugeMetricFamily(
            "kanal_table_rows", "Rows in the tables retention bounds, by table.", labels=["table"]
        )
        for table, count in self.rows().items():
            rows.add_metric([table], count)
        yield rows
        pruned = CounterMetricFamily(
            "kanal_pruned_rows_total", "Rows this process pruned since it started, by table.", labels=["table"]
        )
        for table, count in self.pruner.pruned.items():
            pruned.add_metric([table], count)
        yield pruned


def add_routes(
    app: web.Application,
    metrics: Metrics,
    server: AppServiceServer,
    outbox: OutboxWorker,
    db_ping: Callable[[], Awaitable[None]],
    pruner: Pruner,
) -> None:
    depth_cache: list[tuple[int, float]] = [(0, 0.0)]
    rows_cache: list[dict[str, int]] = [{}]
    metrics.registry.register(
        _ServiceCollector(server, outbox, lambda: depth_cache[0], pruner, lambda: rows_cache[0])
    )

    async def metrics_handler(request: web.Request) -> web.Response:
        depth_cache[0] = await outbox.depth()
        rows_cache[0] = await pruner.rows.current()  # counted at most once a minute, not per scrape
        return web.Response(
            body=generate_latest(metrics.registry),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def ready(request: web.Request) -> web.Response:
        if not server.accepting:
            return web.json_response({"status": "stopping"}, status=503)
        try:
            await db_ping()
        except Exception as exc:  # any database failure means "not ready", with the reason
            return web.json_response(
                {"status": "database unavailable", "error": type(exc).__name__}, status=503
            )
        homeserver = "unreachable" if outbox.homeserver_down else "reachable"
        return web.json_response({"status": "ready", "homeserver": homeserver})

    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
