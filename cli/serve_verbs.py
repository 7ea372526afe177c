"""Verbs that run things: the main job (``up``), the server, and a way into the database."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys

from cli.common import EXIT_OK, AddVerb, say, with_database
from cli.data_verbs import seed_and_seal
from cli.psql_login import psql_login
from dal.db import admin
from dal.db.dsn import describe_dsn, redact_dsn
from dal.db.embedded import bundled_psql, target_dsn
from dal.db.settings import Settings
from dal.errors import ProductionRefused
from dal.instagram.keyring import TokenCipher, settings_cipher
from dal.migrations import runner
from web.app import add_address_arguments, run_server


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    """The README's main job: database ready (created, migrated, seeded), then serve.

    One embedded server (if any) lives for the whole run: the HTTP server gets its DSN, and
    ``target_dsn`` stops it after Ctrl-C/SIGTERM ends serving.
    """
    cipher = settings_cipher(settings, "defeah-db up")
    settings.require_callbacks("defeah-db up")
    if settings.database_url is None:
        say(f"embedded PostgreSQL in {settings.data_dir}")
    with target_dsn(settings) as dsn:
        _migrate_step(dsn, runner.RunPolicy.from_settings(settings))
        for line in _seed_step(settings, dsn, cipher):
            say(line)
        if args.no_serve:
            return EXIT_OK
        served = settings.replace(database_url=dsn)
        return run_server(served, args.host, args.port, "defeah-db")


def _migrate_step(dsn: str, policy: runner.RunPolicy) -> None:
    admin.ensure_database(dsn)
    applied = runner.apply(dsn, policy=policy)
    state = runner.status(dsn)
    say(f"database: {describe_dsn(dsn)}")
    say(f"migrations: {len(applied)} applied now, head {state.head}, {len(state.pending)} pending")


def _seed_step(settings: Settings, dsn: str, cipher: TokenCipher) -> list[str]:
    """``up`` seeds development databases; on production it skips, never forces."""
    try:
        lines = with_database(settings, dsn, lambda db: seed_and_seal(db, cipher, force=False))
    except ProductionRefused:
        return ["seeds: skipped (the target is production)"]
    return [line for line in lines if line.startswith(("seeds:", "sealed"))]


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Serve the health routes on the database as it is (no migration, no seeding)."""
    settings_cipher(settings, "defeah-db serve")
    settings.require_callbacks("defeah-db serve")
    return run_server(settings, args.host, args.port, "defeah-db")


def cmd_dsn(args: argparse.Namespace, settings: Settings) -> int:
    """Print the DSN of the current target, ready to paste into psql or yoyo.

    The embedded server's DSN carries no password.  An external ``DATABASE_URL`` is printed
    with its secrets redacted unless ``--reveal``: it is already in your environment.
    """
    if settings.database_url is not None:
        say(settings.database_url if args.reveal else redact_dsn(settings.database_url))
        return EXIT_OK
    with target_dsn(settings) as dsn:
        say(dsn)
    print(
        f"defeah-db: embedded server in {settings.data_dir}; it answers while a defeah-db "
        "process keeps it up (./dev run, or `defeah-db psql`)",
        file=sys.stderr,
        flush=True,
    )
    return EXIT_OK


def cmd_psql(args: argparse.Namespace, settings: Settings) -> int:
    """Open psql on the current target; the embedded server stays up until psql exits.

    The bundled psql (the embedded server's own version) is used unless one is on PATH for an
    external server.  Extra arguments go to psql (``defeah-db psql -f seeds/0001_users.sql``).
    The DSN's secrets travel in psql's environment, never its argv (``cli.psql_login``).
    """
    external = settings.database_url is not None
    psql = (shutil.which("psql") if external else None) or str(bundled_psql())
    with target_dsn(settings) as dsn, psql_login(dsn) as login:
        argv = [psql, "-v", "ON_ERROR_STOP=1", "-d", login.conninfo, *args.args]
        done = subprocess.run(argv, env=login.env, check=False)
    return done.returncode


def register(verb: AddVerb) -> None:
    up = verb("up", cmd_up, "create the database if needed, migrate, seed, then serve HTTP")
    up.add_argument(
        "--no-serve", action="store_true", help="stop after the database steps (CI, scripts)"
    )
    serve = verb("serve", cmd_serve, "serve the HTTP health routes until Ctrl-C / SIGTERM")
    for p in (up, serve):
        add_address_arguments(p)
    dsn = verb("dsn", cmd_dsn, "print the DSN of the current target (embedded included)")
    dsn.add_argument(
        "--reveal", action="store_true", help="print DATABASE_URL's password instead of ***"
    )
    psql = verb("psql", cmd_psql, "open psql on the current target (the bundled one if needed)")
    psql.add_argument("args", nargs="*", metavar="ARG", help="passed to psql as is (-c, -f, ...)")
