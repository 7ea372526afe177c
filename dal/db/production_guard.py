"""The production guard: destructive jobs refuse a production target unless forced.

Production is recognised by either of two signals, so a forgotten variable on one side is
caught by the other:

* ``DEFEAH_ENV=production`` in the environment of the command;
* the database-level setting ``defeah.environment = 'production'``, set once by the operator
  with ``ALTER DATABASE <name> SET defeah.environment = 'production'`` and read by every new
  session (PostgreSQL 9.6+, no extension; the machine's 15 and the embedded 18 alike).

The marker's known values are ``DEFEAH_ENV``'s own (``ENVIRONMENTS``: development, test,
staging, production), compared trimmed and case-insensitively; unset or empty means no marker.
Any other value (``prod``, ``live``, a typo) counts as production: whoever set a marker meant
to protect the database, and guessing that ``prod`` meant "not production" would turn a typo
into a wiped table.  Treating it as production rather than refusing every verb keeps ``--force``
as the one documented way through.  ``DEFEAH_ENV`` itself takes only the known values: any
other stops every verb when the settings load.
"""

from __future__ import annotations

import logging

from dal.db.connections import Acquirer, Connection
from dal.db.setting_types import ENVIRONMENTS
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
    # A session that once SET LOCAL the marker reads '' afterwards: empty is unset.
    value = marker.strip().lower() if isinstance(marker, str) else ""
    if value == PRODUCTION:
        return f"the database sets {DATABASE_MARKER} = '{PRODUCTION}'"
    if value and value not in ENVIRONMENTS:
        known = ", ".join(ENVIRONMENTS)
        shown = str(marker).strip().encode("unicode_escape").decode()[:40]
        return f"the database sets {DATABASE_MARKER} = '{shown}', not one of {known}"
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
