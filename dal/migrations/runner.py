"""Apply, roll back and inspect the SQL migrations in ``sql/`` through yoyo's Python API.

The CLI, the web app's health check and the tests all come through here, so they see exactly
what ``yoyo list`` shows a DBA.  yoyo runs each migration in its own transaction and serialises
concurrent appliers with its ``yoyo_lock`` table; we add a retry around yoyo's first-time
creation of its bookkeeping tables, which two brand-new appliers can otherwise race on.

What a DBA expects on top of yoyo:

* content checksums (``dal.migrations.checksums``): an applied file that changed stops ``apply``
  before any DDL, and ``status`` reports it;
* every migration session runs with ``lock_timeout`` and ``statement_timeout`` (``RunPolicy``),
  so DDL stuck behind a long transaction gives up instead of queueing every reader behind it;
  a lock timeout is retried with backoff a bounded number of times, then reported with the
  blocking pids (``dal.migrations.lockwatch``).  yoyo rolls the failed migration's transaction
  back, so nothing is half-applied;
* non-transactional migrations (``-- transactional: false``, for ``CREATE INDEX CONCURRENTLY``)
  must be idempotent; an INVALID index left by an interrupted concurrent build of the migration
  about to run is dropped concurrently first, so the re-run rebuilds it.

yoyo is synchronous (psycopg2); async callers run these functions in a worker thread.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from dal.db.failures import first_line
from dal.db.settings import Settings
from dal.errors import MigrationError
from dal.migrations import checksums
from dal.migrations.files import SQL_DIR
from dal.migrations.lockwatch import Blocker, BlockerWatch
from dal.migrations.yoyo_backend import (
    applied_newest_first,
    backend_for,
    ids,
    locked,
    pending,
    read,
)
from dal.queries import load

log = logging.getLogger(__name__)

MIGRATIONS_SQL = load("migrations")
CONCURRENT_INDEX = re.compile(
    r"CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+(?:IF\s+NOT\s+EXISTS\s+)?\"?(\w+)",
    re.IGNORECASE,
)


class ChecksumMismatch(MigrationError):
    """An applied migration file was edited; nothing was run."""


class LockTimeoutExhausted(MigrationError):
    """A migration kept waiting past lock_timeout on every attempt; nothing of it is applied."""


@dataclass(frozen=True)
class RunPolicy:
    """Session limits of a migration run and its bounded retry on lock timeouts."""

    lock_timeout: float = 5.0
    statement_timeout: float = 1800.0
    retries: int = 3
    backoff: float = 1.0  # seconds before the first retry, doubled for each next one
    # PgBouncer refuses the ``options`` startup parameter that carries the limits; in
    # transaction mode a session SET would leak to other clients, so there are none.
    session_limits: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> RunPolicy:
        return cls(
            lock_timeout=settings.migration_lock_timeout,
            statement_timeout=settings.migration_statement_timeout,
            retries=settings.migration_retries,
            session_limits=not settings.pgbouncer,
        )

    def session_dsn(self, dsn: str, application_name: str) -> str:
        """``dsn`` whose sessions (yoyo opens one per migration) start with our limits."""
        parts = urlsplit(dsn)
        query = dict(parse_qsl(parts.query))
        query["application_name"] = application_name
        if not self.session_limits:
            return urlunsplit(parts._replace(query=urlencode(query)))
        limits = (
            f"-c lock_timeout={_ms(self.lock_timeout)} "
            f"-c statement_timeout={_ms(self.statement_timeout)}"
        )
        query["options"] = f"{query.get('options', '')} {limits}".strip()
        return urlunsplit(parts._replace(query=urlencode(query)))


def _ms(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


@dataclass(frozen=True)
class MigrationStatus:
    applied: tuple[str, ...]
    pending: tuple[str, ...]
    changed: tuple[checksums.Mismatch, ...] = ()

    @property
    def head(self) -> str | None:
        """Id of the newest applied migration (None on an empty database)."""
        return self.applied[-1] if self.applied else None


def invalid_concurrent_indexes(connection: Any, migration: Any) -> list[str]:
    """INVALID indexes that ``migration`` builds concurrently, left by an interrupted build:
    ``migrate`` drops them before running it, and the dry run's plan says so."""
    wanted = set(CONCURRENT_INDEX.findall(Path(migration.path).read_text()))
    if not wanted:
        return []
    with connection.cursor() as cur:
        cur.execute(MIGRATIONS_SQL["invalid_indexes"].pyformat)
        return [row[0] for row in cur.fetchall() if row[0] in wanted]


