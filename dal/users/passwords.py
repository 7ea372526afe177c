"""bcrypt hashing that never runs on the event loop, and never starves it either.

One bcrypt operation at the default cost 12 takes about a quarter of a second of CPU; on the
event loop that would freeze every other request for as long. bcrypt releases the GIL, so worker
threads give real parallelism. But plain worker threads (``asyncio.to_thread``) took every core
from the loop during a sign-in storm, and health latency climbed with them. So bcrypt runs on
``BCRYPT``: one thread per core, each in Linux's ``SCHED_IDLE`` class and at nice 19 (nice 19
alone where that class is refused; no change off Linux, where a thread's nice would be the whole
process's). Idle cores still all hash; when the event loop or PostgreSQL wants a core, the
scheduler gives it to them first. Nice 19 alone let a running hash finish its time slice before
a woken loop thread got the core; beside ``SCHED_IDLE`` threads the loop is preempted about half
as often during a storm. While the loop is busy serving, one worker fewer hashes at all
(``BcryptWorkers.yield_core``, ``dal.users.loop_pressure``). The figures and the alternatives
measured are in docs/benchmarks.md (bench/bench_signin_storm.py, bench/bench_wakeup.py).

The queue in front of those threads is bounded in length and in waiting time: a storm beyond
what the cores can check fails fast with ``Overloaded`` instead of piling up sign-ins that
would answer after the client gave up.  Its depth is a metric (``dal.telemetry``).

The password rules (non-empty, at most 72 UTF-8 bytes) are checked here too, so a password that
bcrypt would truncate or refuse is reported as ``InvalidUserData('password', ...)`` instead of a
bare ``ValueError`` from the library.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Final, TypeVar

import bcrypt
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic_core import PydanticCustomError

from dal.errors import InvalidUserData, Overloaded
from dal.inputs import check_password

log = logging.getLogger(__name__)

T = TypeVar("T")

# The largest nice value Linux allows: these threads get a core only when nothing else wants it.
NICENESS: Final = 19
# Defaults of PasswordHasher's bounds (the settings DEFEAH_BCRYPT_QUEUE_LIMIT/_TIMEOUT).
QUEUE_LIMIT: Final = 128
QUEUE_TIMEOUT: Final = 5.0

# $2a$ / $2b$ / $2y$, two-digit cost, 53 characters of salt and digest.
_HASH_SHAPE = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")


def validate_password(password: str) -> None:
    """``InvalidUserData('password', rule)`` for a password no account can have."""
    try:
        check_password(password)
    except PydanticCustomError as exc:
        raise InvalidUserData("password", exc.message()) from None


def encode_password(password: str) -> bytes:
    """The password as bcrypt reads it, after the rules (``InvalidUserData`` otherwise).

    Sign-in encodes once and passes the bytes on, so the rules run once per attempt."""
    validate_password(password)
    return password.encode("utf-8")


def hash_cost(hashed: str) -> int | None:
    """The cost factor written in a bcrypt hash, or None when it is not a bcrypt hash."""
    match = _HASH_SHAPE.fullmatch(hashed)
    return int(match.group(1)) if match else None


def hash_sync(password: bytes, rounds: int) -> str:
    """Blocking bcrypt hash; only ever called in a worker thread."""
    return bcrypt.hashpw(password, bcrypt.gensalt(rounds)).decode("ascii")


def check_sync(password: bytes, hashed: str) -> bool:
    """Blocking bcrypt check; only ever called in a worker thread."""
    if hash_cost(hashed) is None:
        # A corrupt or foreign hash can match nothing; say so without printing it.
        log.warning("stored password hash is not a bcrypt hash; refusing the sign-in")
        return False
    return bcrypt.checkpw(password, hashed.encode("ascii"))


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), not merely the machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _lower_priority(niceness: int, idle_class: bool) -> None:
    """Worker-thread initializer.  On Linux ``nice`` and ``sched_setscheduler(0, ...)`` apply to
    the calling thread only, so the event loop's thread keeps its priority and class.  Elsewhere
    (macOS: ``nice`` is the whole process's; Windows: no ``nice``) the threads keep the normal
    priority rather than lower the loop's with them."""
    if not sys.platform.startswith("linux"):
        return
    os.nice(niceness)
    if idle_class and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError as exc:  # a sandbox may forbid even lowering one's own class
            if not _IDLE_REFUSED.is_set():  # one line, not one per worker
                _IDLE_REFUSED.set()
                log.warning(
                    "bcrypt workers stay at nice %d: SCHED_IDLE refused (%s)", niceness, exc
                )


# Set once a worker was refused the SCHED_IDLE class, so the warning is logged once.
_IDLE_REFUSED: Final = threading.Event()


class BcryptWorkers:
    """Low-priority threads for bcrypt behind a queue bounded in length and waiting time.

    ``idle_class=False`` leaves the threads at ``niceness`` only (the benchmark's comparison).

    Process-wide (``BCRYPT``): the cores are shared by every repository and event loop of the
    process.  Counting is under a ``threading.Condition`` because jobs start on worker threads.
    Threads start on first use, not at import.

    ``share`` workers may hash at once: all of them, or one fewer while any busy event loop asks
    for a core (``yield_core``, from ``dal.users.loop_pressure``).  A job held back that way still
    counts as queued and is refused with ``Overloaded`` when it cannot start within its timeout.
    """

    def __init__(self, workers: int, niceness: int = NICENESS, *, idle_class: bool = True) -> None:
        self.workers = workers
        self._executor = ThreadPoolExecutor(
            workers, "bcrypt", initializer=_lower_priority, initargs=(niceness, idle_class)
        )
        self._lock = threading.Condition(threading.Lock())
        self.queued = 0  # submitted, not started yet: the queue depth
        self.refused = 0  # refused with Overloaded (queue full or waited too long)
        self.share = workers  # how many may hash at once now
        self._hashing = 0
        self._yielding: set[object] = set()  # the busy loops asking for a core back

    def __repr__(self) -> str:
        return f"<BcryptWorkers workers={self.workers} share={self.share} queued={self.queued}>"

    def yield_core(self, asker: object, busy: bool) -> None:
        """``asker`` (one per event loop) asks for one core back while ``busy``, or withdraws
        its request.  One core fewer however many loops ask, and never fewer than one: the
        share follows the set of askers, so a calm loop cannot cancel a busy one's request."""
        with self._lock:
            if busy:
                self._yielding.add(asker)
            else:
                self._yielding.discard(asker)
            self.share = self.workers - 1 if self._yielding and self.workers > 1 else self.workers
            self._lock.notify_all()

    async def run(self, limit: int, timeout: float, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` on a worker; ``Overloaded`` when ``limit`` jobs already wait or this
        one does not start within ``timeout`` seconds (then it never runs)."""
        with self._lock:
            if self.queued >= limit:
                self.refused += 1
                raise Overloaded(f"{self.queued} password checks already waiting")
            self.queued += 1
        job = self._executor.submit(self._start, timeout, time.monotonic() + timeout, fn, *args)
        job.add_done_callback(self._unqueue_cancelled)
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = job.cancel()  # False once started: a started check runs to its end

        timer = asyncio.get_running_loop().call_later(timeout, expire)
        try:
            return await asyncio.wrap_future(job)
        except asyncio.CancelledError:
            if not expired:
                raise
            with self._lock:
                self.refused += 1
            raise Overloaded(f"no bcrypt worker free within {timeout:g}s") from None
        finally:
            timer.cancel()

    def _start(self, timeout: float, deadline: float, fn: Callable[..., T], *args: object) -> T:
        with self._lock:
            while self._hashing >= self.share:  # a worker held back by ``yield_core``
                left = deadline - time.monotonic()
                if left <= 0:
                    self.queued -= 1
                    self.refused += 1
                    raise Overloaded(f"no bcrypt worker free within {timeout:g}s")
                self._lock.wait(left)
            self.queued -= 1
            self._hashing += 1
        try:
            return fn(*args)
        finally:
            with self._lock:
                self._hashing -= 1
                self._lock.notify()

    def _unqueue_cancelled(self, job: Future[Any]) -> None:
        if job.cancelled():  # never started, so ``_start`` did not count it out
            with self._lock:
                self.queued -= 1


BCRYPT: Final = BcryptWorkers(usable_cores())

# Dummy hashes by cost, for checks that must take as long as a real one (see ``dummy_hash``).
DUMMY_HASHES: dict[int, str] = {}
# The digest part of every dummy hash: all bits zero.  ``checkpw`` recomputes the digest from
# the password, the salt and the cost and only then compares, so the work is a real check's,
# and no password is known to produce this digest.
_DUMMY_DIGEST: Final = "." * 31


def dummy_hash(cost: int) -> str:
    """A bcrypt hash at ``cost`` that matches no known password, made without bcrypt work.

    A random salt (``gensalt``, a few random bytes) and a zero digest: nothing is hashed, so
    it is ready before the first sign-in, on the event loop, in microseconds.  Hashing a fixed
    phrase instead made the first unknown email after a restart pay two checks (a timing tell)
    and let concurrent first sign-ins each hash their own dummy (issue 20 item 11).
    """
    if cost not in DUMMY_HASHES:
        DUMMY_HASHES[cost] = bcrypt.gensalt(cost).decode("ascii") + _DUMMY_DIGEST
    return DUMMY_HASHES[cost]


class PasswordHasher:
    """bcrypt at a configured cost; ``hash``/``verify`` run on ``BCRYPT``'s workers and raise
    ``Overloaded`` when ``queue_limit`` checks already wait or one waits ``queue_timeout``."""

    def __init__(
        self, rounds: int, queue_limit: int = QUEUE_LIMIT, queue_timeout: float = QUEUE_TIMEOUT
    ) -> None:
        if not 4 <= rounds <= 31:
            raise ValueError(f"bcrypt cost must be between 4 and 31, got {rounds}")
        self.rounds = rounds
        self.queue_limit = queue_limit
        self.queue_timeout = queue_timeout
        dummy_hash(rounds)  # ready before the first unknown email, not made by it

    def __repr__(self) -> str:
        return f"PasswordHasher(rounds={self.rounds})"

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await BCRYPT.run(self.queue_limit, self.queue_timeout, fn, *args)

    async def hash(self, password: str) -> str:
        return await self.hash_encoded(encode_password(password))

    async def hash_encoded(self, secret: bytes) -> str:
        """``hash`` of a password already through ``encode_password``."""
        return await self._run(hash_sync, secret, self.rounds)

    async def verify(self, password: str, hashed: str) -> bool:
        return await self.check(encode_password(password), hashed)

    async def check(self, secret: bytes, hashed: str) -> bool:
        """``verify`` of a password already through ``encode_password``."""
        return await self._run(check_sync, secret, hashed)

    def needs_rehash(self, hashed: str) -> bool:
        """True when the hash was made with another cost than the configured one."""
        return hash_cost(hashed) != self.rounds

    async def verify_dummy(self, secret: bytes) -> None:
        """Spend the time of one real check, for sign-ins with an unknown email.

        Without it, "no such user" would answer in a millisecond and "wrong password" in a
        quarter second, telling an attacker which emails have accounts.  The dummy has the
        configured cost, the cost every stored hash converges to (hashes are upgraded at
        login).
        """
        await self.check(secret, dummy_hash(self.rounds))

    async def verify_padded(self, secret: bytes, hashed: str) -> bool:
        """``verify``, and when it fails on a hash cheaper than the configured cost, pad the
        work up to one configured-cost check.

        bcrypt work doubles per cost step, so 2**c - 2**s = 2**s + ... + 2**(c-1): one dummy
        check at each cost from s to c-1 makes a wrong password on an old cost-s hash take as
        long as the unknown-email dummy at cost c.  A hash that is not bcrypt at all pads a
        whole check.  A stored cost *above* the configured one cannot be shortened; it stays
        a known residual until that user's next sign-in rehashes it.

        ``Overloaded`` only comes out of the real check (the password was then never looked
        at, and sign-in gives the attempt's budget back).  A full queue during the padding
        ends the padding instead: the answer is already known to be "wrong", and that guess
        must keep its budget unit.
        """
        if await self.check(secret, hashed):
            return True
        stored = hash_cost(hashed)
        pad = [self.rounds] if stored is None else list(range(stored, self.rounds))
        for cost in pad:
            try:
                await self.check(secret, dummy_hash(cost))
            except Overloaded:
                break
        return False


class BcryptCollector(Collector):
    """The bcrypt workers' queue, read at scrape time (``BCRYPT``)."""

    def collect(self) -> Iterator[Metric]:
        workers = BCRYPT
        yield GaugeMetricFamily(
            "defeah_bcrypt_queue_depth",
            "Password checks waiting for a bcrypt worker.",
            value=workers.queued,
        )
        yield GaugeMetricFamily(
            "defeah_bcrypt_workers", "bcrypt worker threads (one per core).", value=workers.workers
        )
        yield GaugeMetricFamily(
            "defeah_bcrypt_share",
            "bcrypt workers that may hash at once now: one fewer while the event loop is busy "
            "(DEFEAH_BCRYPT_YIELD_TO_LOOP).",
            value=workers.share,
        )
        yield CounterMetricFamily(
            "defeah_bcrypt_refused",
            "Password checks refused with Overloaded (queue full or waited too long).",
            value=workers.refused,
        )


BCRYPT_COLLECTOR: Final = BcryptCollector()
