"""``Database``: the one object that owns the asyncpg pool (and the embedded server, if any).

Everything that talks to PostgreSQL goes through ``Database.acquire()``, which is where the
project's connection rules live in one place:

* nothing connects at import or construction; the pool is created on first use or ``open()``;
* every acquire is bounded by the acquire timeout (asyncpg's default is to wait forever);
* connection-level failures (refused, reset, server restarting, timeouts) become
  ``DatabaseUnavailable`` with a message that never contains the DSN password.  A broken
  connection is discarded by asyncpg, so once the server is back the next acquire succeeds
  without restarting the application.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import asyncpg

from dal.db.connections import PooledConnection
from dal.db.dsn import describe_dsn, redact_dsn
from dal.db.embedded import EmbeddedServer
from dal.db.failures import CONNECT_ERRORS, CONNECTION_ERRORS, CUT_OFF, describe_error
from dal.db.pools import PoolMetrics, close_pool, elapsed_ms
from dal.db.replicas import ReplicaHealth, ReplicaSet
from dal.db.settings import Settings
from dal.db.statements import run, run_script
from dal.errors import DalError, DatabaseUnavailable
from dal.queries import load
from dal.telemetry import ACQUIRE_TIMEOUTS, ACQUIRE_WAIT

log = logging.getLogger(__name__)

OPS_SQL = load("ops")

PRIMARY = "primary"  # the primary pool's name in metrics; replicas are named replica1, ...
_PRIMARY_WAIT = ACQUIRE_WAIT.labels(PRIMARY)
_PRIMARY_TIMEOUTS = ACQUIRE_TIMEOUTS.labels(PRIMARY)


@dataclass(frozen=True)
class HealthReport:
    """Outcome of one ``SELECT 1`` round trip."""

    ok: bool
    latency_ms: float
    server_version: str | None = None
    error: str | None = None


class Database:
    """Pool owner; use ``async with Database.from_env() as db`` or ``open()``/``close()``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._embedded: EmbeddedServer | None = None
        self._dsn: str | None = settings.database_url
        self._waiting = 0
        self._replicas: ReplicaSet | None = None
        self._before_close: list[Callable[[], Awaitable[None]]] = []
        if settings.replica_urls:
            # Replica pools connect on demand, so they exist (empty) from the start.
            self._replicas = ReplicaSet(settings, self.pool_options())

    @classmethod
    def from_env(cls) -> Database:
        return cls(Settings.from_env())

    def __repr__(self) -> str:
        target = redact_dsn(self._dsn) if self._dsn else "embedded (not started)"
        return f"<Database {target} open={self._pool is not None}>"

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def dsn(self) -> str:
        """The resolved DSN (contains the password if any: never log it; see ``describe``)."""
        if self._dsn is None:
            raise DatabaseUnavailable("the embedded database is not started; call open() first")
        return self._dsn

    @property
    def describe(self) -> str:
        """``host/database`` label, safe for logs (no credentials, no parameters)."""
        return describe_dsn(self._dsn) if self._dsn else "embedded (not started)"

    def _reason(self, exc: BaseException) -> str:
        """``describe_error`` minus any configured secret a driver may have quoted back."""
        return self.settings.scrub(describe_error(exc))

    async def start_server(self) -> str:
        """Resolve the DSN, starting the embedded server when no DATABASE_URL is set."""
        if self._dsn is None:
            self._embedded = EmbeddedServer(self.settings.data_dir, self.settings.embedded_database)
            self._dsn = await asyncio.to_thread(self._embedded.start)
        return self._dsn

    async def open(self) -> Database:
        """Start the embedded server if needed and create the pool now (not lazily)."""
        await self._ensure_pool()
        return self

    def before_close(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run ``callback`` at the start of every ``close``, while the pool still serves: a
        layer above (the sign-in's pending event summaries) writes what it holds."""
        self._before_close.append(callback)

    async def close(self, timeout: float | None = None) -> None:
        """Close the pools and release the embedded server; safe to call more than once.

        The pools close gracefully within ``timeout`` (default: the shutdown timeout), side by
        side, and are terminated past it: a hung server never answers the goodbye, and an
        orchestrator kills a process that overstays its grace period.
        """
        budget = self.settings.shutdown_timeout if timeout is None else timeout
        if self._pool is not None:
            for callback in self._before_close:
                await callback()
        pool, self._pool = self._pool, None
        closing = [] if pool is None else [close_pool(pool, budget, "primary")]
        if self._replicas is not None:
            closing.append(self._replicas.close(budget))
        await asyncio.gather(*closing)
        embedded, self._embedded = self._embedded, None
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
            self._dsn = None

    async def __aenter__(self) -> Database:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def pool_options(self) -> dict[str, Any]:
        """Keyword arguments for ``asyncpg.create_pool`` (the benchmark reuses them verbatim)."""
        s = self.settings
        server_settings = {"application_name": s.application_name, "timezone": "UTC"}
        options: dict[str, Any] = {
            "min_size": s.pool_min_size,
            "max_size": s.pool_max_size,
            "command_timeout": s.command_timeout,
            "timeout": s.connect_timeout,
            "server_settings": server_settings,
            "statement_cache_size": 100,
            # No session reset on release: asyncpg's default (RESET ALL, advisory unlock, CLOSE
            # ALL, UNLISTEN) is a round trip per statement, and the DAL keeps no session state to
            # reset (tests/scale/test_pgbouncer.py scans dal/ for any).  asyncpg still rolls back
            # an open transaction and drops listeners.  Behind PgBouncer the reset would even hit
            # another client's server connection.
            "reset": _no_session_reset,
        }
        if s.pgbouncer:
            # Transaction pooling (PgBouncer 1.18): a server connection is ours for one
            # transaction only.  So: no named prepared statements (asyncpg then uses the unnamed
            # one, parsed and executed before the Sync that ends our turn), and only the startup
            # parameters PgBouncer tracks per client (application_name, TimeZone; it refuses
            # statement_timeout: set that on the role or database instead).
            options["statement_cache_size"] = 0
        else:
            server_settings["statement_timeout"] = str(int(s.statement_timeout * 1000))
        return options

    async def _ensure_pool(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._pool_lock:
            if self._pool is None:
                dsn = await self.start_server()
                try:
                    self._pool = await asyncpg.create_pool(dsn, **self.pool_options())
                except CONNECT_ERRORS as exc:
                    raise DatabaseUnavailable(
                        f"cannot connect to {self.describe}: {self._reason(exc)}"
                    ) from None
                log.info("pool open on %s", self.describe)
            return self._pool

    # -- connections ---------------------------------------------------------------------------

    def acquire(
        self, timeout: float | None = None, *, readonly: bool = False
    ) -> AbstractAsyncContextManager[PooledConnection]:
        """A pooled connection, waiting at most ``timeout`` (default: the acquire timeout).

        ``readonly=True`` marks a read that tolerates replication lag; such reads may be served
        by a replica (see DATABASE_REPLICA_URL, dal.db.replicas); when no replica answers within
        the replica timeout they use the primary.  Everything else uses the primary.
        """
        wait = self.settings.acquire_timeout if timeout is None else timeout
        if readonly and self._replicas:
            return self._replica_or_primary(wait)
        return _PrimaryLease(self, wait)

    @asynccontextmanager
    async def _replica_or_primary(self, wait: float) -> AsyncIterator[PooledConnection]:
        replicas = self._replicas
        assert replicas is not None
        lease = await replicas.try_acquire(wait)
        if lease is None:  # no replica answered in time: the primary serves the read
            async with _PrimaryLease(self, wait) as conn:
                yield conn
            return
        replica, replica_conn = lease
        # A read cut off mid-way cannot be replayed here (the caller's block ran); it fails,
        # and a replica whose connection died is skipped by the next reads.
        try:
            with _discard_when_cut_off(replica_conn):
                yield replica_conn
        except CONNECTION_ERRORS as exc:
            if _lost(replica_conn):  # not a mere statement timeout
                replicas.mark_down(replica, describe_error(exc))
            raise DatabaseUnavailable(
                f"lost the connection to {replica.target}: {describe_error(exc)}"
            ) from None
        except DatabaseUnavailable:  # the repository already translated the error
            if _lost(replica_conn):
                replicas.mark_down(replica, "connection lost during a read")
            raise
        finally:
            await replica.release(replica_conn)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PooledConnection]:
        """A connection inside a transaction that commits on success and rolls back on error."""
        async with self.acquire() as conn, conn.transaction():
            yield conn

    @asynccontextmanager
    async def bounded(self, limit: float) -> AsyncIterator[PooledConnection]:
        """A connection in a read-only transaction that neither side lets run past ``limit``.

        For health checks, which must answer within their timeout whatever the database does.
        The client deadline covers the acquire and every round trip; the server-side
        ``statement_timeout`` and ``lock_timeout`` (``SET LOCAL``: they end with the
        transaction, so nothing leaks into the pool, PgBouncer included) also end a statement
        queued behind a lock after the client has given up on it.  Raises ``TimeoutError``
        past the deadline, ``DatabaseUnavailable`` when there is no connection.
        """
        async with asyncio.timeout(limit), self.acquire(timeout=limit) as conn:
            # one round trip (simple query protocol)
            await run_script(conn, OPS_SQL["begin_bounded"], ms=max(1, round(limit * 1000)))
            try:
                yield conn
            except CUT_OFF:
                raise  # acquire() discards the connection: a ROLLBACK would wait on it
            except BaseException:
                if not _lost(conn):
                    await run_script(conn, OPS_SQL["end_bounded"])
                raise
            await run_script(conn, OPS_SQL["end_bounded"])  # read only: nothing to commit

    # -- observability -------------------------------------------------------------------------

    async def health(self, timeout: float | None = None) -> HealthReport:
        """One ``SELECT 1`` round trip, bounded by ``timeout`` (default: the health timeout)."""
        limit = self.settings.health_timeout if timeout is None else timeout
        started = time.perf_counter()
        try:
            async with self.bounded(limit) as conn:
                await run(conn, OPS_SQL["ping"], {})
                version = conn.get_settings().server_version
        except TimeoutError:
            return HealthReport(False, elapsed_ms(started), error=f"no answer within {limit:g}s")
        except DalError as exc:  # DatabaseUnavailable above all
            return HealthReport(False, elapsed_ms(started), error=str(exc))
        return HealthReport(True, elapsed_ms(started), server_version=version)

    def pool_metrics(self) -> dict[str, PoolMetrics]:
        """Metrics of every pool: ``primary`` first, then each replica by name."""
        pools = {PRIMARY: self.metrics()}
        if self._replicas is not None:
            pools.update(self._replicas.metrics())
        return pools

    async def replica_health(self, timeout: float | None = None) -> dict[str, ReplicaHealth]:
        """Probe every replica (recovery state and lag), bounded by ``timeout``; a replica that
        answers is re-admitted for reads at once, one that does not is skipped for a while."""
        if self._replicas is None:
            return {}
        limit = self.settings.health_timeout if timeout is None else timeout
        return await self._replicas.health(limit)

    def metrics(self) -> PoolMetrics:
        s = self.settings
        return PoolMetrics.of(
            self._pool, min_size=s.pool_min_size, max_size=s.pool_max_size, waiting=self._waiting
        )


class _PrimaryLease:
    """``Database.acquire`` on the primary, as a plain class: the hot path of every statement.

    A generator-based context manager (and a second one for the cut-off rule) cost several
    microseconds per acquire; this does the same work in ``__aenter__``/``__aexit__``.
    """

    __slots__ = ("_conn", "_db", "_pool", "_wait")

    def __init__(self, db: Database, wait: float) -> None:
        self._db = db
        self._wait = wait

    async def __aenter__(self) -> PooledConnection:
        db, wait = self._db, self._wait
        pool = db._pool
        if pool is None:  # not opened yet (or reopened): the only path that awaits it
            pool = await db._ensure_pool()
        self._pool = pool
        db._waiting += 1
        started = time.perf_counter()
        try:
            self._conn = conn = await pool.acquire(timeout=wait)
        except TimeoutError:
            _PRIMARY_TIMEOUTS.inc()
            raise DatabaseUnavailable(
                f"no free database connection within {wait:g}s "
                f"(pool max {db.settings.pool_max_size})"
            ) from None
        except CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(
                f"cannot connect to {db.describe}: {db._reason(exc)}"
            ) from None
        finally:
            db._waiting -= 1
            _PRIMARY_WAIT.observe(time.perf_counter() - started)
        return conn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn = self._conn
        if exc is None:  # the usual case: nothing to decide
            await self._pool.release(conn)
            return
        try:
            if isinstance(exc, CUT_OFF):
                conn.terminate()  # see _discard_when_cut_off: no wait for a hung server
            if isinstance(exc, CONNECTION_ERRORS):
                raise DatabaseUnavailable(
                    f"lost the connection to {self._db.describe}: {self._db._reason(exc)}"
                ) from None
        finally:
            await self._pool.release(conn)  # returns at once for a discarded connection


@contextmanager
def _discard_when_cut_off(conn: PooledConnection) -> Iterator[None]:
    """Terminate ``conn`` when the block using it is cut off mid-statement (``CUT_OFF``).

    A graceful release would first wait for the server to confirm the cancel and then reset the
    session, for up to the acquire timeout again: a 2 s health deadline became 4 s against a
    hung server.  Discarding costs one reconnect; the server drops the session when it sees the
    socket close, and its statement_timeout/lock_timeout end any statement still running.
    """
    try:
        yield
    except CUT_OFF:
        conn.terminate()
        raise


def _lost(conn: PooledConnection) -> bool:
    """True when ``conn`` died (asyncpg detaches the proxy of a connection it saw die)."""
    try:
        return conn.is_closed()
    except asyncpg.exceptions.InterfaceError:
        return True


async def _no_session_reset(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """Pool ``reset``: nothing to reset (see ``pool_options``; asyncpg has already rolled back
    an open transaction and dropped listeners before calling this)."""
