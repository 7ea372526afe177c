"""Apply, roll back and inspect the SQL migrations in ``sql/`` through yoyo's Python API.

The CLI, the web app's health check and the tests all come through here, so they see exactly
what ``yoyo list`` shows a DBA.  yoyo runs each migration in its own transaction and serialises
concurrent appliers with its ``yoyo_lock`` table; we add a retry around yoyo's first-time
creation of its bookkeeping tables, which two brand-new appliers can otherwise race on.

yoyo is synchronous (psycopg2); async callers run these functions in a worker thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dal.dsn import database_name, dsn_secrets, maintenance_dsn, redact_dsn, scrub
from dal.errors import DatabaseUnavailable, MigrationError

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
LOCK_TIMEOUT = 60.0  # seconds a second applier waits for the first one


@dataclass(frozen=True)
class MigrationStatus:
    applied: tuple[str, ...]
    pending: tuple[str, ...]

    @property
    def head(self) -> str | None:
        """Id of the newest applied migration (None on an empty database)."""
        return self.applied[-1] if self.applied else None


def _read(sources: Path) -> Any:
    from yoyo import read_migrations

    if not sources.is_dir():
        raise MigrationError(f"migrations folder not found: {sources}")
    return read_migrations(str(sources))


@contextmanager
def _backend(dsn: str) -> Iterator[Any]:
    import psycopg2
    from yoyo import get_backend

    backend = None
    for attempt in range(5):
        try:
            backend = get_backend(dsn)
            break
        except psycopg2.IntegrityError:
            # Two first-time appliers both ran CREATE TABLE IF NOT EXISTS for yoyo's own tables;
            # the loser sees a duplicate pg_type row.  The tables now exist: try again.
            time.sleep(0.1 * (attempt + 1))
        except psycopg2.Error as exc:  # refused, auth failed, or a DSN libpq cannot parse
            raise _cannot_connect(dsn, exc) from None
    if backend is None:
        raise MigrationError("could not initialise yoyo's bookkeeping tables")
    try:
        yield backend
    finally:
        backend.connection.close()


def _cannot_connect(dsn: str, exc: BaseException) -> DatabaseUnavailable:
    """One line naming the target and the driver's reason; libpq quotes parts of the DSN back
    (e.g. a malformed percent-escape of the password), so its secrets are scrubbed out."""
    reason = scrub(_first_line(exc), dsn_secrets(dsn))
    return DatabaseUnavailable(f"cannot connect to {redact_dsn(dsn)}: {reason}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _ids(migrations: Any) -> tuple[str, ...]:
    return tuple(m.id for m in migrations)


def migration_ids(sources: Path = SQL_DIR) -> tuple[str, ...]:
    """Ids of the migrations in ``sources``, in the order yoyo applies them (no database)."""
    return _ids(_read(sources))


def status(dsn: str, sources: Path = SQL_DIR) -> MigrationStatus:
    migrations = _read(sources)
    with _backend(dsn) as backend:
        pending = _ids(backend.to_apply(migrations))
        applied = tuple(m.id for m in migrations if m.id not in pending)
    return MigrationStatus(applied=applied, pending=pending)


def apply(dsn: str, sources: Path = SQL_DIR) -> list[str]:
    """Apply every pending migration; return the ids applied (empty when up to date)."""
    migrations = _read(sources)
    with _backend(dsn) as backend, _locked(backend):
        todo = backend.to_apply(migrations)
        _run(backend.apply_migrations, todo, "apply")
        return list(_ids(todo))


def rollback(
    dsn: str, *, to: str | None = None, all_: bool = False, sources: Path = SQL_DIR
) -> list[str]:
    """Roll back the newest migration, everything after ``to``, or everything (``all_``)."""
    migrations = _read(sources)
    with _backend(dsn) as backend, _locked(backend):
        applied = list(backend.to_rollback(migrations))  # newest first
        if to is not None:
            ids = [m.id for m in migrations]
            if to not in ids:
                raise MigrationError(f"unknown migration id {to!r} (known: {', '.join(ids)})")
            if to not in _ids(applied):
                raise MigrationError(f"migration {to!r} is not applied")
            cut = _ids(applied).index(to)
            todo = applied[:cut]
        elif all_:
            todo = applied
        else:
            todo = applied[:1]
        _run(backend.rollback_migrations, todo, "roll back")
        return list(_ids(todo))


@contextmanager
def _locked(backend: Any) -> Iterator[None]:
    from yoyo.exceptions import LockTimeout

    try:
        with backend.lock(timeout=LOCK_TIMEOUT):
            yield
    except LockTimeout:
        raise MigrationError(
            f"another migration run holds the yoyo lock (waited {LOCK_TIMEOUT:g}s); if no other "
            "run is active, clear it with `yoyo break-lock`"
        ) from None


def _run(action: Any, todo: Any, verb: str) -> None:
    import psycopg2

    if not todo:
        return
    try:
        action(todo)
    except psycopg2.Error as exc:
        raise MigrationError(f"could not {verb} migrations: {_first_line(exc)}") from None


def ensure_database(dsn: str) -> bool:
    """Create the database ``dsn`` names unless it exists; return True when it was created."""
    import psycopg2
    from psycopg2 import sql

    name = database_name(dsn)
    try:
        conn = psycopg2.connect(maintenance_dsn(dsn))
    except psycopg2.Error as exc:
        raise _cannot_connect(maintenance_dsn(dsn), exc) from None
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is not None:
                return False
            try:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except psycopg2.errors.DuplicateDatabase:
                return False  # created concurrently by another process
            except psycopg2.Error as exc:
                raise MigrationError(f"cannot create database {name}: {_first_line(exc)}") from None
            return True
    finally:
        conn.close()
