"""Rehearsal: pending migrations on a filled scratch copy, with their locks and the load's p99."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg2

from dal.migrations import rehearsal
from dal.migrations import runner as migrations
from tests.commands import cli_env
from tests.factories import make_settings
from tests.pg import PgServer, query

ROOT = Path(__file__).resolve().parent.parent


def test_rehearse_reports_each_statement_and_drops_its_copy(pg: PgServer, tmp_path: Path) -> None:
    name = pg.create_database("defeah_reh")
    dsn = pg.dsn(name)
    before_0006 = tmp_path / "sql"
    before_0006.mkdir()
    for f in (ROOT / "sql").glob("000[12345]_*.sql"):  # all but the concurrent rebuild
        shutil.copy(f, before_0006 / f.name)
    migrations.apply(dsn, sources=before_0006)
    scratch = "SELECT datname FROM pg_database WHERE datname LIKE 'defeah\\_rehearse\\_%%'"
    before = query(dsn, scratch)

    # 100,000 rows: the concurrent index build then lasts ~60 ms, several lock samples (10 ms
    # apart); on 20,000 it took 0-16 ms and one CI run sampled it not at all
    lines = rehearsal.rehearse(make_settings(dsn), dsn, 100_000)

    text = "\n".join(lines)
    assert lines[0].startswith("rehearsal on 100,000 users: applied 0006_")
    assert "statement: CREATE INDEX CONCURRENTLY IF NOT EXISTS users_token_expiry_idx" in text
    assert "held ShareUpdateExclusiveLock on users" in text
    assert "load: " in text and " 0 error(s)" in text
    # the target itself is untouched, and the scratch copy is gone
    assert migrations.status(dsn).pending[0] == "0006_users_token_expiry_index_concurrently"
    assert query(dsn, "SELECT count(*) AS n FROM users") == [{"n": 0}]
    assert query(dsn, scratch) == before
    pg.drop_database(name)


SCRATCH = (
    "SELECT datname AS name, shobj_description(oid, 'pg_database') AS mark FROM pg_database "
    "WHERE datname LIKE 'defeah\\_rehearse\\_%%'"
)


def _scratch(dsn: str) -> set[str]:
    """Every rehearsal scratch database on the server."""
    return {r["name"] for r in query(dsn, SCRATCH)}


def _marked(dsn: str) -> set[str]:
    """The scratch databases marked as owned by a run."""
    return {
        r["name"] for r in query(dsn, SCRATCH) if r["mark"] == "defeah-db rehearse scratch copy"
    }


def _start_rehearsal(dsn: str, before: set[str]) -> tuple[subprocess.Popen[str], str]:
    """``defeah-db rehearse`` in its own process, once its scratch database is marked."""
    cli = subprocess.Popen(
        [sys.executable, "-m", "cli", "rehearse", "--rows", "1000000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=cli_env(dsn),
    )
    until = time.monotonic() + 60
    while time.monotonic() < until and cli.poll() is None:
        new = _scratch(dsn) - before
        if new:
            time.sleep(0.5)  # well into the copy: schema applied, users being generated
            return cli, new.pop()
        time.sleep(0.02)
    cli.kill()
    raise AssertionError(f"no scratch database appeared: {cli.communicate()}")


def _migrated_before_0006(pg: PgServer, tmp_path: Path) -> str:
    dsn = pg.dsn(pg.create_database("defeah_reh"))
    before_0006 = tmp_path / "sql"
    before_0006.mkdir()
    for f in (ROOT / "sql").glob("000[12345]_*.sql"):
        shutil.copy(f, before_0006 / f.name)
    migrations.apply(dsn, sources=before_0006)
    return dsn


def test_sigterm_drops_the_scratch_copy(pg: PgServer, tmp_path: Path) -> None:
    """Issue 20 item 17: a rehearsal stopped by SIGTERM left its defeah_rehearse_* behind."""
    dsn = _migrated_before_0006(pg, tmp_path)
    cli, scratch = _start_rehearsal(dsn, _scratch(dsn))
    cli.send_signal(signal.SIGTERM)
    out, err = cli.communicate(timeout=60)
    assert cli.returncode == 143, (out, err)
    assert err == (
        f"defeah-db: rehearsal stopped by SIGTERM; its scratch database {scratch} is dropped\n"
    )
    assert scratch not in _scratch(dsn)
    pg.drop_database(dsn.rsplit("/", 1)[1])


def test_the_next_run_sweeps_a_copy_whose_owner_was_killed(pg: PgServer, tmp_path: Path) -> None:
    dsn = _migrated_before_0006(pg, tmp_path)
    unmarked = pg.create_database("defeah_rehearse_old")  # a look-alike without the mark
    cli, scratch = _start_rehearsal(dsn, _scratch(dsn))
    cli.kill()  # SIGKILL: nothing of ours runs
    cli.communicate(timeout=60)
    assert scratch in _marked(dsn)  # left behind, as before
    owner = "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = %s"
    until = time.monotonic() + 30
    while query(dsn, owner, (f"defeah-db rehearse {scratch}",)) != [{"n": 0}]:
        assert time.monotonic() < until, "the killed owner's session never ended"
        time.sleep(0.05)

    lines = rehearsal.rehearse(make_settings(dsn), dsn, 1000)

    swept = next(line for line in lines if line.startswith("swept stale rehearsal database(s)"))
    assert scratch in swept
    assert scratch not in _scratch(dsn)
    left = next(line for line in lines if line.startswith("left alone (no owner mark"))
    assert unmarked in left
    assert query(dsn, "SELECT count(*) AS n FROM pg_database WHERE datname = %s", (unmarked,)) == [
        {"n": 1}
    ]
    pg.drop_database(unmarked)
    pg.drop_database(dsn.rsplit("/", 1)[1])


def test_a_live_rehearsal_is_never_swept(pg: PgServer, tmp_path: Path) -> None:
    dsn = _migrated_before_0006(pg, tmp_path)
    cli, scratch = _start_rehearsal(dsn, _scratch(dsn))
    try:
        lines = rehearsal.rehearse(make_settings(dsn), dsn, 1000)
        assert not any(scratch in line for line in lines)
        assert scratch in _marked(dsn) and cli.poll() is None
    finally:
        cli.send_signal(signal.SIGTERM)
        cli.communicate(timeout=60)
    assert scratch not in _scratch(dsn)
    pg.drop_database(dsn.rsplit("/", 1)[1])


def test_sigterm_during_a_blocked_pending_migration_ends_it_and_drops_the_copy(
    pg: PgServer, tmp_path: Path
) -> None:
    """The pending migration runs in a worker thread: SIGTERM ends its session rather than
    waiting for a concurrent index build stuck behind an old snapshot."""
    dsn = _migrated_before_0006(pg, tmp_path)
    before = _scratch(dsn)
    cli = subprocess.Popen(
        [sys.executable, "-m", "cli", "rehearse", "--rows", "1000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=cli_env(dsn, DEFEAH_MIGRATION_LOCK_TIMEOUT="120"),
    )
    until = time.monotonic() + 60
    while not (_scratch(dsn) - before):
        assert time.monotonic() < until and cli.poll() is None, cli.communicate()
        time.sleep(0.01)
    scratch = (_scratch(dsn) - before).pop()
    holder = psycopg2.connect(pg.dsn(scratch))  # an old snapshot the index build must wait for
    try:
        holder.set_session(isolation_level="REPEATABLE READ")
        with holder.cursor() as cur:
            while True:  # once the current schema (0001-0005) is in place
                cur.execute("SELECT to_regclass('defeah_migration_checksum') IS NOT NULL")
                if cur.fetchone()[0]:
                    cur.execute("SELECT count(*) FROM defeah_migration_checksum")
                    if cur.fetchone()[0] == 5:
                        break
                holder.rollback()
                time.sleep(0.01)
            cur.execute("SELECT count(*) FROM users")
        building = (
            "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = %s "
            "AND query LIKE 'CREATE INDEX CONCURRENTLY%%' AND wait_event_type = 'Lock'"
        )
        while query(dsn, building, (scratch,)) != [{"n": 1}]:
            assert time.monotonic() < until and cli.poll() is None, cli.communicate()
            time.sleep(0.02)
        started = time.monotonic()
        cli.send_signal(signal.SIGTERM)
        out, err = cli.communicate(timeout=60)
        stopped = time.monotonic() - started
    finally:
        holder.close()
    assert cli.returncode == 143, (out, err)
    assert err.endswith(f"its scratch database {scratch} is dropped\n"), err
    assert stopped < 15, stopped  # not the 120 s lock timeout
    assert scratch not in _scratch(dsn)
    pg.drop_database(dsn.rsplit("/", 1)[1])
