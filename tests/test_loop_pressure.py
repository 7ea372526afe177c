"""bcrypt gives a core back while the event loop is busy (issue 24): the workers' share, the
thresholds, the watcher on a real loop, and the web app that starts it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web

from dal.errors import Overloaded
from dal.users import loop_pressure, passwords
from dal.users.loop_pressure import BUSY, CALM, HOLD, Pressure, wanted_ns
from dal.users.passwords import BCRYPT, BcryptWorkers
from tests.conftest import make_settings
from web.app import bcrypt_yields_to_loop, create_app


@pytest.fixture
async def workers() -> AsyncIterator[BcryptWorkers]:
    """Two workers of their own, so the process-wide ``BCRYPT`` is not touched."""
    pool = BcryptWorkers(2)
    yield pool
    pool._executor.shutdown(wait=True)


async def until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` (a worker thread's state has no event to wait on); the caller's
    ``asyncio.timeout`` bounds it."""
    while True:
        if condition():
            return
        await asyncio.sleep(0.01)


class Overlap:
    """Jobs that each hold their worker for ``hold`` seconds and record how many ran at once."""

    def __init__(self, hold: float = 0.15) -> None:
        self.hold = hold
        self.now = 0
        self.most = 0
        self.lock = threading.Lock()

    def job(self) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(self.hold)
        with self.lock:
            self.now -= 1


async def most_at_once(workers: BcryptWorkers, jobs: int = 4) -> int:
    """How many of ``jobs`` overlapping jobs ran at the same time on ``workers``."""
    overlap = Overlap()
    async with asyncio.timeout(10):
        await asyncio.gather(*(workers.run(10, 5.0, overlap.job) for _ in range(jobs)))
    return overlap.most


async def test_a_share_of_one_hashes_one_at_a_time_and_all_again_after(
    workers: BcryptWorkers,
) -> None:
    workers.yield_core("a busy loop", True)
    assert (workers.share, await most_at_once(workers)) == (1, 1)
    workers.yield_core("a busy loop", False)
    assert (workers.share, await most_at_once(workers)) == (2, 2)
    assert workers.queued == 0


async def test_one_core_back_however_many_loops_ask_until_the_last_withdraws(
    workers: BcryptWorkers,
) -> None:
    workers.yield_core("loop 1", True)
    workers.yield_core("loop 2", True)
    assert workers.share == 1  # one core fewer, not one per loop
    workers.yield_core("loop 2", False)  # a calm loop does not cancel a busy one's request
    assert workers.share == 1
    workers.yield_core("loop 1", False)
    assert workers.share == 2
    single = BcryptWorkers(1)
    single.yield_core("loop", True)
    assert single.share == 1  # one core: sign-ins keep it


async def test_a_job_held_back_past_its_queue_timeout_is_refused_and_never_runs(
    workers: BcryptWorkers,
) -> None:
    workers.yield_core("a busy loop", True)
    ran: list[str] = []
    gate, hashing = threading.Event(), threading.Event()

    def hold() -> bool:
        hashing.set()
        return gate.wait(5)

    async with asyncio.timeout(10):
        first = asyncio.create_task(workers.run(10, 5.0, hold))
        await asyncio.to_thread(hashing.wait, 5)  # the first hashes; the other worker is held back
        # Refused by the worker at the gate or by the timer before a worker took it: the same.
        with pytest.raises(Overloaded, match=r"no bcrypt worker free within 0\.2s"):
            await workers.run(10, 0.2, ran.append, "ran")
        gate.set()
        assert await first
    assert ran == []
    assert (workers.queued, workers.refused) == (0, 1)


def test_a_busy_reading_asks_at_once_and_only_a_held_calm_withdraws() -> None:
    pressure = Pressure()
    assert not pressure.read(CALM, now=0.0)
    assert pressure.read(BUSY, now=0.1)
    assert pressure.read((BUSY + CALM) / 2, now=0.2)  # between: as it was
    assert pressure.read(CALM, now=0.3)  # calm, not for long enough
    assert pressure.read(0.9, now=0.4)  # busy again: the calm spell starts over
    assert pressure.read(0.0, now=0.5)
    assert pressure.read(0.0, now=0.5 + HOLD / 2)
    assert not pressure.read(0.0, now=0.5 + HOLD)
    assert not pressure.read((BUSY + CALM) / 2, now=0.5 + HOLD + 0.1)


