"""Test-side access to a real PostgreSQL server: scratch databases, catalog snapshots.

With ``DATABASE_URL`` set the tests use that server (its maintenance database ``postgres`` for
CREATE/DROP DATABASE); unset, they start the embedded server in ``DEFEAH_DATA_DIR`` (default
``.defeah/test-pgdata``, separate from the development data folder).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import psycopg2.extras
from psycopg2 import sql


def dsn_for(base_dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(base_dsn)._replace(path=f"/{database}"))


def with_password(dsn: str, password: str) -> str:
    """``dsn`` carrying ``password`` (trust auth ignores it; the point is that it never leaks)."""
    parts = urlsplit(dsn)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or 'postgres'}:{password}@{host}"))


def query(dsn: str, statement: str, params: Any = None) -> list[dict[str, Any]]:
    """Run one statement in autocommit on a fresh connection; rows as dicts (empty if none)."""
    conn = psycopg2.connect(dsn)
    try:
        conn.autocommit = True
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(statement, params)
            return [dict(r) for r in cur.fetchall()] if cur.description else []
    finally:
        conn.close()


@dataclass
class PgServer:
    """A PostgreSQL server the tests may create and drop databases on."""

    admin_dsn: str
    created: list[str] = field(default_factory=list)

    def dsn(self, database: str) -> str:
        return dsn_for(self.admin_dsn, database)

    def execute(self, statement: Any, database: str = "postgres") -> None:
        conn = psycopg2.connect(self.dsn(database))
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(statement)
        finally:
            conn.close()

    def create_database(self, prefix: str = "t", template: str | None = None) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            stmt = sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        self.execute(stmt)
        self.created.append(name)
        return name

    def drop_database(self, name: str) -> None:
        self.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        if name in self.created:
            self.created.remove(name)


# Catalog queries: everything a DBA would diff about the users table.
CATALOG_QUERIES = {
    "columns": """
        SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid)
        FROM pg_attribute a
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE a.attrelid = 'public.users'::regclass AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum
    """,
    "constraints": """
        SELECT conname, contype, pg_get_constraintdef(oid)
        FROM pg_constraint WHERE conrelid = 'public.users'::regclass ORDER BY conname
    """,
    "indexes": """
        SELECT indexname, indexdef FROM pg_indexes
        WHERE schemaname = 'public' AND tablename = 'users' ORDER BY indexname
    """,
    "triggers": """
        SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger
        WHERE tgrelid = 'public.users'::regclass AND NOT tgisinternal ORDER BY tgname
    """,
    "comments": """
        SELECT objsubid, description FROM pg_description
        WHERE objoid = 'public.users'::regclass ORDER BY objsubid
    """,
    "relations": """
        SELECT c.relname, c.relkind, obj_description(c.oid, 'pg_class') FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relname !~ '^_?yoyo' ORDER BY c.relname
    """,
    "functions": """
        SELECT proname, pg_get_functiondef(p.oid) FROM pg_proc p
        JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public' ORDER BY proname
    """,
}


def catalog(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    """Snapshot of the users table's definition (empty lists when the table is absent)."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('public.users') IS NOT NULL")
            row = cur.fetchone()
            exists = bool(row and row[0])
            snapshot: dict[str, list[tuple[Any, ...]]] = {}
            for key, query in CATALOG_QUERIES.items():
                if not exists and key not in ("functions", "relations"):
                    snapshot[key] = []
                    continue
                cur.execute(query)
                snapshot[key] = [tuple(r) for r in cur.fetchall()]
            return snapshot
    finally:
        conn.close()
