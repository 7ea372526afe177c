"""Dropping sign-in event partitions without queueing sign-ins: retention (whole monthly
partitions past ``DEFEAH_AUTH_EVENTS_RETENTION_DAYS``, dropped by ``maintain-events``) and
``prune-events`` share the one loop here.

Dropping a partition is a catalog change, never a DELETE (no row-by-row work, no bloat, no WAL
per row), but it takes ACCESS EXCLUSIVE on ``auth_events`` for an instant, and a DROP waiting
for that lock makes every sign-in's insert queue behind it.  So each try waits at most its
``Patience.lock_wait`` for the lock and gives way (the sign-ins go on); tries are repeated with
a doubling pause until ``give_up_after``, and when all fail nothing is dropped and the job says
so (retention keeps the partitions for the next run, and readiness warns while one is overdue;
``prune-events`` names who holds the lock).  ``DETACH PARTITION CONCURRENTLY`` would need no
such lock, but PostgreSQL refuses it on a table with a default partition, as ours has.  Rows
in the default partition are not touched here: they are moved into their month when it is
created, and ``prune-events`` deletes old ones in batches.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from dal.db import partitions
from dal.db.connections import Connection
from dal.db.statements import run
from dal.errors import InvalidUserData, LockUnavailable
from dal.queries import load

SIGNIN_SQL: Final = load("signin")
OPS_SQL: Final = load("ops")
EVENTS_TABLE: Final = "auth_events"


@dataclass(frozen=True)
class Patience:
    """How a partition drop waits for auth_events (seconds): each try at most ``lock_wait``
    (the longest a sign-in queues behind it), pauses doubling from ``first_pause`` up to
    ``pause_cap``, no new try once ``give_up_after`` would be passed."""

    lock_wait: float
    first_pause: float
    pause_cap: float
    give_up_after: float


# maintain-events: five tries of 200 ms over about four seconds, then the next run's turn.
RETENTION_PATIENCE: Final = Patience(
    lock_wait=0.2, first_pause=0.2, pause_cap=1.6, give_up_after=4.0
)


@dataclass(frozen=True)
class Dropped:
    partitions: tuple[str, ...]
    tries: int
    gave_up: bool  # every try found auth_events busy: nothing was dropped


@dataclass(frozen=True)
class RetentionReport:
    dropped_partitions: tuple[str, ...]
    deferred: bool  # every attempt found auth_events busy: the old partitions are still there


async def drop_partitions_before(
    conn: Connection, cutoff: datetime | timedelta, patience: Patience
) -> Dropped:
    """Drop every monthly partition of auth_events wholly before ``cutoff`` (a time, or an age
    from the database's clock at each try), each try its own transaction that also takes the
    event maintenance lock (one job at a time) and checks the partition layout first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience.give_up_after
    timeout = f"{max(1, round(patience.lock_wait * 1000))}ms"
    pause, tries = patience.first_pause, 0
    while True:
        tries += 1
        try:
            async with conn.transaction():
                await run(conn, OPS_SQL["local_lock_timeout"], {"timeout": timeout})
                await run(conn, SIGNIN_SQL["lock_event_maintenance"], {})
                (await partitions.read_live(conn)).layout.require_sound(EVENTS_TABLE)
                before = cutoff
                if isinstance(before, timedelta):
                    before = (await run(conn, OPS_SQL["database_now"], {}))[0]["now"] - cutoff
                rows = await run(conn, SIGNIN_SQL["drop_partitions_before"], {"cutoff": before})
            return Dropped(tuple(row["dropped"] for row in rows), tries, gave_up=False)
        except LockUnavailable:
            if loop.time() + pause > deadline:
                return Dropped((), tries, gave_up=True)
        await asyncio.sleep(pause)
        pause = min(pause * 2, patience.pause_cap)


async def drop_expired_partitions(
    conn: Connection, retention: timedelta, patience: Patience = RETENTION_PATIENCE
) -> RetentionReport:
    """Drop every monthly partition of auth_events whose month ended more than ``retention``
    ago (database clock)."""
    if retention <= timedelta(0):
        raise InvalidUserData("retention", "must be a positive duration")
    done = await drop_partitions_before(conn, retention, patience)
    return RetentionReport(done.partitions, deferred=done.gave_up)
