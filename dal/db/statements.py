"""Running the named statements of one ``.sql`` file: the one path every repository query takes.

A repository names a statement and passes its parameters by name; this module puts them in
``$n`` order (from the statement itself, ``dal.queries.Query.params``), runs the statement on
the caller's connection or on one acquired under the project's rules, and turns driver errors
into ``dal.errors`` inside the acquire block -- naming the parameter an error is about -- so
the pool owner only ever sees errors about the connection itself.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import asyncpg

from dal.db.connections import Acquirer, Connection
from dal.db.failures import DRIVER_ERRORS, row_count
from dal.db.translate import translate
from dal.queries import Query, load
from dal.telemetry import QUERY_DURATION, HistogramChild

# The duration child of each query name, so a statement pays one dict lookup, not labels().
_TIMERS: dict[str, HistogramChild] = {}


def _timer(query: Query) -> HistogramChild:
    timer = _TIMERS.get(query.name)
    if timer is None:
        timer = _TIMERS[query.name] = QUERY_DURATION.labels(query.name)
    return timer


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
        if conn is not None:
            return await run(conn, query, values)
        async with self._db.acquire(readonly=readonly) as pooled:
            return await run(pooled, query, values)

    async def row(
        self,
        name: str,
        values: Mapping[str, object],
        conn: Connection | None = None,
        *,
        readonly: bool = False,
    ) -> asyncpg.Record | None:
        """The first row of statement ``name`` (one addressed by key, or RETURNING), or None.

        Not written as ``await self.rows(...)``: one coroutine less on the path of every
        ``get``, ``create`` and update (bench/bench_dal.py)."""
        query = self.queries[name]
        if conn is not None:
            rows = await run(conn, query, values)
        else:
            async with self._db.acquire(readonly=readonly) as pooled:
                rows = await run(pooled, query, values)
        return rows[0] if rows else None


async def run(conn: Connection, query: Query, values: Mapping[str, object]) -> list[asyncpg.Record]:
    """The rows of ``query`` on ``conn``; driver errors become ``dal.errors`` naming the
    parameter they are about."""
    args = query.args(values)
    started = time.perf_counter()
    try:
        return await conn.fetch(query.sql, *args)
    except DRIVER_ERRORS as exc:
        raise translate(exc, query.labelled(args)) from None
    finally:
        _timer(query).observe(time.perf_counter() - started)


async def run_count(conn: Connection, query: Query, values: Mapping[str, object]) -> int:
    """Rows affected by ``query`` (an UPDATE/DELETE without RETURNING) on ``conn``."""
    args = query.args(values)
    started = time.perf_counter()
    try:
        status = await conn.execute(query.sql, *args)
    except DRIVER_ERRORS as exc:
        raise translate(exc, query.labelled(args)) from None
    finally:
        _timer(query).observe(time.perf_counter() - started)
    return row_count(status)


async def run_script(conn: Connection, query: Query, **fields: object) -> None:
    """``query``, a ``#`` entry of several commands with ``{field}`` slots filled from
    ``fields``, in one round trip of the simple query protocol (which takes no parameters: the
    fields are numbers or quoted identifiers, never input); errors as in ``run``."""
    started = time.perf_counter()
    try:
        await conn.execute(query.sql.format(**fields))
    except DRIVER_ERRORS as exc:
        raise translate(exc, {}) from None
    finally:
        _timer(query).observe(time.perf_counter() - started)
