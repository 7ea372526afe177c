"""The pool as the repository sees it: nothing connects early, an exhausted pool answers with
DatabaseUnavailable after the acquire timeout (never hangs), a server restart is survived
by the same Database object, the pool's statement_timeout is in force, and a dead replica
only sends reads back to the primary.

Every "bounded, not a hang" assertion runs under its own ``asyncio.timeout``: if the bound
regresses the test fails at that deadline instead of hanging the suite (pytest-timeout's
per-test limit in pyproject.toml is only the backstop).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
import uuid
from pathlib import Path

import asyncpg
import psutil
import pytest

from dal import Database, NewUser, UserUpdate
from dal.db.embedded import EmbeddedServer
from dal.errors import DatabaseUnavailable, NotFound
from dal.migrations import runner as migrations
from dal.users.repository import UsersRepository
from tests.factories import make_settings


async def test_constructing_a_database_and_repository_connects_nothing() -> None:
    # Port 9 (discard) on localhost: any connection attempt would fail loudly.
    db = Database(make_settings("postgresql://nobody:secret@127.0.0.1:9/none"))
    repo = UsersRepository(db)  # the repository takes the pool owner; neither connects yet
    assert db.metrics().size == 0 and "open=False" in repr(db)
    with pytest.raises(DatabaseUnavailable) as caught:
        async with asyncio.timeout(10):
            await repo.get(uuid.uuid4())
    assert "secret" not in str(caught.value)
    await db.close()


async def test_exhausted_pool_raises_after_the_acquire_timeout(clean_dsn: str) -> None:
    settings = make_settings(clean_dsn, pool_min_size=1, pool_max_size=2, acquire_timeout=0.3)
    async with Database(settings) as db:
        async with db.acquire() as first, db.acquire() as second:
            assert first is not second
            started = time.perf_counter()
            with pytest.raises(DatabaseUnavailable, match="no free database connection"):
                async with asyncio.timeout(5):  # bounded by the acquire timeout, not a hang
                    await UsersRepository(db).get(uuid.uuid4())
            waited = time.perf_counter() - started
            assert waited >= 0.29
            assert db.metrics().in_use == 2
        # Released: the pool serves again.
        with pytest.raises(NotFound):
            await UsersRepository(db).get(uuid.uuid4())


async def test_server_restart_is_survived_without_reopening(tmp_path: Path) -> None:
    server = EmbeddedServer(tmp_path / "pgdata", "restart_test")
    dsn = await asyncio.to_thread(server.start)
    try:
        await asyncio.to_thread(migrations.apply, dsn)
        settings = make_settings(dsn, pool_min_size=2, pool_max_size=4, acquire_timeout=2.0)
        async with Database(settings) as db:
            user = await UsersRepository(db).create(
                NewUser(email="ada@example.com", password="pw-123456")
            )  # type: ignore[arg-type]

            await asyncio.to_thread(server.stop)
            with pytest.raises(DatabaseUnavailable):
                async with asyncio.timeout(10):
                    await UsersRepository(db).get(user.id)
            with pytest.raises(DatabaseUnavailable):  # still down: fails fast, typed
                async with asyncio.timeout(10):
                    await UsersRepository(db).get(user.id)

            assert await asyncio.to_thread(server.start) == dsn
            outcomes: list[str] = []
            for _ in range(5):
                try:
                    again = await UsersRepository(db).get(user.id)
                except DatabaseUnavailable:
                    outcomes.append("unavailable")  # a pooled connection from before the stop
                    continue
                outcomes.append("ok")
                break
            assert outcomes[-1] == "ok" and outcomes.count("unavailable") <= 2, outcomes
            assert again == user
            assert (
                await UsersRepository(db).authenticate("ada@example.com", "pw-123456")
            ).id == user.id
    finally:
        await asyncio.to_thread(server.stop)


async def test_acquire_leaves_statement_errors_alone_and_the_connection_usable(
    db: Database,
) -> None:
    """A bad argument in the caller's own statement is not "the database is unavailable":
    acquire() relabels only connection failures, so this stays the caller's own error."""
    async with db.acquire() as conn:
        with pytest.raises(asyncpg.exceptions.DataError) as caught:
            await conn.fetchval("SELECT $1::int", "token-s3cret")
        assert not isinstance(caught.value, DatabaseUnavailable)
        assert await conn.fetchval("SELECT 1") == 1
    with pytest.raises(asyncpg.exceptions.DataError):
        async with db.acquire() as conn:
            await conn.fetchval("SELECT $1::int", "token-s3cret")
    assert (await db.health()).ok


