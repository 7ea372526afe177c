"""bcrypt's worker threads (issue 14, item 1; issue 24: the idle class): lowest priority, one per
core, and a queue bounded in length and in waiting time that refuses with ``Overloaded`` instead
of piling up."""

from __future__ import annotations

import asyncio
import os
import threading

import bcrypt
import pytest

from dal import Database, NewUser
from dal.errors import Overloaded
from dal.users import passwords
from dal.users.passwords import BCRYPT, NICENESS, BcryptWorkers, PasswordHasher, usable_cores
from dal.users.repository import UsersRepository
from tests.conftest import make_settings

SLOW = bcrypt.hashpw(b"pw", bcrypt.gensalt(11)).decode()  # ~0.1 s per check on this machine


def hold(gate: threading.Event, started: threading.Barrier) -> bool:
    """A job that holds its worker until ``gate`` opens (bounded, so a failure cannot hang)."""
    started.wait(10)
    return gate.wait(10)


async def occupy_every_worker(gate: threading.Event) -> list[asyncio.Task[bool]]:
    """One held job per worker, all running (none queued) before returning."""
    started = threading.Barrier(BCRYPT.workers + 1)  # passes once every worker holds one job
    jobs = [
        asyncio.create_task(BCRYPT.run(1000, 10.0, hold, gate, started))
        for _ in range(BCRYPT.workers)
    ]
    await asyncio.to_thread(started.wait, 10)
    return jobs


async def test_workers_run_at_the_lowest_priority_one_per_core() -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)  # the calling (event loop) thread's
    async with asyncio.timeout(10):
        worker = await BCRYPT.run(10, 5.0, os.getpriority, os.PRIO_PROCESS, 0)
    assert worker == min(19, base + NICENESS)
    assert os.getpriority(os.PRIO_PROCESS, 0) == base  # the loop's thread is untouched
    assert BCRYPT.workers == usable_cores()


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux's SCHED_IDLE class")
async def test_workers_run_in_the_idle_class_and_the_loop_thread_does_not() -> None:
    """SCHED_IDLE, not only nice 19: a woken loop thread preempts the hashing at once.  Every
    worker at once (a barrier), so each thread answers for itself."""
    together = threading.Barrier(BCRYPT.workers)

    def policy() -> int:
        together.wait(10)
        return os.sched_getscheduler(0)

    loop_policy = os.sched_getscheduler(0)
    async with asyncio.timeout(15):
        policies = await asyncio.gather(
            *(BCRYPT.run(10, 5.0, policy) for _ in range(BCRYPT.workers))
        )
    assert policies == [os.SCHED_IDLE] * BCRYPT.workers
    assert loop_policy != os.SCHED_IDLE and os.sched_getscheduler(0) == loop_policy


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux's SCHED_IDLE class")
async def test_a_refused_idle_class_leaves_the_workers_at_nice_19_and_says_so_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(pid: int, policy: int, param: os.sched_param) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    monkeypatch.setattr(passwords, "_IDLE_REFUSED", threading.Event())
    workers = BcryptWorkers(2)
    base = os.getpriority(os.PRIO_PROCESS, 0)
    together = threading.Barrier(2)

    def read() -> tuple[int, int]:
        together.wait(10)  # both threads started, so both ran the initializer
        return os.getpriority(os.PRIO_PROCESS, 0), os.sched_getscheduler(0)

    try:
        async with asyncio.timeout(15):
            seen = await asyncio.gather(*(workers.run(10, 5.0, read) for _ in range(2)))
    finally:
        workers._executor.shutdown()
    assert seen == [(min(19, base + NICENESS), os.SCHED_OTHER)] * 2
    assert caplog.text.count("SCHED_IDLE refused") == 1 and "nice 19" in caplog.text


async def test_a_full_queue_refuses_at_once_and_counts_its_depth() -> None:
    gate = threading.Event()
    jobs = await occupy_every_worker(gate)
    hasher = PasswordHasher(4, queue_limit=3, queue_timeout=10.0)
    try:
        waiting = [asyncio.create_task(hasher.verify("pw", SLOW)) for _ in range(3)]
        await asyncio.sleep(0.05)
        assert BCRYPT.queued == 3
        async with asyncio.timeout(1):  # refused without waiting for a worker
            with pytest.raises(Overloaded):
                await hasher.verify("pw", SLOW)
    finally:
        gate.set()
    async with asyncio.timeout(10):
        assert await asyncio.gather(*jobs) == [True] * len(jobs)
        assert await asyncio.gather(*waiting) == [True] * 3
    assert BCRYPT.queued == 0


async def test_a_check_waiting_past_the_timeout_is_refused_and_never_runs() -> None:
    gate = threading.Event()
    jobs = await occupy_every_worker(gate)
    ran = threading.Event()
    hasher = PasswordHasher(4, queue_limit=100, queue_timeout=0.1)
    try:
        async with asyncio.timeout(2):
            with pytest.raises(Overloaded, match=r"within 0\.1s"):
                await hasher._run(ran.set)
        assert BCRYPT.queued == 0
    finally:
        gate.set()
    async with asyncio.timeout(10):
        await asyncio.gather(*jobs)
        await BCRYPT.run(10, 5.0, int)  # the worker freed by the gate has nothing left to run
    assert not ran.is_set()


async def test_sign_in_storm_beyond_the_queue_fails_overloaded_not_unbounded(
    clean_dsn: str,
) -> None:
    settings = make_settings(
        clean_dsn, bcrypt_rounds=10, bcrypt_queue_limit=2, bcrypt_queue_timeout=0.2
    )
    async with Database(settings) as db:
        users = UsersRepository(db)
        await users.create(NewUser(email="storm@example.com", password="pw-storm"))  # type: ignore[arg-type]
        attempts = [
            users.authenticate("storm@example.com", "pw-storm", client_ip=f"10.0.{i}.1")
            for i in range(24)
        ]
        async with asyncio.timeout(30):
            results = await asyncio.gather(*attempts, return_exceptions=True)
    refused = [r for r in results if isinstance(r, Overloaded)]
    signed_in = [r for r in results if not isinstance(r, BaseException)]
    assert refused and signed_in
    assert len(refused) + len(signed_in) == len(results), results
    assert BCRYPT.queued == 0
