"""Issue 23 item 3: DEFEAH_AUTH_EVENTS_RETENTION_DAYS (default 90).  maintain-events drops the
whole monthly partitions past it (no DELETE: rows elsewhere stay), gives up a busy lock fast
instead of queueing sign-ins, and readiness warns while a partition is overdue.  Past months
are fixed ones of 2020 (older than any retention under any clock the suite runs with), kept
months are computed from the database's clock."""

from __future__ import annotations

import time

import psycopg2

from dal.db.settings import Settings
from tests.commands import run_cli
from tests.factories import make_settings
from tests.pg import query
from tests.test_web_routes import get_json, serving

OLD = "auth_events_p202001"


def add_month(dsn: str, name: str, lo: str, hi: str, rows: int = 3) -> None:
    """The month's partition (IF NOT EXISTS: the template database was migrated at the suite's
    start, which may be last month when a run crosses a month end -- CI's leap-day pass), with
    ``rows`` events in it."""
    query(
        dsn,
        f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF auth_events "
        f"FOR VALUES FROM ('{lo}') TO ('{hi}')",
    )
    query(
        dsn,
        "INSERT INTO auth_events (occurred_at, email, result, decided_by) "
        "SELECT %s::timestamptz + make_interval(hours => g), 'old@example.com', "
        "'invalid_credentials', 'password' FROM generate_series(1, %s) AS g",
        (lo, rows),
    )


def exists(dsn: str, name: str) -> bool:
    return bool(query(dsn, "SELECT to_regclass(%s) IS NOT NULL AS t", (name,))[0]["t"])


def last_month(dsn: str) -> tuple[str, str, str]:
    """Name and bounds of the month before the database's current one (within 90 days)."""
    row = query(
        dsn,
        "SELECT 'auth_events_p' || to_char(m, 'YYYYMM') AS name, "
        "to_char(m, 'YYYY-MM-DD') || ' 00:00+00' AS lo, "
        "to_char(m + interval '1 month', 'YYYY-MM-DD') || ' 00:00+00' AS hi "
        "FROM (SELECT date_trunc('month', now() AT TIME ZONE 'UTC') - interval '1 month' AS m) s",
    )[0]
    return row["name"], row["lo"], row["hi"]


def test_the_default_is_90_days() -> None:
    assert Settings.from_env({}).auth_events_retention_days == 90


def test_maintain_drops_whole_partitions_past_retention_only(fresh_dsn: str) -> None:
    add_month(fresh_dsn, OLD, "2020-01-01 00:00+00", "2020-02-01 00:00+00")
    recent, lo, hi = last_month(fresh_dsn)
    add_month(fresh_dsn, recent, lo, hi)
    # An old row in the default partition: retention drops partitions, it deletes no rows.
    query(
        fresh_dsn,
        "INSERT INTO auth_events (occurred_at, email, result, decided_by) "
        "VALUES ('2019-06-01 00:00+00', 'old@example.com', 'invalid_credentials', 'password')",
    )
    done = run_cli(fresh_dsn, "maintain-events")
    assert done.returncode == 0, done.stderr
    assert f"dropped partitions past 90 day(s) of retention: {OLD}" in done.stdout
    assert not exists(fresh_dsn, OLD) and exists(fresh_dsn, recent)
    assert query(fresh_dsn, "SELECT count(*) AS n FROM auth_events_default")[0]["n"] == 1
    again = run_cli(fresh_dsn, "maintain-events")
    assert "of retention: none" in again.stdout


def test_a_longer_retention_keeps_the_month(fresh_dsn: str) -> None:
    add_month(fresh_dsn, OLD, "2020-01-01 00:00+00", "2020-02-01 00:00+00")
    done = run_cli(fresh_dsn, "maintain-events", DEFEAH_AUTH_EVENTS_RETENTION_DAYS="3650")
    assert (
        done.returncode == 0
        and exists(fresh_dsn, OLD)
        == (query(fresh_dsn, "SELECT now() < '2030-02-01'::timestamptz AS t")[0]["t"])
    )


def test_a_busy_log_is_given_up_quickly_and_the_new_months_stay(fresh_dsn: str) -> None:
    add_month(fresh_dsn, OLD, "2020-01-01 00:00+00", "2020-02-01 00:00+00")
    ahead = query(
        fresh_dsn,
        "SELECT 'auth_events_p' || to_char(now() AT TIME ZONE 'UTC' + interval '4 months', "
        "'YYYYMM') AS m",
    )[0]["m"]
    holder = psycopg2.connect(fresh_dsn)
    try:
        with holder.cursor() as cur:  # a long transaction that has read the log
            cur.execute(f"SELECT count(*) FROM {OLD}")
        started = time.monotonic()
        done = run_cli(fresh_dsn, "maintain-events", "--months-ahead", "4")
        elapsed = time.monotonic() - started
    finally:
        holder.rollback()
        holder.close()
    assert done.returncode == 1, done.stdout
    assert len(done.stderr.splitlines()) == 1 and "stayed busy" in done.stderr
    assert elapsed < 30 and exists(fresh_dsn, OLD)
    assert exists(fresh_dsn, ahead)  # partition creation committed before the retention step


async def test_readiness_warns_while_retention_is_overdue(fresh_dsn: str) -> None:
    add_month(fresh_dsn, OLD, "2020-01-01 00:00+00", "2020-02-01 00:00+00")
    async with serving(make_settings(fresh_dsn, pool_max_size=4)) as client:
        status, _, ready = await get_json(client, "/readyz")
        _, _, detailed = await get_json(client, "/api/v1/health/detailed")
    assert status == 200 and ready["status"] == "warn"
    findings = detailed["checks"]["postgresql:schema"][0]["observedValue"]["partitions"]
    assert findings == [
        f"retention overdue: {OLD} ended more than 90 day(s) ago; "
        "`defeah-db maintain-events` drops them"
    ]
    assert run_cli(fresh_dsn, "maintain-events").returncode == 0
    async with serving(make_settings(fresh_dsn, pool_max_size=4)) as client:
        _, _, ready = await get_json(client, "/readyz")
    assert ready["status"] == "pass"
