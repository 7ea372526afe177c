"""``defeah-db``: one command line for the project's jobs.

Each verb is a small function taking parsed arguments and the settings and returning an exit
code.  Expected failures (``DalError``: bad configuration, database down, migration refused)
print one line on stderr and exit non-zero; ``--traceback`` shows the Python traceback for
debugging.  Without ``DATABASE_URL`` every verb runs against the embedded server, started for
the duration of the command.

Every verb that deletes data (``rollback``, ``seed --clear``, ``clear``; also ``generate``)
refuses a production target with exit 2 unless given ``--force`` (dal.seeding ``guard``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import TypeVar

from dal import bulk, drift, migrations, plan, production, rehearsal, seeding, signin
from dal.config import Settings
from dal.database import Database
from dal.dsn import database_name, describe_dsn
from dal.errors import DalError, ProductionRefused

Verb = Callable[[argparse.Namespace, Settings], int]
T = TypeVar("T")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_REFUSED = 2


@contextmanager
def target_dsn(settings: Settings) -> Iterator[str]:
    """The DSN to work on; starts (and afterwards releases) the embedded server if needed."""
    if settings.database_url is not None:
        yield settings.database_url
        return
    from dal.embedded import EmbeddedServer

    server = EmbeddedServer(settings.data_dir, settings.embedded_database)
    dsn = server.start()
    try:
        yield dsn
    finally:
        server.stop()


def say(message: str) -> None:
    print(message, flush=True)


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    policy = migrations.RunPolicy.from_settings(settings)
    if args.dry_run:
        with target_dsn(settings) as dsn:
            print(plan.migrate_plan(dsn, policy=policy), end="", flush=True)
        return EXIT_OK
    with target_dsn(settings) as dsn:
        applied = migrations.apply(dsn, policy=policy)
        head = migrations.status(dsn).head
    if applied:
        say(f"applied {len(applied)} migration(s): {', '.join(applied)}")
    else:
        say("database is up to date")
    say(f"head: {head or '(none)'} on {describe_dsn(dsn)}")
    return EXIT_OK


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    """Roll back through yoyo, after the production guard (``yoyo rollback`` itself is the
    DBA's own tool and is not guarded).  A dry run changes nothing, so it needs no guard."""
    if args.dry_run:
        return _rollback_dry_run(args, settings)

    def check(db: Database) -> Awaitable[None]:
        return production.guard_database(db, "roll back migrations", force=args.force)

    with target_dsn(settings) as dsn:
        with_database(settings, dsn, check)
        undone = migrations.rollback(dsn, to=args.to, all_=args.all)
        head = migrations.status(dsn).head
    if undone:
        say(f"rolled back {len(undone)} migration(s): {', '.join(undone)}")
    else:
        say("nothing to roll back")
    say(f"head: {head or '(none)'}")
    return EXIT_OK


def _rollback_dry_run(args: argparse.Namespace, settings: Settings) -> int:
    policy = migrations.RunPolicy.from_settings(settings)
    with target_dsn(settings) as dsn:
        text = plan.rollback_plan(dsn, to=args.to, all_=args.all, policy=policy)
    print(text, end="", flush=True)
    return EXIT_OK


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    with target_dsn(settings) as dsn:
        state = migrations.status(dsn)
    say(f"database: {describe_dsn(dsn)}")
    for mid in state.applied:
        say(f"  applied  {mid}")
    for mid in state.pending:
        say(f"  pending  {mid}")
    for mismatch in state.changed:
        say(f"  CHANGED  {mismatch.line()}")
    say(f"{len(state.applied)} applied, {len(state.pending)} pending, {len(state.changed)} changed")
    return EXIT_ERROR if state.pending or state.changed else EXIT_OK


def cmd_accept_checksum(args: argparse.Namespace, settings: Settings) -> int:
    with target_dsn(settings) as dsn:
        hashes = migrations.accept_checksum(dsn, args.id)
    say(
        f"recorded {hashes.migration_id}: sha256 {hashes.sha256}, rollback {hashes.rollback_sha256}"
    )
    return EXIT_OK


def cmd_drift(args: argparse.Namespace, settings: Settings) -> int:
    with target_dsn(settings) as dsn:
        differences = drift.drift(dsn)
    for difference in differences:
        say(difference.line())
    say(f"{len(differences)} difference(s) from {drift.SNAPSHOT.name} on {describe_dsn(dsn)}")
    return EXIT_ERROR if differences else EXIT_OK


def cmd_snapshot(args: argparse.Namespace, settings: Settings) -> int:
    with target_dsn(settings) as dsn:
        count = drift.write_snapshot(dsn)
    say(f"wrote {count} catalog entries to {drift.SNAPSHOT}")
    return EXIT_OK


def cmd_rehearse(args: argparse.Namespace, settings: Settings) -> int:
    with target_dsn(settings) as dsn:
        lines = rehearsal.rehearse(settings, dsn, args.rows)
    for line in lines:
        say(line)
    return EXIT_OK


def cmd_createdb(args: argparse.Namespace, settings: Settings) -> int:
    with target_dsn(settings) as dsn:
        created = migrations.ensure_database(dsn)
        name = database_name(dsn)
        say(f"created database {name}" if created else f"database {name} already exists")
        applied = migrations.apply(dsn, policy=migrations.RunPolicy.from_settings(settings))
    say(f"applied {len(applied)} migration(s)" if applied else "database is up to date")
    return EXIT_OK


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    """The README's main job: database ready (created, migrated, seeded), then serve.

    One embedded server (if any) lives for the whole run: the HTTP server gets its DSN, and
    ``target_dsn`` stops it after Ctrl-C/SIGTERM ends serving.
    """
    with target_dsn(settings) as dsn:
        _migrate_step(dsn, migrations.RunPolicy.from_settings(settings))
        say(_seed_step(settings, dsn))
        if args.no_serve:
            return EXIT_OK
        return _serve_step(settings.replace(database_url=dsn), args)


def _migrate_step(dsn: str, policy: migrations.RunPolicy) -> None:
    migrations.ensure_database(dsn)
    applied = migrations.apply(dsn, policy=policy)
    state = migrations.status(dsn)
    say(f"database: {describe_dsn(dsn)}")
    say(f"migrations: {len(applied)} applied now, head {state.head}, {len(state.pending)} pending")


def _serve_step(settings: Settings, args: argparse.Namespace) -> int:
    # Imported here: the data layer must stay importable without the web package.
    from web.app import bind_error, configure_logging, serve, with_address

    sink = configure_logging()
    try:
        asyncio.run(serve(with_address(settings, args.host, args.port), sink))
    except OSError as exc:
        print(f"defeah-db: error: {bind_error(exc)}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    return EXIT_OK


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Serve the health routes on the database as it is (no migration, no seeding)."""
    return _serve_step(settings, args)


# -- seeds (issue 5) -------------------------------------------------------------------------


def with_database(settings: Settings, dsn: str, job: Callable[[Database], Awaitable[T]]) -> T:
    """Run ``job`` with a small pool on ``dsn`` (one-shot commands need no more)."""

    async def run() -> T:
        config = settings.replace(database_url=dsn, pool_min_size=1, pool_max_size=2)
        async with Database(config) as db:
            return await job(db)

    return asyncio.run(run())


def _seed_step(settings: Settings, dsn: str) -> str:
    """``up`` seeds development databases; on production it skips, never forces."""
    try:
        report = with_database(settings, dsn, seeding.apply_seeds)
    except ProductionRefused:
        return "seeds: skipped (the target is production)"
    return report.lines()[-1]


def cmd_seed(args: argparse.Namespace, settings: Settings) -> int:
    async def job(db: Database) -> list[str]:
        lines = []
        if args.clear:
            cleared = await seeding.clear_seeds(db, force=args.force)
            lines.append(f"removed {cleared.seed_users} seed user(s)")
        report = await seeding.apply_seeds(db, force=args.force)
        return lines + report.lines()

    with target_dsn(settings) as dsn:
        for line in with_database(settings, dsn, job):
            say(line)
    return EXIT_OK


def cmd_clear(args: argparse.Namespace, settings: Settings) -> int:
    async def job(db: Database) -> seeding.ClearReport:
        return await seeding.clear_seeds(db, force=args.force, generated=args.generated)

    with target_dsn(settings) as dsn:
        cleared = with_database(settings, dsn, job)
    say(f"removed {cleared.seed_users} seed user(s)")
    if args.generated:
        say(f"removed {cleared.generated_users} generated user(s) (@{seeding.BULK_EMAIL_DOMAIN})")
    return EXIT_OK


def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    with target_dsn(settings) as dsn:
        result = bulk.run(
            settings.replace(database_url=dsn, pool_min_size=1, pool_max_size=2),
            args.count,
            batch_size=args.batch_size,
            force=args.force,
        )
    say(result.summary())
    return 130 if result.interrupted else EXIT_OK


# -- sign-in (issue 11) ----------------------------------------------------------------------

_AGE = re.compile(r"(\d+)([dhms])")
_AGE_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def age(raw: str) -> timedelta:
    """``90d``, ``12h``, ``30m`` or ``45s``: how old an event must be to be pruned."""
    match = _AGE.fullmatch(raw.strip())
    if match is None or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"expected a positive age such as 90d or 12h, got {raw!r}")
    return timedelta(**{_AGE_UNITS[match.group(2)]: int(match.group(1))})


def cmd_unlock(args: argparse.Namespace, settings: Settings) -> int:
    with target_dsn(settings) as dsn:
        report = with_database(
            settings, dsn, lambda db: signin.unlock(db, args.email, force=args.force)
        )
    account = "its account lock lifted" if report.user_id else "no account has this email"
    say(f"unlocked {report.email}: {report.budgets_cleared} budget(s) cleared, {account}")
    return EXIT_OK


def cmd_prune_events(args: argparse.Namespace, settings: Settings) -> int:
    def job(db: Database) -> Awaitable[signin.PruneReport]:
        return signin.prune_events(db, args.older_than, force=args.force, batch=args.batch_size)

    with target_dsn(settings) as dsn:
        report = with_database(settings, dsn, job)
    dropped = ", ".join(report.dropped_partitions) or "none"
    say(f"dropped partitions: {dropped}; deleted {report.deleted_rows} older row(s) in batches")
    return EXIT_OK


def cmd_maintain_events(args: argparse.Namespace, settings: Settings) -> int:
    with target_dsn(settings) as dsn:
        report = with_database(
            settings, dsn, lambda db: signin.maintain_events(db, months_ahead=args.months_ahead)
        )
    created = ", ".join(report.created_partitions) or "none (all present)"
    say(f"created partitions: {created}; removed {report.expired_budgets} expired budget row(s)")
    return EXIT_OK


def add_address_arguments(parser: argparse.ArgumentParser) -> None:
    """``--host``/``--port`` of the serving commands (also ``python -m web``)."""
    parser.add_argument("--host", help="address to bind (default: DEFEAH_HOST, 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, help="port to bind (default: DEFEAH_PORT, 8080; 0 picks a free one)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="defeah-db",
        description="Defeah database tools. Without DATABASE_URL an embedded PostgreSQL is used.",
    )
    parser.add_argument(
        "--traceback", action="store_true", help="show the Python traceback on errors"
    )
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, func: Verb, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func)
        return p

    up = verb("up", cmd_up, "create the database if needed, migrate, seed, then serve HTTP")
    up.add_argument(
        "--no-serve", action="store_true", help="stop after the database steps (CI, scripts)"
    )
    serve = verb("serve", cmd_serve, "serve the HTTP health routes until Ctrl-C / SIGTERM")
    for p in (up, serve):
        add_address_arguments(p)
    dry_help = "print the exact SQL (psql-runnable, with bookkeeping) instead of running it"
    mg = verb("migrate", cmd_migrate, "apply pending migrations")
    mg.add_argument("--dry-run", action="store_true", help=dry_help)
    force_help = "act even on a database marked as production (DEFEAH_ENV or defeah.environment)"
    rb = verb("rollback", cmd_rollback, "roll back the newest migration (or more)")
    rb.add_argument("--dry-run", action="store_true", help=dry_help)
    group = rb.add_mutually_exclusive_group()
    group.add_argument("--all", action="store_true", help="roll back every migration")
    group.add_argument("--to", metavar="ID", help="roll back everything applied after ID")
    rb.add_argument("--force", action="store_true", help=force_help)
    verb(
        "status",
        cmd_status,
        "list applied, pending and changed migrations (exit 1 if any pending or changed)",
    )
    acc = verb(
        "accept-checksum",
        cmd_accept_checksum,
        "re-record the content hash of an applied migration after a reviewed edit",
    )
    acc.add_argument("id", metavar="ID", help="migration id, e.g. 0002_users_hardening")
    verb("drift", cmd_drift, "compare the live catalog with sql/schema.snapshot (exit 1 on drift)")
    verb(
        "snapshot",
        cmd_snapshot,
        "regenerate sql/schema.snapshot from a scratch database migrated to head",
    )
    rh = verb(
        "rehearse",
        cmd_rehearse,
        "run the pending migrations on a filled scratch copy under load; report locks, p99",
    )
    rh.add_argument(
        "--rows", type=bulk.positive_int, default=100_000, metavar="N", help="users to generate"
    )
    verb("createdb", cmd_createdb, "create the target database if missing, then migrate")
    sd = verb("seed", cmd_seed, "insert the development users of seeds/*.sql (idempotent)")
    sd.add_argument("--clear", action="store_true", help="remove the seed users first, then seed")
    sd.add_argument("--force", action="store_true", help=force_help)
    cl = verb("clear", cmd_clear, "remove the seed users (never any other user)")
    cl.add_argument(
        "--generated",
        action="store_true",
        help=f"also remove the bulk generator's users (@{seeding.BULK_EMAIL_DOMAIN})",
    )
    cl.add_argument("--force", action="store_true", help=force_help)
    gen = verb("generate", cmd_generate, "insert N synthetic users with COPY (for benchmarks)")
    gen.add_argument("count", type=bulk.positive_int, metavar="N", help="number of users")
    gen.add_argument(
        "--batch-size",
        type=bulk.positive_int,
        default=bulk.DEFAULT_BATCH_SIZE,
        metavar="B",
        help=f"rows per COPY, each batch its own transaction (default {bulk.DEFAULT_BATCH_SIZE})",
    )
    gen.add_argument("--force", action="store_true", help=force_help)
    add_sign_in_verbs(verb, force_help)
    return parser


def add_sign_in_verbs(
    verb: Callable[[str, Verb, str], argparse.ArgumentParser], force: str
) -> None:
    """``unlock``, ``prune-events`` (destructive, guarded) and ``maintain-events`` (safe, run it
    from cron; kept apart so routine partition creation never needs --force)."""
    ul = verb("unlock", cmd_unlock, "clear every sign-in budget and the account lock of EMAIL")
    ul.add_argument("email", metavar="EMAIL")
    ul.add_argument("--force", action="store_true", help=force)
    pr = verb("prune-events", cmd_prune_events, "delete sign-in events older than an age")
    pr.add_argument(
        "--older-than", type=age, required=True, metavar="AGE", help="e.g. 90d, 12h, 30m"
    )
    pr.add_argument(
        "--batch-size",
        type=bulk.positive_int,
        default=signin.PRUNE_BATCH,
        metavar="B",
        help=f"rows per DELETE outside dropped partitions (default {signin.PRUNE_BATCH})",
    )
    pr.add_argument("--force", action="store_true", help=force)
    mt = verb(
        "maintain-events",
        cmd_maintain_events,
        "create the sign-in event partitions ahead and drop expired budget rows",
    )
    mt.add_argument(
        "--months-ahead",
        type=bulk.positive_int,
        default=signin.MONTHS_AHEAD,
        metavar="N",
        help=f"months of partitions to keep ready (default {signin.MONTHS_AHEAD})",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings: Settings | None = None
    try:
        settings = Settings.from_env()
        code: int = args.func(args, settings)
    except ProductionRefused as exc:
        print(f"defeah-db: {exc}", file=sys.stderr, flush=True)
        return EXIT_REFUSED
    except DalError as exc:
        if args.traceback:
            raise
        # Last line of defence: whatever a driver quoted into the message, no secret leaves.
        text = str(exc) if settings is None else settings.scrub(str(exc))
        print(f"defeah-db: error: {text}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("defeah-db: interrupted", file=sys.stderr, flush=True)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
