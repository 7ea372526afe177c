"""Drift: hand-made changes to the catalog are reported, one line each, and cleared when undone."""

from __future__ import annotations

import time
from pathlib import Path

from dal.migrations import drift
from tests.commands import run_cli
from tests.pg import query


def test_the_checked_in_snapshot_is_current(fresh_dsn: str) -> None:
    """Fails when a migration changed the schema and `defeah-db snapshot` was not re-run."""
    assert drift.drift(fresh_dsn).clean
    live = drift.render(drift.expected())  # canonical form of the file
    assert drift.SNAPSHOT.read_text(encoding="utf-8") == live


def test_hand_made_changes_are_each_reported_then_cleared(fresh_dsn: str) -> None:
    query(fresh_dsn, "CREATE INDEX users_hotfix_idx ON users (full_name)")
    query(fresh_dsn, "ALTER TABLE users ALTER COLUMN timezone SET DEFAULT 'Europe/Paris'")
    query(fresh_dsn, "COMMENT ON COLUMN users.login_count IS NULL")

    out = run_cli(fresh_dsn, "drift")
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert lines[-1].startswith("3 difference(s) from schema.snapshot, 0 partition finding(s)")
    assert sorted(line.split(":")[0] for line in lines[:-1]) == [
        "changed column users.timezone",
        "missing comment column users.login_count",
        "unexpected index users_hotfix_idx",
    ]
    assert "Europe/Paris" in out.stdout

    query(fresh_dsn, "DROP INDEX users_hotfix_idx")
    query(fresh_dsn, "ALTER TABLE users ALTER COLUMN timezone SET DEFAULT 'UTC'")
    query(fresh_dsn, "COMMENT ON COLUMN users.login_count IS 'Number of successful sign-ins.'")
    cleared = run_cli(fresh_dsn, "drift")
    assert cleared.returncode == 0, cleared.stdout
    assert cleared.stdout.startswith("0 difference(s) from schema.snapshot, 0 partition")


def test_an_invalid_index_is_drift(fresh_dsn: str) -> None:
    query(
        fresh_dsn,
        "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'users_pkey'::regclass",
    )
    assert [d.key for d in drift.drift(fresh_dsn).differences] == ["index users_pkey"]


def test_snapshot_command_regenerates_the_same_file(fresh_dsn: str, tmp_path: Path) -> None:
    target = tmp_path / "schema.snapshot"
    started = time.monotonic()
    drift.write_snapshot(fresh_dsn, target)
    assert time.monotonic() - started < 60
    assert target.read_text(encoding="utf-8") == drift.SNAPSHOT.read_text(encoding="utf-8")
