"""Checksums: an applied migration edited afterwards stops migrate before any DDL."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dal.migrations import runner as migrations
from tests.commands import run_cli
from tests.pg import catalog, query

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
