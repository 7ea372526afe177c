"""The migration state as the health check reads it: one plain ``SELECT`` on the app's pool.

``dal.migrations.status`` goes through yoyo's backend, which on every connection creates its
lock table and a temporary table (DDL: two ERROR lines in the server log per read when the
tables exist, and a lock wait when a migration runs).  A probe must never write and never wait,
so this reads yoyo's bookkeeping table directly, inside ``Database.bounded``.  The ids of the
migration files come from the caller, read once (``dal.migrations.migration_ids``).
"""

from __future__ import annotations

import asyncpg

from dal.database import Database
from dal.driver import PooledConnection, describe_error
from dal.errors import DatabaseUnavailable
from dal.migrations import MigrationStatus


async def read_status(db: Database, known: tuple[str, ...], timeout: float) -> MigrationStatus:
    """Which of the ``known`` migration ids are applied and which are pending, within ``timeout``.

    Raises ``DatabaseUnavailable`` (no connection, no answer in time, the table locked).
    """
    try:
        async with db.bounded(timeout) as conn:
            done = await applied_ids(conn)
    except TimeoutError:
        raise DatabaseUnavailable(f"no answer within {timeout:g}s") from None
    except asyncpg.exceptions.PostgresError as exc:
        raise DatabaseUnavailable(
            f"cannot read the migration state: {describe_error(exc)}"
        ) from None
    applied = tuple(m for m in known if m in done)
    pending = tuple(m for m in known if m not in done)
    return MigrationStatus(applied=applied, pending=pending)


async def applied_ids(conn: PooledConnection) -> frozenset[str]:
    """Ids recorded as applied; none when yoyo never ran here (no bookkeeping table yet)."""
    # yoyo 9's table: migration_hash (key), migration_id, applied_at_utc; found through the
    # search_path, as yoyo finds it.  to_regclass takes no lock, so a missing table is no error.
    if await conn.fetchval("SELECT to_regclass('_yoyo_migration') IS NULL"):
        return frozenset()
    rows = await conn.fetch("SELECT migration_id FROM _yoyo_migration")
    return frozenset(row["migration_id"] for row in rows)
