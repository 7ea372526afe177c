"""``defeah-db``: one command line for the project's jobs.

Each verb is a small function taking parsed arguments and the settings and returning an exit
code.  Expected failures (``DalError``: bad configuration, database down, migration refused)
print one line on stderr and exit non-zero; ``--traceback`` shows the Python traceback for
debugging.  Without ``DATABASE_URL`` every verb runs against the embedded server, started for
the duration of the command.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from dal import migrations
from dal.config import Settings, describe_dsn
from dal.errors import DalError

Verb = Callable[[argparse.Namespace, Settings], int]

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
    with target_dsn(settings) as dsn:
        applied = migrations.apply(dsn)
        head = migrations.status(dsn).head
    if applied:
        say(f"applied {len(applied)} migration(s): {', '.join(applied)}")
    else:
        say("database is up to date")
    say(f"head: {head or '(none)'} on {describe_dsn(dsn)}")
    return EXIT_OK


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    with target_dsn(settings) as dsn:
        undone = migrations.rollback(dsn, to=args.to, all_=args.all)
        head = migrations.status(dsn).head
    if undone:
        say(f"rolled back {len(undone)} migration(s): {', '.join(undone)}")
    else:
        say("nothing to roll back")
    say(f"head: {head or '(none)'}")
    return EXIT_OK


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    with target_dsn(settings) as dsn:
        state = migrations.status(dsn)
    say(f"database: {describe_dsn(dsn)}")
    for mid in state.applied:
        say(f"  applied  {mid}")
    for mid in state.pending:
        say(f"  pending  {mid}")
    say(f"{len(state.applied)} applied, {len(state.pending)} pending")
    return EXIT_ERROR if state.pending else EXIT_OK


def cmd_createdb(args: argparse.Namespace, settings: Settings) -> int:
    with target_dsn(settings) as dsn:
        created = migrations.ensure_database(dsn)
        name = migrations.database_name(dsn)
        say(f"created database {name}" if created else f"database {name} already exists")
        applied = migrations.apply(dsn)
    say(f"applied {len(applied)} migration(s)" if applied else "database is up to date")
    return EXIT_OK


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    """The README's main job: database ready (created, migrated), then status."""
    with target_dsn(settings) as dsn:
        migrations.ensure_database(dsn)
        applied = migrations.apply(dsn)
        state = migrations.status(dsn)
    say(f"database: {describe_dsn(dsn)}")
    say(f"migrations: {len(applied)} applied now, head {state.head}, {len(state.pending)} pending")
    return EXIT_OK


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

    verb("up", cmd_up, "create the database if needed, migrate, and report status")
    verb("migrate", cmd_migrate, "apply pending migrations")
    rb = verb("rollback", cmd_rollback, "roll back the newest migration (or more)")
    group = rb.add_mutually_exclusive_group()
    group.add_argument("--all", action="store_true", help="roll back every migration")
    group.add_argument("--to", metavar="ID", help="roll back everything applied after ID")
    verb("status", cmd_status, "list applied and pending migrations (exit 1 if any pending)")
    verb("createdb", cmd_createdb, "create the target database if missing, then migrate")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
        code: int = args.func(args, settings)
    except DalError as exc:
        if args.traceback:
            raise
        print(f"defeah-db: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("defeah-db: interrupted", file=sys.stderr, flush=True)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
