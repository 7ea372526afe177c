"""The types a repository needs to accept "something that hands out connections", so that
repositories depend on this small module and never on the pool owner (``Database``)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Protocol, TypeAlias

import asyncpg

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    from dal.db.settings import Settings

PooledConnection: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"
# What repositories accept: a pooled connection or a plain one (scripts, benchmarks, tests).
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PooledConnection"


class Acquirer(Protocol):
    """Anything that hands out connections under the project's rules (``Database`` does)."""

    @property
    def settings(self) -> Settings: ...

    def acquire(
        self, timeout: float | None = None, *, readonly: bool = False
    ) -> AbstractAsyncContextManager[PooledConnection]: ...
