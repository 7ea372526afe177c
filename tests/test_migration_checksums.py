"""Checksums: an applied migration edited afterwards stops migrate before any DDL."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from psycopg2 import sql

from dal.db.production_guard import DATABASE_MARKER
from dal.migrations import dry_run
from dal.migrations import runner as migrations
from tests.commands import run_cli
from tests.pg import PgServer, catalog, query

ROOT = Path(__file__).resolve().parent.parent


def _sources(tmp_path: Path) -> Path:
    dest = tmp_path / "sql"
    shutil.copytree(ROOT / "sql", dest)
    return dest


def _with_pending_table(sources: Path) -> None:
    """A pending migration whose DDL must not run while a checksum is wrong."""
    head = sorted(f.stem for f in sources.glob("*.sql") if not f.name.endswith(".rollback.sql"))[-1]
    (sources / "9999_pending.sql").write_text(
        f"-- depends: {head}\nCREATE TABLE pending_t (id int);\n"
    )


def test_an_edited_applied_migration_stops_migrate_and_shows_in_status(
    empty_dsn: str, tmp_path: Path
) -> None:
    sources = _sources(tmp_path)
    migrations.apply(empty_dsn, sources=sources)
    before = catalog(empty_dsn)
    edited = sources / "0002_users_hardening.sql"
    edited.write_text("-- a late, unreviewed edit\n" + edited.read_text())
    _with_pending_table(sources)

    with pytest.raises(migrations.ChecksumMismatch) as refused:
        migrations.apply(empty_dsn, sources=sources)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("0002_users_hardening.sql changed after it was applied")
    assert message.count("sha256 ") == 2
    assert catalog(empty_dsn) == before
    assert query(empty_dsn, "SELECT to_regclass('pending_t') AS t") == [{"t": None}]

    state = migrations.status(empty_dsn, sources=sources)
    assert [c.file for c in state.changed] == ["0002_users_hardening.sql"]

    accepted = migrations.accept_checksum(empty_dsn, "0002_users_hardening", sources=sources)
    assert accepted.sha256 == state.changed[0].current
    assert migrations.status(empty_dsn, sources=sources).changed == ()
    assert migrations.apply(empty_dsn, sources=sources) == ["9999_pending"]


def test_an_edited_rollback_file_is_a_change_too(empty_dsn: str, tmp_path: Path) -> None:
    sources = _sources(tmp_path)
    migrations.apply(empty_dsn, sources=sources)
    rollback = sources / "0001_users.rollback.sql"
    rollback.write_text(
        rollback.read_text().replace("DROP TABLE users;", "DROP TABLE users CASCADE;")
    )
    with pytest.raises(migrations.ChecksumMismatch, match=r"^0001_users\.rollback\.sql changed"):
        migrations.apply(empty_dsn, sources=sources)


def test_a_crlf_checkout_is_not_a_change(empty_dsn: str, tmp_path: Path) -> None:
    sources = _sources(tmp_path)
    migrations.apply(empty_dsn, sources=sources)
    for f in sources.glob("*.sql"):
        f.write_bytes(f.read_bytes().replace(b"\n", b"\r\n"))
    assert migrations.status(empty_dsn, sources=sources).changed == ()
    assert migrations.apply(empty_dsn, sources=sources) == []


def test_rollback_forgets_the_hash_so_an_edited_pending_file_applies(
    empty_dsn: str, tmp_path: Path
) -> None:
    sources = _sources(tmp_path)
    migrations.apply(empty_dsn, sources=sources)
    head = migrations.status(empty_dsn, sources=sources).head
    assert head is not None
    migrations.rollback(empty_dsn, sources=sources)
    newest = sources / f"{head}.sql"
    newest.write_text("-- reviewed edit before re-applying\n" + newest.read_text())
    assert migrations.apply(empty_dsn, sources=sources) == [head]
    assert migrations.status(empty_dsn, sources=sources).changed == ()


def test_cli_migrate_and_status_exit_1_naming_the_file(fresh_dsn: str) -> None:
    """A recorded hash that differs from the file is what an edited file looks like."""
    assert run_cli(fresh_dsn, "migrate").returncode == 0  # records the hashes (baseline)
    query(
        fresh_dsn,
        "UPDATE defeah_migration_checksum SET sha256 = repeat('0', 64) "
        "WHERE migration_id = '0001_users'",
    )
    migrate = run_cli(fresh_dsn, "migrate")
    assert migrate.returncode == 1
    assert migrate.stderr.count("\n") == 1
    assert "0001_users.sql changed after it was applied: recorded sha256 " + "0" * 64 in (
        migrate.stderr
    )
    status = run_cli(fresh_dsn, "status")
    assert status.returncode == 1
    assert "CHANGED  0001_users.sql" in status.stdout
    accept = run_cli(fresh_dsn, "accept-checksum", "0001_users")
    assert accept.returncode == 0, accept.stderr
    assert run_cli(fresh_dsn, "status").returncode == 0


def test_an_edited_rollback_file_is_refused_by_rollback_and_its_dry_run(
    empty_dsn: str, tmp_path: Path
) -> None:
    """Issue 20 item 6: an appended UPDATE in the head's rollback destroyed every hash."""
    sources = _sources(tmp_path)
    migrations.apply(empty_dsn, sources=sources)
    head = migrations.status(empty_dsn, sources=sources).head
    query(empty_dsn, "INSERT INTO users (email, hashed_password) VALUES ('a@example.com', 'h')")
    rollback = sources / f"{head}.rollback.sql"
    rollback.write_text(rollback.read_text() + "\nUPDATE users SET hashed_password = 'x';\n")

    for attempt in (migrations.rollback, dry_run.rollback_plan):
        with pytest.raises(migrations.ChecksumMismatch) as refused:
            attempt(empty_dsn, sources=sources)
        message = str(refused.value)
        assert "\n" not in message
        assert message.startswith(f"refusing to roll back: {head}.rollback.sql changed after")
        assert message.endswith(f"`defeah-db accept-checksum {head}`")
    assert migrations.status(empty_dsn, sources=sources).head == head
    assert query(empty_dsn, "SELECT hashed_password FROM users") == [{"hashed_password": "h"}]

    migrations.accept_checksum(empty_dsn, head, sources=sources)  # reviewed: now it may run
    assert "UPDATE users SET hashed_password = 'x'" in dry_run.rollback_plan(
        empty_dsn, sources=sources
    )
    assert migrations.rollback(empty_dsn, sources=sources) == [head]
    assert query(empty_dsn, "SELECT hashed_password FROM users") == [{"hashed_password": "x"}]