@pytest.mark.slow
async def test_hung_server_bounds_health_and_close(tmp_path: Path) -> None:
    """A SIGSTOPped server: the health check answers within its timeout (the connection cut
    off is discarded instead of waiting for its reset) and close() within its own budget."""
    server = EmbeddedServer(tmp_path / "pgdata", "hung_test")
    dsn = await asyncio.to_thread(server.start)
    try:
        settings = make_settings(dsn, pool_min_size=3, pool_max_size=3, command_timeout=30.0)
        db = await Database(settings).open()
        assert (await db.health(0.5)).ok
        pid = int((tmp_path / "pgdata" / "postmaster.pid").read_text().split()[0])
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        for proc in procs:
            proc.send_signal(signal.SIGSTOP)
        try:
            async with asyncio.timeout(20):
                for _ in range(2):
                    started = time.perf_counter()
                    report = await db.health(0.5)
                    assert not report.ok
                    assert time.perf_counter() - started < 0.5 + 0.2
                started = time.perf_counter()
                await db.close(1.0)  # idle connections never hear back: terminated
                assert time.perf_counter() - started < 1.0 + 0.5
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGCONT)
    finally:
        await asyncio.to_thread(server.stop)


async def test_pooled_connections_carry_the_configured_statement_timeout(clean_dsn: str) -> None:
    """The pool sets statement_timeout per connection; a statement running past it is cancelled
    by the server and reaches the caller as DatabaseUnavailable -- long before the client-side
    command_timeout, which alone would let it run 10 s."""
    settings = make_settings(clean_dsn, statement_timeout=0.3, command_timeout=10.0)
    async with Database(settings) as db:
        async with db.acquire() as conn:
            assert await conn.fetchval("SHOW statement_timeout") == "300ms"
        started = time.perf_counter()
        with pytest.raises(DatabaseUnavailable) as caught:
            async with asyncio.timeout(5), db.acquire() as conn:
                await conn.execute("SELECT pg_sleep(3)")
        assert time.perf_counter() - started < 2
        assert isinstance(caught.value.__context__, asyncpg.exceptions.QueryCanceledError)
        # The connection survives a cancelled statement.
        assert (await db.health()).ok


async def test_a_repository_statement_blocked_past_statement_timeout_is_unavailable(
    clean_dsn: str,
) -> None:
    """Through the repository: an update waiting on a row lock held elsewhere is cancelled at
    statement_timeout and translated, never left waiting or raised as a driver error."""
    settings = make_settings(clean_dsn, statement_timeout=0.3, command_timeout=10.0)
    async with Database(settings) as db:
        user = await UsersRepository(db).create(
            NewUser(email="ada@example.com", password="pw-123456")
        )  # type: ignore[arg-type]
        async with db.transaction() as holder:
            await holder.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user.id)
            started = time.perf_counter()
            with pytest.raises(DatabaseUnavailable):
                async with asyncio.timeout(5):
                    await UsersRepository(db).update(user.id, UserUpdate(full_name="Blocked"))
            assert time.perf_counter() - started < 2
        assert (await UsersRepository(db).get(user.id)).full_name is None


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_replica_on_a_closed_port_reads_use_the_primary_and_it_is_marked_down(
    clean_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    dead = f"postgresql://reader@127.0.0.1:{closed_port()}/nowhere"
    settings = make_settings(clean_dsn, replica_urls=(dead,), replica_retry=60.0)
    caplog.set_level(logging.WARNING, logger="dal.db.replicas")
    async with Database(settings) as db:
        user = await UsersRepository(db).create(
            NewUser(email="ada@example.com", password="pw-123456")
        )  # type: ignore[arg-type]
        async with asyncio.timeout(10):
            for _ in range(3):
                assert await UsersRepository(db).get(user.id) == user  # answered by the primary
                assert [u.id for u in (await UsersRepository(db).list()).users] == [user.id]
        downs = [r for r in caplog.records if "unavailable" in r.getMessage()]
        assert len(downs) == 1 and "replica" in downs[0].getMessage()
        # Marked down: the next reads skip it for replica_retry (no public accessor for this).
        (replica,) = db._replicas.replicas if db._replicas else ()
        assert not replica.available()
        assert db.pool_metrics()["replica"].size == 0
        report = (await db.replica_health())["replica"]
        assert not report.ok and report.error
