"""Rehearsal: pending migrations on a filled scratch copy, with their locks and the load's p99."""

from __future__ import annotations

import shutil
from pathlib import Path

from dal.migrations import rehearsal
from dal.migrations import runner as migrations
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
