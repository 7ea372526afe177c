"""Dry runs: the printed plan, run by psql on a clone, equals migrate on another clone."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dal.errors import MigrationError
from dal.migrations import dry_run, yoyo_backend
from dal.migrations import runner as migrations
from dal.migrations.files import file_ids
from dal.migrations.yoyo_backend import read
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
    pending = [  # everything after 0003 (0010 and on included)
        p
        for p in sorted((ROOT / "sql").glob("[0-9][0-9][0-9][0-9]_*.sql"))
        if ".rollback" not in p.name and int(p.name[:4]) > 3
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


RELATIONS = "SELECT count(*) AS n FROM pg_class WHERE relnamespace = 'public'::regnamespace"


def test_a_dry_run_on_an_empty_database_writes_nothing_and_its_plan_equals_migrate(
    pg: PgServer, tmp_path: Path
) -> None:
    """yoyo creates its bookkeeping tables on first use; the dry run only prints them."""
    planned = pg.dsn(pg.create_database("defeah_plan"))
    migrated = pg.dsn(pg.create_database("defeah_mig"))
    out = run_cli(planned, "migrate", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert query(planned, RELATIONS) == [{"n": 0}]  # no yoyo table, no checksum table
    for bookkeeping in ('CREATE TABLE "yoyo_lock"', 'CREATE TABLE "_yoyo_version"'):
        assert bookkeeping in out.stdout
    rolled = run_cli(planned, "rollback", "--dry-run", "--all")
    assert rolled.returncode == 0, rolled.stderr
    assert rolled.stdout.splitlines()[-1] == "-- nothing to roll back"
    assert query(planned, RELATIONS) == [{"n": 0}]

    plan = tmp_path / "plan.sql"
    plan.write_text(out.stdout)
    ran = _psql(planned, plan)
    assert ran.returncode == 0, ran.stderr
    assert run_cli(migrated, "migrate").returncode == 0
    tables = "SELECT relname, relkind FROM pg_class WHERE relnamespace = 'public'::regnamespace"
    assert query(planned, tables + " ORDER BY 1") == query(migrated, tables + " ORDER BY 1")
    assert _state(planned) == _state(migrated)
    assert query(planned, BOOKKEEPING) == query(migrated, BOOKKEEPING)
    assert query(planned, CHECKSUMS) == query(migrated, CHECKSUMS)
    version = "SELECT version FROM _yoyo_version ORDER BY 1"
    assert query(planned, version) == query(migrated, version)


def test_an_up_to_date_database_has_nothing_to_apply(fresh_dsn: str) -> None:
    run_cli(fresh_dsn, "migrate")  # records the checksums
    out = run_cli(fresh_dsn, "migrate", "--dry-run")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("-- defeah-db migrate --dry-run for ")
    assert lines[1] == f"-- nothing to apply: the head is {file_ids()[-1]}"


def test_the_plan_drops_an_index_an_interrupted_concurrent_build_left_invalid(
    fresh_dsn: str, tmp_path: Path
) -> None:
    """``migrate`` drops the INVALID index before re-running 0006; a plan that did not would
    leave only the INVALID index behind while ``status`` says up to date."""
    migrations.rollback(fresh_dsn, to="0005_sign_in_budgets")
    query(fresh_dsn, "CREATE INDEX users_token_expiry_idx ON users (token_expires_at, id)")
    query(
        fresh_dsn,
        "UPDATE pg_index SET indisvalid = false "
        "WHERE indexrelid = 'users_token_expiry_idx'::regclass",
    )
    out = run_cli(fresh_dsn, "migrate", "--dry-run")
    assert out.returncode == 0, out.stderr
    drop = 'DROP INDEX CONCURRENTLY IF EXISTS "users_token_expiry_idx";'
    assert drop in out.stdout
    assert out.stdout.index(drop) < out.stdout.index("-- apply 0006_")
    plan = tmp_path / "plan.sql"
    plan.write_text(out.stdout)
    ran = _psql(fresh_dsn, plan)
    assert ran.returncode == 0, ran.stderr
    valid = "SELECT indisvalid FROM pg_index WHERE indexrelid = 'users_token_expiry_idx'::regclass"
    assert query(fresh_dsn, valid) == [{"indisvalid": True}]


@pytest.mark.parametrize(
    "name", ["0099_bad\n\\! touch pwned.sql", "0099_Upper.sql", "99_short.sql"]
)
def test_a_migration_id_outside_the_pattern_is_refused(
    fresh_dsn: str, tmp_path: Path, name: str
) -> None:
    """A newline in a file name would turn the plan's comment into a psql meta-command."""
    sources = tmp_path / "sql"
    shutil.copytree(ROOT / "sql", sources)
    (sources / (name if name.endswith(".sql") else name + ".sql")).write_text("SELECT 1;\n")
    with pytest.raises(MigrationError) as caught:
        read(sources)
    assert "migration ids are NNNN_lowercase_words" in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("brk", ["\n", "\r", "\u2028"])
def test_a_crafted_name_past_the_id_check_stays_inside_its_plan_comment(
    fresh_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, brk: str
) -> None:
    """Issue 20 item 16, the second defence: with the file-name check bypassed, a line break
    in a migration's id and file name is escaped in the plan's comments, so psql never runs
    the ``\\!`` meta-command that follows it."""
    monkeypatch.setattr(yoyo_backend, "file_ids", lambda sources: ())
    sources = tmp_path / "sql"
    shutil.copytree(ROOT / "sql", sources)
    crafted = f"0099_bad{brk}\\! touch pwned;#"
    (sources / f"{crafted}.sql").write_text(f"-- depends: {file_ids()[-1]}\nSELECT 1;\n")
    run_cli(fresh_dsn, "migrate")  # records the checksums of the applied ones
    plan_text = dry_run.migrate_plan(fresh_dsn, sources=sources)
    plan = tmp_path / "plan.sql"
    plan.write_text(plan_text)
    ran = subprocess.run(
        [str(shutil.which("psql")), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", fresh_dsn],
        stdin=plan.open(),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert not (tmp_path / "pwned").exists()
    escaped = "0099_bad" + brk.encode("unicode_escape").decode() + "\\! touch pwned;#"
    assert f"-- apply {escaped} ({escaped}.sql)" in plan_text
    assert f"-- apply {crafted}" not in plan_text
    applied = query(
        fresh_dsn, "SELECT migration_id FROM _yoyo_migration WHERE migration_id ~ '^0099'"
    )
    assert applied == [{"migration_id": crafted}]  # the plan's literals are quoted, not cut


def test_comment_line_escapes_every_line_break() -> None:
    for text in ("a\nb", "a\rb", "a\r\nb", "a\x0bb", "a\x0cb", "a\x85b", "a\u2028b", "a\u2029b"):
        line = dry_run.comment_line(text)
        assert line.splitlines() == [line] and line.startswith("-- a") and line.endswith("b")
    assert dry_run.comment_line("plain \\! é") == "-- plain \\! é"
