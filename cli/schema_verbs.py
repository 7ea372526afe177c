"""Verbs for the schema: migrate, roll back, inspect, check, rehearse (docs/runner.md)."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable

from cli.common import EXIT_ERROR, EXIT_OK, FORCE_HELP, AddVerb, say, with_database
from cli.progress import positive_int
from dal.db import admin, production_guard
from dal.db.database import Database
from dal.db.dsn import database_name, describe_dsn
from dal.db.embedded import target_dsn
from dal.db.settings import Settings
from dal.migrations import drift, dry_run, rehearsal, runner


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    policy = runner.RunPolicy.from_settings(settings)
    if args.dry_run:
        with target_dsn(settings) as dsn:
            print(dry_run.migrate_plan(dsn, policy=policy), end="", flush=True)
        return EXIT_OK
    with target_dsn(settings) as dsn:
        applied = runner.apply(dsn, policy=policy)
        head = runner.status(dsn).head
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
        return production_guard.guard_database(db, "roll back migrations", force=args.force)

    with target_dsn(settings) as dsn:
        with_database(settings, dsn, check)
        undone = runner.rollback(dsn, to=args.to, all_=args.all)
        head = runner.status(dsn).head
    if undone:
        say(f"rolled back {len(undone)} migration(s): {', '.join(undone)}")
    else:
        say("nothing to roll back")
    say(f"head: {head or '(none)'}")
    return EXIT_OK


def _rollback_dry_run(args: argparse.Namespace, settings: Settings) -> int:
    policy = runner.RunPolicy.from_settings(settings)
    with target_dsn(settings) as dsn:
        text = dry_run.rollback_plan(dsn, to=args.to, all_=args.all, policy=policy)
    print(text, end="", flush=True)
    return EXIT_OK


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    with target_dsn(settings) as dsn:
        state = runner.status(dsn)
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
    """Guarded like rollback: accepting an edit is what lets ``migrate`` and ``rollback`` run
    a file nobody reviewed against this database."""

    def check(db: Database) -> Awaitable[None]:
        action = f"accept the edited checksum of {args.id!r}"
        return production_guard.guard_database(db, action, force=args.force)

    with target_dsn(settings) as dsn:
        with_database(settings, dsn, check)
        hashes = runner.accept_checksum(dsn, args.id)
    say(
        f"recorded {hashes.migration_id}: sha256 {hashes.sha256}, rollback {hashes.rollback_sha256}"
    )
    return EXIT_OK


def cmd_drift(args: argparse.Namespace, settings: Settings) -> int:
    with target_dsn(settings) as dsn:
        report = drift.drift(dsn, loop=settings.event_loop)
    for difference in report.differences:
        say(difference.line())
    for finding in report.findings:
        say(finding.line())
    say(
        f"{len(report.differences)} difference(s) from {drift.SNAPSHOT.name}, "
        f"{len(report.findings)} partition finding(s) on {describe_dsn(dsn)}"
    )
    return EXIT_OK if report.clean else EXIT_ERROR


def cmd_snapshot(args: argparse.Namespace, settings: Settings) -> int:
    with target_dsn(settings) as dsn:
        count = drift.write_snapshot(dsn, loop=settings.event_loop)
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
        created = admin.ensure_database(dsn)
        name = database_name(dsn)
        say(f"created database {name}" if created else f"database {name} already exists")
        applied = runner.apply(dsn, policy=runner.RunPolicy.from_settings(settings))
    say(f"applied {len(applied)} migration(s)" if applied else "database is up to date")
    return EXIT_OK


def register(verb: AddVerb) -> None:
    dry_help = "print the exact SQL (psql-runnable, with bookkeeping) instead of running it"
    mg = verb("migrate", cmd_migrate, "apply pending migrations")
    mg.add_argument("--dry-run", action="store_true", help=dry_help)
    rb = verb("rollback", cmd_rollback, "roll back the newest migration (or more)")
    rb.add_argument("--dry-run", action="store_true", help=dry_help)
    group = rb.add_mutually_exclusive_group()
    group.add_argument("--all", action="store_true", help="roll back every migration")
    group.add_argument("--to", metavar="ID", help="roll back everything applied after ID")
    rb.add_argument("--force", action="store_true", help=FORCE_HELP)
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
    acc.add_argument("--force", action="store_true", help=FORCE_HELP)
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
        "--rows", type=positive_int, default=100_000, metavar="N", help="users to generate"
    )
    verb("createdb", cmd_createdb, "create the target database if missing, then migrate")
