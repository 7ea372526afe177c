"""Development seeds: run the ``seeds/*.sql`` files, remove what they inserted, guard production.

The SQL files are the single definition of the seed data, so a developer with only ``psql`` gets
exactly what ``defeah-db seed`` gives.  This module adds what plain SQL cannot: a report of which
seed users were inserted and which were already there, a ``clear`` that can only ever touch seed
rows, and a refusal to do either against a production database (``dal.db.production_guard``).

Which rows are "seeded"?  Exactly the users whose email (case-insensitively) is in
``SEED_EMAILS``, plus -- only when asked -- the bulk generator's users, whose addresses all end in
``@bulk.defeah.test`` (``.test`` is reserved by RFC 2606, so no real person can sign up with one).
An explicit list keeps ``clear`` safe with no schema change: no marker column that a real row
could carry by accident.  tests/test_seeds.py checks that the seed files insert exactly this list.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from dal.db.connections import Connection
from dal.db.database import Database
from dal.db.failures import first_line
from dal.db.paths import data_folder
from dal.db.production_guard import guard
from dal.db.statements import run, run_count
from dal.errors import SeedError
from dal.queries import load

log = logging.getLogger(__name__)

SEEDS_DIR = data_folder("seeds")

SEED_EMAILS: tuple[str, ...] = ("admin@defeah.com", "demo@defeah.com", "test@defeah.com")
BULK_EMAIL_DOMAIN = "bulk.defeah.test"

# The transaction-scoped advisory lock every seed file takes first (seeds/*.sql say why).
SEED_LOCK_KEY = 4733620119


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


OPS_SQL = load("ops")


async def require_table(conn: Connection) -> None:
    if not (await run(conn, OPS_SQL["users_table_exists"], {}))[0]["present"]:
        raise SeedError("table users does not exist; run `defeah-db migrate` first")


async def _present(conn: Connection) -> set[str]:
    rows = await run(conn, OPS_SQL["seed_users_present"], {"emails": list(SEED_EMAILS)})
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
        raise SeedError(f"{name}: {first_line(exc)}; nothing of it was applied") from None


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
            seeds = await run_count(
                conn, OPS_SQL["delete_seed_users"], {"emails": list(SEED_EMAILS)}
            )
            bulk = 0
            if generated:
                pattern = {"pattern": f"%@{BULK_EMAIL_DOMAIN}"}
                bulk = await run_count(conn, OPS_SQL["delete_generated_users"], pattern)
    return ClearReport(seeds, bulk)
