"""An experiment for issue 24, not the service's code: bcrypt in worker *processes* that each
start a session of their own, so the kernel's autogroup scheduling charges their CPU to another
group than the event loop's.  ``BcryptWorkers`` threads at nice 19 give way to the loop only
inside the process's group; against the neighbours the group competes as a whole.  With
``--detached`` the storm benchmark swaps these in to see whether the loop's wait for a core and
the health p99 follow.  No queue bound or metric here (the benchmark sets a huge limit).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from dal.users.passwords import BcryptWorkers

T = TypeVar("T")


def _detach(niceness: int) -> None:
    """Worker initializer: a new session (a new autogroup), and that group's nice value."""
    os.setsid()
    try:
        with open("/proc/self/autogroup", "w") as group:
            group.write(str(niceness))
    except OSError:
        os.nice(niceness)  # no autogroup: at least the process's own priority


class DetachedWorkers(BcryptWorkers):
    """``BcryptWorkers``' interface on a process pool (spawned: no forked event loop)."""

    def __init__(self, workers: int, niceness: int) -> None:
        super().__init__(workers, niceness)
        self._processes = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_detach,
            initargs=(niceness,),
        )

    async def run(self, limit: int, timeout: float, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.wrap_future(self._processes.submit(fn, *args))
