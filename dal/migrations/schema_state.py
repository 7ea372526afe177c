"""The schema the code needs, compared with the database's: head, checksums and drift.

The code declares the newest migration it requires (``REQUIRED_HEAD``).  A database *behind* it
lacks objects the code uses, so the service is not ready.  A database *ahead* of it (holding
migrations this code does not know) is normal in a rolling deploy, where the new release
migrates before the old one stops: still ready, reported as ``warn``.  Changed migration files
and catalog drift are ``warn`` too: the service works, but a DBA should look.

Everything is read on one pooled connection from the catalogs and the two bookkeeping tables;
the files' hashes and the snapshot are read once per process, off the event loop.

The health routes read it inside ``Database.bounded`` with plain ``SELECT``s: yoyo's own status
read (``dal.migrations.runner.status``) creates its lock table and a temporary table on every
connection, and a probe must never write and never wait.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

import asyncpg

from dal.db.connections import Connection
from dal.db.database import Database
from dal.db.failures import describe_error
from dal.db.statements import run
from dal.errors import DatabaseUnavailable
from dal.migrations import checksums, drift
from dal.migrations.files import SQL_DIR, file_ids
from dal.migrations.runner import MigrationStatus
from dal.queries import load

# The newest migration shipped beside this code: code and sql/ are released together, so the
# code needs every migration it ships (a test keeps the docs' migration table in step).
REQUIRED_HEAD: Final = file_ids()[-1]
MIGRATIONS_SQL = load("migrations")


@dataclass(frozen=True)
class SchemaState:
    applied: tuple[str, ...]
    known: tuple[str, ...]
    changed: tuple[str, ...]
    drift: tuple[str, ...]
    partitions: tuple[str, ...] = ()

    @property
    def head(self) -> str | None:
        return self.applied[-1] if self.applied else None

    @property
    def behind(self) -> bool:
        return REQUIRED_HEAD not in self.applied

    @property
    def ahead(self) -> tuple[str, ...]:
        """Applied migrations this code does not know (a newer release applied them)."""
        return tuple(m for m in self.applied if m not in self.known)

    @property
    def status(self) -> str:
        if self.behind:
            return "fail"
        return "warn" if self.ahead or self.changed or self.drift or self.partitions else "pass"

    def output(self) -> str | None:
        parts = []
        if self.behind:
            parts.append(f"database head {self.head or '(none)'} is behind {REQUIRED_HEAD}")
        if self.ahead:
            parts.append(f"ahead of this code by {', '.join(self.ahead)}")
        parts += [f"checksum: {c}" for c in self.changed]
        parts += [f"drift: {d}" for d in self.drift]
        parts += [f"partition: {p}" for p in self.partitions]
        return "; ".join(parts) or None

    def to_json(self) -> dict[str, Any]:
        return {
            "head": self.head,
            "required": REQUIRED_HEAD,
            "behind": self.behind,
            "ahead": list(self.ahead),
            "checksums": "changed" if self.changed else "ok",
            "drift": len(self.drift),
            "partitions": list(self.partitions),
        }


@functools.cache
def _files() -> tuple[dict[str, checksums.FileHashes], dict[str, str]]:
    migrations = sorted(p for p in SQL_DIR.glob("*.sql") if not p.name.endswith(".rollback.sql"))
    hashes = {p.stem: checksums.file_hashes(p.stem, p) for p in migrations}
    return hashes, drift.expected()


async def applied_ids(conn: Connection) -> tuple[str, ...]:
    """Ids recorded as applied; none when yoyo never ran here (no bookkeeping table yet)."""
    tables = (await run(conn, MIGRATIONS_SQL["bookkeeping_tables"], {}))[0]
    if not tables["yoyo"]:
        return ()
    return tuple(r[0] for r in await run(conn, MIGRATIONS_SQL["applied_migration_ids"], {}))


async def read_status(db: Database, known: tuple[str, ...], timeout: float) -> MigrationStatus:
    """Which of the ``known`` migration ids are applied and which are pending, within ``timeout``.

    Raises ``DatabaseUnavailable`` (no connection, no answer in time, the table locked).
    """
    try:
        async with db.bounded(timeout) as conn:
            done = set(await applied_ids(conn))
    except TimeoutError:
        raise DatabaseUnavailable(f"no answer within {timeout:g}s") from None
    except asyncpg.exceptions.PostgresError as exc:
        raise DatabaseUnavailable(
            f"cannot read the migration state: {describe_error(exc)}"
        ) from None
    applied = tuple(m for m in known if m in done)
    pending = tuple(m for m in known if m not in done)
    return MigrationStatus(applied=applied, pending=pending)


async def read(conn: Any, retention: timedelta | None = None) -> SchemaState:
    """The schema state seen through ``conn`` (a pooled asyncpg connection); with
    ``retention`` (the sign-in event log's), partitions kept past it are findings."""
    files, snapshot = await asyncio.to_thread(_files)
    tables = (await run(conn, MIGRATIONS_SQL["bookkeeping_tables"], {}))[0]
    applied = await applied_ids(conn)
    changed: list[str] = []
    if tables["checksums"]:
        for row in await run(conn, MIGRATIONS_SQL["recorded_checksums"], {}):
            now = files.get(row["migration_id"])
            if now is not None:
                was = checksums.FileHashes(*row)
                changed += [
                    m.file
                    for m in checksums.mismatches(SQL_DIR / f"{now.migration_id}.sql", was, now)
                ]
    live = await drift.read_live(conn, retention)
    return SchemaState(
        applied,
        tuple(files),
        tuple(changed),
        tuple(d.line() for d in live.differences(snapshot)),
        tuple(f.text for f in live.findings),
    )
