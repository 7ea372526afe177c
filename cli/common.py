"""What every verb shares: exit codes, output, and a short-lived pool on the target."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import TypeVar

from dal.db import event_loop
from dal.db.database import Database
from dal.db.settings import Settings

Verb = Callable[[argparse.Namespace, Settings], int]
AddVerb = Callable[[str, Verb, str], argparse.ArgumentParser]
T = TypeVar("T")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_REFUSED = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # SIGTERM during a verb that cleans up first (rehearse): 128 + 15
FORCE_HELP = "act even on a database marked as production (DEFEAH_ENV or defeah.environment)"


def say(message: str) -> None:
    print(message, flush=True)


def with_database(settings: Settings, dsn: str, job: Callable[[Database], Awaitable[T]]) -> T:
    """Run ``job`` with a small pool on ``dsn`` (one-shot commands need no more)."""

    async def run() -> T:
        config = settings.replace(database_url=dsn, pool_min_size=1, pool_max_size=2)
        async with Database(config) as db:
            return await job(db)

    return event_loop.run(run(), settings.event_loop)
