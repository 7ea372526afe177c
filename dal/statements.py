"""Running the named statements of one ``.sql`` file: the one path every repository query takes.

A repository names a statement and passes its parameters by name; this module puts them in
``$n`` order (from the statement itself, ``dal.queries.Query.params``), runs the statement on
the caller's connection or on one acquired under the project's rules, and turns driver errors
into ``dal.errors`` inside the acquire block -- naming the parameter an error is about -- so
the pool owner only ever sees errors about the connection itself.
"""

from __future__ import annotations

from collections.abc import Mapping

import asyncpg

from dal.driver import DRIVER_ERRORS, Acquirer, Connection
from dal.pgerrors import translate
from dal.queries import Query, load


class Statements:
    """The statements of ``dal/queries/<file>.sql``, bound to something that can acquire."""

    def __init__(self, db: Acquirer, file: str) -> None:
        self._db = db
        self.queries = load(file)

    def __getitem__(self, name: str) -> Query:
        return self.queries[name]

    async def rows(
        self,
        name: str,
        values: Mapping[str, object],
        conn: Connection | None = None,
        *,
        readonly: bool = False,
    ) -> list[asyncpg.Record]:
        """All rows of statement ``name``; on ``conn`` when given, else on a pooled connection
        (``readonly`` reads may go to a replica)."""
        query = self.queries[name]
        args = query.args(values)
        if conn is not None:
            return await _fetch(conn, query, args)
        async with self._db.acquire(readonly=readonly) as pooled:
            return await _fetch(pooled, query, args)

    async def row(
        self,
        name: str,
        values: Mapping[str, object],
        conn: Connection | None = None,
        *,
        readonly: bool = False,
    ) -> asyncpg.Record | None:
        """The first row of statement ``name`` (one addressed by key, or RETURNING), or None."""
        rows = await self.rows(name, values, conn, readonly=readonly)
        return rows[0] if rows else None


async def _fetch(conn: Connection, query: Query, args: list[object]) -> list[asyncpg.Record]:
    try:
        return await conn.fetch(query.sql, *args)
    except DRIVER_ERRORS as exc:
        raise translate(exc, query.labelled(args)) from None