def migration_ids(sources: Path = SQL_DIR) -> tuple[str, ...]:
    """Ids of the migrations in ``sources``, in the order yoyo applies them (no database)."""
    return ids(read(sources))


def status(dsn: str, sources: Path = SQL_DIR) -> MigrationStatus:
    migrations = read(sources)
    with backend_for(dsn) as backend:
        todo = ids(pending(backend, migrations))
        applied = tuple(m.id for m in migrations if m.id not in todo)
        changed = compare_checksums(backend, migrations, applied, baseline=False)
    return MigrationStatus(applied=applied, pending=todo, changed=tuple(changed))


def compare_checksums(
    backend: Any, migrations: Any, applied: tuple[str, ...], *, baseline: bool
) -> list[checksums.Mismatch]:
    """Mismatches between recorded and current hashes of the applied migrations.

    ``baseline``: record the hashes of applied migrations that have none yet (applied before
    checksums existed, or by plain ``yoyo apply``); their reviewed content is today's file.
    """
    recorded = checksums.recorded(backend.connection)
    found: list[checksums.Mismatch] = []
    for m in migrations:
        if m.id not in applied:
            continue
        now = checksums.file_hashes(m.id, Path(m.path))
        was = recorded.get(m.id)
        if was is not None:
            found += checksums.mismatches(Path(m.path), was, now)
        elif baseline:
            checksums.record(backend.connection, now)
    return found


def apply(dsn: str, sources: Path = SQL_DIR, policy: RunPolicy | None = None) -> list[str]:
    """Apply every pending migration; return the ids applied (empty when up to date).

    Refuses (``ChecksumMismatch``, before any DDL) when an applied file changed.
    """
    policy = policy or RunPolicy()
    migrations = read(sources)
    app = f"defeah-db migrate {uuid.uuid4().hex[:8]}"
    with backend_for(policy.session_dsn(dsn, app)) as backend, locked(backend):
        checksums.ensure_table(backend.connection)
        applied = tuple(m.id for m in applied_newest_first(backend, migrations))
        changed = compare_checksums(backend, migrations, applied, baseline=True)
        if changed:
            raise ChecksumMismatch("; ".join(c.line() for c in changed))
        todo = pending(backend, migrations)
        for migration in todo:
            _apply_one(backend, migration, dsn, app, policy)
            checksums.record(
                backend.connection, checksums.file_hashes(migration.id, Path(migration.path))
            )
        return list(ids(todo))


def _apply_one(backend: Any, migration: Any, dsn: str, app: str, policy: RunPolicy) -> None:
    """Apply ``migration``, retrying a lock timeout ``policy.retries`` times with backoff."""
    import psycopg2

    blockers: list[Blocker] = []
    for attempt in range(policy.retries + 1):
        if attempt:
            time.sleep(policy.backoff * 2 ** (attempt - 1))
        interval = min(0.2, policy.lock_timeout / 4)
        with BlockerWatch(dsn, app, interval) as watch:
            try:
                # The drop of a killed build's INVALID index waits on the same lock_timeout:
                # inside the attempt, so its timeout is retried and reported like the DDL's.
                if not migration.use_transactions:
                    _drop_invalid_indexes(backend, migration)
                backend.apply_one(migration)
                return
            except psycopg2.errors.LockNotAvailable:
                blockers = watch.seen or blockers
                log.warning("%s: lock timeout (attempt %d)", migration.id, attempt + 1)
            except psycopg2.Error as exc:
                raise MigrationError(
                    f"could not apply migrations: {migration.id}: {first_line(exc)}"
                ) from None
    named = "; ".join(b.describe() for b in blockers) or "no blocker seen by the sampler"
    raise LockTimeoutExhausted(
        f"{migration.id} not applied: lock_timeout {policy.lock_timeout:g}s reached on "
        f"{policy.retries + 1} attempt(s); blocked by {named}"
    )


