"""Dry runs: the printed plan, run by psql on a clone, equals migrate on another clone."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dal import migrations
from tests.commands import run_cli
from tests.pg import PgServer, catalog, query

ROOT = Path(__file__).resolve().parent.parent
BOOKKEEPING = "SELECT migration_id FROM _yoyo_migration ORDER BY migration_id"
CHECKSUMS = "SELECT migration_id, sha256, rollback_sha256 FROM defeah_migration_checksum ORDER BY 1"


@pytest.fixture
def at_0003(pg: PgServer, tmp_path: Path) -> Iterator[str]:
    """A database migrated up to 0003 by plain yoyo (no checksums yet), used as a template."""
    name = pg.create_database("defeah_0003")
    sources = tmp_path / "upto3"
    sources.mkdir()
    for f in (ROOT / "sql").glob("000[123]_*.sql"):
        shutil.copy(f, sources / f.name)
    migrations.apply(pg.dsn(name), sources=sources)
    query(pg.dsn(name), "DROP TABLE defeah_migration_checksum")
    yield name
    pg.drop_database(name)


def _state(dsn: str) -> tuple[object, ...]:
    status = migrations.status(dsn)
    return catalog(dsn), status.applied, status.pending, status.changed


def _psql(dsn: str, plan: Path) -> subprocess.CompletedProcess[str]:
    psql = shutil.which("psql")
    if psql is None:
        pytest.fail("psql is required for the dry-run test (apt-get install postgresql-client)")
    return subprocess.run(
        [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-f", str(plan)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_migrate_plan_run_by_psql_equals_migrate(
    pg: PgServer, at_0003: str, tmp_path: Path
) -> None:
    planned = pg.dsn(pg.create_database("defeah_plan", template=at_0003))
    migrated = pg.dsn(pg.create_database("defeah_mig", template=at_0003))
    before = (_state(planned), query(planned, BOOKKEEPING))

    out = run_cli(planned, "migrate", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert (_state(planned), query(planned, BOOKKEEPING)) == before  # the dry run wrote nothing
    assert "CREATE INDEX CONCURRENTLY IF NOT EXISTS users_token_expiry_idx" in out.stdout
    pending = [
        p for p in sorted((ROOT / "sql").glob("000[4-9]_*.sql")) if ".rollback" not in p.name
    ]
    transactional = [p for p in pending if "-- transactional: false" not in p.read_text()]
    assert out.stdout.count("\nBEGIN;\n") == len(transactional)  # the others run bare

    plan = tmp_path / "plan.sql"
    plan.write_text(out.stdout)
    ran = _psql(planned, plan)
    assert ran.returncode == 0, ran.stderr
    assert run_cli(migrated, "migrate").returncode == 0

    assert _state(planned) == _state(migrated)
    assert _state(planned)[2] == ()  # nothing pending
    assert query(planned, BOOKKEEPING) == query(migrated, BOOKKEEPING)
    assert query(planned, CHECKSUMS) == query(migrated, CHECKSUMS)


def test_a_rollback_plan_run_by_psql_equals_rollback(
    pg: PgServer, template_db: str, tmp_path: Path
) -> None:
    planned = pg.dsn(pg.create_database("defeah_plan", template=template_db))
    rolled = pg.dsn(pg.create_database("defeah_rb", template=template_db))
    before = _state(planned)
    out = run_cli(planned, "rollback", "--dry-run", "--to", "0001_users")
    assert out.returncode == 0, out.stderr
    assert _state(planned) == before
    plan = tmp_path / "rollback.sql"
    plan.write_text(out.stdout)
    ran = _psql(planned, plan)
    assert ran.returncode == 0, ran.stderr
    assert run_cli(rolled, "rollback", "--to", "0001_users").returncode == 0
    assert _state(planned) == _state(rolled)
    assert _state(planned)[1] == ("0001_users",)
    assert query(planned, BOOKKEEPING) == query(rolled, BOOKKEEPING)
