"""The defeah-db command line: short human output, exit codes, one-line errors."""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from psycopg2 import sql

from cli.main import build_parser
from dal.db.production_guard import DATABASE_MARKER
from dal.migrations import runner as migrations
from tests.commands import run_cli
from tests.pg import PgServer, query

ROOT = Path(__file__).resolve().parent.parent
IDS = sorted(
    f.name.removesuffix(".sql")
    for f in (ROOT / "sql").glob("*.sql")
    if not f.name.endswith(".rollback.sql")
)


def test_migrate_status_rollback_cycle(empty_dsn: str) -> None:
    out = run_cli(empty_dsn, "status")
    assert out.returncode == 1  # pending migrations
    assert "pending  0001_users" in out.stdout
    assert f"0 applied, {len(IDS)} pending" in out.stdout

    out = run_cli(empty_dsn, "migrate")
    assert out.returncode == 0, out.stderr
    assert f"applied {len(IDS)} migration(s): {', '.join(IDS)}" in out.stdout
    assert run_cli(empty_dsn, "migrate").stdout.startswith("database is up to date")

    out = run_cli(empty_dsn, "status")
    assert out.returncode == 0
    assert f"{len(IDS)} applied, 0 pending" in out.stdout

    out = run_cli(empty_dsn, "rollback")
    assert out.returncode == 0
    assert f"rolled back 1 migration(s): {IDS[-1]}" in out.stdout
    assert migrations.status(empty_dsn).head == IDS[-2]

    assert run_cli(empty_dsn, "migrate").returncode == 0
    out = run_cli(empty_dsn, "rollback", "--to", "0001_users")
    assert f"rolled back {len(IDS) - 1} migration(s): {', '.join(IDS[:0:-1])}" in out.stdout
    out = run_cli(empty_dsn, "rollback", "--all")
    assert "rolled back 1 migration(s): 0001_users" in out.stdout
    assert run_cli(empty_dsn, "rollback").stdout.startswith("nothing to roll back")


def test_rollback_to_unknown_id_is_one_line_error(fresh_dsn: str) -> None:
    out = run_cli(fresh_dsn, "rollback", "--to", "9999_nope")
    assert out.returncode == 1
    assert out.stderr.startswith("defeah-db: error: unknown migration id '9999_nope'")
    assert out.stderr.count("\n") == 1


def test_rollback_flags_are_exclusive(fresh_dsn: str) -> None:
    out = run_cli(fresh_dsn, "rollback", "--all", "--to", "0001_users")
    assert out.returncode == 2
    assert "not allowed with argument" in out.stderr


def test_createdb_creates_missing_database_then_migrates(pg: PgServer) -> None:
    name = f"defeah_created_{os.getpid()}"
    pg.created.append(name)  # dropped at session end even if the test fails
    dsn = pg.dsn(name)
    try:
        out = run_cli(dsn, "createdb")
        assert out.returncode == 0, out.stderr
        assert f"created database {name}" in out.stdout
        assert migrations.status(dsn).pending == ()
        out = run_cli(dsn, "createdb")
        assert f"database {name} already exists" in out.stdout
        assert "database is up to date" in out.stdout
    finally:
        pg.drop_database(name)


@pytest.mark.parametrize("verb", ["migrate", "status", "rollback", "createdb"])
def test_unreachable_server_is_one_line_error(verb: str) -> None:
    out = run_cli("postgresql://postgres:pw-secret@127.0.0.1:1/defeah", verb)
    assert out.returncode == 1
    assert out.stderr.startswith("defeah-db: error: cannot connect to ")
    assert out.stderr.count("\n") == 1
    assert "pw-secret" not in out.stderr


def users_table_exists(dsn: str) -> bool:
    return bool(query(dsn, "SELECT to_regclass('public.users') IS NOT NULL AS t")[0]["t"])


def assert_refused(done: subprocess.CompletedProcess[str], reason: str) -> None:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1, done.stderr
    assert "refusing to roll back migrations" in done.stderr and reason in done.stderr
    assert "--force" in done.stderr


