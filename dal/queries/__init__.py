"""The SQL the DAL runs, read from the ``.sql`` files beside this module.

Every statement lives in a file a DBA can review on its own (one file per aggregate or concern),
in aiosql's format: ``-- name: get_user(id)^``, a comment saying what it is for and which index
serves it, then the SQL with ``:named`` parameters.  aiosql parses the files and rewrites the
names to asyncpg's ``$n``; we keep only the result (``Query``) and call asyncpg ourselves, so the
text PostgreSQL receives -- and with it the plan and asyncpg's statement cache -- is exactly the
file's statement, and no per-call wrapper sits on the hot path.

``Query.params`` is the ``$n`` order taken from the statement itself, which is what error
translation uses to name the argument a driver error is about: no hand-kept label lists.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import MappingProxyType

import aiosql

QUERIES_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True, slots=True)
class Query:
    """One named statement: its ``$n`` SQL and the parameter name of each ``$n``."""

    name: str
    sql: str
    params: tuple[str, ...]
    doc: str

    def args(self, values: Mapping[str, object]) -> list[object]:
        """``values`` in ``$1, $2, ...`` order; a missing name is a programming error."""
        return [values[name] for name in self.params]

    def labelled(self, args: tuple[object, ...] | list[object]) -> dict[str, object]:
        """``args`` (in ``$n`` order) keyed by parameter name, for error messages."""
        return dict(zip(self.params, args, strict=True))

    @property
    def pyformat(self) -> str:
        """The statement in psycopg2's ``%(name)s`` style, for the statements that must run on
        yoyo's own psycopg2 session (inside its lock and transactions).  Literal ``%`` doubled."""
        text = self.sql.replace("%", "%%")
        return _POSITIONAL.sub(lambda m: f"%({self.params[int(m.group(1)) - 1]})s", text)


_POSITIONAL = re.compile(r"\$(\d+)")


@cache
def load(file: str, directory: Path = QUERIES_DIR) -> Mapping[str, Query]:
    """The statements of ``<directory>/<file>.sql`` by name (parsed once per process)."""
    path = directory / f"{file}.sql"
    parsed = aiosql.from_path(path, "asyncpg", mandatory_parameters=False)
    order = parsed.driver_adapter.var_sorted
    queries: dict[str, Query] = {}
    for name in parsed.available_queries:
        if name.endswith("_cursor"):  # aiosql's context-manager twin of each query
            continue
        method = getattr(parsed, name)
        sql = method.sql.strip().removesuffix(";").rstrip()
        queries[name] = Query(name, sql, tuple(order.get(name, ())), (method.__doc__ or "").strip())
    return MappingProxyType(queries)
