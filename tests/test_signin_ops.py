"""Issue 11, operator side: unlock, prune-events and maintain-events through the real CLI, the
production guard on the destructive ones, and the 0005 catalog (comments everywhere)."""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import timedelta

import psycopg2
import pytest

from cli.data_verbs import age
from dal import Database, NewUser
from dal.errors import AccountLocked, InvalidCredentials, InvalidUserData
from dal.users import signin_jobs
from dal.users.repository import UsersRepository
from tests.commands import ROOT, cli_env, run_cli
from tests.factories import make_settings
from tests.pg import query

PASSWORD = "correct horse battery"
WRONG = "tr0ub4dor&3"
ATTACKER = "203.0.113.66"
OWNER = "198.51.100.7"


def children(dsn: str) -> set[str]:
    rows = query(
        dsn,
        "SELECT inhrelid::regclass::text AS name FROM pg_inherits "
        "WHERE inhparent = 'auth_events'::regclass",
    )
    return {r["name"] for r in rows}


def months_from_now(dsn: str, ahead: int) -> set[str]:
    """Partition names from this UTC month to *ahead* months on, by the database's clock."""
    rows = query(
        dsn,
        "SELECT to_char(date_trunc('month', now() AT TIME ZONE 'UTC') "
        f"+ make_interval(months => g), '\"auth_events_p\"YYYYMM') AS name "
        f"FROM generate_series(0, {ahead}) AS g",
    )
    return {r["name"] for r in rows}


def count(dsn: str, statement: str) -> int:
    return int(query(dsn, statement)[0]["n"])


async def test_unlock_clears_budgets_and_the_lock_and_is_guarded(fresh_dsn: str) -> None:
    settings = make_settings(fresh_dsn, lockout_account_threshold=6, signin_refusal_hold=0.3)
    async with Database(settings) as db:
        user = await UsersRepository(db).create(NewUser(email="ada@example.com", password=PASSWORD))  # type: ignore[arg-type]
        for client_ip in [ATTACKER] * 5 + [OWNER]:
            with pytest.raises(InvalidCredentials):
                await UsersRepository(db).authenticate(user.email, WRONG, client_ip=client_ip)
        assert (await UsersRepository(db).get(user.id)).is_locked

        refused = run_cli(fresh_dsn, "unlock", "ADA@example.com", DEFEAH_ENV="production")
        assert refused.returncode == 2 and "pass --force" in refused.stderr
        with pytest.raises(AccountLocked):
            await UsersRepository(db).authenticate(user.email, PASSWORD, client_ip=ATTACKER)

        done = run_cli(fresh_dsn, "unlock", "ADA@example.com", "--force", DEFEAH_ENV="production")
        assert done.returncode == 0, done.stderr
        # 4: two network keys, the account key and (since issue 20 item 8) the streak key.
        assert "unlocked ada@example.com: 4 budget(s) cleared" in done.stdout
        assert not (await UsersRepository(db).get(user.id)).is_locked
        # The CLI is another process: this one repeats the database's last "locked" for at
        # most its hold (issue 20), then asks the database again.
        await asyncio.sleep(settings.signin_refusal_hold)
        # Even the attacker's network has its budget back (the operator's call).
        signed_in = await UsersRepository(db).authenticate(user.email, PASSWORD, client_ip=ATTACKER)
        assert signed_in.id == user.id
    unlocked = query(fresh_dsn, "SELECT * FROM auth_events WHERE result = 'unlocked'")
    assert [(r["email"], str(r["user_id"]), r["decided_by"]) for r in unlocked] == [
        ("ada@example.com", str(user.id), "operator")
    ]


def test_prune_drops_old_partitions_and_deletes_the_rest_in_batches(fresh_dsn: str) -> None:
    query(
        fresh_dsn,
        "CREATE TABLE auth_events_p202001 PARTITION OF auth_events "
        "FOR VALUES FROM ('2020-01-01 00:00+00') TO ('2020-02-01 00:00+00')",
    )
    insert = (
        "INSERT INTO auth_events (occurred_at, email, result, decided_by) "
        "SELECT {when}, 'a@example.com', 'success', 'password' FROM generate_series(1, {n})"
    )
    query(fresh_dsn, insert.format(when="'2020-01-15 00:00+00'", n=3))
    query(fresh_dsn, insert.format(when="now() - interval '200 days'", n=7))  # default part
    query(fresh_dsn, insert.format(when="now() - interval '10 days'", n=2))
    query(fresh_dsn, insert.format(when="now()", n=1))

    refused = run_cli(fresh_dsn, "prune-events", "--older-than", "90d", DEFEAH_ENV="production")
    assert refused.returncode == 2 and "pass --force" in refused.stderr
    assert count(fresh_dsn, "SELECT count(*) AS n FROM auth_events") == 13

    done = run_cli(fresh_dsn, "prune-events", "--older-than", "90d", "--batch-size", "3")
    assert done.returncode == 0, done.stderr
    assert "dropped partitions: auth_events_p202001; deleted 7 older row(s)" in done.stdout
    assert count(fresh_dsn, "SELECT count(*) AS n FROM auth_events") == 3
    gone = query(fresh_dsn, "SELECT to_regclass('auth_events_p202001') AS t")
    assert gone == [{"t": None}]