def _drop_invalid_indexes(backend: Any, migration: Any) -> None:
    """Drop INVALID indexes this migration builds concurrently (left by a killed build)."""
    from psycopg2 import sql

    invalid = invalid_concurrent_indexes(backend.connection, migration)
    with backend.connection.cursor() as cur:
        for name in invalid:
            log.warning(
                "%s: dropping invalid index %s left by an interrupted build", migration.id, name
            )
            drop = sql.SQL(MIGRATIONS_SQL["drop_index_concurrently"].sql)
            cur.execute(drop.format(index=sql.Identifier(name)))


def accept_checksum(dsn: str, migration_id: str, sources: Path = SQL_DIR) -> checksums.FileHashes:
    """Re-record the hashes of applied ``migration_id`` after a deliberate, reviewed edit."""
    migrations = read(sources)
    known = {m.id: m for m in migrations}
    if migration_id not in known:
        raise MigrationError(f"unknown migration id {migration_id!r} (known: {', '.join(known)})")
    with backend_for(dsn) as backend, locked(backend):
        if migration_id not in ids(applied_newest_first(backend, migrations)):
            raise MigrationError(f"migration {migration_id!r} is not applied")
        checksums.ensure_table(backend.connection)
        hashes = checksums.file_hashes(migration_id, Path(known[migration_id].path))
        checksums.record(backend.connection, hashes)
        return hashes


def rollback(
    dsn: str,
    *,
    to: str | None = None,
    all_: bool = False,
    sources: Path = SQL_DIR,
    policy: RunPolicy | None = None,
) -> list[str]:
    """Roll back the newest migration, everything after ``to``, or everything (``all_``)."""
    policy = policy or RunPolicy()
    migrations = read(sources)
    app = f"defeah-db rollback {uuid.uuid4().hex[:8]}"
    with backend_for(policy.session_dsn(dsn, app)) as backend, locked(backend):
        todo = select_rollback(backend, migrations, to=to, all_=all_)
        require_reviewed_rollbacks(backend, todo)
        _run(lambda ms: _rollback_each(backend, ms), todo, "roll back")
        return list(ids(todo))


def select_rollback(backend: Any, migrations: Any, *, to: str | None, all_: bool) -> Any:
    """The applied migrations to roll back, newest first: the newest, all after ``to``, or
    all (``all_``)."""
    applied = list(applied_newest_first(backend, migrations))  # newest first
    if to is not None:
        known = [m.id for m in migrations]
        if to not in known:
            raise MigrationError(f"unknown migration id {to!r} (known: {', '.join(known)})")
        if to not in ids(applied):
            raise MigrationError(f"migration {to!r} is not applied")
        cut = ids(applied).index(to)
        todo = applied[:cut]
    elif all_:
        todo = applied
    else:
        todo = applied[:1]
    return todo


def require_reviewed_rollbacks(backend: Any, todo: Any) -> None:
    """Refuse (``ChecksumMismatch``, nothing run) when a rollback file about to run differs
    from the one recorded when its migration was applied: an edited rollback would otherwise
    run unreviewed.  A migration with no recorded hash (applied by plain ``yoyo apply``) has
    nothing to compare with; the next ``migrate`` records today's files as its baseline."""
    recorded = checksums.recorded(backend.connection)
    for migration in todo:
        was = recorded.get(migration.id)
        if was is None:
            continue
        path = checksums.rollback_path(Path(migration.path))
        now = checksums.content_hash(path)
        if now != was.rollback_sha256:
            changed = checksums.Mismatch(path.name, was.rollback_sha256, now)
            raise ChecksumMismatch(
                f"refusing to roll back: {changed.line()}; review it, then "
                f"`defeah-db accept-checksum {migration.id}`"
            )


def _rollback_each(backend: Any, todo: Any) -> None:
    for migration in todo:
        backend.rollback_one(migration)
        checksums.forget(backend.connection, migration.id)


def _run(action: Any, todo: Any, verb: str) -> None:
    import psycopg2

    if not todo:
        return
    try:
        action(todo)
    except psycopg2.Error as exc:
        raise MigrationError(f"could not {verb} migrations: {first_line(exc)}") from None
