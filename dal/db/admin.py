"""Server administration on a plain psycopg2 connection: create a missing database, run one
composed statement (CREATE/DROP DATABASE), and the one small synchronous runner the psycopg2
paths share (``connect``).  Connection errors become ``DatabaseUnavailable`` with the DSN's
secrets scrubbed out; libpq quotes parts of a DSN back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dal.db.dsn import database_name, dsn_secrets, maintenance_dsn, redact_dsn, scrub
from dal.db.failures import first_line
from dal.errors import DatabaseUnavailable, MigrationError
from dal.queries import load

ADMIN_SQL = load("admin")


def cannot_connect(dsn: str, exc: BaseException) -> DatabaseUnavailable:
    """One line naming the target and the driver's reason; libpq quotes parts of the DSN back
    (e.g. a malformed percent-escape of the password), so its secrets are scrubbed out."""
    reason = scrub(first_line(exc), dsn_secrets(dsn))
    return DatabaseUnavailable(f"cannot connect to {redact_dsn(dsn)}: {reason}")


@contextmanager
def connect(dsn: str, *, connect_timeout: float = 5.0) -> Iterator[Any]:
    """An autocommit psycopg2 connection on ``dsn``, closed after the block."""
    import psycopg2

    try:
        conn = psycopg2.connect(dsn, connect_timeout=max(1, round(connect_timeout)))
    except psycopg2.Error as exc:
        raise cannot_connect(dsn, exc) from None
    try:
        conn.autocommit = True
        yield conn
    finally:
        conn.close()


def admin_statement(dsn: str, statement: Any) -> None:
    """Run one composed statement (CREATE/DROP DATABASE) on ``dsn``."""
    import psycopg2

    with connect(dsn) as conn:
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
        except psycopg2.Error as exc:
            raise MigrationError(scrub(first_line(exc), dsn_secrets(dsn))) from None


def create_database(dsn: str, name: str) -> None:
    """``CREATE DATABASE name`` on the server ``dsn`` reaches (a scratch copy's)."""
    from psycopg2 import sql

    admin_statement(
        dsn, sql.SQL(ADMIN_SQL["create_database"].sql).format(database=sql.Identifier(name))
    )


def drop_database(dsn: str, name: str) -> None:
    """``DROP DATABASE IF EXISTS name WITH (FORCE)`` on the server ``dsn`` reaches."""
    from psycopg2 import sql

    admin_statement(
        dsn, sql.SQL(ADMIN_SQL["drop_database"].sql).format(database=sql.Identifier(name))
    )


def ensure_database(dsn: str) -> bool:
    """Create the database ``dsn`` names unless it exists; return True when it was created."""
    import psycopg2
    from psycopg2 import sql

    name = database_name(dsn)
    with connect(maintenance_dsn(dsn)) as conn, conn.cursor() as cur:
        cur.execute(ADMIN_SQL["database_exists"].pyformat, {"name": name})
        if cur.fetchone() is not None:
            return False
        try:
            cur.execute(
                sql.SQL(ADMIN_SQL["create_database"].sql).format(database=sql.Identifier(name))
            )
        except psycopg2.errors.DuplicateDatabase:
            return False  # created concurrently by another process
        except psycopg2.Error as exc:
            raise MigrationError(f"cannot create database {name}: {first_line(exc)}") from None
        return True
