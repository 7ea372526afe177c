"""Scratch databases for the benchmarks: created and migrated on the target server, then dropped.

Each benchmark measures on data it made itself, never on a developer's database.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from dal.db.dsn import maintenance_dsn
from dal.migrations import runner as migrations


def with_database(dsn: str, name: str) -> str:
    """``dsn`` (same server and credentials) pointed at database ``name``."""
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


async def create_scratch(server_dsn: str, name: str) -> str:
    """Create database ``name`` next to ``server_dsn``, migrate it to head, return its DSN."""
    await _on_server(server_dsn, f'CREATE DATABASE "{name}"')
    dsn = with_database(server_dsn, name)
    await asyncio.to_thread(migrations.apply, dsn)
    return dsn


async def drop_scratch(server_dsn: str, name: str) -> None:
    await _on_server(server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _on_server(server_dsn: str, statement: str) -> None:
    """Run one statement in the server's maintenance database (CREATE/DROP DATABASE)."""
    conn = await asyncpg.connect(maintenance_dsn(server_dsn))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()
