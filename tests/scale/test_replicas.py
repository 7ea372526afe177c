"""Read-replica routing against our own primary and a real streaming standby.

``pg_is_in_recovery()`` on the connection an acquire hands out is the proof of where a statement
ran: true only on the standby.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import asyncpg
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from dal.db.database import Database
from dal.db.dsn import describe_dsn
from dal.db.settings import Settings
from dal.errors import DatabaseUnavailable, NotFound
from dal.instagram.models import InstagramConnection
from dal.instagram.repository import InstagramRepository
from dal.users.models import NewUser
from dal.users.repository import UsersRepository
from tests.factories import make_settings
from tests.scale.conftest import SCALE_DATABASE
from tests.scale.servers import StreamingPair, free_port, query_one
from tests.test_web_routes import assert_health_document
from web.app import create_app

pytestmark = pytest.mark.scale

PASSWORD = "correct horse battery staple"


def routed_settings(pair: StreamingPair, **overrides: object) -> Settings:
    options: dict[str, object] = {"replica_timeout": 0.5, "replica_retry": 0.3, **overrides}
    return make_settings(
        pair.primary.dsn(SCALE_DATABASE),
        replica_urls=(pair.standby.dsn(SCALE_DATABASE),),
        **options,
    )


@pytest_asyncio.fixture
async def routed_db(streaming_pair: StreamingPair) -> AsyncIterator[Database]:
    async with Database(routed_settings(streaming_pair)) as db:
        yield db


async def where(db: Database, *, readonly: bool) -> tuple[bool, int]:
    """``(in recovery, server port)`` of the connection an acquire hands out."""
    async with db.acquire(readonly=readonly) as conn:
        row = await conn.fetchrow("SELECT pg_is_in_recovery() AS standby, inet_server_port() AS p")
        assert row is not None
        return bool(row["standby"]), int(row["p"])


async def test_readonly_acquires_use_the_standby_others_the_primary(
    routed_db: Database, streaming_pair: StreamingPair
) -> None:
    assert await where(routed_db, readonly=True) == (True, streaming_pair.standby.port)
    assert await where(routed_db, readonly=False) == (False, streaming_pair.primary.port)
    async with routed_db.transaction() as conn:
        assert await conn.fetchval("SELECT pg_is_in_recovery()") is False


async def test_writes_on_the_primary_are_read_back_from_the_standby(
    routed_db: Database, streaming_pair: StreamingPair
) -> None:
    async with routed_db.transaction() as conn:
        user_id = await conn.fetchval(
            "INSERT INTO users (email, hashed_password, full_name) VALUES ($1, $2, $3)"
            " RETURNING id",
            "replicated@example.com",
            "x" * 60,
            "Rep Licated",
        )
    await asyncio.to_thread(streaming_pair.wait_replayed)
    async with routed_db.acquire(readonly=True) as conn:
        row = await conn.fetchrow(
            "SELECT email, pg_is_in_recovery() AS standby FROM users WHERE id = $1", user_id
        )
        assert row is not None
        assert (row["email"], row["standby"]) == ("replicated@example.com", True)
        with pytest.raises(asyncpg.exceptions.ReadOnlySQLTransactionError):
            await conn.execute("DELETE FROM users WHERE id = $1", user_id)
    async with routed_db.transaction() as conn:
        await conn.execute("DELETE FROM users WHERE id = $1", user_id)


async def test_repository_reads_use_the_standby_writes_and_sign_in_the_primary(
    routed_db: Database, streaming_pair: StreamingPair
) -> None:
    """With replay paused on the standby, a user just created on the primary is invisible to
    exactly the lag-tolerant reads -- which proves where each method ran."""
    users = UsersRepository(routed_db)
    instagram = InstagramRepository(routed_db)
    await asyncio.to_thread(streaming_pair.wait_replayed)
    query_one(streaming_pair.standby.dsn(), "SELECT pg_wal_replay_pause()")
    try:
        soon = datetime.now(UTC) + timedelta(hours=1)
        user = await users.create(NewUser(email="lagging@example.com", password=PASSWORD))
        await instagram.connect(
            user.id,
            InstagramConnection(instagram_user_id="42", access_token="t", token_expires_at=soon),
        )
        with pytest.raises(NotFound):
            await users.get(user.id)
        with pytest.raises(NotFound):
            await users.get_by_email("lagging@example.com")
        assert user.id not in [u.id for u in (await users.list()).users]
        assert await instagram.expiring_tokens(timedelta(days=1)) == []
        # Authentication and writes must see the latest row: they use the primary.
        assert (await users.authenticate("lagging@example.com", PASSWORD)).id == user.id
        assert (await users.record_login_failure(user.id)).failed_login_attempts == 1
    finally:
        query_one(streaming_pair.standby.dsn(), "SELECT pg_wal_replay_resume()")
    await asyncio.to_thread(streaming_pair.wait_replayed)
    assert (await users.get(user.id)).failed_login_attempts == 1
    assert [u.id for u in await instagram.expiring_tokens(timedelta(days=1))] == [user.id]
    await users.delete(user.id)


async def test_replica_connection_lost_mid_read(
    streaming_pair: StreamingPair,
) -> None:
    """The read that was running fails cleanly (DatabaseUnavailable, not a driver error) and
    the replica is skipped by the next reads, which use the primary."""
    async with Database(routed_settings(streaming_pair, replica_retry=60.0)) as db:
        with pytest.raises(DatabaseUnavailable):
            async with db.acquire(readonly=True) as conn:
                pid = await conn.fetchval("SELECT pg_backend_pid()")
                query_one(streaming_pair.standby.dsn(), f"SELECT pg_terminate_backend({pid})")
                await UsersRepository(db).get(
                    uuid4(), conn=conn
                )  # the repository translates the loss
        assert await where(db, readonly=True) == (False, streaming_pair.primary.port)


async def test_pool_metrics_and_replica_health_name_each_pool(routed_db: Database) -> None:
    await where(routed_db, readonly=True)
    pools = routed_db.pool_metrics()
    assert list(pools) == ["primary", "replica"]
    assert pools["primary"] == routed_db.metrics()
    assert pools["replica"].size >= 1
    assert pools["replica"].max_size == routed_db.settings.pool_max_size
    report = (await routed_db.replica_health())["replica"]
    assert report.ok and report.in_recovery is True and report.error is None
    assert report.lag_seconds is not None and report.lag_seconds >= 0


async def test_unreachable_replica_reads_fall_back_and_secrets_stay_out(
    clean_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A replica that refuses connections from the start: the app opens, reads use the
    primary, health says why, and the replica URL's password appears nowhere."""
    secret = "Replica-Pa55word"
    dead = f"postgresql://reader:{secret}@127.0.0.1:{free_port()}/nowhere"
    caplog.set_level(logging.DEBUG, logger="dal")
    async with Database(make_settings(clean_dsn, replica_urls=(dead,))) as db:
        for _ in range(3):
            async with db.acquire(readonly=True) as conn:
                assert await conn.fetchval("SELECT 1") == 1
        assert db.pool_metrics()["replica"].size == 0
        report = (await db.replica_health())["replica"]
        assert not report.ok and report.error
        assert report.target == "127.0.0.1:" + dead.rsplit(":", 1)[1]
        shown = f"{report!r} {db!r} {db.settings!r} {caplog.text}"
    assert "unavailable" in caplog.text
    assert secret not in shown


