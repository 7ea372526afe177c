"""Dry runs: the exact SQL ``migrate`` or ``rollback`` would run, as a psql-runnable plan.

A DBA reviews the plan or hands it to a change board, then may run it with
``psql -v ON_ERROR_STOP=1 -f plan.sql``: it carries the session limits, each migration file
verbatim (inside ``BEGIN``/``COMMIT`` unless the file says ``-- transactional: false``) and the
bookkeeping statements yoyo and our checksum table would write, so the database ends with the
same catalog and the same ``status`` as after ``migrate``.  Building the plan only reads: it
takes no lock and writes nothing (it needs yoyo's tables to exist, as on any database that
was migrated once).
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dal import checksums, migrations
from dal.dsn import describe_dsn
from dal.queries import load

SQL = load("migrations")


def migrate_plan(
    dsn: str, sources: Path = migrations.SQL_DIR, policy: migrations.RunPolicy | None = None
) -> str:
    """The plan of every pending migration, in order (refused if an applied file changed)."""
    found = migrations.read(sources)
    with migrations.backend_for(dsn) as backend:
        applied = tuple(m.id for m in backend.to_rollback(found))
        changed = migrations.compare_checksums(backend, found, applied, baseline=False)
        if changed:
            raise migrations.ChecksumMismatch("; ".join(c.line() for c in changed))
        todo = list(backend.to_apply(found))
        recorded = checksums.recorded(backend.connection)
        writer = _Writer(backend.connection, dsn, policy or migrations.RunPolicy(), "migrate")
        writer.statement(SQL["create_checksum_table"].sql)
        for m in found:  # applied before checksums existed: migrate records them first
            if m.id in applied and m.id not in recorded:
                writer.record(checksums.file_hashes(m.id, Path(m.path)))
        for m in todo:
            writer.migration(m, Path(m.path), "apply")
    return writer.text()


def rollback_plan(
    dsn: str,
    *,
    to: str | None = None,
    all_: bool = False,
    sources: Path = migrations.SQL_DIR,
    policy: migrations.RunPolicy | None = None,
) -> str:
    """The plan of the rollbacks ``rollback`` would run with the same arguments."""
    found = migrations.read(sources)
    with migrations.backend_for(dsn) as backend:
        todo = migrations.select_rollback(backend, found, to=to, all_=all_)
        writer = _Writer(backend.connection, dsn, policy or migrations.RunPolicy(), "rollback")
        for m in todo:
            writer.migration(m, checksums.rollback_path(Path(m.path)), "rollback")
    return writer.text()


class _Writer:
    """Accumulates the plan; literal values are quoted by psycopg2 (``mogrify``)."""

    def __init__(self, connection: Any, dsn: str, policy: migrations.RunPolicy, verb: str):
        self._conn = connection
        self._lines = [
            f"-- defeah-db {verb} --dry-run for {describe_dsn(dsn)}, "
            f"{datetime.now(UTC).isoformat(timespec='seconds')}",
            "-- Apply with: psql -v ON_ERROR_STOP=1 -f <this file>",
            SQL["plan_session_limits"].sql.format(
                lock_timeout=_quoted_ms(policy.lock_timeout),
                statement_timeout=_quoted_ms(policy.statement_timeout),
            )
            + ";",
        ]

    def statement(self, sql: str, params: dict[str, Any] | None = None) -> None:
        with self._conn.cursor() as cur:
            text = cur.mogrify(sql, params).decode() if params is not None else sql
        self._lines.append(text.rstrip().removesuffix(";") + ";")

    def record(self, hashes: checksums.FileHashes) -> None:
        self.statement(SQL["record_checksum"].pyformat, hashes.__dict__)

    def migration(self, migration: Any, path: Path, direction: str) -> None:
        transactional = migration.use_transactions
        self._lines.append(f"\n-- {direction} {migration.id} ({path.name})")
        if transactional:
            self._lines.append("BEGIN;")
        else:
            self._lines.append("-- transactional: false -- each statement runs on its own")
        body = path.read_text().replace("\r\n", "\n").rstrip()
        self._lines.append(body if body.endswith(";") else body + "\n;")
        ids = {"migration_hash": migration.hash, "migration_id": migration.id}
        if direction == "apply":
            self.statement(SQL["plan_mark_applied"].pyformat, ids)
            self.record(checksums.file_hashes(migration.id, Path(migration.path)))
        else:
            self.statement(SQL["plan_unmark_applied"].pyformat, ids)
            self.statement(SQL["forget_checksum"].pyformat, {"migration_id": migration.id})
        log = {**ids, "operation": direction, "hostname": socket.getfqdn()}
        self.statement(SQL["plan_log"].pyformat, log)
        if transactional:
            self._lines.append("COMMIT;")

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def _quoted_ms(seconds: float) -> str:
    return f"'{round(seconds * 1000)}ms'"
