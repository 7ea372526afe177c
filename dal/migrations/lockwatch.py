"""Who blocks a migration: a sampler of ``pg_blocking_pids`` while a migration runs.

When a migration's DDL waits past ``lock_timeout``, PostgreSQL cancels it and the wait is over,
so asking afterwards who blocked it finds nobody.  A DBA needs the pids and queries, so a thread
with its own connection samples the blockers of our migration session (recognised by its unique
``application_name``) while each attempt runs, and the last non-empty sample names them.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from dal.db import admin
from dal.errors import DatabaseUnavailable
from dal.queries import load

MIGRATIONS_SQL = load("migrations")
QUERY_CHARS = 120
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Blocker:
    pid: int
    state: str | None
    query: str | None
    xact_seconds: float | None

    def describe(self) -> str:
        query = " ".join((self.query or "").split())
        if len(query) > QUERY_CHARS:
            query = query[: QUERY_CHARS - 1] + "…"
        held = f" for {self.xact_seconds:.1f}s" if self.xact_seconds is not None else ""
        return f"pid {self.pid} ({self.state or 'unknown state'}{held}): {query or '?'}"


class BlockerWatch:
    """Context manager: samples the blockers of ``application_name`` every ``interval`` s."""

    def __init__(self, dsn: str, application_name: str, interval: float) -> None:
        self._dsn = dsn
        self._params = {"application_name": application_name}
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="blocker-watch", daemon=True)
        self.seen: list[Blocker] = []

    def __enter__(self) -> BlockerWatch:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            with admin.connect(self._dsn) as conn:
                while not self._stop.is_set():
                    self._sample(conn)
                    self._stop.wait(self._interval)
        except DatabaseUnavailable as exc:
            # The migration itself still runs; only the names in a lock-timeout error are lost.
            log.warning("blocker sampler could not connect: %s", exc)

    def _sample(self, conn: Any) -> None:
        with conn.cursor() as cur:
            cur.execute(MIGRATIONS_SQL["blockers"].pyformat, self._params)
            rows = cur.fetchall()
        if rows:
            self.seen = [Blocker(*row) for row in rows]
