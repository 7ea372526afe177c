"""Apply, roll back and inspect the SQL migrations in ``sql/`` through yoyo's Python API.

The CLI, the web app's health check and the tests all come through here, so they see exactly
what ``yoyo list`` shows a DBA.  yoyo runs each migration in its own transaction and serialises
concurrent appliers with its ``yoyo_lock`` table; we add a retry around yoyo's first-time
creation of its bookkeeping tables, which two brand-new appliers can otherwise race on.

What a DBA expects on top of yoyo:

* content checksums (``dal.checksums``): an applied file that changed stops ``apply`` before any
  DDL, and ``status`` reports it;
* every migration session runs with ``lock_timeout`` and ``statement_timeout`` (``RunPolicy``),
  so DDL stuck behind a long transaction gives up instead of queueing every reader behind it;
  a lock timeout is retried with backoff a bounded number of times, then reported with the
  blocking pids (``dal.lockwatch``).  yoyo rolls the failed migration's transaction back, so
  nothing is half-applied;
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from dal import checksums
from dal.config import Settings, data_folder
from dal.driver import first_line
from dal.dsn import database_name, dsn_secrets, maintenance_dsn, redact_dsn, scrub
from dal.errors import DatabaseUnavailable, MigrationError
from dal.lockwatch import Blocker, BlockerWatch
from dal.queries import load

log = logging.getLogger(__name__)

SQL_DIR = data_folder("sql")
LOCK_TIMEOUT = 60.0  # seconds a second applier waits for the first one
SQL = load("migrations")
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


MIGRATION_ID = re.compile(r"[0-9]{4}_[a-z0-9_]+")


def file_ids(sources: Path = SQL_DIR) -> tuple[str, ...]:
    """Ids of the migration files in ``sources`` in name order, without importing yoyo; an id
    outside ``NNNN_lowercase_words`` is refused (it ends up in SQL comments of dry runs)."""
    if not sources.is_dir():
        raise MigrationError(f"migrations folder not found: {sources}")
    ids = sorted(p.name.removesuffix(".sql") for p in sources.glob("*.sql"))
    ids = [i for i in ids if not i.endswith(".rollback")]
    for migration_id in ids:
        if MIGRATION_ID.fullmatch(migration_id) is None:
            raise MigrationError(
                f"refusing migration file {migration_id!r}.sql in {sources}: migration ids are "
                "NNNN_lowercase_words (digits, a-z and _ only)"
            )
    return tuple(ids)


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
            raise _cannot_connect(dsn, exc) from None
        except psycopg2.Error as exc:  # auth failed, or a DSN libpq cannot parse
            raise _cannot_connect(dsn, exc) from None
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
        raise _cannot_connect(dsn, exc) from None
    backend.recorded, backend.created = [], set()
    try:
        with backend.connection.cursor() as cur:
            cur.execute(SQL["begin_read_only"].sql)
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


def invalid_concurrent_indexes(connection: Any, migration: Any) -> list[str]:
    """INVALID indexes that ``migration`` builds concurrently, left by an interrupted build:
    ``migrate`` drops them before running it, and the dry run's plan says so."""
    wanted = set(CONCURRENT_INDEX.findall(Path(migration.path).read_text()))
    if not wanted:
        return []
    with connection.cursor() as cur:
        cur.execute(SQL["invalid_indexes"].pyformat)
        return [row[0] for row in cur.fetchall() if row[0] in wanted]


def _cannot_connect(dsn: str, exc: BaseException) -> DatabaseUnavailable:
    """One line naming the target and the driver's reason; libpq quotes parts of the DSN back
    (e.g. a malformed percent-escape of the password), so its secrets are scrubbed out."""
    reason = scrub(first_line(exc), dsn_secrets(dsn))
    return DatabaseUnavailable(f"cannot connect to {redact_dsn(dsn)}: {reason}")


def _ids(migrations: Any) -> tuple[str, ...]:
    return tuple(m.id for m in migrations)


