"""Read replicas: one lazy pool per ``DATABASE_REPLICA_URL`` and the rule for using them.

Routing rule: only acquires that say ``readonly=True`` (reads that tolerate replication lag) are
offered to a replica; everything else, and every read when no replica can serve it, uses the
primary.  Reads must never fail *because* a replica is down, so:

* replica pools start empty (``min_size=0``): creating them never connects, and a replica that
  is down at start-up does not stop the application;
* getting a replica connection is bounded by ``DEFEAH_REPLICA_TIMEOUT`` (short), after which the
  read goes to the primary;
* a replica that failed is skipped for ``DEFEAH_REPLICA_RETRY`` seconds, so while it is down
  reads do not pay that timeout again and again; a successful health probe re-admits it early.

A replica that dies *while* a read is running on it cannot be retried transparently (the caller's
block has already run): that one read gets ``DatabaseUnavailable`` and the replica is marked
down, so the next read goes to the primary.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass
from typing import Any

import asyncpg

from dal.db.connections import PooledConnection
from dal.db.dsn import describe_dsn
from dal.db.failures import CONNECT_ERRORS, describe_error
from dal.db.pools import PoolMetrics, close_pool, elapsed_ms
from dal.db.settings import Settings
from dal.db.statements import run
from dal.queries import load
from dal.telemetry import ACQUIRE_TIMEOUTS, ACQUIRE_WAIT

log = logging.getLogger(__name__)

OPS_SQL = load("ops")


def replica_names(count: int) -> tuple[str, ...]:
    """Pool names in metrics and health: ``replica``, or ``replica-1``... when several."""
    return ("replica",) if count == 1 else tuple(f"replica-{i}" for i in range(1, count + 1))


@dataclass(frozen=True)
class ReplicaHealth:
    """One probe of one replica; ``in_recovery`` False means the URL points at a primary."""

    name: str
    target: str
    ok: bool
    latency_ms: float
    in_recovery: bool | None = None
    lag_seconds: float | None = None
    error: str | None = None


class Replica:
    """One replica: its pool (created lazily, never pre-connected) and whether we trust it."""

    def __init__(self, name: str, dsn: str, options: dict[str, Any]) -> None:
        self.name = name
        self.target = describe_dsn(dsn)
        self._dsn = dsn
        self._options = options
        self._pool: asyncpg.Pool | None = None
        self._down_until = 0.0
        self.waiting = 0
        self._wait = ACQUIRE_WAIT.labels(name)
        self._timeouts = ACQUIRE_TIMEOUTS.labels(name)

    def __repr__(self) -> str:
        return f"<Replica {self.name} {self.target} available={self.available()}>"

    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def mark_down(self, reason: str, retry_after: float) -> None:
        if self.available():
            log.warning(
                "replica %s (%s) unavailable, reads use the primary for %gs: %s",
                self.name,
                self.target,
                retry_after,
                reason,
            )
        self._down_until = time.monotonic() + retry_after

    def mark_up(self) -> None:
        if not self.available():
            log.info("replica %s (%s) is back", self.name, self.target)
        self._down_until = 0.0

    async def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            # min_size=0: no connection is made here, so this cannot fail on a down replica.
            self._pool = await asyncpg.create_pool(self._dsn, **self._options)
        return self._pool

    def saturated(self) -> bool:
        pool = self._pool
        return (
            pool is not None
            and pool.get_size() >= pool.get_max_size()
            and not (pool.get_idle_size())
        )

    async def acquire(self, timeout: float) -> PooledConnection:
        pool = await self.pool()
        self.waiting += 1
        started = time.perf_counter()
        try:
            conn: PooledConnection = await pool.acquire(timeout=timeout)
        except TimeoutError:
            self._timeouts.inc()
            raise
        finally:
            self.waiting -= 1
            self._wait.observe(time.perf_counter() - started)
        return conn

    async def release(self, conn: PooledConnection) -> None:
        if self._pool is not None:
            await self._pool.release(conn)

    def metrics(self) -> PoolMetrics:
        return PoolMetrics.of(
            self._pool,
            min_size=int(self._options["min_size"]),
            max_size=int(self._options["max_size"]),
            waiting=self.waiting,
        )

    async def close(self, timeout: float) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await close_pool(pool, timeout, f"replica {self.name}")


class ReplicaSet:
    """All configured replicas, tried round-robin for lag-tolerant reads."""

    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        self.settings = settings
        urls = settings.replica_urls
        names = replica_names(len(urls))
        # Empty pools, filled on demand; the primary pool's size limits apply per replica.
        replica_options = {**options, "min_size": 0}
        self.replicas = [Replica(n, u, replica_options) for n, u in zip(names, urls, strict=True)]
        self._turn = itertools.count()

    def __bool__(self) -> bool:
        return bool(self.replicas)

    async def try_acquire(self, limit: float) -> tuple[Replica, PooledConnection] | None:
        """A connection to an available replica within the replica timeout (and ``limit``, the
        caller's own acquire timeout), or ``None``: then the caller uses the primary."""
        if not self.replicas:
            return None
        start = next(self._turn) % len(self.replicas)
        budget = min(self.settings.replica_timeout, limit)
        for replica in self.replicas[start:] + self.replicas[:start]:
            if not replica.available():
                continue
            try:
                return replica, await replica.acquire(budget)
            except TimeoutError:
                if replica.saturated():
                    continue  # busy, not broken: this read goes elsewhere, the replica stays in
                self.mark_down(replica, f"no connection within {budget:g}s")
            except CONNECT_ERRORS as exc:
                self.mark_down(replica, describe_error(exc))
        return None

    def mark_down(self, replica: Replica, reason: str) -> None:
        replica.mark_down(reason, self.settings.replica_retry)

    async def probe(self, replica: Replica, timeout: float) -> ReplicaHealth:
        """Probe one replica directly (ignoring its down mark) and update that mark."""
        started = time.perf_counter()
        error: str | None = None
        try:
            async with asyncio.timeout(timeout):
                conn = await replica.acquire(timeout)
                try:
                    row = (await run(conn, OPS_SQL["replica_probe"], {}))[0]
                finally:
                    await replica.release(conn)
        except TimeoutError:
            error = f"no answer within {timeout:g}s"
        except CONNECT_ERRORS as exc:
            error = describe_error(exc)
        latency = elapsed_ms(started)
        if error is not None or row is None:
            reason = error or "no row"
            self.mark_down(replica, reason)
            return ReplicaHealth(replica.name, replica.target, False, latency, error=reason)
        replica.mark_up()
        return ReplicaHealth(
            replica.name,
            replica.target,
            True,
            latency,
            in_recovery=bool(row["in_recovery"]),
            lag_seconds=row["lag_seconds"],
        )

    async def health(self, timeout: float) -> dict[str, ReplicaHealth]:
        reports = await asyncio.gather(*(self.probe(r, timeout) for r in self.replicas))
        return {report.name: report for report in reports}

    def metrics(self) -> dict[str, PoolMetrics]:
        return {replica.name: replica.metrics() for replica in self.replicas}

    async def close(self, timeout: float) -> None:
        await asyncio.gather(*(r.close(timeout) for r in self.replicas))
