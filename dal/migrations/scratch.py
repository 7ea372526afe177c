"""Rehearsal scratch databases that never outlive their run.

``rehearse`` copies the schema into ``defeah_rehearse_<hex>`` beside the target.  A run killed
by SIGTERM used to leave it behind (tens of MB each), and one killed by SIGKILL still can, so:

* **ownership**: before the database exists, the run's own session on the maintenance database
  takes a session-level advisory lock keyed by the database's name, and keeps it until the run
  ends.  The server releases it when that session ends, however the process died (a crash,
  SIGKILL, a lost host), so "owned by no live process" is a lock nobody holds -- true across
  hosts and immune to pid reuse.  The database then gets a comment marking it as ours;
* **sweep**: every run first drops the marked scratch databases whose lock it can take (their
  owner is gone), holding that lock while it drops, so two sweepers never race.  An unmarked
  ``defeah_rehearse_*`` database (from a version before the mark, or a run between creating
  and marking its database) is left alone and named: only a DBA can tell it is stale;
* **SIGTERM**: the run stops what it does as soon as that is clean (``Sigterm``), drops its
  database and raises ``Terminated`` (the CLI exits 143).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

from dal.db import admin
from dal.errors import DalError, Terminated
from dal.queries import load

REHEARSAL_SQL = load("rehearsal")
log = logging.getLogger(__name__)
SCRATCH_PREFIX = "defeah_rehearse_"
OWNER_LOCK_CLASS = 47336201  # first key of the ownership locks (the second: hashtext(name))


@dataclass(frozen=True)
class Sweep:
    dropped: tuple[str, ...]
    unmarked: tuple[str, ...]
    failed: tuple[str, ...] = ()  # "name: reason" of stale copies that could not be dropped

    def lines(self) -> list[str]:
        found = []
        if self.dropped:
            found.append(f"swept stale rehearsal database(s): {', '.join(self.dropped)}")
        if self.failed:
            found.append(f"could not sweep: {'; '.join(self.failed)}")
        if self.unmarked:
            found.append(
                "left alone (no owner mark; drop by hand if no rehearsal runs): "
                + ", ".join(self.unmarked)
            )
        return found


def _params(name: str, **more: str) -> dict[str, Any]:
    return {"lock_class": OWNER_LOCK_CLASS, "name": name, **more}


def own(conn: Any, name: str) -> None:
    """Make ``conn``'s session the owner of scratch database ``name`` (before creating it)."""
    with conn.cursor() as cur:
        cur.execute(
            REHEARSAL_SQL["own_scratch"].pyformat,
            _params(name, application_name=f"defeah-db rehearse {name}"),
        )


def mark(server: str, name: str) -> None:
    from psycopg2 import sql

    statement = sql.SQL(REHEARSAL_SQL["mark_scratch"].sql)
    admin.admin_statement(server, statement.format(database=sql.Identifier(name)))


def sweep(conn: Any, server: str) -> Sweep:
    """Drop the marked scratch databases whose owner is gone; name the unmarked ones.  A copy
    that cannot be dropped (another role's, say) is reported, never a reason to stop."""
    dropped, unmarked, failed = [], [], []
    with conn.cursor() as cur:
        cur.execute(REHEARSAL_SQL["scratch_databases"].pyformat)
        found = cur.fetchall()
        for name, marked in found:
            if not marked:
                unmarked.append(name)
                continue
            cur.execute(REHEARSAL_SQL["try_own_scratch"].pyformat, _params(name))
            if not cur.fetchone()[0]:
                continue  # its run is alive
            try:
                admin.drop_database(server, name)
                dropped.append(name)
            except DalError as exc:
                failed.append(f"{name}: {exc}")
            finally:
                cur.execute(REHEARSAL_SQL["disown_scratch"].pyformat, _params(name))
    return Sweep(tuple(dropped), tuple(unmarked), tuple(failed))


class Sigterm:
    """SIGTERM during a rehearsal of scratch database ``name``: the run stops at its next
    clean point, drops the database and raises ``Terminated``; ``fired`` says it came.

    An exception raised by the handler wherever the main thread happens to be would cut yoyo
    or a COPY in the middle, and leave a half-started thread behind, so the handler only
    records the signal.  The synchronous steps (``deferred``: sweeping, creating the copy,
    applying the current schema to it, all short and with no data) run to their end and the
    run checks ``fired`` after them.  In the event loop (``in_loop``) SIGTERM also sets the
    run's ``stop`` event (the bulk generator stops after its batch, the load at once) and ends
    the scratch's migration sessions (the worker thread running the pending migrations returns
    instead of finishing a long index build).  A second SIGTERM in the synchronous steps
    raises at once.  Handlers exist in the main thread only.
    """

    def __init__(self, server: str, name: str) -> None:
        self.server, self.name = server, name
        self.fired = threading.Event()

    def error(self) -> Terminated:
        return Terminated(
            f"rehearsal stopped by SIGTERM; its scratch database {self.name} is dropped"
        )

    def check(self) -> None:
        """Raise ``Terminated`` if SIGTERM came (a clean point of the run)."""
        if self.fired.is_set():
            raise self.error()

    @contextmanager
    def deferred(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            if self.fired.is_set():
                raise self.error()  # asked twice: stop now
            self.fired.set()

        previous = signal.signal(signal.SIGTERM, on_sigterm)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)

    @contextmanager
    def in_loop(self, stop: asyncio.Event) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        loop = asyncio.get_running_loop()
        previous = signal.getsignal(signal.SIGTERM)

        def on_sigterm() -> None:
            self.fired.set()
            stop.set()
            self._end_migrations()

        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
        try:
            yield
        finally:
            loop.remove_signal_handler(signal.SIGTERM)  # which resets it to SIG_DFL
            signal.signal(signal.SIGTERM, previous)

    def _end_migrations(self) -> None:
        try:
            with admin.connect(self.server) as conn, conn.cursor() as cur:
                cur.execute(REHEARSAL_SQL["end_scratch_migrations"].pyformat, {"name": self.name})
        except DalError as exc:  # the server is gone: nothing runs there to wait for
            log.warning("could not end the rehearsal's migration sessions: %s", exc)
