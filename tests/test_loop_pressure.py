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
from dal.users import loop_pressure
from dal.users.loop_pressure import BUSY, CALM, share_for
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


async def test_a_share_of_one_hashes_one_at_a_time_and_all_again_after(
    workers: BcryptWorkers,
) -> None:
    workers.set_share(1)
    held = Overlap()
    async with asyncio.timeout(10):
        await asyncio.gather(*(workers.run(10, 5.0, held.job) for _ in range(4)))
    assert held.most == 1
    workers.set_share(2)
    free = Overlap()
    async with asyncio.timeout(10):
        await asyncio.gather(*(workers.run(10, 5.0, free.job) for _ in range(4)))
    assert free.most == 2
    assert workers.queued == 0


async def test_a_share_is_kept_between_one_and_every_worker(workers: BcryptWorkers) -> None:
    workers.set_share(0)
    assert workers.share == 1
    workers.set_share(9)
    assert workers.share == 2


async def test_a_job_held_back_past_its_queue_timeout_is_refused_and_never_runs(
    workers: BcryptWorkers,
) -> None:
    workers.set_share(1)
    ran: list[str] = []
    gate, hashing = threading.Event(), threading.Event()

    def hold() -> bool:
        hashing.set()
        return gate.wait(5)

    async with asyncio.timeout(10):
        first = asyncio.create_task(workers.run(10, 5.0, hold))
        await asyncio.to_thread(hashing.wait, 5)  # the first hashes; the other worker is held back
        with pytest.raises(Overloaded, match="within the queue timeout"):
            await workers.run(10, 0.2, ran.append, "ran")
        gate.set()
        assert await first
    assert ran == []
    assert (workers.queued, workers.refused) == (0, 1)


def test_the_thresholds_give_one_core_back_when_busy_and_keep_it_in_between() -> None:
    assert share_for(BUSY, current=4, workers=4) == 3
    assert share_for(0.99, current=3, workers=4) == 3  # one core back, not one per reading
    assert share_for((BUSY + CALM) / 2, current=3, workers=4) == 3  # between: as it was
    assert share_for((BUSY + CALM) / 2, current=4, workers=4) == 4
    assert share_for(CALM, current=3, workers=4) == 4
    assert share_for(1.0, current=1, workers=1) == 1  # one core: sign-ins keep it


async def test_the_watcher_takes_a_core_while_the_loop_is_busy_and_gives_it_back(
    workers: BcryptWorkers,
) -> None:
    watching = asyncio.create_task(loop_pressure.watch(workers, interval=0.05))
    stop = asyncio.Event()

    async def busy_loop() -> None:
        """The loop on a CPU about 90 % of the time, in slices as a serving loop is."""
        while not stop.is_set():
            until = time.perf_counter() + 0.009
            while time.perf_counter() < until:
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
            spinning = asyncio.create_task(busy_loop())
            stop.clear()
            await share_becomes(1)
    finally:
        stop.set()
        watching.cancel()
        await asyncio.wait([watching])
    assert workers.share == 2  # the watcher gone, nothing is held back any more


async def test_the_web_app_watches_its_loop_unless_told_not_to() -> None:
    settings = make_settings("postgresql://nobody@127.0.0.1:1/none")  # nothing connects
    assert bcrypt_yields_to_loop in create_app(settings).cleanup_ctx
    off = settings.replace(bcrypt_yield_to_loop=False)
    assert bcrypt_yields_to_loop not in create_app(off).cleanup_ctx


async def test_the_watcher_stops_with_the_app_and_gives_every_worker_back() -> None:
    app = web.Application()
    context = bcrypt_yields_to_loop(app)
    await anext(context)
    assert any(t.get_name() == "bcrypt-loop-pressure" for t in asyncio.all_tasks())
    BCRYPT.set_share(1)  # as a busy loop would have left it
    with pytest.raises(StopAsyncIteration):
        await anext(context)
    assert not any(t.get_name() == "bcrypt-loop-pressure" for t in asyncio.all_tasks())
    assert BCRYPT.share == BCRYPT.workers
