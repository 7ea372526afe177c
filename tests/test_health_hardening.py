"""Health routes under hostile conditions: what the open routes reveal, who may make the detailed
check work, that it never writes, and that a locked bookkeeping table cannot stall it.

All against the real PostgreSQL of the test session, through aiohttp's test server.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
import pytest_asyncio
from psycopg2 import sql

from dal.db.dsn import describe_dsn
from dal.db.settings import Settings
from dal.migrations.files import SQL_DIR
from tests.factories import make_settings
from tests.pg import PgServer, dsn_for, query
from tests.test_web_routes import PROBLEM_TYPE, free_port, get_json, serving
from web.app import DATABASE, create_app

TOKEN = "tok-" + "h" * 24
OPEN_ROUTES = ("/readyz", "/api/v1/health/database")
DETAILED = "/api/v1/health/detailed"


def migration_files() -> list[str]:
    """Ids of the migration files, from their names (independent of the code under test)."""
    names = (p.name.removesuffix(".sql") for p in SQL_DIR.glob("*.sql"))
    return sorted(n for n in names if not n.endswith(".rollback"))


@pytest.fixture
def web_settings(fresh_dsn: str) -> Settings:
    return make_settings(fresh_dsn, pool_min_size=1, pool_max_size=2, health_timeout=0.5)


@pytest.fixture
def limited_role(pg: PgServer) -> Iterator[str]:
    """A login role the server refuses every connection for (CONNECTION LIMIT 0)."""
    role = f"h_limited_{uuid.uuid4().hex[:8]}"
    pg.execute(sql.SQL("CREATE ROLE {} LOGIN CONNECTION LIMIT 0").format(sql.Identifier(role)))
    try:
        yield role
    finally:
        pg.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def with_user(dsn: str, user: str) -> str:
    """``dsn`` connecting as ``user`` instead (trust authentication: no password)."""
    scheme, rest = dsn.split("://", 1)
    return f"{scheme}://{user}@{rest.rpartition('@')[2]}"


# -- item 3: open routes give a generic failure, details only on an authorized /detailed --------


async def test_open_routes_hide_the_drivers_failure_text(fresh_dsn: str, limited_role: str) -> None:
    dsn = with_user(fresh_dsn, limited_role)
    settings = make_settings(dsn, connect_timeout=1.0, health_timeout=1.0)
    revealing = (limited_role, describe_dsn(dsn), "too many connections", "Error")
    async with serving(settings) as client:
        for path in OPEN_ROUTES:
            status, _, body = await get_json(client, path)
            assert status == 503, path
            (check,) = body["checks"]["postgresql:responseTime"]
            assert check["output"] == "database unavailable", path
            assert not [word for word in revealing if word in str(body)], (path, body)
        # no token configured: /detailed stays open and carries the real text for the operator
        status, _, body = await get_json(client, DETAILED)
        assert status == 503
        assert "too many connections" in body["checks"]["postgresql:responseTime"][0]["output"]


async def test_detailed_shows_the_failure_text_only_with_the_token(
    fresh_dsn: str, limited_role: str
) -> None:
    dsn = with_user(fresh_dsn, limited_role)
    settings = make_settings(dsn, connect_timeout=1.0, health_timeout=1.0, health_token=TOKEN)
    async with serving(settings) as client:
        status, _, body = await get_json(client, DETAILED)
        assert status == 401 and limited_role not in str(body)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        status, _, body = await get_json(client, DETAILED, auth)
        assert status == 503
        output = body["checks"]["postgresql:responseTime"][0]["output"]
        assert "too many connections" in output and limited_role in output


# -- item 5: the migration read is a plain SELECT, and only for an authorized caller ------------


async def test_detailed_reads_migrations_without_ddl(web_settings: Settings) -> None:
    """yoyo's backend creates yoyo_lock (and a temp table) on every read; our read must not."""
    dsn = web_settings.database_url or ""
    query(dsn, "DROP TABLE yoyo_lock")
    async with serving(web_settings) as client:
        for _ in range(2):
            status, _, body = await get_json(client, DETAILED)
            assert status == 200, body
            schema = body["checks"]["postgresql:migrations"][0]
            assert schema["observedValue"]["pending"] == []
            assert schema["observedValue"]["head"] == migration_files()[-1]
    assert query(dsn, "SELECT to_regclass('yoyo_lock') AS t") == [{"t": None}]


async def test_detailed_on_a_database_yoyo_never_touched(pg: PgServer) -> None:
    """No bookkeeping table at all: everything pending, no error (and no table created)."""
    name = pg.create_database("h_empty")
    try:
        settings = make_settings(pg.dsn(name), health_timeout=1.0)
        async with serving(settings) as client:
            status, _, body = await get_json(client, DETAILED)
        assert status == 503  # behind the schema the code requires (postgresql:schema)
        assert body["checks"]["postgresql:schema"][0]["status"] == "fail"
        schema = body["checks"]["postgresql:migrations"][0]
        assert schema["status"] == "warn"
        assert schema["observedValue"] == {
            "applied": 0,
            "head": None,
            "pending": migration_files(),
        }
        assert query(pg.dsn(name), "SELECT to_regclass('_yoyo_migration') AS t") == [{"t": None}]
    finally:
        pg.drop_database(name)