def test_maintain_creates_partitions_ahead_and_moves_their_rows(fresh_dsn: str) -> None:
    query(
        fresh_dsn,
        "INSERT INTO auth_events (occurred_at, email, result, decided_by) "
        "VALUES (now() + interval '5 months', 'a@example.com', 'success', 'password')",
    )
    query(
        fresh_dsn,
        "INSERT INTO sign_in_budgets VALUES "
        "('ip', '', '192.0.2.1/32', 3, now() - interval '1 s'), "
        "('ip', '', '192.0.2.2/32', 3, now() + interval '1 h')",
    )
    assert count(fresh_dsn, "SELECT count(*) AS n FROM auth_events_default") == 1
    before, window_before = children(fresh_dsn), months_from_now(fresh_dsn, 6)
    done = run_cli(fresh_dsn, "maintain-events", "--months-ahead", "6")
    assert done.returncode == 0, done.stderr
    after, window_after = children(fresh_dsn), months_from_now(fresh_dsn, 6)
    assert "removed 1 expired budget row(s)" in done.stdout
    assert count(fresh_dsn, "SELECT count(*) AS n FROM auth_events_default") == 0
    assert count(fresh_dsn, "SELECT count(*) AS n FROM auth_events") == 1
    # This month and six ahead now exist, and nothing else was added. The month is read
    # on both sides of the run: a suite started just before midnight on a month's last
    # day (the moved-clock CI pass) may cross into the next month while it runs.
    assert window_before <= after or window_after <= after, sorted(after)
    assert after - before <= window_before | window_after, sorted(after - before)
    again = run_cli(fresh_dsn, "maintain-events", "--months-ahead", "6")
    assert "created partitions: none (all present)" in again.stdout
    assert [r["network"] for r in query(fresh_dsn, "SELECT network FROM sign_in_budgets")] == [
        "192.0.2.2/32"
    ]


def test_every_new_table_and_column_is_commented(fresh_dsn: str) -> None:
    missing = query(
        fresh_dsn,
        """
        SELECT c.relname, a.attname FROM pg_class c
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE c.relname IN ('sign_in_budgets', 'auth_events')
          AND col_description(c.oid, a.attnum) IS NULL
        UNION ALL
        SELECT c.relname, '(table)' FROM pg_class c
        WHERE c.relname IN ('sign_in_budgets', 'auth_events', 'auth_events_default')
          AND obj_description(c.oid, 'pg_class') IS NULL
        """,
    )
    assert missing == []


@pytest.mark.parametrize(("raw", "days"), [("90d", 90.0), ("12h", 0.5), ("30m", 30 / 1440)])
def test_age_argument(raw: str, days: float) -> None:
    assert age(raw).total_seconds() == pytest.approx(days * 86400)


@pytest.mark.parametrize("raw", ["0d", "90", "d", "-1d", "1w"])
def test_bad_age_is_refused(raw: str) -> None:
    # Refused while parsing arguments: the (unreachable) database is never contacted.
    done = run_cli("postgresql://nobody@127.0.0.1:1/none", "prune-events", f"--older-than={raw}")
    assert done.returncode == 2 and "expected a positive age" in done.stderr


def test_prune_gives_up_instead_of_queueing_sign_ins_behind_its_lock(fresh_dsn: str) -> None:
    """Dropping a partition locks auth_events exclusively; behind a reader it must give up
    within the lock timeout (every sign-in would otherwise queue behind the waiting DROP)."""
    query(
        fresh_dsn,
        "CREATE TABLE auth_events_p202001 PARTITION OF auth_events "
        "FOR VALUES FROM ('2020-01-01 00:00+00') TO ('2020-02-01 00:00+00')",
    )
    holder = psycopg2.connect(fresh_dsn)
    try:
        with holder.cursor() as cur:  # a long transaction that has read the log
            cur.execute("SELECT pg_backend_pid()")
            holder_pid = cur.fetchone()[0]
            cur.execute("SELECT count(*) FROM auth_events")
        started = time.monotonic()
        done = run_cli(
            fresh_dsn, "prune-events", "--older-than", "90d", DEFEAH_MIGRATION_LOCK_TIMEOUT="0.5"
        )
        elapsed = time.monotonic() - started
    finally:
        holder.rollback()
        holder.close()
    assert done.returncode == 1, done.stdout
    assert "55P03" in done.stderr and elapsed < 30  # lock_not_available, not a hang
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("defeah-db: error: prune-events dropped nothing: auth_events")
    assert f"pid {holder_pid} (idle in transaction" in done.stderr
    assert "SELECT count(*) FROM auth_events" in done.stderr
    assert query(fresh_dsn, "SELECT to_regclass('auth_events_p202001') IS NOT NULL AS t") == [
        {"t": True}
    ]