def test_cli_rollback_and_its_dry_run_exit_1_on_a_changed_rollback_file(fresh_dsn: str) -> None:
    assert run_cli(fresh_dsn, "migrate").returncode == 0  # records the hashes (baseline)
    head = migrations.status(fresh_dsn).head
    query(
        fresh_dsn,
        "UPDATE defeah_migration_checksum SET rollback_sha256 = repeat('0', 64) "
        "WHERE migration_id = %s",
        (head,),
    )
    for how in (("--dry-run",), ()):
        done = run_cli(fresh_dsn, "rollback", *how)
        assert done.returncode == 1, done.stderr
        assert done.stdout == ""
        assert done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith(f"defeah-db: error: refusing to roll back: {head}.rollback")
    assert migrations.status(fresh_dsn).head == head
    assert run_cli(fresh_dsn, "accept-checksum", head).returncode == 0
    assert run_cli(fresh_dsn, "rollback", "--dry-run").returncode == 0
    assert run_cli(fresh_dsn, "rollback").returncode == 0
    assert migrations.status(fresh_dsn).head != head


def test_accept_checksum_is_guarded_on_production(pg: PgServer, fresh_dsn: str) -> None:
    assert run_cli(fresh_dsn, "migrate").returncode == 0
    query(
        fresh_dsn,
        "UPDATE defeah_migration_checksum SET sha256 = repeat('0', 64) "
        "WHERE migration_id = '0001_users'",
    )
    refused = run_cli(fresh_dsn, "accept-checksum", "0001_users", DEFEAH_ENV="production")
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "pass --force" in refused.stderr
    assert "accept the edited checksum of '0001_users'" in refused.stderr
    assert run_cli(fresh_dsn, "status").returncode == 1  # nothing was recorded
    name = urlsplit(fresh_dsn).path.lstrip("/")
    pg.execute(
        sql.SQL("ALTER DATABASE {} SET {} = 'production'").format(
            sql.Identifier(name), sql.Identifier(*DATABASE_MARKER.split("."))
        )
    )
    assert run_cli(fresh_dsn, "accept-checksum", "0001_users").returncode == 2
    forced = run_cli(fresh_dsn, "accept-checksum", "0001_users", "--force")
    assert forced.returncode == 0, forced.stderr
    assert run_cli(fresh_dsn, "status").returncode == 0
