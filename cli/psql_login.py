"""How ``defeah-db psql`` hands psql the target's credentials without putting them in argv.

Every local user can read any process's command line (``ps``, ``/proc/<pid>/cmdline``), but
only its owner (and root) can read its environment (``/proc/<pid>/environ`` is 0400).  So
psql's ``-d`` gets the DSN as a libpq keyword string *without* its secrets, and:

* the password goes in ``PGPASSWORD`` (which libpq ranks above ``~/.pgpass``);
* an ``sslpassword`` (the client key's passphrase, which has no environment variable) goes in
  a connection-service file created 0600 in a 0700 temporary folder, named by
  ``PGSERVICEFILE`` and removed when psql exits.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dal.errors import ConfigError

SERVICE = "defeah-db"


@dataclass(frozen=True)
class PsqlLogin:
    conninfo: str  # for psql -d: no password, no sslpassword
    env: dict[str, str]  # the child's environment, carrying them


@contextmanager
def psql_login(dsn: str, environ: dict[str, str] | None = None) -> Iterator[PsqlLogin]:
    """The conninfo and environment to start psql on ``dsn`` with, valid inside the block."""
    import psycopg2
    from psycopg2.extensions import make_dsn, parse_dsn

    env = dict(os.environ if environ is None else environ)
    try:
        params = parse_dsn(dsn)
    except psycopg2.ProgrammingError:
        # libpq's message quotes the DSN back: never shown.
        raise ConfigError("the target DSN cannot be parsed by libpq") from None
    password = params.pop("password", "")
    if password:
        env["PGPASSWORD"] = password
    passphrase = params.pop("sslpassword", "")
    if not passphrase:
        yield PsqlLogin(make_dsn(**params), env)
        return
    if "service" in params or "\n" in passphrase or "\r" in passphrase:
        raise ConfigError(
            "defeah-db psql cannot pass this sslpassword safely (it names a service, or spans "
            "lines): put it in your own service file instead"
        )
    with tempfile.TemporaryDirectory(prefix="defeah-psql-") as folder:  # created 0700
        path = Path(folder) / "pg_service.conf"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as service:
            service.write(f"[{SERVICE}]\nsslpassword={passphrase}\n")
        env["PGSERVICEFILE"] = str(path)
        yield PsqlLogin(make_dsn(**params, service=SERVICE), env)
