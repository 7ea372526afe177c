"""bcrypt gives a core back while the event loop is busy.

The bcrypt workers (``dal.users.passwords.BCRYPT``) are one per core, in the ``SCHED_IDLE``
class: a check never takes a core the loop is waiting for.  That is not enough on a small
machine when the loop is busy serving: with every core hashing, the other runnable tasks of the
host (PostgreSQL's backends, the clients on the same machine) land on the loop's core, and the
loop waits behind them.  On two cores during a cost-12 sign-in storm, health probes' p99 went
from 1.2x to 3x idle from one run to the next (docs/benchmarks.md, issue 24).

So the loop watches itself: every ``INTERVAL`` it reads how much of the last interval its own
thread spent on a CPU (``time.thread_time``, no system call beyond a clock read).  From
``BUSY`` up, one worker fewer may hash at once (never fewer than one); at ``CALM`` or below, all
may again.  A sign-in storm alone leaves the loop nearly idle (its own work is about 2 ms per
sign-in), so it still gets every core; only a loop that is also serving heavily costs sign-ins
one core.  The two thresholds apart keep it from flapping.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final

from dal.users.passwords import BCRYPT, BcryptWorkers

log = logging.getLogger(__name__)

INTERVAL: Final = 0.1  # seconds between readings
BUSY: Final = 0.5  # loop thread on a CPU at least half of the interval: give a core back
CALM: Final = 0.3  # at most this share: every worker again


def share_for(busy: float, current: int, workers: int) -> int:
    """The bcrypt share after a reading of ``busy`` (the loop's share of one interval)."""
    if busy >= BUSY:
        return max(1, workers - 1)
    if busy <= CALM:
        return workers
    return current


async def watch(workers: BcryptWorkers = BCRYPT, interval: float = INTERVAL) -> None:
    """Adjust ``workers``' share from this loop's business until cancelled; on the way out,
    every worker may hash again (the loop that watched is gone)."""
    cpu, wall = time.thread_time(), time.perf_counter()
    try:
        while True:
            await asyncio.sleep(interval)
            now_cpu, now_wall = time.thread_time(), time.perf_counter()
            busy = (now_cpu - cpu) / max(now_wall - wall, 1e-9)
            cpu, wall = now_cpu, now_wall
            share = share_for(busy, workers.share, workers.workers)
            if share != workers.share:
                log.debug("event loop %.0f%% busy: bcrypt share %d", busy * 100, share)
                workers.set_share(share)
    finally:
        workers.set_share(workers.workers)