async def test_unauthorized_detailed_costs_no_database_work(web_settings: Settings) -> None:
    """With every pool connection held, any check would wait out the health timeout; an
    unauthorized caller is answered at once, without even asking the pool."""
    settings = web_settings.replace(health_token=TOKEN, health_timeout=1.0)
    app = create_app(settings)
    async with serving(settings, app) as client:
        db = app[DATABASE]
        async with db.acquire(), db.acquire():
            for headers in (None, {"Authorization": "Bearer wrong"}):
                started = time.perf_counter()
                status, response_headers, _ = await get_json(client, DETAILED, headers)
                elapsed = time.perf_counter() - started
                assert status == 401
                assert response_headers["Content-Type"] == PROBLEM_TYPE
                assert elapsed < 0.3, elapsed
            assert db.metrics().waiting == 0
            auth = {"Authorization": f"Bearer {TOKEN}"}
            started = time.perf_counter()
            assert (await get_json(client, DETAILED, auth))[0] == 503  # the control: it waits
            assert time.perf_counter() - started >= 0.9


# -- item 6: every health query is bounded on the server too --------------------------------------


@pytest_asyncio.fixture
async def other_session(web_settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(web_settings.database_url)
    try:
        yield conn
    finally:
        await conn.close()


async def waiting_on_the_lock(conn: asyncpg.Connection) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE NOT granted "
            "AND relation = '_yoyo_migration'::regclass"
        )
    )


async def test_locked_bookkeeping_table_fails_the_check_within_the_timeout(
    web_settings: Settings, other_session: asyncpg.Connection
) -> None:
    """Another session holds ACCESS EXCLUSIVE on yoyo's table, as a DBA's migration might."""
    limit = web_settings.health_timeout
    lock = other_session.transaction()
    await lock.start()
    await other_session.execute("LOCK TABLE _yoyo_migration IN ACCESS EXCLUSIVE MODE")
    async with serving(web_settings) as client:
        async with asyncio.timeout(limit + 5):
            started = time.perf_counter()
            status, _, body = await get_json(client, DETAILED)
            elapsed = time.perf_counter() - started
        assert elapsed < limit + 0.5, elapsed
        assert status == 503
        assert body["checks"]["postgresql:migrations"][0]["status"] == "fail"
        assert body["checks"]["postgresql:responseTime"][0]["status"] == "pass"
        # The server's lock_timeout ended the read's wait too, not just our client deadline.
        deadline = time.monotonic() + limit + 0.5
        while await waiting_on_the_lock(other_session):
            assert time.monotonic() < deadline, "a health read still waits on the lock"
            await asyncio.sleep(0.05)
        await lock.rollback()  # lock released: the next read passes
        status, _, body = await get_json(client, DETAILED)
        assert status == 200, body


async def test_health_statements_carry_the_health_timeout(web_settings: Settings) -> None:
    db = create_app(web_settings)[DATABASE]
    try:
        async with db.bounded(0.25) as conn:
            assert await conn.fetchval("SHOW statement_timeout") == "250ms"
            assert await conn.fetchval("SHOW lock_timeout") == "250ms"
            assert await conn.fetchval("SHOW transaction_read_only") == "on"
        async with db.acquire() as conn:  # SET LOCAL: nothing leaks into the pool
            assert await conn.fetchval("SHOW lock_timeout") == "0"
    finally:
        await db.close()


# -- item 9: a header that is not UTF-8 is just a wrong token -------------------------------------


async def raw_get(port: int, path: str, authorization: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"GET " + path.encode() + b" HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
            b"Authorization: " + authorization + b"\r\n\r\n"
        )
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()


async def test_non_utf8_authorization_is_unauthorized(
    web_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings = web_settings.replace(health_token=TOKEN)
    caplog.set_level(logging.WARNING)
    async with serving(settings) as client:
        port = client.server.port
        assert port is not None
        for value in (b"Bearer \xff\xfe", "Bearer tök".encode("latin-1"), b"\xff\xfe " + b"x"):
            reply = await raw_get(port, DETAILED, value)
            status_line = reply.split(b"\r\n", 1)[0]
            assert status_line == b"HTTP/1.1 401 Unauthorized", (value, reply[:200])
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_dead_database_url_is_a_generic_failure_on_open_routes() -> None:
    """Connection refused names host and port in the driver text: the open routes hide it."""
    port = free_port()
    dsn = dsn_for(f"postgresql://postgres@127.0.0.1:{port}/x", "nowhere")
    settings = make_settings(dsn, connect_timeout=1.0, health_timeout=1.0)
    async with serving(settings) as client:
        for path in OPEN_ROUTES:
            status, _, body = await get_json(client, path)
            assert status == 503
            assert str(port) not in str(body) and "nowhere" not in str(body), body
        _, _, body = await get_json(client, DETAILED)
        assert str(port) in body["checks"]["postgresql:responseTime"][0]["output"]