def migration_ids(sources: Path = SQL_DIR) -> tuple[str, ...]:
    """Ids of the migrations in ``sources``, in the order yoyo applies them (no database)."""
    return _ids(read(sources))


def status(dsn: str, sources: Path = SQL_DIR) -> MigrationStatus:
    migrations = read(sources)
    with backend_for(dsn) as backend:
        pending = _ids(backend.to_apply(migrations))
        applied = tuple(m.id for m in migrations if m.id not in pending)
        changed = compare_checksums(backend, migrations, applied, baseline=False)
    return MigrationStatus(applied=applied, pending=pending, changed=tuple(changed))


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
        applied = tuple(m.id for m in backend.to_rollback(migrations))
        changed = compare_checksums(backend, migrations, applied, baseline=True)
        if changed:
            raise ChecksumMismatch("; ".join(c.line() for c in changed))
        todo = backend.to_apply(migrations)
        for migration in todo:
            _apply_one(backend, migration, dsn, app, policy)
            checksums.record(
                backend.connection, checksums.file_hashes(migration.id, Path(migration.path))
            )
        return list(_ids(todo))


def _apply_one(backend: Any, migration: Any, dsn: str, app: str, policy: RunPolicy) -> None:
    """Apply ``migration``, retrying a lock timeout ``policy.retries`` times with backoff."""
    import psycopg2

    blockers: list[Blocker] = []
    for attempt in range(policy.retries + 1):
        if attempt:
            time.sleep(policy.backoff * 2 ** (attempt - 1))
        if not migration.use_transactions:
            _drop_invalid_indexes(backend, migration)
        interval = min(0.2, policy.lock_timeout / 4)
        with BlockerWatch(dsn, app, interval) as watch:
            try:
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
            drop = sql.SQL(SQL["drop_index_concurrently"].sql)
            cur.execute(drop.format(index=sql.Identifier(name)))


def accept_checksum(dsn: str, migration_id: str, sources: Path = SQL_DIR) -> checksums.FileHashes:
    """Re-record the hashes of applied ``migration_id`` after a deliberate, reviewed edit."""
    migrations = read(sources)
    known = {m.id: m for m in migrations}
    if migration_id not in known:
        raise MigrationError(f"unknown migration id {migration_id!r} (known: {', '.join(known)})")
    with backend_for(dsn) as backend, locked(backend):
        if migration_id not in _ids(backend.to_rollback(migrations)):
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
        _run(lambda ms: _rollback_each(backend, ms), todo, "roll back")
        return list(_ids(todo))


def select_rollback(backend: Any, migrations: Any, *, to: str | None, all_: bool) -> Any:
    """The applied migrations to roll back, newest first: the newest, all after ``to``, or
    all (``all_``)."""
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
    return todo


def _rollback_each(backend: Any, todo: Any) -> None:
    for migration in todo:
        backend.rollback_one(migration)
        checksums.forget(backend.connection, migration.id)


@contextmanager
def locked(backend: Any) -> Iterator[None]:
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
        raise MigrationError(f"could not {verb} migrations: {first_line(exc)}") from None


def admin_statement(dsn: str, statement: Any) -> None:
    """Run one composed statement (CREATE/DROP DATABASE) in autocommit on ``dsn``."""
    import psycopg2

    try:
        conn = psycopg2.connect(dsn)
    except psycopg2.Error as exc:
        raise _cannot_connect(dsn, exc) from None
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(statement)
    except psycopg2.Error as exc:
        raise MigrationError(scrub(first_line(exc), dsn_secrets(dsn))) from None
    finally:
        conn.close()


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
            cur.execute(SQL["database_exists"].pyformat, {"name": name})
            if cur.fetchone() is not None:
                return False
            try:
                create = sql.SQL(SQL["create_database"].sql)
                cur.execute(create.format(database=sql.Identifier(name)))
            except psycopg2.errors.DuplicateDatabase:
                return False  # created concurrently by another process
            except psycopg2.Error as exc:
                raise MigrationError(f"cannot create database {name}: {first_line(exc)}") from None
            return True
    finally:
        conn.close()
