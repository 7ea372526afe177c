"""Development seeds: run the ``seeds/*.sql`` files, remove what they inserted, guard production.

The SQL files are the single definition of the seed data, so a developer with only ``psql`` gets
exactly what ``defeah-db seed`` gives.  This module adds what plain SQL cannot: a report of which
seed users were inserted and which were already there, a ``clear`` that can only ever touch seed
rows, and a refusal to do either against a production database.

Which rows are "seeded"?  Exactly the users whose email (case-insensitively) is in
``SEED_EMAILS``, plus -- only when asked -- the bulk generator's users, whose addresses all end in
``@bulk.defeah.test`` (``.test`` is reserved by RFC 2606, so no real person can sign up with one).
An explicit list keeps ``clear`` safe with no schema change: no marker column that a real row
could carry by accident.  tests/test_seeds.py checks that the seed files insert exactly this list.

Production is recognised by either of two signals, so a forgotten variable on one side is
caught by the other:

* ``DEFEAH_ENV=production`` in the environment of the command;
* the database-level setting ``defeah.environment = 'production'``, set once by the operator with
  ``ALTER DATABASE <name> SET defeah.environment = 'production'`` and read by every new session
  with ``current_setting('defeah.environment', true)`` (PostgreSQL 9.6+, no extension, works on
  the machine's 15 and the embedded 18).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from dal.config import Settings
from dal.database import Database
from dal.driver import Connection
from dal.errors import DalError

log = logging.getLogger(__name__)

SEEDS_DIR = Path(__file__).resolve().parent.parent / "seeds"

SEED_EMAILS: tuple[str, ...] = ("admin@defeah.com", "demo@defeah.com", "test@defeah.com")
BULK_EMAIL_DOMAIN = "bulk.defeah.test"

# The transaction-scoped advisory lock every seed file takes first (seeds/*.sql say why).
SEED_LOCK_KEY = 4733620119

PRODUCTION = "production"
DATABASE_MARKER = "defeah.environment"


class ProductionRefused(DalError):
    """The target is marked as production and the operation was not forced."""


class SeedError(DalError):
    """A seed file could not be applied; its transaction was rolled back."""


@dataclass(frozen=True)
class SeedFileResult:
    name: str
    inserted: tuple[str, ...]
    present: tuple[str, ...]


@dataclass(frozen=True)
class SeedReport:
    files: tuple[SeedFileResult, ...]

    @property
    def inserted(self) -> int:
        return sum(len(f.inserted) for f in self.files)

    @property
    def present(self) -> int:
        return sum(len(f.present) for f in self.files)

    def lines(self) -> list[str]:
        """Human summary: one line per file, then the totals."""
        out = []
        for f in self.files:
            detail = ", ".join(
                [f"inserted {e}" for e in f.inserted] + [f"already present {e}" for e in f.present]
            )
            out.append(f"{f.name}: {detail or 'no seed users'}")
        out.append(f"seeds: {self.inserted} inserted, {self.present} already present")
        return out


@dataclass(frozen=True)
class ClearReport:
    seed_users: int
    generated_users: int


def seed_files(directory: Path = SEEDS_DIR) -> list[Path]:
    """The seed files in the order they run (by name, like the migrations)."""
    files = sorted(directory.glob("*.sql"))
    if not files:
        raise SeedError(f"no seed files (*.sql) in {directory}")
    return files


async def production_reason(conn: Connection, settings: Settings) -> str | None:
    """Why the target counts as production, or None when it does not."""
    if settings.environment == PRODUCTION:
        return "DEFEAH_ENV=production"
    marker = await conn.fetchval("SELECT current_setting($1, true)", DATABASE_MARKER)
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


async def guard_database(db: Database, action: str, *, force: bool) -> None:
    """``guard`` for a job that does not itself run on the pool: ``rollback`` goes through yoyo
    and psycopg2, so the marker is read on a short pooled connection before yoyo starts."""
    async with db.acquire() as conn:
        await guard(conn, db.settings, action, force=force)


async def require_table(conn: Connection) -> None:
    if await conn.fetchval("SELECT to_regclass('public.users')") is None:
        raise SeedError("table users does not exist; run `defeah-db migrate` first")


async def _present(conn: Connection) -> set[str]:
    rows = await conn.fetch(
        "SELECT lower(email) AS email FROM users WHERE lower(email) = ANY($1::text[])",
        list(SEED_EMAILS),
    )
    return {r["email"] for r in rows}


def _read(paths: Sequence[Path]) -> list[tuple[str, str]]:
    return [(p.name, p.read_text(encoding="utf-8")) for p in paths]


async def _run_file(conn: Connection, name: str, script: str) -> None:
    try:
        await conn.execute(script)
    except asyncpg.PostgresError as exc:
        # The file's own BEGIN left the session in an aborted transaction: end it here so the
        # connection goes back to the pool clean.
        if conn.is_in_transaction():
            await conn.execute("ROLLBACK")
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SeedError(f"{name}: {message}; nothing of it was applied") from None


async def apply_seeds(
    db: Database, *, force: bool = False, files: Sequence[Path] | None = None
) -> SeedReport:
    """Run each seed file (each its own transaction); report inserted vs already present.

    Concurrent runs are safe (each file serialises on ``SEED_LOCK_KEY``), but the report reads
    "present" outside that lock: a row another run inserts meanwhile counts as inserted in both
    reports.  A session-level lock would fix that and break under PgBouncer, so it is not taken.
    """
    scripts = await asyncio.to_thread(_read, seed_files() if files is None else files)
    results = []
    async with db.acquire() as conn:
        await guard(conn, db.settings, "seed", force=force)
        await require_table(conn)
        for name, script in scripts:
            before = await _present(conn)
            await _run_file(conn, name, script)
            after = await _present(conn)
            results.append(
                SeedFileResult(
                    name=name,
                    inserted=tuple(e for e in SEED_EMAILS if e in after - before),
                    present=tuple(e for e in SEED_EMAILS if e in before),
                )
            )
    return SeedReport(tuple(results))


async def clear_seeds(db: Database, *, force: bool = False, generated: bool = False) -> ClearReport:
    """Delete the seed users (and the generated ones if asked) in one transaction."""
    async with db.acquire() as conn:
        await guard(conn, db.settings, "clear seeded users", force=force)
        await require_table(conn)
        async with conn.transaction():
            seed_status = await conn.execute(
                "DELETE FROM users WHERE lower(email) = ANY($1::text[])", list(SEED_EMAILS)
            )
            bulk_status = "DELETE 0"
            if generated:
                bulk_status = await conn.execute(
                    "DELETE FROM users WHERE lower(email) LIKE $1", f"%@{BULK_EMAIL_DOMAIN}"
                )
    return ClearReport(_count(seed_status), _count(bulk_status))


def _count(status: str) -> int:
    """Row count of a command tag such as ``DELETE 3``."""
    return int(status.rsplit(" ", 1)[-1])
