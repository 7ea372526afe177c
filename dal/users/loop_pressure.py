"""bcrypt gives a core back while the event loop is busy.

The bcrypt workers (``dal.users.passwords.BCRYPT``) are one per core, in the ``SCHED_IDLE``
class: a check gives way to the loop.  That is not enough on a small machine when the loop is
busy serving: with every core hashing, the host's other runnable tasks (PostgreSQL's backends,
clients on the same machine) land on the loop's core, and the loop waits behind them: on two
cores, health probes' p99 during a sign-in storm doubled in some runs and not in others
(docs/benchmarks.md, issue 24, has the figures).

So the loop watches itself: every ``INTERVAL`` it reads how much of the last interval its own
thread wanted a CPU: time on one plus time runnable and waiting for one (the thread's
``schedstat`` on Linux, its CPU time elsewhere). A loop that waits for a core is busy, not calm.
From ``BUSY`` up it asks ``BCRYPT`` for one core back (``BcryptWorkers.yield_core``: one worker
fewer hashes at once, never fewer than one); once it has read ``CALM`` or less for ``HOLD``
seconds in a row, it withdraws the request. The gap between the thresholds and the hold keep a
bursty loop from flapping. A sign-in storm alone leaves the loop nearly idle (a sign-in is a few
milliseconds of its time against a quarter second of hashing), so it still gets every core; only
a loop that is also serving heavily costs sign-ins a core. Each loop asks for itself: a calm
loop cannot cancel a busy one's request, and a loop that stops withdraws only its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final

from dal.users import passwords
from dal.users.passwords import BcryptWorkers

log = logging.getLogger(__name__)

INTERVAL: Final = 0.1  # seconds between readings
BUSY: Final = 0.5  # the loop wanted a CPU at least half of the interval: ask for a core
CALM: Final = 0.3  # at most this share ...
HOLD: Final = 0.5  # ... for this long in a row: withdraw the request

_SCHEDSTAT: Final = "/proc/thread-self/schedstat"


def thread_schedstat() -> tuple[int, int] | None:
    """(ns on a CPU, ns runnable but waiting for one) of the calling thread, from Linux's
    ``schedstat``; None where the kernel does not say (the benchmarks read it too)."""
    try:
        with open(_SCHEDSTAT, "rb") as stat:
            ran, waited = stat.read().split()[:2]
        return int(ran), int(waited)
    except (OSError, ValueError):
        return None


def wanted_ns() -> int:
    """Nanoseconds the calling thread has been on a CPU or waiting for one (its CPU time alone
    where the kernel does not say)."""
    stat = thread_schedstat()
    return time.thread_time_ns() if stat is None else stat[0] + stat[1]


class Pressure:
    """The decision of one loop, reading by reading (kept apart from the clock for tests)."""

    def __init__(self) -> None:
        self.asking = False
        self._calm_since: float | None = None

    def read(self, busy: float, now: float) -> bool:
        """Whether to ask for a core after a reading of ``busy`` (the loop's share of the
        interval) at monotonic time ``now``."""
        if busy >= BUSY:
            self.asking, self._calm_since = True, None
        elif busy <= CALM and self.asking:
            if self._calm_since is None:
                self._calm_since = now
            elif now - self._calm_since >= HOLD:
                self.asking, self._calm_since = False, None
        else:
            self._calm_since = None
        return self.asking


async def watch(workers: BcryptWorkers | None = None, interval: float = INTERVAL) -> None:
    """Ask ``workers`` (default: ``passwords.BCRYPT`` as it is when called) for a core while
    this loop is busy, until cancelled; on the way out, withdraw this loop's request."""
    pool = passwords.BCRYPT if workers is None else workers
    pressure = Pressure()
    asker = object()  # this loop's request, apart from every other loop's
    wanted, wall = wanted_ns(), time.monotonic_ns()
    try:
        while True:
            await asyncio.sleep(interval)
            now_wanted, now_wall = wanted_ns(), time.monotonic_ns()
            busy = (now_wanted - wanted) / max(now_wall - wall, 1)
            wanted, wall = now_wanted, now_wall
            was = pressure.asking
            if pressure.read(busy, now_wall / 1e9) != was:
                log.debug(
                    "event loop %.0f%% busy: asking for a bcrypt core %s", busy * 100, not was
                )
                pool.yield_core(asker, pressure.asking)
    finally:
        pool.yield_core(asker, False)
