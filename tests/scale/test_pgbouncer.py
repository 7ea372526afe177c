"""The DAL behind a real PgBouncer 1.18 in transaction pooling mode.

PgBouncer hands a server connection to a client for one transaction at a time, so anything that
relies on the *session* (named prepared statements, session SETs, advisory locks, temp tables)
breaks or leaks between clients.  These tests run the DAL through it with more concurrent
clients than PgBouncer has server connections, which is when such bugs show.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from dal.db.database import Database
from dal.errors import DatabaseUnavailable
from dal.migrations import runner as migrations
from tests.factories import make_settings
from tests.pg import PgServer
from tests.scale.conftest import BOUNCER_POOL_SIZE, via_bouncer
from tests.scale.servers import PgBouncer

pytestmark = pytest.mark.scale

ROOT = Path(__file__).resolve().parents[2]
TASKS = 2 * BOUNCER_POOL_SIZE  # the "2x more concurrent tasks than the server pool"


def bouncer_db(dsn: str, **overrides: object) -> Database:
    settings = make_settings(dsn, pgbouncer=True, pool_max_size=TASKS, **overrides)
    return Database(settings)


async def test_startup_packet_is_accepted_as_pgbouncer_ships(bouncer_dsn: str) -> None:
    """No ``ignore_startup_parameters`` needed: with DEFEAH_PGBOUNCER the DAL sends only the
    parameters PgBouncer tracks per client, and they are in force on every server connection."""
    async with bouncer_db(bouncer_dsn) as db:
        for _ in range(3):
            async with db.acquire() as conn:
                row = await conn.fetchrow(
                    "SELECT current_setting('application_name') AS app,"
                    " current_setting('TimeZone') AS tz"
                )
                assert row is not None
                assert (row["app"], row["tz"]) == ("defeah-db", "UTC")


async def test_without_the_setting_pgbouncer_refuses_the_connection(bouncer_dsn: str) -> None:
    """The direct-connection startup packet carries statement_timeout, which PgBouncer 1.18
    rejects: the failure is a clear DatabaseUnavailable, and DEFEAH_PGBOUNCER is the fix."""
    db = Database(make_settings(bouncer_dsn, pgbouncer=False))
    with pytest.raises(DatabaseUnavailable, match="unsupported startup parameter"):
        await db.open()
    await db.close()


async def test_more_clients_than_server_connections_share_them(
    bouncer_dsn: str, pgbouncer: PgBouncer
) -> None:
    """TASKS concurrent transactions, each with parameterised statements (unnamed prepared
    statements under the hood), all succeed on at most BOUNCER_POOL_SIZE server backends."""
    async with bouncer_db(bouncer_dsn) as db:
        ready = asyncio.Barrier(TASKS)

        async def one(i: int) -> int:
            async with db.acquire() as conn:
                await ready.wait()  # every task holds its own DAL connection at once
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO users (email, hashed_password, full_name) VALUES ($1, $2, $3)",
                        f"bouncer{i}@example.com",
                        "x" * 60,
                        f"User {i}",
                    )
                    await conn.execute("SELECT pg_sleep(0.05)")
                    pid = await conn.fetchval("SELECT pg_backend_pid()")
                # Outside a transaction each statement may land on another backend, and still
                # the parameterised read must work.
                email = await conn.fetchval(
                    "SELECT email FROM users WHERE email = $1", f"bouncer{i}@example.com"
                )
                assert email == f"bouncer{i}@example.com"
                return int(pid)

        pids = await asyncio.gather(*(one(i) for i in range(TASKS)))
        assert db.metrics().size == TASKS
    assert len(set(pids)) <= BOUNCER_POOL_SIZE < TASKS
    pools = [p for p in pgbouncer.admin("SHOW POOLS") if p["database"] != "pgbouncer"]
    servers = sum(int(str(p[k])) for p in pools for k in ("sv_active", "sv_idle", "sv_used"))
    assert 0 < servers <= BOUNCER_POOL_SIZE * len(pools)


async def test_statement_timeout_is_set_on_the_role_not_the_startup_packet(
    pg: PgServer, template_db: str, pgbouncer: PgBouncer
) -> None:
    """What the README recommends instead of the refused startup parameter: a database-level
    default that every server connection PgBouncer opens picks up."""
    name = pg.create_database("defeah_bto", template=template_db)
    try:
        pg.execute(f"ALTER DATABASE {name} SET statement_timeout = '150ms'")
        db = bouncer_db(via_bouncer(pgbouncer, pg.dsn(name)))
        async with db, db.acquire() as conn:
            assert await conn.fetchval("SHOW statement_timeout") == "150ms"
    finally:
        pg.drop_database(name)


def test_yoyo_migrations_run_through_pgbouncer(pg: PgServer, pgbouncer: PgBouncer) -> None:
    """yoyo (psycopg2, one transaction per migration, a lock *table* rather than a session
    advisory lock) works in transaction mode, so one DSN can serve the app and the migrations."""
    name = pg.create_database("defeah_bmig")
    try:
        dsn = via_bouncer(pgbouncer, pg.dsn(name))
        # PgBouncer refuses the startup options carrying lock_timeout (DEFEAH_PGBOUNCER=true)
        with pytest.raises(migrations.MigrationError, match="DEFEAH_PGBOUNCER=true"):
            migrations.apply(dsn)
        applied = migrations.apply(dsn, policy=migrations.RunPolicy(session_limits=False))
        assert applied
        status = migrations.status(dsn)
        assert status.pending == ()
        assert status.applied == tuple(applied)
    finally:
        pg.drop_database(name)


# Statements that keep state in the *session*, which transaction pooling hands to another client.
SESSION_STATE = {
    "session advisory lock": re.compile(r"pg_(?:try_)?advisory_lock(?:_shared)?\s*\(", re.I),
    "temporary table": re.compile(r"\bCREATE\s+(?:GLOBAL\s+|LOCAL\s+)?TEMP(?:ORARY)?\b", re.I),
    "session SET": re.compile(r"""["'(]\s*SET\s+(?!LOCAL\b)(?:SESSION\s+)?\w+""", re.I),
    "set_config(..., false)": re.compile(r"set_config\s*\([^)]*,\s*false\s*\)", re.I),
    "LISTEN": re.compile(r"""["']\s*LISTEN\s""", re.I),
    "named prepared statement": re.compile(r"\.prepare\s*\(|\bPREPARE\s+\w+\s+AS\b", re.I),
}


# Session state on purpose, never through a pool: rehearse's owner session holds a session
# advisory lock on a direct connection to the server's maintenance database (CREATE DATABASE
# cannot go through a transaction pooler anyway), so the server frees it when the owner dies.
SESSION_STATE_ON_PURPOSE = {"dal/queries/rehearsal.sql"}


def test_dal_sql_keeps_no_session_state() -> None:
    """A guard on review: no DAL module uses session-scoped state (transaction-scoped
    equivalents such as ``pg_advisory_xact_lock`` or ``SET LOCAL`` are fine)."""
    sources = [
        path
        for path in [
            *sorted((ROOT / "dal").rglob("*.py")),
            *sorted((ROOT / "dal" / "queries").glob("*.sql")),
            *sorted((ROOT / "sql").glob("*.sql")),
        ]
        if str(path.relative_to(ROOT)) not in SESSION_STATE_ON_PURPOSE
    ]
    assert sources
    found = [
        f"{path.relative_to(ROOT)}: {what}"
        for path in sources
        for what, pattern in SESSION_STATE.items()
        if pattern.search(path.read_text())
    ]
    assert found == []