def test_a_reading_covers_the_threads_cpu_time_and_its_wait_for_a_cpu() -> None:
    """The reading adds the thread's wait for a CPU to its time on one (Linux's schedstat)."""
    before = wanted_ns()
    cpu = time.thread_time_ns()
    until = time.perf_counter() + 0.05
    while time.perf_counter() < until:
        pass
    assert wanted_ns() - before >= time.thread_time_ns() - cpu - 5_000_000  # clock granularity


async def test_the_watcher_takes_a_core_while_the_loop_is_busy_and_gives_it_back(
    workers: BcryptWorkers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loop_pressure, "HOLD", 0.2)
    watching = asyncio.create_task(loop_pressure.watch(workers, interval=0.05))
    stop = asyncio.Event()

    async def busy_loop() -> None:
        """The loop on a CPU about 90 % of the time, in slices as a serving loop is."""
        while not stop.is_set():
            busy_until = time.perf_counter() + 0.009
            while time.perf_counter() < busy_until:
                pass
            await asyncio.sleep(0.001)

    async def share_becomes(value: int) -> None:
        await until(lambda: workers.share == value)

    try:
        async with asyncio.timeout(10):
            spinning = asyncio.create_task(busy_loop())
            await share_becomes(1)
            stop.set()
            await spinning
            await share_becomes(2)  # an idle loop: every worker again
            stop.clear()
            spinning = asyncio.create_task(busy_loop())
            await share_becomes(1)
    finally:
        stop.set()
        watching.cancel()
        await asyncio.wait([watching, spinning])
    assert workers.share == 2  # the watcher gone, its request went with it


async def test_the_watcher_asks_the_pool_in_use_when_it_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pool swapped in after import (as the storm benchmark does) is the one watched."""
    swapped = BcryptWorkers(2)
    monkeypatch.setattr(passwords, "BCRYPT", swapped)
    monkeypatch.setattr(loop_pressure, "wanted_ns", lambda: time.monotonic_ns())  # always busy
    watching = asyncio.create_task(loop_pressure.watch(interval=0.01))
    try:
        async with asyncio.timeout(10):
            await until(lambda: swapped.share == 1)
    finally:
        watching.cancel()
        await asyncio.wait([watching])
        swapped._executor.shutdown()
    assert swapped.share == 2 and BCRYPT.share == BCRYPT.workers


async def test_the_web_app_watches_its_loop_unless_told_not_to() -> None:
    settings = make_settings("postgresql://nobody@127.0.0.1:1/none")  # nothing connects
    assert bcrypt_yields_to_loop in create_app(settings).cleanup_ctx
    off = settings.replace(bcrypt_yield_to_loop=False)
    assert bcrypt_yields_to_loop not in create_app(off).cleanup_ctx


async def test_the_watcher_stops_with_the_app_and_leaves_no_request_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(loop_pressure, "wanted_ns", lambda: time.monotonic_ns())  # always busy
    monkeypatch.setattr(loop_pressure, "INTERVAL", 0.01)
    try:
        context = bcrypt_yields_to_loop(web.Application())
        await anext(context)
        async with asyncio.timeout(10):
            await until(lambda: BCRYPT.share == BCRYPT.workers - 1 or BCRYPT.workers == 1)
        with pytest.raises(StopAsyncIteration):
            await anext(context)
        assert not any(t.get_name() == "bcrypt-loop-pressure" for t in asyncio.all_tasks())
        assert BCRYPT.share == BCRYPT.workers
    finally:
        BCRYPT._yielding.clear()  # whatever failed above, later tests get every worker
        BCRYPT.yield_core(None, False)


async def test_the_watcher_stopped_before_it_ran_leaves_no_request_behind() -> None:
    context = bcrypt_yields_to_loop(web.Application())
    await anext(context)
    with pytest.raises(StopAsyncIteration):
        await anext(context)  # cancelled before its first step
    assert BCRYPT.share == BCRYPT.workers