@pytest.mark.parametrize("how", [(), ("--all",), ("--to", "0001_users")])
def test_rollback_refuses_on_production_environment(fresh_dsn: str, how: tuple[str, ...]) -> None:
    done = run_cli(fresh_dsn, "rollback", *how, DEFEAH_ENV="production")
    assert_refused(done, "DEFEAH_ENV=production")
    assert users_table_exists(fresh_dsn)
    assert migrations.status(fresh_dsn).head == IDS[-1]


def test_rollback_refuses_on_a_database_marked_production(pg: PgServer, fresh_dsn: str) -> None:
    name = urlsplit(fresh_dsn).path.lstrip("/")
    pg.execute(
        sql.SQL("ALTER DATABASE {} SET {} = 'production'").format(
            sql.Identifier(name), sql.Identifier(*DATABASE_MARKER.split("."))
        )
    )
    assert_refused(run_cli(fresh_dsn, "rollback", "--all"), f"{DATABASE_MARKER} = 'production'")
    assert users_table_exists(fresh_dsn)
    assert migrations.status(fresh_dsn).head == IDS[-1]

    forced = run_cli(fresh_dsn, "rollback", "--all", "--force")
    assert forced.returncode == 0, forced.stderr
    assert f"rolled back {len(IDS)} migration(s)" in forced.stdout
    assert not users_table_exists(fresh_dsn)


@pytest.mark.parametrize("marker", ["prod", " Live ", "productoin"])
def test_an_unknown_marker_value_counts_as_production(
    pg: PgServer, fresh_dsn: str, marker: str
) -> None:
    """Issue 20 item 18: a marker other than the known DEFEAH_ENV values fails closed."""
    name = urlsplit(fresh_dsn).path.lstrip("/")
    pg.execute(
        sql.SQL("ALTER DATABASE {} SET {} = {}").format(
            sql.Identifier(name), sql.Identifier(*DATABASE_MARKER.split(".")), sql.Literal(marker)
        )
    )
    reason = f"{DATABASE_MARKER} = '{marker.strip()}', not one of development, test, staging"
    assert_refused(run_cli(fresh_dsn, "rollback"), reason)
    pruned = run_cli(fresh_dsn, "prune-events", "--older-than", "90d")
    assert pruned.returncode == 2 and reason in pruned.stderr, pruned.stderr
    assert migrations.status(fresh_dsn).head == IDS[-1]


@pytest.mark.parametrize("marker", ["development", "Test", "staging"])
def test_a_known_non_production_marker_guards_nothing(
    pg: PgServer, fresh_dsn: str, marker: str
) -> None:
    name = urlsplit(fresh_dsn).path.lstrip("/")
    pg.execute(
        sql.SQL("ALTER DATABASE {} SET {} = {}").format(
            sql.Identifier(name), sql.Identifier(*DATABASE_MARKER.split(".")), sql.Literal(marker)
        )
    )
    done = run_cli(fresh_dsn, "rollback")
    assert done.returncode == 0, done.stderr
    assert migrations.status(fresh_dsn).head == IDS[-2]


def test_an_unknown_defeah_env_stops_every_verb(fresh_dsn: str) -> None:
    done = run_cli(fresh_dsn, "rollback", DEFEAH_ENV="prod")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "DEFEAH_ENV" in done.stderr, done.stderr
    assert migrations.status(fresh_dsn).head == IDS[-1]


def test_forced_rollback_on_production_environment(fresh_dsn: str) -> None:
    done = run_cli(fresh_dsn, "rollback", "--force", DEFEAH_ENV="production")
    assert done.returncode == 0, done.stderr
    assert migrations.status(fresh_dsn).head == IDS[-2]


def test_every_verb_that_deletes_data_takes_force() -> None:
    """The destructive verbs are exactly the ones with --force (each refused on production in
    the tests above and in tests/test_seeds.py)."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    forced = {
        name
        for name, parser in sub.choices.items()
        if any("--force" in a.option_strings for a in parser._actions)
    }
    assert forced == {
        "rollback",
        "seed",
        "clear",
        "generate",
        "unlock",
        "prune-events",
        "accept-checksum",
        "erase-user",
        "reapply-erasures",
    }
