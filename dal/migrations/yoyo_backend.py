"""Everything that touches yoyo's internals, in one place: reading the migration folder, a
backend on a DSN (with the retry two first-time appliers need), yoyo's lock, and the
read-only recording backend of dry runs.  The runner and the dry run use these functions; no
other module imports yoyo.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dal.db.admin import cannot_connect
from dal.db.failures import first_line
from dal.errors import MigrationError
from dal.migrations import checksums
from dal.migrations.files import file_ids
from dal.queries import load

MIGRATIONS_SQL = load("migrations")
LOCK_TIMEOUT = 60.0  # seconds a second applier waits for the first one


def ids(migrations: Any) -> tuple[str, ...]:
    return tuple(m.id for m in migrations)


def applied_newest_first(backend: Any, migrations: Any) -> Any:
    """The applied ones of ``migrations``, newest first (yoyo's rollback order)."""
    return backend.to_rollback(migrations)


def pending(backend: Any, migrations: Any) -> Any:
    """The ones of ``migrations`` not applied yet, in the order yoyo applies them."""
    return backend.to_apply(migrations)


def read(sources: Path) -> Any:
    from yoyo import read_migrations

    file_ids(sources)  # the folder exists and every id is well-formed
    return read_migrations(str(sources))


@contextmanager
def backend_for(dsn: str) -> Iterator[Any]:
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
        except psycopg2.OperationalError as exc:
            if "unsupported startup parameter: options" in str(exc):
                raise MigrationError(
                    "the server refused the lock_timeout/statement_timeout startup options "
                    "(PgBouncer?): migrate against PostgreSQL directly, or set "
                    "DEFEAH_PGBOUNCER=true to migrate without the limits"
                ) from None
            raise cannot_connect(dsn, exc) from None
        except psycopg2.Error as exc:  # auth failed, or a DSN libpq cannot parse
            raise cannot_connect(dsn, exc) from None
    if backend is None:
        raise MigrationError("could not initialise yoyo's bookkeeping tables")
    try:
        yield backend
    finally:
        backend.connection.close()


class _NoRows:
    """What a recorded (not run) statement returns to yoyo: a cursor with no rows."""

    def fetchone(self) -> None:
        return None

    def fetchall(self) -> list[Any]:
        return []


class _Recorder:
    """Mixed into yoyo's backend class for dry runs: reads run, everything else is recorded.

    yoyo creates its bookkeeping tables on first use (``get_backend`` and its internal schema
    upgrade).  A dry run must write nothing, yet its plan must hold exactly that DDL, so that
    ``psql -f plan.sql`` ends where ``migrate`` would: so this backend lets yoyo's own code run,
    keeps its writes (and its transaction control) as SQL text, and runs only its ``SELECT``s,
    inside a read-only transaction (a write that slipped through would fail, not land).  A read
    of a bookkeeping table that does not exist yet (the recording "created" it) returns no rows.
    """

    recorded: list[str]
    created: set[str]  # yoyo's bookkeeping tables absent from the database

    def execute(self, sql: str, params: Any = None) -> Any:
        from yoyo import utils

        cursor = self.cursor()  # type: ignore[attr-defined]
        text, args = utils.change_param_style("pyformat", sql, params)
        if text.lstrip().upper().startswith("SELECT"):
            if any(f'"{table}"' in text for table in self.created):
                return _NoRows()
            cursor.execute(text, args)
            return cursor
        self.recorded.append(cursor.mogrify(text, args).decode().strip())
        return _NoRows()

    def begin(self) -> None:
        self._in_transaction = True
        self.recorded.append("BEGIN")

    def commit(self) -> None:
        self._in_transaction = False
        self.recorded.append("COMMIT")

    def rollback(self) -> None:
        self._in_transaction = False
        self.recorded.append("ROLLBACK")

    @contextmanager
    def lock(self, timeout: float = 10) -> Iterator[None]:
        yield  # a dry run takes no lock: yoyo_lock rows never outlive a run anyway


@dataclass
class ReadOnlyRun:
    """A dry run's view of the database: yoyo's backend on a read-only transaction, the
    bookkeeping DDL ``migrate`` would run first, and which bookkeeping tables exist."""

    backend: Any
    bookkeeping: list[str]
    yoyo_tables: bool
    checksum_table: bool


@contextmanager
def read_only(dsn: str) -> Iterator[ReadOnlyRun]:
    """yoyo's view of ``dsn`` without writing anything (see ``_Recorder``)."""
    import psycopg2
    from yoyo import internalmigrations
    from yoyo.backends.base import get_backend_class
    from yoyo.connections import default_migration_table, parse_uri

    parsed = parse_uri(dsn)
    recorder = type("RecordingBackend", (_Recorder, get_backend_class(parsed.scheme)), {})
    try:
        backend = recorder(parsed, default_migration_table)
    except psycopg2.Error as exc:
        raise cannot_connect(dsn, exc) from None
    backend.recorded, backend.created = [], set()
    try:
        with backend.connection.cursor() as cur:
            cur.execute(MIGRATIONS_SQL["begin_read_only"].sql)
        tables = set(backend.list_tables())
        yoyo_own = {backend.migration_table, backend.log_table, backend.version_table}
        backend.created = yoyo_own - tables
        if backend.lock_table not in tables:
            backend.recorded.append(backend.format_sql(backend.create_lock_table_sql))
        if internalmigrations.needs_upgrading(backend):
            internalmigrations.upgrade(backend)
        backend._internal_schema_updated = True
        yoyo_tables = backend.migration_table in tables
        if not yoyo_tables:  # nothing applied yet; yoyo's read would fail on the missing table
            backend.get_applied_migration_hashes = list
        bookkeeping, backend.recorded = backend.recorded, []
        yield ReadOnlyRun(
            backend, bookkeeping, yoyo_tables, checksums.table_exists(backend.connection)
        )
    except psycopg2.Error as exc:
        raise MigrationError(f"could not read the migration state: {first_line(exc)}") from None
    finally:
        backend.connection.close()  # ends the read-only transaction: nothing to keep


@contextmanager
def locked(backend: Any) -> Iterator[None]:
    """yoyo's lock around the block.  When the session dies inside (terminated, server gone),
    yoyo's release of the lock fails with a raw driver error that would hide why: the block's
    own ``MigrationError`` is raised instead, or one naming the lost connection."""
    import psycopg2
    from yoyo.exceptions import LockTimeout

    try:
        with backend.lock(timeout=LOCK_TIMEOUT):
            yield
    except LockTimeout:
        raise MigrationError(
            f"another migration run holds the yoyo lock (waited {LOCK_TIMEOUT:g}s); if no other "
            "run is active, clear it with `yoyo break-lock`"
        ) from None
    except psycopg2.Error as exc:
        if isinstance(exc.__context__, MigrationError):
            raise exc.__context__ from None
        raise MigrationError(f"the migration session failed: {first_line(exc)}") from None
