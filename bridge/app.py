"""Running the service: start-up checks, the HTTP listener, background workers, orderly shutdown."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from appservice.client import HomeserverClient
from appservice.errors import MatrixConnectionError, MatrixRequestError
from appservice.ids import UserID
from appservice.registration import Registration, RegistrationError, generate
from appservice.registration import load as load_registration
from appservice.server import AppServiceServer
from bridge.channels.hosting import reconcile_at_start
from bridge.moderation.configlog import describe_hooks, hook_configuration_digest
from bridge.moderation.hooks import Pipeline
from bridge.moderation.notices import flagger_routes, run_report_poller
from bridge.publishing.schedule import SCHEDULER_LEASE, run_scheduler
from bridge.runtime.config import Config, ConfigError
from bridge.runtime.context import Context
from bridge.runtime.e2ee import Crypto, CryptoError, old_store_dir_for
from bridge.runtime.languages import load_language_users
from bridge.runtime.metrics import Metrics, add_routes
from bridge.runtime.outbox import OutboxWorker
from bridge.service import HOUSEKEEPING_LEASE, PROCESSOR_LEASE, Bridge
from bridge.store.db import create_engine, migrate, sessionmaker
from bridge.store.leases import LEASE_SECONDS, Leases, new_holder_id
from bridge.store.models import AuditEntry
from bridge.text.i18n import CatalogueError, catalogue

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 10.0
# The lease of the process that owns the bot's encrypting device (bridge/runtime/e2ee.py).
E2EE_LEASE = "e2ee-device"
E2EE_LEASE_RENEW_S = 5.0
FIRST_REPING_S = 5.0
# How often each process verifies the audit log for /metrics (kanal_audit_log_intact); also at start.
AUDIT_VERIFY_INTERVAL_S = 3600.0
# A verification that could not finish (the database away, say) is tried again this soon.
AUDIT_VERIFY_RETRY_S = 120.0


class StartupError(Exception):
    """Kanal cannot start; the message says why and what to do."""


class Background:
    """Starts background tasks, keeps references to them, and logs any that fail."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()

    def start(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("Background task %s failed", task.get_name(), exc_info=task.exception())

    async def wait(self, timeout: float) -> None:
        if self.tasks:
            _done, pending = await asyncio.wait(self.tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


def registration_from_config(config: Config) -> Registration:
    """The registration Kanal serves; when the file is configured, it must agree with the config."""
    if config.registration_path is None:
        reg = generate(
            as_id=config.as_id,
            url=config.as_url,
            domain=config.domain,
            sender_localpart=config.bot_localpart,
            user_prefix=config.ghost_prefix,
        )
        return dataclasses.replace(reg, as_token=config.as_token, hs_token=config.hs_token)
    try:
        reg = load_registration(config.registration_path)
    except RegistrationError as exc:
        raise ConfigError(
            f"{config.path}: 'appservice.registration' points at an unusable file: {exc}"
        ) from exc
    for key in ("as_token", "hs_token"):
        if getattr(reg, key) != getattr(config, key):
            raise ConfigError(
                f"{config.path}: 'appservice.{key}' differs from '{key}' in {config.registration_path}; "
                "they must be equal (run `kanal init --force` to make a fresh pair, then restart the homeserver)"
            )
    if reg.sender_localpart != config.bot_localpart:
        raise ConfigError(
            f"{config.path}: 'appservice.bot_localpart' ({config.bot_localpart}) differs from "
            f"'sender_localpart' ({reg.sender_localpart}) in {config.registration_path}"
        )
    return reg


def _token_rejected(config: Config, exc: MatrixRequestError) -> StartupError:
    return StartupError(
        f"The homeserver rejected Kanal's as_token ({exc.errcode}). Add the registration file to the "
        "homeserver's app_service_config_files, make sure its tokens match "
        f"{config.path}, and restart the homeserver."
    )


async def check_homeserver(client: HomeserverClient, config: Config) -> None:
    """Fail early and clearly: homeserver reachable, our token accepted, the bot registered."""
    bot = client.intent(UserID(config.bot_user_id))
    try:
        await client.versions()
        await bot.ensure_registered()
        await bot.whoami()
    except MatrixConnectionError as exc:
        raise StartupError(
            f"Cannot reach the homeserver at {config.homeserver_url} (homeserver.url in {config.path}): "
            f"{exc.__cause__ or exc}. Is it running?"
        ) from None
    except MatrixRequestError as exc:
        if exc.status in (401, 403):
            raise _token_rejected(config, exc) from None
        raise StartupError(f"The homeserver at {config.homeserver_url} refused Kanal: {exc}") from None


class Service:
    """One running Kanal: listener, processor and outbox worker around a shared context."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.registration = registration_from_config(config)
        self.engine = create_engine(config.database_url)
        self.metrics = Metrics()
        self.client = HomeserverClient(
            config.homeserver_url, config.as_token, observer=self.metrics.observe_request
        )
        sessions = sessionmaker(self.engine)
        # PostgreSQL may be shared by several Kanal processes: claim work with row locks there.
        row_locks = self.engine.dialect.name == "postgresql"
        holder = new_holder_id()  # this process, in its leases and in the sealed replies it queues
        self.outbox = OutboxWorker(sessions, self.client, row_locks=row_locks, holder=holder)
        self.ctx = Context(config, self.client, sessions, self.outbox, pipeline=Pipeline(config))
        self._reports_stop = asyncio.Event()
        self.leases = Leases(sessions, holder)
        self.bridge = Bridge(self.ctx, self.leases, row_locks=row_locks)
        self.server = AppServiceServer(self.registration, self.bridge)
        self.background = Background()
        self._runner: web.AppRunner | None = None
        self._web_runner: web.AppRunner | None = None
        self._processor: asyncio.Task[None] | None = None
        self._outbox: asyncio.Task[None] | None = None
        self._stopping = False

    def make_app(self) -> web.Application:
        app = self.server.make_app()
        add_routes(app, self.metrics, self.server, self.outbox, self._db_ping, self.bridge.pruner)
        flagger_routes(app, self.ctx)
        return app

    async def _db_ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def start(self) -> None:
        from bridge.moderation.audit import AuditError, load_or_create_key

        key_path = self.config.compliance.audit_key
        if key_path is not None:
            try:
                # A broken key must stop the start, not a later decision. Off the loop: it reads a file.
                await asyncio.to_thread(load_or_create_key, key_path)
            except AuditError as exc:
                raise StartupError(f"{exc} (compliance.audit_key in {self.config.path})") from None
        try:
            # A broken message catalogue must stop the start, not the first reply. Off the loop: it
            # reads the catalogue files (then kept in memory).
            await asyncio.to_thread(catalogue)
        except CatalogueError as exc:
            raise StartupError(str(exc)) from None
        await migrate(self.engine)
        if not self.bridge.row_locks:  # the only writer: who chose a language is kept in memory
            async with self.ctx.sessions() as session:
                self.ctx.language_users = await load_language_users(session)
        await check_homeserver(self.client, self.config)
        self._runner = web.AppRunner(self.make_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.listen_host, self.config.listen_port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise StartupError(
                f"Cannot listen on {self.config.listen_host}:{self.config.listen_port} "
                f"(appservice.listen in {self.config.path}): {exc.strerror}"
            ) from None
        log.info("Listening on %s:%d for the homeserver", self.config.listen_host, self.config.listen_port)
        if self.config.encryption_enabled:
            # One process owns the bot's device and its keys: a second one would upload other
            # one-time keys for the same device and lose room keys meant for the first.
            if not await self._take_e2ee_lease():
                await self._runner.cleanup()
                raise StartupError(
                    "another Kanal process holds the bot's encrypting device (encryption.enabled): run "
                    "one process with encryption on, or stop the other first"
                )
            self.background.start(self._keep_e2ee_lease(), "e2ee-lease")
            crypto = Crypto(
                self.config.homeserver_url,
                self.config.bot_user_id,
                self.config.as_token,
                self.ctx.sessions,
                self.config.store_key_path,
                old_store_dir_for(self.config.writable_dir),
            )
            try:
                await crypto.start()
            except CryptoError as exc:
                await self._runner.cleanup()
                raise StartupError(f"End-to-end encryption (encryption.enabled in {self.config.path}): {exc}") from None
            self.outbox.crypto = crypto
            self.bridge.crypto_ready.set()
        if self.config.web_enabled:
            await self._start_web()
        self._processor = self.background.start(self.bridge.run_processor(), "processor")
        self._outbox = self.background.start(self.outbox.run(), "outbox")
        await self.ping()
        self.background.start(self._keep_pinging(), "pinger")
        # Many rooms may need a look: the policy is brought to them in the background, once per start.
        self.background.start(reconcile_at_start(self.ctx, self.leases), "hosting-policy")
        self.background.start(self.bridge.run_housekeeping(), "housekeeping")
        self.background.start(run_report_poller(self.ctx, self.leases, self._reports_stop), "reports")
        self.background.start(run_scheduler(self.ctx, self.leases, self._reports_stop), "scheduler")
        await record_hook_configuration(self.ctx)
        self.background.start(self._verify_audit_log(), "audit-verify")

    async def _start_web(self) -> None:
        from bridge.web import make_web_app

        # Building the app reads its templates, stylesheet and OpenAPI document from disk: off the loop,
        # which already serves the homeserver's transactions.
        app = await asyncio.to_thread(make_web_app, self.ctx)
        self._web_runner = web.AppRunner(app, access_log=None)
        await self._web_runner.setup()
        site = web.TCPSite(self._web_runner, self.config.web_listen_host, self.config.web_listen_port)
        try:
            await site.start()
        except OSError as exc:
            await self._web_runner.cleanup()
            if self._runner is not None:
                await self._runner.cleanup()
            raise StartupError(
                f"Cannot listen on {self.config.web_listen_host}:{self.config.web_listen_port} "
                f"(web.listen in {self.config.path}): {exc.strerror}"
            ) from None
        log.info(
            "Web pages and publishing API on %s:%d (public address %s)",
            self.config.web_listen_host,
            self.config.web_listen_port,
            self.config.web_public_url,
        )

    async def ping(self) -> None:
        """Ask the homeserver to ping us: transactions queued while we were away flow at once."""
        try:
            await self.client.ping(self.config.as_id, f"kanal-start-{secrets.token_hex(8)}")
            log.info("Homeserver ping succeeded: transactions flow both ways")
        except (MatrixRequestError, MatrixConnectionError) as exc:
            log.warning(
                "The homeserver could not ping Kanal at %s (%s). Check `url` in the registration file; "
                "events will arrive once the homeserver can reach Kanal.",
                self.config.as_url,
                exc,
            )

    async def _keep_pinging(self) -> None:
        """Ping again now and then: each successful ping makes Synapse retry a backed-off queue at once.

        After a failed delivery Synapse backs off up to 512 s before trying us again; a ping that raced
        with that failure (or a failure nobody noticed) would otherwise leave events waiting minutes.
        """
        delay = FIRST_REPING_S
        while not self._stopping:
            try:
                await asyncio.wait_for(self._reports_stop.wait(), delay)
                return  # stopping: no need to wait out the interval (shutdown waits for this task)
            except TimeoutError:
                pass
            delay = self.config.ping_interval_s
            try:
                await self.client.ping(self.config.as_id, f"kanal-keepalive-{secrets.token_hex(8)}")
            except MatrixConnectionError as exc:
                # Noticed even when nothing waits to be sent: /ready says so, and the processor
                # catches up once the homeserver is back (it may have dropped events as it stopped).
                self.outbox.homeserver_unreachable(exc)
            except MatrixRequestError as exc:
                log.debug("Keep-alive ping failed: %s", exc)

    async def _take_e2ee_lease(self) -> bool:
        """The device's lease; a process that just died still holds it for a while, so wait that long."""
        deadline = time.monotonic() + LEASE_SECONDS + 1
        while not await self.leases.hold(E2EE_LEASE):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(1)
        return True

    async def _keep_e2ee_lease(self) -> None:
        while not self._stopping:
            if not await self.leases.hold(E2EE_LEASE):
                log.error("Lost the lease on the bot's encrypting device to another process")
            try:
                await asyncio.wait_for(self._reports_stop.wait(), E2EE_LEASE_RENEW_S)
            except TimeoutError:
                pass

    async def _verify_audit_log(self) -> None:
        """Verify the audit log now and every hour, for monitoring to alert on a failure."""
        await keep_verifying_audit_log(self.config, self.ctx.sessions, self.metrics, self._reports_stop)

    async def stop(self) -> None:
        """Stop taking transactions, finish in-flight work, flush the outbox as far as possible."""
        self.server.accepting = False
        self._stopping = True
        self.bridge.stop()
        self._reports_stop.set()
        if self._processor is not None:
            await asyncio.wait([self._processor], timeout=SHUTDOWN_GRACE_S)
        self.outbox.stop()
        if self._outbox is not None:
            _done, pending = await asyncio.wait([self._outbox], timeout=SHUTDOWN_GRACE_S)
            if pending:
                log.warning(
                    "Shutdown: the outbox is not empty after %.0f s; it resumes at the next start",
                    SHUTDOWN_GRACE_S,
                )
        await self.background.wait(1.0)
        await self.leases.release(PROCESSOR_LEASE)
        await self.leases.release(HOUSEKEEPING_LEASE)
        await self.leases.release(SCHEDULER_LEASE)
        if self.outbox.crypto is not None:
            await self.leases.release(E2EE_LEASE)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._web_runner is not None:
            await self._web_runner.cleanup()
        await self.ctx.pipeline.close()
        if self.outbox.crypto is not None:
            await self.outbox.crypto.stop()
        await self.close_connections()

    async def close_connections(self) -> None:
        """The homeserver client, the outbox's own SQLite connection, the database's pool."""
        await self.client.close()
        await self.outbox.writer.close()
        await self.engine.dispose()


async def verify_audit_log_once(
    config: Config, sessions: Callable[[], AsyncSession], metrics: Metrics
) -> bool:
    """Verify the audit log and put the verdict on /metrics (kanal_audit_log_intact, …_timestamp).

    False when it could not finish (the database away, a key file unreadable): no verdict on the log,
    so the gauges keep the last one; the failure is logged and counted
    (kanal_audit_verify_errors_total), and kanal_audit_log_verified_timestamp_seconds grows old, which
    is what KanalAuditLogNotVerified alerts on if it goes on."""
    from bridge.moderation import audit

    try:
        key = await asyncio.to_thread(audit.configured_public_key, config)
        async with sessions() as session:
            result = await audit.verify(session, key)
    except Exception:
        log.exception(
            "Could not verify the audit log (no verdict on the log itself); trying again in %.0f s",
            AUDIT_VERIFY_RETRY_S,
        )
        metrics.audit_verify_errors.inc()
        return False
    metrics.audit_verified_now(result.ok)
    if not result.ok:
        log.error(
            "The audit log is NOT intact at entry %s: %s (kanal audit verify -c %s)",
            result.first_bad_seq,
            result.problem,
            config.path,
        )
    return True


async def keep_verifying_audit_log(
    config: Config,
    sessions: Callable[[], AsyncSession],
    metrics: Metrics,
    stop: asyncio.Event,
    *,
    interval: float = AUDIT_VERIFY_INTERVAL_S,
    retry: float = AUDIT_VERIFY_RETRY_S,
) -> None:
    """Verify the audit log now, then every `interval` s; `retry` s after one that could not finish."""
    while not stop.is_set():
        finished = await verify_audit_log_once(config, sessions, metrics)
        try:
            await asyncio.wait_for(stop.wait(), interval if finished else retry)
        except TimeoutError:
            pass


async def record_hook_configuration(ctx: Context) -> None:
    """A changed hook configuration is an audit-log entry (what changed is in the config file)."""
    from bridge.moderation import audit

    digest = hook_configuration_digest(ctx.config)
    async with ctx.sessions.begin() as session:
        last = await session.scalar(
            select(AuditEntry.body).where(AuditEntry.kind == "hook_config").order_by(AuditEntry.seq.desc())
        )
        if last is not None and json.loads(last).get("digest") == digest:
            return
        await audit.append(
            session,
            "hook_config",
            {"digest": digest, "hooks": describe_hooks(ctx.config)},
            None,
            config=ctx.config,
        )


async def run_until_stopped(config: Config, stop: asyncio.Event) -> None:
    service = Service(config)
    try:
        await service.start()
    except BaseException:
        await service.close_connections()
        raise
    log.info("Kanal is running as %s on %s", config.bot_user_id, config.domain)
    try:
        await stop.wait()
    finally:
        log.info("Stopping …")
        await service.stop()
        log.info("Stopped")
