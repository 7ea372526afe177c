"""Dry runs: the exact SQL ``migrate`` or ``rollback`` would run, as a psql-runnable plan.

A DBA reviews the plan or hands it to a change board, then may run it with
``psql -v ON_ERROR_STOP=1 -f plan.sql``: it carries the session limits, the bookkeeping DDL
yoyo and our checksum table would create on a database never migrated, the INVALID indexes an
interrupted concurrent build left (``migrate`` drops them first), each migration file verbatim
(inside ``BEGIN``/``COMMIT`` unless the file says ``-- transactional: false``) and the
bookkeeping rows ``migrate`` would write, so the database ends with the same catalog and the
same ``status`` as after ``migrate``.

Building the plan writes nothing: it runs in a read-only transaction, takes no lock and creates
no table (``yoyo_backend.read_only``), on an empty database too.  Nothing to do is said in the
plan itself ("nothing to apply").
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dal.db.dsn import describe_dsn
from dal.migrations import checksums, runner, yoyo_backend
from dal.migrations.files import SQL_DIR
from dal.queries import load

MIGRATIONS_SQL = load("migrations")


def migrate_plan(dsn: str, sources: Path = SQL_DIR, policy: runner.RunPolicy | None = None) -> str:
    """The plan of every pending migration, in order (refused if an applied file changed)."""
    found = yoyo_backend.read(sources)
    with yoyo_backend.read_only(dsn) as run:
        backend = run.backend
        applied = tuple(m.id for m in yoyo_backend.applied_newest_first(backend, found))
        changed = runner.compare_checksums(backend, found, applied, baseline=False)
        if changed:
            raise runner.ChecksumMismatch("; ".join(c.line() for c in changed))
        todo = list(yoyo_backend.pending(backend, found))
        recorded = checksums.recorded(backend.connection)
        writer = _Writer(backend.connection, dsn, policy or runner.RunPolicy(), "migrate")
        if run.bookkeeping:
            writer.comment("yoyo's bookkeeping tables, as yoyo creates them on first use")
            for statement in run.bookkeeping:
                writer.statement(statement)
        if not run.checksum_table:
            writer.comment("defeah-db's migration checksums (docs/runner.md#checksums)")
            writer.statement(MIGRATIONS_SQL["create_checksum_table"].sql)
        for m in found:  # applied before checksums existed: migrate records them first
            if m.id in applied and m.id not in recorded:
                writer.record(checksums.file_hashes(m.id, Path(m.path)))
        for m in todo:
            if not m.use_transactions:
                for index in runner.invalid_concurrent_indexes(backend.connection, m):
                    writer.drop_invalid_index(m.id, index)
            writer.migration(m, Path(m.path), "apply")
        head = applied[0] if applied else None  # to_rollback lists the newest first
    return writer.text(nothing=f"nothing to apply: the head is {head or '(none)'}")


def rollback_plan(
    dsn: str,
    *,
    to: str | None = None,
    all_: bool = False,
    sources: Path = SQL_DIR,
    policy: runner.RunPolicy | None = None,
) -> str:
    """The plan of the rollbacks ``rollback`` would run with the same arguments."""
    found = yoyo_backend.read(sources)
    with yoyo_backend.read_only(dsn) as run:
        todo = runner.select_rollback(run.backend, found, to=to, all_=all_)
        runner.require_reviewed_rollbacks(run.backend, todo)
        writer = _Writer(run.backend.connection, dsn, policy or runner.RunPolicy(), "rollback")
        for m in todo:
            writer.migration(m, checksums.rollback_path(Path(m.path)), "rollback")
    return writer.text(nothing="nothing to roll back")


def comment_line(text: str) -> str:
    """``text`` as one SQL comment line that stays one line for psql.

    A migration id, a file, index or database name reaches the plan's comments; ``psql -f``
    ends a ``--`` comment at a newline or carriage return, and whatever follows (``\\! cmd``)
    would run as a meta-command.  Every character that is not printable (line breaks, Unicode
    line separators, controls) is written as its ``\\x``/``\\u`` escape instead; a backslash
    inside a comment is inert, so nothing else needs escaping.
    """
    shown = "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )
    return f"-- {shown}"


class _Writer:
    """Accumulates the plan; literal values are quoted by psycopg2 (``mogrify``), names in
    comments are escaped (``comment_line``)."""

    def __init__(self, connection: Any, dsn: str, policy: runner.RunPolicy, verb: str):
        self._conn = connection
        self._head = [
            comment_line(
                f"defeah-db {verb} --dry-run for {describe_dsn(dsn)}, "
                f"{datetime.now(UTC).isoformat(timespec='seconds')}"
            ),
        ]
        self._limits = (
            MIGRATIONS_SQL["plan_session_limits"].sql.format(
                lock_timeout=_quoted_ms(policy.lock_timeout),
                statement_timeout=_quoted_ms(policy.statement_timeout),
            )
            + ";"
        )
        self._lines: list[str] = []

    def comment(self, text: str) -> None:
        self._lines.append("\n" + comment_line(text))

    def statement(self, sql: str, params: dict[str, Any] | None = None) -> None:
        with self._conn.cursor() as cur:
            text = cur.mogrify(sql, params).decode() if params is not None else sql
        self._lines.append(text.rstrip().removesuffix(";") + ";")

    def record(self, hashes: checksums.FileHashes) -> None:
        self.statement(MIGRATIONS_SQL["record_checksum"].pyformat, hashes.__dict__)

    def drop_invalid_index(self, migration_id: str, index: str) -> None:
        from psycopg2 import sql

        self.comment(f"{migration_id}: an interrupted concurrent build left {index} INVALID")
        drop = sql.SQL(MIGRATIONS_SQL["drop_index_concurrently"].sql).format(
            index=sql.Identifier(index)
        )
        self._lines.append(drop.as_string(self._conn).rstrip().removesuffix(";") + ";")

    def migration(self, migration: Any, path: Path, direction: str) -> None:
        transactional = migration.use_transactions
        self.comment(f"{direction} {migration.id} ({path.name})")
        if transactional:
            self._lines.append("BEGIN;")
        else:
            self._lines.append("-- transactional: false -- each statement runs on its own")
        body = path.read_text().replace("\r\n", "\n").rstrip()
        self._lines.append(body if body.endswith(";") else body + "\n;")
        ids = {"migration_hash": migration.hash, "migration_id": migration.id}
        if direction == "apply":
            self.statement(MIGRATIONS_SQL["plan_mark_applied"].pyformat, ids)
            self.record(checksums.file_hashes(migration.id, Path(migration.path)))
        else:
            self.statement(MIGRATIONS_SQL["plan_unmark_applied"].pyformat, ids)
            self.statement(
                MIGRATIONS_SQL["forget_checksum"].pyformat, {"migration_id": migration.id}
            )
        log = {**ids, "operation": direction, "hostname": socket.getfqdn()}
        self.statement(MIGRATIONS_SQL["plan_log"].pyformat, log)
        if transactional:
            self._lines.append("COMMIT;")

    def text(self, nothing: str) -> str:
        if not self._lines:
            return "\n".join([*self._head, comment_line(nothing)]) + "\n"
        head = [*self._head, "-- Apply with: psql -v ON_ERROR_STOP=1 -f <this file>", self._limits]
        return "\n".join([*head, *self._lines]) + "\n"


def _quoted_ms(seconds: float) -> str:
    return f"'{round(seconds * 1000)}ms'"
