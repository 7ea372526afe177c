"""The pool as the repository sees it: nothing connects early, an exhausted pool answers with
DatabaseUnavailable after the acquire timeout (never hangs), and a server restart is survived
by the same Database object."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from pathlib import Path

import asyncpg
import psutil
import pytest

from dal import Database, NewUser, migrations
from dal.embedded import EmbeddedServer
from dal.errors import DatabaseUnavailable, NotFound
from tests.conftest import make_settings


async def test_constructing_a_database_and_repository_connects_nothing() -> None:
    # Port 9 (discard) on localhost: any connection attempt would fail loudly.
    db = Database(make_settings("postgresql://nobody:secret@127.0.0.1:9/none"))
    repo = db.users
    assert repo is db.users  # one repository per Database, made on first use
    assert db.metrics().size == 0 and "open=False" in repr(db)
    with pytest.raises(DatabaseUnavailable) as caught:
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
                await db.users.get(uuid.uuid4())
            waited = time.perf_counter() - started
            assert waited >= 0.29
            assert waited < 5  # bounded by the timeout, not a hang
            assert db.metrics().in_use == 2
        # Released: the pool serves again.
        with pytest.raises(NotFound):
            await db.users.get(uuid.uuid4())


async def test_server_restart_is_survived_without_reopening(tmp_path: Path) -> None:
    server = EmbeddedServer(tmp_path / "pgdata", "restart_test")
    dsn = await asyncio.to_thread(server.start)
    try:
        await asyncio.to_thread(migrations.apply, dsn)
        settings = make_settings(dsn, pool_min_size=2, pool_max_size=4, acquire_timeout=2.0)
        async with Database(settings) as db:
            user = await db.users.create(NewUser(email="ada@example.com", password="pw-1234"))  # type: ignore[arg-type]

            await asyncio.to_thread(server.stop)
            with pytest.raises(DatabaseUnavailable):
                await db.users.get(user.id)
            with pytest.raises(DatabaseUnavailable):  # still down: fails fast, typed
                await db.users.get(user.id)

            assert await asyncio.to_thread(server.start) == dsn
            outcomes: list[str] = []
            for _ in range(5):
                try:
                    again = await db.users.get(user.id)
                except DatabaseUnavailable:
                    outcomes.append("unavailable")  # a pooled connection from before the stop
                    continue
                outcomes.append("ok")
                break
            assert outcomes[-1] == "ok" and outcomes.count("unavailable") <= 2, outcomes
            assert again == user
            assert (await db.users.authenticate("ada@example.com", "pw-1234")).id == user.id
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
