"""One check in flight per kind: callers arriving while it runs share its result.

Health probes and metric scrapes come in storms; each kind of check (the database round trip,
the schema read, the figures ``/metrics`` needs from the database) runs once for all of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """Callers arriving while a check runs await that same check instead of starting another.

    The shared task is shielded: a caller that gives up (client gone, its own timeout) does not
    cancel the check the others are waiting for.
    """

    def __init__(self) -> None:
        self._task: asyncio.Task[T] | None = None

    async def run(self, start: Callable[[], Awaitable[T]]) -> T:
        task = self._task
        if task is None or task.done():
            task = asyncio.ensure_future(start())
            task.add_done_callback(_consume_exception)
            self._task = task
        return await asyncio.shield(task)


def _consume_exception(task: asyncio.Task[Any]) -> None:
    # Every waiter sees the exception; this only keeps asyncio from reporting it as lost when
    # all waiters had already gone.
    if not task.cancelled():
        task.exception()
