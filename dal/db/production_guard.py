"""The production guard: destructive jobs refuse a production target unless forced.

Production is recognised by either of two signals, so a forgotten variable on one side is
caught by the other:

* ``DEFEAH_ENV=production`` in the environment of the command;
* the database-level setting ``defeah.environment = 'production'``, set once by the operator
  with ``ALTER DATABASE <name> SET defeah.environment = 'production'`` and read by every new
  session (PostgreSQL 9.6+, no extension; the machine's 15 and the embedded 18 alike).
"""

from __future__ import annotations

import logging

from dal.db.connections import Acquirer, Connection
from dal.db.settings import Settings
from dal.db.statements import run
from dal.errors import ProductionRefused
from dal.queries import load

log = logging.getLogger(__name__)

OPS_SQL = load("ops")

PRODUCTION = "production"
DATABASE_MARKER = "defeah.environment"


async def production_reason(conn: Connection, settings: Settings) -> str | None:
    """Why the target counts as production, or None when it does not."""
    if settings.environment == PRODUCTION:
        return "DEFEAH_ENV=production"
    rows = await run(conn, OPS_SQL["production_marker"], {"name": DATABASE_MARKER})
    marker = rows[0]["marker"]
    if isinstance(marker, str) and marker.strip().lower() == PRODUCTION:
        return f"the database sets {DATABASE_MARKER} = '{PRODUCTION}'"
    return None


async def guard(conn: Connection, settings: Settings, action: str, *, force: bool) -> None:
    """Raise ``ProductionRefused`` (one line, says how to override) unless safe or forced."""
    reason = await production_reason(conn, settings)
    if reason is None:
        return
    if force:
        log.warning("%s on a production database (%s): forced", action, reason)
        return
    raise ProductionRefused(
        f"refusing to {action}: the target is production ({reason}); pass --force to override"
    )


async def guard_database(db: Acquirer, action: str, *, force: bool) -> None:
    """``guard`` for a job that does not itself run on the pool: ``rollback`` goes through yoyo
    and psycopg2, so the marker is read on a short pooled connection before yoyo starts."""
    async with db.acquire() as conn:
        await guard(conn, db.settings, action, force=force)