async def test_standby_stopped_reads_fall_back_then_return(
    routed_db: Database, streaming_pair: StreamingPair
) -> None:
    """Stop the standby under a warm replica pool: reads keep working on the primary and
    health reports the replica down; start it again and reads go back to it."""
    assert (await where(routed_db, readonly=True))[0] is True  # warm replica connection
    await asyncio.to_thread(streaming_pair.standby.stop)
    try:
        for _ in range(5):
            assert await where(routed_db, readonly=True) == (False, streaming_pair.primary.port)
        report = (await routed_db.replica_health())["replica"]
        assert not report.ok and report.error
    finally:
        await asyncio.to_thread(streaming_pair.standby.start)
        await asyncio.to_thread(streaming_pair.wait_streaming)
    assert (await routed_db.replica_health())["replica"].ok  # a good probe re-admits it
    assert (await where(routed_db, readonly=True))[0] is True


async def detailed(client: TestClient) -> tuple[int, dict[str, Any]]:
    async with client.get("/api/v1/health/detailed") as resp:
        return resp.status, await resp.json(content_type=None)


async def test_detailed_health_shows_each_pool_and_warns_when_the_standby_is_down(
    streaming_pair: StreamingPair,
) -> None:
    settings = routed_settings(streaming_pair, replica_retry=60.0)
    async with TestClient(TestServer(create_app(settings))) as client:
        status, body = await detailed(client)
        assert_health_document(body)
        assert (status, body["status"]) == (200, "pass")
        pools = body["checks"]["postgresql:connections"]
        assert [p["componentId"] for p in pools] == ["primary", "replica"]
        assert all(set(p["observedValue"]) >= {"size", "idle", "inUse", "max"} for p in pools)
        (replica,) = body["checks"]["postgresql-replica:responseTime"]
        assert replica["status"] == "pass" and replica["observedUnit"] == "ms"
        assert replica["componentId"] == describe_dsn(streaming_pair.standby.dsn(SCALE_DATABASE))

        await asyncio.to_thread(streaming_pair.standby.stop)
        try:
            status, body = await detailed(client)
        finally:
            await asyncio.to_thread(streaming_pair.standby.start)
            await asyncio.to_thread(streaming_pair.wait_streaming)
        assert_health_document(body)
        assert (status, body["status"]) == (200, "warn")  # degraded, still serving
        (replica,) = body["checks"]["postgresql-replica:responseTime"]
        assert replica["status"] == "warn" and "primary" in replica["output"]
        assert body["checks"]["postgresql:responseTime"][0]["status"] == "pass"
