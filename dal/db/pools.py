"""Helpers every asyncpg pool of ours shares: occupancy figures, bounded closing, timing."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import asyncpg

from dal.db.failures import CLOSE_ERRORS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolMetrics:
    size: int
    idle: int
    in_use: int
    min_size: int
    max_size: int
    waiting: int

    @classmethod
    def of(
        cls, pool: asyncpg.Pool | None, *, min_size: int, max_size: int, waiting: int
    ) -> PoolMetrics:
        """Occupancy of ``pool``; a pool not created yet is empty with the configured bounds."""
        if pool is None:
            return cls(0, 0, 0, min_size, max_size, waiting)
        size, idle = pool.get_size(), pool.get_idle_size()
        return cls(size, idle, size - idle, pool.get_min_size(), pool.get_max_size(), waiting)


async def close_pool(pool: asyncpg.Pool, timeout: float, label: str) -> None:
    """Close ``pool`` gracefully within ``timeout``, else terminate its connections."""
    try:
        await asyncio.wait_for(pool.close(), timeout=timeout)
    except CLOSE_ERRORS as exc:
        log.warning("%s pool did not close cleanly (%s); terminating it", label, type(exc).__name__)
        pool.terminate()


def elapsed_ms(started: float) -> float:
    """Milliseconds since ``started`` (a ``time.perf_counter()`` reading), to the microsecond."""
    return round((time.perf_counter() - started) * 1000, 3)
