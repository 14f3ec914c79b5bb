"""The `kanal` command: init, run, up, migrate-db, hosting, doctor, token, flagger, audit, transparency,
import, export."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, TypeVar

from appservice.ids import is_user_id
from bridge import __version__
from bridge.ops.initfiles import write_init_files
from bridge.runtime import logs
from bridge.runtime.config import (
    DEFAULT_LISTEN,
    DEFAULT_WEB_LISTEN,
    Config,
    ConfigError,
)
from bridge.runtime.config import load as load_config

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from bridge.runtime.context import Context
    from bridge.transfer.telegram_import import Progress

EXIT_CONFIG = 2
EXIT_STARTUP = 1

T = TypeVar("T")


def _cmd_init(args: argparse.Namespace) -> int:
    try:
        config_path, registration_path = write_init_files(
            Path(args.output_dir),
            domain=args.domain,
            homeserver_url=args.homeserver_url,
            listen=args.listen,
            as_url=args.as_url,
            database_url=args.database_url,
            force=args.force,
            web_listen=args.web_listen or None,
            state_dir=args.state_dir,
            web_public_url=args.web_public_url,
            encryption=args.encryption,
        )
    except FileExistsError as exc:
        print(f"kanal init: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ConfigError as exc:
        print(f"kanal init: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"Wrote {config_path} and {registration_path} (mode 0600).")
    print("Next: add the registration file's absolute path to app_service_config_files in the homeserver's")
    print(f"config, restart the homeserver, then run: kanal run -c {config_path}")
    if args.encryption:
        print("Encryption: also set in the homeserver's config experimental_features:")
        print("  {msc2409_to_device_messages_enabled: true, msc3202_transaction_extensions: true}")
        print("and encryption_enabled_by_default_for_room_type: invite or off (never all); `kanal doctor` checks.")
    return 0


def _install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


def _config(args: argparse.Namespace, *, service: bool = False) -> Config | None:
    """The config file `-c` names, or None once what is wrong with it is printed.

    `service`: a command that runs the service also checks the registration the config implies,
    and sets up the logs."""
    try:
        config = load_config(Path(args.config))
        if service:
            from bridge.app import registration_from_config

            registration_from_config(config)
    except ConfigError as exc:
        print(f"kanal: configuration error: {exc}", file=sys.stderr)
        return None
    if service:
        logs.setup(config.log_level, config.log_format)
    return config


async def _as_kanal(config: Config, work: Callable[[Context], Awaitable[T]], *, reach_homeserver: bool = True) -> T:
    """A shell command that acts as Kanal does (`hosting apply`, `import`, `export`): the database
    brought up to date, the homeserver checked (StartupError), then `work` with Kanal's context."""
    from bridge.app import Service, check_homeserver
    from bridge.store.db import migrate

    service = Service(config)
    try:
        await migrate(service.engine)
        if reach_homeserver:
            await check_homeserver(service.client, config)
        return await work(service.ctx)
    finally:
        await service.close_connections()


