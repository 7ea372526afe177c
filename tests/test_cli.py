"""The defeah-db command line: short human output, exit codes, one-line errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dal import migrations
from tests.commands import run_cli
from tests.pg import PgServer

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
