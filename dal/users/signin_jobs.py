"""The sign-in's operator jobs: unlock an email, prune old events, keep partitions ahead.

Kept apart from the sign-in flow (``dal.users.signin``), which runs on every request; these run
from the command line or a timer.  ``unlock`` and ``prune-events`` delete data, so they pass the
production guard; ``maintain-events`` only creates partitions and drops expired budgets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final
from uuid import UUID

from dal.db import partitions
from dal.db.connections import Acquirer, Connection
from dal.db.production_guard import guard
from dal.db.statements import run, run_count
from dal.errors import InvalidUserData, LockUnavailable
from dal.queries import Query, load
from dal.users.retention import (
    Patience,
    RetentionReport,
    drop_expired_partitions,
    drop_partitions_before,
)
from dal.users.signin import normalize_email
from dal.users.signin_refusals import refusals_for

if TYPE_CHECKING:
    from asyncpg import Record

    from dal.db.settings import Settings

SIGNIN_SQL: Final = load("signin")
OPS_SQL: Final = load("ops")


@dataclass(frozen=True)
class UnlockReport:
    email: str
    budgets_cleared: int
    user_id: UUID | None


@dataclass(frozen=True)
class PruneReport:
    dropped_partitions: tuple[str, ...]
    deleted_rows: int


@dataclass(frozen=True)
class MaintenanceReport:
    created_partitions: tuple[str, ...]
    expired_budgets: int
    retention: RetentionReport | None = None  # None: retention not applied (``retention=None``)


PRUNE_BATCH: Final = 10_000
# Older than a century means "everything": a larger age only overflows the date arithmetic.
MAX_PRUNE_AGE: Final = timedelta(days=36_500)
PRUNE_LOCK_WAIT: Final = 0.05  # seconds a sign-in may queue behind prune's partition drop
PRUNE_BACKOFF_CAP: Final = 1.0  # seconds between two tries, at most
MONTHS_AHEAD: Final = 3
MAX_MONTHS_AHEAD: Final = 120
EVENTS_TABLE: Final = "auth_events"


async def delete_in_batches(
    conn: Connection, query: Query, values: Mapping[str, object], batch: int
) -> int:
    """Run a ``DELETE ... LIMIT :batch`` statement until it deletes less than a batch; each
    run is its own short transaction (autocommit), so locks and WAL stay small."""
    if batch < 1:
        raise InvalidUserData("batch", "must be at least 1")
    total = 0
    while True:
        count = await run_count(conn, query, {**values, "batch": batch})
        total += count
        if count < batch:
            return total


async def unlock(db: Acquirer, email: str, *, force: bool = False) -> UnlockReport:
    """Clear every budget of ``email`` and its account lock, and log an ``unlocked`` event."""
    normalized = normalize_email(email)
    async with db.acquire() as conn:
        await guard(conn, db.settings, f"unlock {normalized}", force=force)
        rows = await run(conn, SIGNIN_SQL["unlock_email"], {"email": normalized})
    refusals_for(db).forget_email(normalized)  # other processes ask again within their hold
    return UnlockReport(normalized, rows[0]["budgets"], rows[0]["user_id"])


async def _sound_events_layout(conn: Connection) -> None:
    """Refuse (``PartitionLayoutInvalid``, nothing changed) when auth_events breaks the
    partition rule: the partition functions go by names, so a misnamed or wrongly bounded
    partition would be skipped, or dropped with rows newer than the cut-off."""
    (await partitions.read_live(conn)).layout.require_sound(EVENTS_TABLE)


async def _limit_lock_wait(conn: Connection, settings: Settings) -> None:
    """Inside a transaction: give up on a lock after the migration lock timeout, so that a job
    needing auth_events exclusively never queues every sign-in behind it."""
    timeout = f"{int(settings.migration_lock_timeout * 1000)}ms"
    await run(conn, OPS_SQL["local_lock_timeout"], {"timeout": timeout})


async def _drop_partitions_politely(
    conn: Connection, settings: Settings, cutoff: datetime
) -> tuple[str, ...]:
    """Drop the partitions before ``cutoff`` without ever queueing sign-ins for long (the
    shared loop of ``dal.users.retention``): each try waits at most ``PRUNE_LOCK_WAIT``, tries
    go on until ``migration_lock_timeout``; then ``LockUnavailable`` naming who holds the lock."""
    patience = Patience(
        PRUNE_LOCK_WAIT, PRUNE_LOCK_WAIT, PRUNE_BACKOFF_CAP, settings.migration_lock_timeout
    )
    done = await drop_partitions_before(conn, cutoff, patience)
    if not done.gave_up:
        return done.partitions
    holders = await run(conn, OPS_SQL["events_lock_holders"], {})
    named = "; ".join(_holder(row) for row in holders) or "no holder seen any more"
    raise LockUnavailable(
        f"prune-events dropped nothing: {EVENTS_TABLE} stayed locked for "
        f"{settings.migration_lock_timeout:g}s ({done.tries} tries of "
        f"{round(PRUNE_LOCK_WAIT * 1000)}ms, 55P03); held by {named}"
    )


def _holder(row: Record) -> str:
    query = " ".join((row["query"] or "").split())[:120]
    held = f" for {row['xact_seconds']:.1f}s" if row["xact_seconds"] is not None else ""
    return f"pid {row['pid']} ({row['state'] or 'unknown state'}{held}): {query or '?'}"


async def prune_events(
    db: Acquirer, older_than: timedelta, *, force: bool = False, batch: int = PRUNE_BATCH
) -> PruneReport:
    """Drop the monthly partitions wholly older than ``older_than`` (no row-by-row delete, no
    bloat), then delete what is left before the cutoff in ``batch``-row transactions."""
    if not timedelta(0) < older_than <= MAX_PRUNE_AGE:
        raise InvalidUserData("older_than", f"must be positive, at most {MAX_PRUNE_AGE.days} days")
    async with db.acquire() as conn:
        await guard(conn, db.settings, "prune sign-in events", force=force)
        cutoff = (await run(conn, OPS_SQL["database_now"], {}))[0]["now"] - older_than
        dropped = await _drop_partitions_politely(conn, db.settings, cutoff)
        deleted = await delete_in_batches(
            conn, SIGNIN_SQL["delete_events_batch"], {"cutoff": cutoff}, batch
        )
    return PruneReport(dropped, deleted)


async def maintain_events(
    db: Acquirer,
    *,
    months_ahead: int = MONTHS_AHEAD,
    batch: int = PRUNE_BATCH,
    retention: timedelta | None = None,
) -> MaintenanceReport:
    """Create the monthly partitions from this month to ``months_ahead``, drop the partitions
    past ``retention`` (``dal.users.retention``: whole partitions, bounded lock waits) and
    delete budget rows whose window has ended.  Idempotent, and safe to start on several hosts
    at once: runs take turns on an advisory lock (waiting at most the migration lock timeout),
    so the second finds the partitions the first created."""
    if not 0 <= months_ahead <= MAX_MONTHS_AHEAD:
        raise InvalidUserData("months_ahead", f"must be between 0 and {MAX_MONTHS_AHEAD}")
    async with db.acquire() as conn:
        async with conn.transaction():
            await _limit_lock_wait(conn, db.settings)
            await run(conn, SIGNIN_SQL["lock_event_maintenance"], {})
            await _sound_events_layout(conn)
            created = await run(
                conn, SIGNIN_SQL["ensure_partitions"], {"months_ahead": months_ahead}
            )
        kept = None if retention is None else await drop_expired_partitions(conn, retention)
        expired = await delete_in_batches(conn, SIGNIN_SQL["prune_expired_budgets"], {}, batch)
    return MaintenanceReport(tuple(row["created"] for row in created), expired, kept)