def _in_database(config: Config, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run `work` in one transaction on the configured database, brought up to date first."""
    from bridge.store.db import create_engine, migrate, sessionmaker

    async def main() -> T:
        engine = create_engine(config.database_url)
        try:
            await migrate(engine)
            async with sessionmaker(engine).begin() as session:
                return await work(session)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def _print_lines(code: int, lines: list[str]) -> int:
    """A shell command's outcome: its lines on stdout, or on stderr when `code` says it failed."""
    for line in lines:
        print(line, file=sys.stderr if code else sys.stdout)
    return code


def _cmd_run(args: argparse.Namespace) -> int:
    from bridge.app import StartupError, run_until_stopped

    config = _config(args, service=True)
    if config is None:
        return EXIT_CONFIG

    async def main() -> None:
        stop = asyncio.Event()
        _install_stop_signals(stop)
        await run_until_stopped(config, stop)

    try:
        asyncio.run(main())
    except StartupError as exc:
        logging.getLogger("kanal").error("%s", exc)
        print(f"kanal: cannot start: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    return 0


UP_DEFAULTS = ("kanal-sandbox", 8008, 29340)  # kanal up's --data-dir, --synapse-port, --port


def _cmd_up(args: argparse.Namespace) -> int:
    from bridge.ops.banner import up_again
    from bridge.ops.sandbox import run_sandbox

    logs.setup("INFO", "text")
    again = up_again(args.data_dir, args.synapse_port, args.port, UP_DEFAULTS)
    return run_sandbox(
        Path(args.data_dir),
        synapse_port=args.synapse_port,
        kanal_port=args.port,
        again=again,
        encryption=args.encryption,
    )


def _cmd_migrate_db(args: argparse.Namespace) -> int:
    from bridge.ops.migrate_db import MigrationError, copy_database
    from bridge.runtime.config import resolve_database_url

    config = _config(args)
    if config is None:
        return EXIT_CONFIG
    target = resolve_database_url(args.to, config.writable_dir)
    if target == config.database_url:
        print("kanal migrate-db: --to is the database Kanal already uses", file=sys.stderr)
        return EXIT_CONFIG
    print(f"Copying {config.database_url} → {target.split('@')[-1]} (stop Kanal first) …", file=sys.stderr)
    try:
        copied = asyncio.run(copy_database(config.database_url, target))
    except MigrationError as exc:
        print(f"kanal migrate-db: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    print(f"Copied {sum(copied.values())} rows in {len(copied)} tables.")
    print(f"Now set database.url in {config.path} to the new database and start Kanal again.")
    return 0


def _cmd_hosting_apply(args: argparse.Namespace) -> int:
    from bridge.app import StartupError
    from bridge.channels.hosting import apply, describe

    config = _config(args, service=True)
    if config is None:
        return EXIT_CONFIG
    try:
        result = asyncio.run(_as_kanal(config, lambda ctx: apply(ctx, timeout=args.timeout)))
    except StartupError as exc:
        print(f"kanal hosting apply: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    for line in describe(config, result, args.timeout):
        print(line)
    return EXIT_STARTUP if result.failed or result.waiting else 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from bridge.ops.doctor import exit_code, render_json, render_table, run_checks, wants_colour

    config = _config(args)
    if config is None:
        return EXIT_CONFIG
    homeserver_config = Path(args.homeserver_config) if args.homeserver_config else None
    checks = asyncio.run(run_checks(config, homeserver_config))
    if args.format == "json":
        print(render_json(checks))
    else:
        print(render_table(checks, colour=wants_colour(sys.stdout)))
    return exit_code(checks)


def _cmd_token(args: argparse.Namespace) -> int:
    """Registration tokens for the `token` creation policy, managed from a shell."""
    from sqlalchemy import select

    from bridge.channels.registry import (
        create_token,
        describe_token,
        find_token_by_ref,
        log_entry,
    )
    from bridge.store.models import RegistrationToken
    from bridge.text.commands import parse_duration

    config = _config(args)
    if config is None:
        return EXIT_CONFIG
    try:
        valid_for = parse_duration(args.expires) if getattr(args, "expires", None) else None
    except ValueError as exc:
        print(f"kanal token: --expires: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    actor = f"cli:{getpass.getuser()}"

    async def work(session: AsyncSession) -> tuple[int, list[str]]:
        if args.action == "create":
            token, row = await create_token(
                session, config, actor, uses=args.uses, valid_for=valid_for, label=args.label or ""
            )
            return 0, [token, describe_token(row)]
        if args.action == "revoke":
            found = await find_token_by_ref(session, args.ref)
            if found is None:
                return EXIT_STARTUP, [f"kanal token revoke: no token {args.ref}"]
            found.revoked = True
            await log_entry(session, config, actor, "token_revoked", f"token {found.id}")
            return 0, [describe_token(found)]
        rows = (await session.scalars(select(RegistrationToken).order_by(RegistrationToken.id))).all()
        return 0, [describe_token(r) for r in rows] or ["no registration tokens"]

    return _print_lines(*_in_database(config, work))


def _cmd_transparency(args: argparse.Namespace) -> int:
    """The public transparency report (DSA Art. 15/24) for a period, as JSON, CSV or HTML."""
    from sqlalchemy.exc import SQLAlchemyError

    from bridge.moderation.transparency import RENDERERS, parse_day, report_from_database, write_public_file

    try:
        start, end = parse_day(args.start), parse_day(args.end)
    except ValueError as exc:
        print(f"kanal transparency: --from/--to: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if start > end:
        print(f"kanal transparency: --from {start} is after --to {end}", file=sys.stderr)
        return EXIT_CONFIG
    config = _config(args)
    if config is None:
        return EXIT_CONFIG
    try:
        report = asyncio.run(report_from_database(config.database_url, start, end, provider=config.domain))
    except SQLAlchemyError as exc:
        print(f"kanal transparency: cannot read the database: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    text = RENDERERS[args.format](report)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        write_public_file(Path(args.output), text)
    except OSError as exc:
        print(f"kanal transparency: cannot write {args.output}: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    return 0


def _cmd_flagger(args: argparse.Namespace) -> int:
    """Trusted flaggers: named tokens for POST /_kanal/flagger/v1/notices."""
    from sqlalchemy import select

    from bridge.moderation.notices import new_flagger_token
    from bridge.store.hashing import hash_token
    from bridge.store.models import Flagger

    config = _config(args)
    if config is None:
        return EXIT_CONFIG

    async def work(session: AsyncSession) -> tuple[int, list[str]]:
        if args.action == "add":
            if await session.scalar(select(Flagger.id).where(Flagger.name == args.name)) is not None:
                return EXIT_STARTUP, [f"kanal flagger add: a flagger named {args.name!r} exists"]
            token = new_flagger_token()
            session.add(Flagger(name=args.name, token_hash=hash_token(token), revoked=False))
            return 0, [
                token,
                f"Give this token to {args.name}; it is shown only now (only its hash is kept).",
            ]
        if args.action == "revoke":
            flagger = await session.scalar(select(Flagger).where(Flagger.name == args.name))
            if flagger is None:
                return EXIT_STARTUP, [f"kanal flagger revoke: no flagger named {args.name!r}"]
            flagger.revoked = True
            return 0, [f"{args.name}: revoked"]
        rows = (await session.scalars(select(Flagger).order_by(Flagger.name))).all()
        return 0, [f"{f.name}{' (revoked)' if f.revoked else ''}" for f in rows] or ["no flaggers"]

    return _print_lines(*_in_database(config, work))


def _cmd_audit(args: argparse.Namespace) -> int:
    """The audit log: prove it intact (from the database or from an export), or export it."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from sqlalchemy.exc import SQLAlchemyError

    from bridge.moderation import audit

    def report(result: audit.VerifyResult, key: Ed25519PublicKey | None, key_source: str) -> int:
        counts = f"{result.entries} entries, {result.checkpoints} checkpoints"
        if not result.ok:
            print(
                f"Audit log NOT intact at entry {result.first_bad_seq}: {result.problem} ({counts} read)",
                file=sys.stderr,
            )
            return EXIT_STARTUP
        print(f"Audit log intact: {counts}; chain head {result.head}")
        if key is not None:
            print(f"Checkpoints signed by key {audit.key_id(key)} ({key_source})")
        return 0

    try:
        trusted = audit.load_public_key(Path(args.public_key)) if getattr(args, "public_key", None) else None
        if getattr(args, "export", None):
            exported = audit.load_export(Path(args.export))
            key = trusted or exported.public_key
            result = audit.verify_entries(exported.entries, exported.checkpoints, key, exported.personal)
            source = "--public-key" if trusted else "the export's own public_key.pem: compare its key id"
            return report(result, key, source)
        config = load_config(Path(args.config))
        key = trusted or audit.configured_public_key(config)
    except ConfigError as exc:
        print(f"kanal: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except audit.AuditError as exc:
        print(f"kanal audit: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    async def work(session: AsyncSession) -> audit.VerifyResult | None:
        if args.audit_command == "verify":
            return await audit.verify(session, key)
        await audit.export(session, Path(args.output), key)
        return None

    try:
        outcome = _in_database(config, work)
    except audit.AuditError as exc:
        print(f"kanal audit: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (SQLAlchemyError, OSError) as exc:
        print(f"kanal audit: cannot read the database: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if outcome is None:
        print(f"Wrote {args.output}; verify it offline with: kanal audit verify --export {args.output}")
        return 0
    return report(outcome, key, "the configured compliance.audit_key" if trusted is None else "--public-key")


class _ProgressBar:
    """`kanal import`'s progress on stderr: a bar redrawn in place on a terminal, else a line per tenth."""

    WIDTH = 30

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.shown = -1

    def __call__(self, progress: Progress) -> None:
        total = max(progress.total, 1)
        share = progress.done / total
        text = (
            f"{progress.done}/{progress.total} messages, {progress.posts} posts, {progress.media} media, "
            f"{progress.rate:.1f} posts/s"
        )
        if self.tty:
            filled = int(share * self.WIDTH)
            print(f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] {text}", end="", file=self.stream, flush=True)
        elif int(share * 10) > self.shown:
            self.shown = int(share * 10)
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.tty:
            print(file=self.stream)


def _cmd_import(args: argparse.Namespace) -> int:
    """A Telegram channel's export into a Kanal channel: `kanal import telegram <dir> --channel <handle>`."""
    from bridge.app import StartupError
    from bridge.text.telegram import ExportError
    from bridge.transfer.telegram_import import Importer, ImportRefused, ImportStopped, Summary

    config = _config(args, service=True)
    if config is None:
        return EXIT_CONFIG
    if args.rate <= 0:
        print("kanal import: --rate must be more than 0", file=sys.stderr)
        return EXIT_CONFIG
    if args.owner is not None and not is_user_id(args.owner):
        print(f"kanal import: --owner must be a Matrix user id like @ann:{config.domain}", file=sys.stderr)
        return EXIT_CONFIG
    bar = _ProgressBar(sys.stderr)

    async def work(ctx: Context) -> Summary:
        importer = Importer(
            ctx,
            Path(args.export_dir),
            args.channel,
            dry_run=args.dry_run,
            rate=args.rate,
            progress=bar,
            owner=args.owner,
        )
        return await importer.run()

    try:
        try:
            summary = asyncio.run(_as_kanal(config, work, reach_homeserver=not args.dry_run))
        finally:
            bar.close()
    except (ExportError, ImportRefused, StartupError, ImportStopped) as exc:
        print(f"kanal import: {exc}", file=sys.stderr)
        return EXIT_STARTUP if isinstance(exc, StartupError | ImportStopped) else EXIT_CONFIG
    except OSError as exc:
        print(f"kanal import: cannot read the export: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    for line in summary.lines():
        print(line)
    return EXIT_STARTUP if summary.unsent or summary.failed else 0


def _cmd_export(args: argparse.Namespace) -> int:
    """A channel's history in Telegram's export shape: `kanal export <handle> <dir>`."""
    from bridge.app import StartupError
    from bridge.transfer.export import Exporter, ExportRefused

    config = _config(args, service=True)
    if config is None:
        return EXIT_CONFIG
    try:
        summary = asyncio.run(_as_kanal(config, lambda ctx: Exporter(ctx, args.handle, Path(args.output_dir)).run()))
    except ExportRefused as exc:
        print(f"kanal export: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except StartupError as exc:
        print(f"kanal export: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    except OSError as exc:
        print(f"kanal export: cannot write the export: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return _print_lines(0, summary.lines())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kanal", description="Telegram-style channels for Matrix homeservers."
    )
    parser.add_argument("--version", action="version", version=f"kanal {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    init = sub.add_parser("init", help="write config.yaml and registration.yaml with fresh tokens")
    init.add_argument("--domain", required=True, help="the homeserver's server_name, e.g. example.org")
    init.add_argument("--homeserver-url", required=True, help="how Kanal reaches the homeserver")
    init.add_argument(
        "--listen", default=DEFAULT_LISTEN, help=f"HOST:PORT Kanal listens on ({DEFAULT_LISTEN})"
    )
    init.add_argument("--as-url", help="how the homeserver reaches Kanal (default: http://<listen>)")
    init.add_argument(
        "--database-url",
        default="sqlite:///kanal.db",
        help="SQLAlchemy URL; a relative SQLite path is relative to the state directory",
    )
    init.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where Kanal writes its database (SQLite), audit key and media cache, when not beside "
        "the config file (state.directory; systemd: /var/lib/kanal)",
    )
    init.add_argument("--output-dir", default=".", help="where to write the files (default: here)")
    init.add_argument("--force", action="store_true", help="replace existing files (new tokens)")
    init.add_argument(
        "--web-listen",
        default=DEFAULT_WEB_LISTEN,
        help=f"HOST:PORT of the public web pages and publishing API ({DEFAULT_WEB_LISTEN}); '' for none",
    )
    init.add_argument(
        "--web-public-url",
        metavar="URL",
        help="the address readers use, behind your TLS reverse proxy (web.public_url; default: http://<web-listen>)",
    )
    init.add_argument(
        "--encryption",
        action="store_true",
        help="the bot takes part in end-to-end encryption in its private rooms (encryption.enabled; the "
        "registration opts in to the key transactions, org.matrix.msc3202)",
    )
    init.set_defaults(func=_cmd_init)

    run = sub.add_parser("run", help="run the service against a homeserver")
    run.add_argument("-c", "--config", required=True, help="path to config.yaml")
    run.set_defaults(func=_cmd_run)

    migrate = sub.add_parser(
        "migrate-db", help="copy all data into another database (e.g. SQLite → PostgreSQL)"
    )
    migrate.add_argument(
        "-c", "--config", required=True, help="path to config.yaml (its database is the source)"
    )
    migrate.add_argument(
        "--to", required=True, help="target URL, e.g. postgresql://kanal@127.0.0.1:5432/kanal"
    )
    migrate.set_defaults(func=_cmd_migrate_db)

    hosting = sub.add_parser("hosting", help="federation and retention policy of the channel rooms")
    hosting_sub = hosting.add_subparsers(dest="hosting_command", required=True)
    hosting_apply = hosting_sub.add_parser(
        "apply", help="bring every channel room to the configured policy now and wait until it is sent"
    )
    hosting_apply.add_argument("-c", "--config", required=True, help="path to config.yaml")
    hosting_apply.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait for the changes to be sent (120)"
    )
    hosting_apply.set_defaults(func=_cmd_hosting_apply)

    doctor = sub.add_parser(
        "doctor",
        help="check a deployment: homeserver, registration, tokens, and the homeserver's sovereignty",
        description="Check a deployment and print what passes, what to look at, and what to fix.",
        epilog="exit codes: 0 every check passes, 1 at least one warning, 2 Kanal's config file is "
        "broken, 3 at least one check fails",
    )
    doctor.add_argument("-c", "--config", required=True, help="path to config.yaml")
    doctor.add_argument(
        "--homeserver-config",
        metavar="PATH",
        help="Synapse's homeserver.yaml: also check federation, key servers, stats, media, directory, database",
    )
    doctor.add_argument("--format", choices=("table", "json"), default="table", help="output (table)")
    doctor.set_defaults(func=_cmd_doctor)

    token = sub.add_parser("token", help="registration tokens (for channels.creation_policy: token)")
    token_sub = token.add_subparsers(dest="action", required=True)
    token_create = token_sub.add_parser(
        "create", help="make a token; it is printed once, only its hash is kept"
    )
    token_create.add_argument("--uses", type=int, help="how many channels it may create (default: unlimited)")
    token_create.add_argument("--expires", help="valid for 30m, 12h, 7d, 2w … (default: no expiry)")
    token_create.add_argument("--label", help="a note for operators, e.g. who it is for")
    token_list = token_sub.add_parser("list", help="every token: uses, expiry, state")
    token_revoke = token_sub.add_parser("revoke", help="revoke a token by its number or hint")
    token_revoke.add_argument(
        "ref", help="the token's number (#3 or 3) or the first characters after kanal_rt_"
    )
    for command in (token_create, token_list, token_revoke):
        command.add_argument("-c", "--config", required=True, help="path to config.yaml")
        command.set_defaults(func=_cmd_token)

    transparency = sub.add_parser(
        "transparency",
        help="the transparency report (DSA Art. 15/24) for a period: notices, decisions, appeals",
    )
    transparency.add_argument("-c", "--config", required=True, help="path to config.yaml")
    transparency.add_argument(
        "--from", dest="start", required=True, metavar="DATE", help="first day, e.g. 2026-01-01 (UTC)"
    )
    transparency.add_argument(
        "--to", dest="end", required=True, metavar="DATE", help="last day, included, e.g. 2026-06-30 (UTC)"
    )
    transparency.add_argument(
        "--format", choices=("json", "csv", "html"), default="json", help="output (json)"
    )
    transparency.add_argument("--output", metavar="FILE", help="write here, mode 0644 (default: stdout)")
    transparency.set_defaults(func=_cmd_transparency)

    flagger = sub.add_parser("flagger", help="trusted flaggers who send notices over HTTP")
    flagger_sub = flagger.add_subparsers(dest="action", required=True)
    flagger_add = flagger_sub.add_parser("add", help="a new flagger; its token is printed once")
    flagger_add.add_argument("name", help="the organisation, e.g. 'Hotline Example'")
    flagger_list = flagger_sub.add_parser("list", help="every flagger")
    flagger_revoke = flagger_sub.add_parser("revoke", help="revoke a flagger's token")
    flagger_revoke.add_argument("name")
    for command in (flagger_add, flagger_list, flagger_revoke):
        command.add_argument("-c", "--config", required=True, help="path to config.yaml")
        command.set_defaults(func=_cmd_flagger)

    audit = sub.add_parser("audit", help="the tamper-evident audit log: verify it, export it")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    audit_verify = audit_sub.add_parser(
        "verify",
        help="prove the log intact, or name the first altered entry",
        epilog="exit codes: 0 intact, 1 not intact (the first bad entry is named), 2 the check could not "
        "run (config, key, export or database)",
    )
    audit_source = audit_verify.add_mutually_exclusive_group(required=True)
    audit_source.add_argument("-c", "--config", help="path to config.yaml: verify the database")
    audit_source.add_argument("--export", metavar="DIR", help="verify an export, offline")
    audit_verify.add_argument(
        "--public-key", metavar="PEM", help="check the checkpoints against this key (default: Kanal's own)"
    )
    audit_verify.set_defaults(func=_cmd_audit)
    audit_export = audit_sub.add_parser(
        "export", help="write entries, checkpoints and the public key to a new directory"
    )
    audit_export.add_argument("-c", "--config", required=True, help="path to config.yaml")
    audit_export.add_argument(
        "--output", required=True, metavar="DIR", help="a new (or empty) directory; entries.jsonl is 0600"
    )
    audit_export.set_defaults(func=_cmd_audit)

    importing = sub.add_parser("import", help="bring a channel over from elsewhere: import its export")
    import_sub = importing.add_subparsers(dest="import_source", required=True)
    telegram = import_sub.add_parser(
        "telegram",
        help="a Telegram channel's history (Telegram Desktop: Export chat history, Machine-readable JSON)",
        description="Import a Telegram channel's export into a Kanal channel: posts in order at their "
        "original times, formatting, media, replies, polls. Run again to resume; nothing is imported twice.",
        epilog="exit codes: 0 imported and sent, 1 imported but not all sent yet, or stopped midway by the "
        "homeserver (run again to go on), or Kanal cannot start, 2 nothing imported: the config, the export or "
        "the channel is not right (the message says why)",
    )
    telegram.add_argument("export_dir", metavar="EXPORT-DIR", help="the export's folder (with result.json)")
    telegram.add_argument("--channel", required=True, metavar="HANDLE", help="the (empty) channel to import into")
    telegram.add_argument(
        "--owner",
        metavar="@USER:SERVER",
        help="create the channel for this person when it does not exist yet (its title: the export's name)",
    )
    telegram.add_argument("-c", "--config", required=True, help="path to config.yaml")
    telegram.add_argument(
        "--dry-run", action="store_true", help="print what would be imported and what cannot be; change nothing"
    )
    telegram.add_argument(
        "--rate", type=float, default=20.0, help="posts a second at most, so live traffic keeps flowing (20)"
    )
    telegram.set_defaults(func=_cmd_import)

    export = sub.add_parser(
        "export",
        help="write a channel's history in Telegram's export shape (result.json and media), to take it elsewhere",
    )
    export.add_argument("handle", help="the channel")
    export.add_argument("output_dir", metavar="DIR", help="a new (or empty) folder")
    export.add_argument("-c", "--config", required=True, help="path to config.yaml")
    export.set_defaults(func=_cmd_export)

    up = sub.add_parser("up", help="the sandbox: a local Synapse wired to Kanal, until Ctrl-C")
    data_dir, synapse_port, port = UP_DEFAULTS
    up.add_argument(
        "--data-dir", default=data_dir, help=f"sandbox data, reused on the next run ({data_dir})"
    )
    up.add_argument(
        "--synapse-port", type=int, default=synapse_port, help=f"Synapse's port on 127.0.0.1 ({synapse_port})"
    )
    up.add_argument(
        "--port",
        type=int,
        default=port,
        help=f"Kanal's port for the homeserver ({port}); its web pages are on the next one ({port + 1})",
    )
    up.add_argument(
        "--encryption",
        action="store_true",
        help="a new sandbox whose homeserver encrypts private rooms and whose bot takes part (kept on later runs)",
    )
    up.set_defaults(func=_cmd_up)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
