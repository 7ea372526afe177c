"""Retention of the sign-in event log: whole monthly partitions past
``DEFEAH_AUTH_EVENTS_RETENTION_DAYS`` are dropped by ``maintain-events``.

Dropping a partition is a catalog change, never a DELETE (no row-by-row work, no bloat, no WAL
per row), but it takes ACCESS EXCLUSIVE on ``auth_events`` for an instant, and a DROP waiting
for that lock makes every sign-in's insert queue behind it.  So each attempt waits at most
``LOCK_WAIT`` for the lock and gives up (the sign-ins go on); attempts are retried a few times
with a growing pause, and when all fail the partitions stay for the next run and the job says
so (readiness warns while a partition is overdue).  Rows in the default partition are not
touched here: they are moved into their month when it is created, and ``prune-events``
removes old ones.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from dal.db import partitions
from dal.db.connections import Connection
from dal.db.statements import run
from dal.errors import InvalidUserData, LockUnavailable
from dal.queries import load

SIGNIN_SQL: Final = load("signin")
OPS_SQL: Final = load("ops")
EVENTS_TABLE: Final = "auth_events"
LOCK_WAIT: Final = timedelta(milliseconds=200)
ATTEMPTS: Final = 5
PAUSE: Final = 0.2  # seconds before the second attempt, doubling


@dataclass(frozen=True)
class RetentionReport:
    dropped_partitions: tuple[str, ...]
    deferred: bool  # every attempt found auth_events busy: the old partitions are still there


async def drop_expired_partitions(
    conn: Connection,
    retention: timedelta,
    *,
    lock_wait: timedelta = LOCK_WAIT,
    attempts: int = ATTEMPTS,
) -> RetentionReport:
    """Drop every monthly partition of auth_events whose month ended more than ``retention``
    ago (database clock), each attempt its own transaction waiting at most ``lock_wait``."""
    if retention <= timedelta(0):
        raise InvalidUserData("retention", "must be a positive duration")
    timeout = f"{max(1, int(lock_wait.total_seconds() * 1000))}ms"
    pause = PAUSE
    for attempt in range(attempts):
        try:
            async with conn.transaction():
                await run(conn, OPS_SQL["local_lock_timeout"], {"timeout": timeout})
                await run(conn, SIGNIN_SQL["lock_event_maintenance"], {})  # one run at a time
                (await partitions.read_live(conn)).layout.require_sound(EVENTS_TABLE)
                cutoff = (await run(conn, OPS_SQL["database_now"], {}))[0]["now"] - retention
                rows = await run(conn, SIGNIN_SQL["drop_partitions_before"], {"cutoff": cutoff})
            return RetentionReport(tuple(row["dropped"] for row in rows), deferred=False)
        except LockUnavailable:
            if attempt + 1 < attempts:
                await asyncio.sleep(pause)
                pause *= 2
    return RetentionReport((), deferred=True)