@pytest.mark.parametrize("raw", ["999999999d", "99999999999999999999999d", "36501d", "876025h"])
def test_a_huge_age_is_a_clean_argument_error(raw: str) -> None:
    """Issue 20 item 18: 999999999d overflowed the cut-off's date arithmetic (a traceback)."""
    done = run_cli("postgresql://nobody@127.0.0.1:1/none", "prune-events", f"--older-than={raw}")
    assert done.returncode == 2, done.stderr
    assert "expected an age of at most 36500d" in done.stderr
    assert "Traceback" not in done.stderr


async def test_prune_events_refuses_a_huge_age_before_any_query(fresh_dsn: str) -> None:
    async with Database(make_settings(fresh_dsn)) as db:
        with pytest.raises(InvalidUserData, match="older_than"):
            await signin_jobs.prune_events(db, timedelta(days=999_999_999))


async def test_prune_behind_an_open_transaction_never_queues_sign_ins(fresh_dsn: str) -> None:
    """Issue 20 item 13: behind an analyst's open transaction, prune-events queued a sign-in
    for 4,997 ms.  Each try now gives way after milliseconds; the prune retries with backoff
    and drops the partition once the analyst's transaction ends."""
    waits = await prune_behind_an_analyst(fresh_dsn, fresh_dsn, pgbouncer=False)
    assert len(waits) >= 5
    # A sign-in queues at most one try's lock wait (50 ms); measured 174-216 ms in all at a
    # load average of 7 on 2 cores (bcrypt included).  Before the fix it queued until the
    # analyst's transaction ended (the whole loop), so 1 s leaves room for a loaded CI.
    assert max(waits) < 1.0, sorted(waits)[-5:]


async def prune_behind_an_analyst(direct_dsn: str, app_dsn: str, *, pgbouncer: bool) -> list[float]:
    """Run ``prune-events`` on ``app_dsn`` while an analyst's transaction (on ``direct_dsn``)
    has read auth_events, sign in meanwhile for 2.5 s, end the analyst's transaction, and
    return each sign-in's duration once the prune has dropped its partition."""
    query(
        direct_dsn,
        "CREATE TABLE auth_events_p202001 PARTITION OF auth_events "
        "FOR VALUES FROM ('2020-01-01 00:00+00') TO ('2020-02-01 00:00+00')",
    )
    env = {"DEFEAH_MIGRATION_LOCK_TIMEOUT": "30", "DEFEAH_PGBOUNCER": str(pgbouncer).lower()}
    async with Database(make_settings(app_dsn, pgbouncer=pgbouncer)) as db:
        users = UsersRepository(db)
        user = await users.create(NewUser(email="ada@example.com", password=PASSWORD))  # type: ignore[arg-type]
        holder = psycopg2.connect(direct_dsn)
        try:
            with holder.cursor() as cur:  # the analyst: an open transaction that read the log
                cur.execute("SELECT count(*) FROM auth_events")
            prune = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "cli",
                "prune-events",
                "--older-than",
                "90d",
                cwd=ROOT,
                env=cli_env(app_dsn, **env),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            await _wait_for_prune_lock_wait(direct_dsn)
            waits = []
            loop = asyncio.get_running_loop()
            until = loop.time() + 2.5
            while loop.time() < until:  # sign-ins while the prune keeps trying
                started = loop.time()
                await users.authenticate(user.email, PASSWORD, client_ip=OWNER)
                waits.append(loop.time() - started)
        finally:
            holder.rollback()  # the analyst is done: the next try succeeds
            holder.close()
        out, err = await asyncio.wait_for(prune.communicate(), timeout=60)
    assert prune.returncode == 0, err
    assert b"dropped partitions: auth_events_p202001" in out
    return waits


async def _wait_for_prune_lock_wait(dsn: str) -> None:
    """Until the prune's partition drop has been seen waiting for its lock at least once."""
    for _ in range(3000):
        rows = query(
            dsn,
            "SELECT 1 FROM pg_stat_activity WHERE query LIKE '%%drop_partitions_before%%' "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()",
        )
        if rows:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the prune never waited for its lock")
