"""Lock-safe DDL: bounded waits with named blockers, and concurrent index builds."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from dal.errors import MigrationError
from dal.migrations import runner as migrations
from tests.pg import PgServer, query

ROOT = Path(__file__).resolve().parent.parent
NEW_INDEX = "users_token_expiry_idx"
FAST = migrations.RunPolicy(lock_timeout=0.5, statement_timeout=60, retries=2, backoff=0.1)


def _sources(tmp_path: Path, upto: str | None = None) -> Path:
    dest = tmp_path / "sql"
    dest.mkdir(parents=True)
    for f in (ROOT / "sql").glob("*.sql"):
        if upto is None or f.name[:4] <= upto:
            shutil.copy(f, dest / f.name)
    return dest


@contextmanager
def _open(dsn: str) -> Iterator[Any]:
    conn = psycopg2.connect(dsn)
    try:
        yield conn
    finally:
        conn.close()


class Sampler:
    """Runs one statement in a loop on its own connection; records the slowest round trip."""

    def __init__(self, dsn: str, statement: str) -> None:
        self.dsn, self.statement = dsn, statement
        self.worst = 0.0
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        with _open(self.dsn) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                while not self._stop.is_set():
                    started = time.monotonic()
                    cur.execute(self.statement)
                    self.worst = max(self.worst, time.monotonic() - started)
                    self.count += 1
                    time.sleep(0.005)


def test_ddl_behind_a_share_lock_fails_within_the_bound_naming_the_blocker(
    fresh_dsn: str, tmp_path: Path
) -> None:
    sources = _sources(tmp_path)
    (sources / "9999_add_nickname.sql").write_text(
        "-- depends: 0006_users_token_expiry_index_concurrently\n"
        "ALTER TABLE users ADD COLUMN nickname text;\n"
    )
    with _open(fresh_dsn) as holder:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            holder_pid = cur.fetchone()[0]
            cur.execute("SELECT id FROM users FOR SHARE")  # opens the transaction, keeps it
        with (
            Sampler(fresh_dsn, "SELECT count(*) FROM users") as reader,
            ThreadPoolExecutor(1) as pool,
        ):
            started = time.monotonic()
            future = pool.submit(migrations.apply, fresh_dsn, sources, FAST)
            with pytest.raises(migrations.LockTimeoutExhausted) as failed:
                future.result(timeout=30)  # the deadline: a regression fails, never hangs
            elapsed = time.monotonic() - started
        holder.rollback()
    # 3 attempts x 0.5 s + backoff 0.1 + 0.2 s, plus connection set-up
    assert elapsed < 5, elapsed
    message = str(failed.value)
    assert "\n" not in message
    assert message.startswith("9999_add_nickname not applied: lock_timeout 0.5s reached on 3")
    assert f"pid {holder_pid} (idle in transaction" in message
    assert "SELECT id FROM users FOR SHARE" in message
    assert reader.count > 0 and reader.worst < FAST.lock_timeout + 0.3, reader.worst
    assert migrations.status(fresh_dsn, sources=sources).pending == ("9999_add_nickname",)
    nickname = query(
        fresh_dsn,
        "SELECT count(*) AS n FROM information_schema.columns WHERE column_name = 'nickname'",
    )
    assert nickname == [{"n": 0}]


@pytest.fixture
def big_dsn(pg: PgServer, tmp_path: Path) -> Iterator[str]:
    """A database just before 0006 holding 200,000 users, half with an Instagram token."""
    name = pg.create_database("defeah_big")
    dsn = pg.dsn(name)
    migrations.apply(dsn, sources=_sources(tmp_path / "upto5", upto="0005"))
    query(
        dsn,
        "INSERT INTO users (email, hashed_password, instagram_access_token, token_expires_at) "
        "SELECT 'u' || g || '@example.com', 'x', CASE WHEN g % 2 = 0 THEN 't' || g END, "
        "now() + g * interval '1 second' FROM generate_series(1, 200000) AS g",
    )
    query(dsn, "ANALYZE users")
    yield dsn
    pg.drop_database(name)


def _index_state(dsn: str) -> list[dict[str, Any]]:
    return query(
        dsn,
        "SELECT c.relname AS name, i.indisvalid AS valid FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relname IN ('users_token_expiry_idx', 'users_token_expires_at_idx') ORDER BY 1",
    )


def test_concurrent_index_build_under_write_load(big_dsn: str, tmp_path: Path) -> None:
    sources = _sources(tmp_path)
    update = (
        "UPDATE users SET login_count = login_count + 1 "
        # a scalar subquery runs random() once, so the lookup uses the email index
        "WHERE email = (SELECT 'u' || (1 + floor(random() * 200000))::int || '@example.com')"
    )
    with Sampler(big_dsn, update) as writer, ThreadPoolExecutor(1) as pool:
        time.sleep(0.2)
        applied = pool.submit(migrations.apply, big_dsn, sources, FAST).result(timeout=120)
        time.sleep(0.2)
    assert applied[0] == "0006_users_token_expiry_index_concurrently"
    assert writer.count > 50
    assert writer.worst < 1.0, writer.worst
    assert _index_state(big_dsn) == [{"name": NEW_INDEX, "valid": True}]


def test_a_killed_concurrent_build_is_rebuilt_by_the_next_migrate(
    big_dsn: str, tmp_path: Path
) -> None:
    sources = _sources(tmp_path)
    patient = migrations.RunPolicy(lock_timeout=60, statement_timeout=120, retries=0)
    with _open(big_dsn) as old_snapshot, ThreadPoolExecutor(1) as pool:
        # A transaction with an older snapshot makes the concurrent build wait at its last
        # phase, after the (still invalid) index exists: the moment to kill it.
        old_snapshot.set_session(isolation_level="REPEATABLE READ")
        with old_snapshot.cursor() as cur:
            cur.execute("SELECT count(*) FROM users")
        future = pool.submit(migrations.apply, big_dsn, sources, patient)
        builder = _wait_for_build(big_dsn, deadline=60)
        query(big_dsn, "SELECT pg_terminate_backend(%s)", (builder,))
        with pytest.raises(MigrationError, match="0006_users_token_expiry_index_concurrently"):
            future.result(timeout=60)
        old_snapshot.rollback()
    assert {"name": NEW_INDEX, "valid": False} in _index_state(big_dsn)
    pending = migrations.status(big_dsn, sources=sources).pending
    assert pending[0] == "0006_users_token_expiry_index_concurrently"  # and what depends on it
    assert migrations.apply(big_dsn, sources=sources, policy=FAST) == list(pending)
    assert _index_state(big_dsn) == [{"name": NEW_INDEX, "valid": True}]


def _wait_for_build(dsn: str, deadline: float) -> int:
    """Pid of the session running our CREATE INDEX CONCURRENTLY once it waits on a lock."""
    until = time.monotonic() + deadline
    while time.monotonic() < until:
        rows = query(
            dsn,
            "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'defeah-db migrate%%' "
            "AND query LIKE 'CREATE INDEX CONCURRENTLY%%' AND wait_event_type = 'Lock'",
        )
        if rows:
            return int(rows[0]["pid"])
        time.sleep(0.05)
    raise AssertionError("the concurrent build never started waiting")


def _interrupted_build(dsn: str) -> None:
    """Leave an INVALID users_token_expiry_idx as a killed 0006 would: the concurrent build
    waits for an older snapshot at its last phase, and is cancelled there."""
    create = (ROOT / "sql" / "0006_users_token_expiry_index_concurrently.sql").read_text()
    statement = create[create.index("CREATE INDEX CONCURRENTLY") :].split(";")[0]
    with _open(dsn) as old_snapshot, _open(dsn) as builder, ThreadPoolExecutor(1) as pool:
        old_snapshot.set_session(isolation_level="REPEATABLE READ")
        with old_snapshot.cursor() as cur:
            cur.execute("SELECT count(*) FROM users")
        builder.autocommit = True
        with builder.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            pid = cur.fetchone()[0]
        future = pool.submit(builder.cursor().execute, statement)
        until = time.monotonic() + 30
        waiting = "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'"
        while not query(dsn, waiting, (pid,)):
            assert time.monotonic() < until, "the concurrent build never waited"
            time.sleep(0.02)
        query(dsn, "SELECT pg_cancel_backend(%s)", (pid,))
        with pytest.raises(psycopg2.errors.QueryCanceled):
            future.result(timeout=30)
        old_snapshot.rollback()
    assert {"name": NEW_INDEX, "valid": False} in _index_state(dsn)


def test_a_lock_timeout_dropping_an_invalid_index_is_one_line_naming_the_blocker(
    pg: PgServer, tmp_path: Path
) -> None:
    """Issue 20 item 12: the retry's DROP INDEX CONCURRENTLY timed out as a raw
    psycopg2.errors.LockNotAvailable traceback, naming nobody."""
    name = pg.create_database("defeah_drop")
    dsn = pg.dsn(name)
    migrations.apply(dsn, sources=_sources(tmp_path / "upto5", upto="0005"))
    _interrupted_build(dsn)
    sources = _sources(tmp_path / "all")
    with _open(dsn) as holder:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            holder_pid = cur.fetchone()[0]
            cur.execute("SELECT count(*) FROM users")  # an analyst's open transaction
        with pytest.raises(migrations.LockTimeoutExhausted) as failed:
            migrations.apply(dsn, sources=sources, policy=FAST)
        holder.rollback()
    message = str(failed.value)
    assert "\n" not in message
    assert message.startswith(
        "0006_users_token_expiry_index_concurrently not applied: lock_timeout 0.5s reached on 3"
    )
    assert f"pid {holder_pid} (idle in transaction" in message
    assert "SELECT count(*) FROM users" in message
    # nothing half-done: the invalid index waits for the next run, which rebuilds it
    assert {"name": NEW_INDEX, "valid": False} in _index_state(dsn)
    assert migrations.apply(dsn, sources=sources, policy=FAST)[0].startswith("0006_")
    assert _index_state(dsn) == [{"name": NEW_INDEX, "valid": True}]
    pg.drop_database(name)
