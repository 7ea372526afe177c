"""Settings read from environment variables.

Every knob has one variable, one documented default (the README's configuration table mirrors
``VARIABLES`` below) and one parser.  A malformed value stops start-up with a ``ConfigError``
whose one-line message names the variable, instead of surfacing later as a confusing driver
error.  ``Settings`` never shows a DSN password: its repr and ``describe()`` redact it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

from dal.errors import ConfigError

DSN_SCHEMES = ("postgresql", "postgres")
ENVIRONMENTS = ("development", "test", "staging", "production")


def redact_dsn(dsn: str) -> str:
    """Return ``dsn`` with its password replaced by ``***`` (safe for logs and errors)."""
    try:
        parts = urlsplit(dsn)
        if parts.password is None:
            return dsn
        userinfo = f"{parts.username or ''}:***"
        host = parts.hostname or ""
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
        netloc = f"{userinfo}@{host}{port}"
        return urlunsplit(SplitResult(parts.scheme, netloc, parts.path, parts.query, ""))
    except ValueError:
        return "<unparseable DSN>"


def describe_dsn(dsn: str) -> str:
    """Short ``host/database`` label for start-up lines and health output (no credentials)."""
    parts = urlsplit(dsn)
    query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
    host = parts.hostname or query.get("host", "localhost")
    port = f":{parts.port}" if parts.port else ""
    database = parts.path.lstrip("/") or parts.username or "postgres"
    return f"{host}{port}/{database}"


def _parse_dsn(name: str, raw: str) -> str:
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ConfigError(f"{name}: not a valid URL ({exc})") from None
    if parts.scheme not in DSN_SCHEMES:
        raise ConfigError(
            f"{name}: expected a postgresql://user:password@host:port/database URL, "
            f"got scheme {parts.scheme!r}"
        )
    if not parts.path.lstrip("/"):
        raise ConfigError(f"{name}: the URL names no database (add /<database> to the path)")
    return raw


def _parse_int(lo: int, hi: int) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ConfigError(f"{name}: expected an integer, got {raw!r}") from None
        if not lo <= value <= hi:
            raise ConfigError(f"{name}: must be between {lo} and {hi}, got {value}")
        return value

    return parse


def _parse_seconds(lo: float, hi: float) -> Callable[[str, str], float]:
    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ConfigError(f"{name}: expected a number of seconds, got {raw!r}") from None
        if not lo <= value <= hi:
            raise ConfigError(f"{name}: must be between {lo:g} and {hi:g} seconds, got {raw}")
        return value

    return parse


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name}: expected true/false, got {raw!r}")


def _parse_text(name: str, raw: str) -> str:
    value = raw.strip()
    if not value:
        raise ConfigError(f"{name}: must not be empty")
    return value


def _parse_optional_text(name: str, raw: str) -> str | None:
    return raw.strip() or None


def _parse_path(name: str, raw: str) -> Path:
    return Path(_parse_text(name, raw)).expanduser().resolve()


def _parse_env(name: str, raw: str) -> str:
    value = raw.strip().lower()
    if value not in ENVIRONMENTS:
        raise ConfigError(f"{name}: expected one of {', '.join(ENVIRONMENTS)}, got {raw!r}")
    return value


def _parse_replicas(name: str, raw: str) -> tuple[str, ...]:
    urls = [u.strip() for u in raw.split(",") if u.strip()]
    return tuple(_parse_dsn(name, u) for u in urls)


@dataclass(frozen=True)
class Variable:
    """One environment variable: where it lands in ``Settings`` and how it is parsed."""

    env: str
    attr: str
    default: str
    parse: Callable[[str, str], Any]
    doc: str


VARIABLES: tuple[Variable, ...] = (
    Variable(
        "DATABASE_URL",
        "database_url",
        "",
        lambda n, r: _parse_dsn(n, r) if r else None,
        "PostgreSQL URL (postgresql://user:pass@host:port/db). Unset: embedded server.",
    ),
    Variable(
        "DATABASE_REPLICA_URL",
        "replica_urls",
        "",
        _parse_replicas,
        "Comma-separated read-replica URLs; lag-tolerant reads go there.",
    ),
    Variable(
        "DEFEAH_ENV",
        "environment",
        "development",
        _parse_env,
        "development, test, staging or production (production refuses seed/clear/generate).",
    ),
    Variable(
        "DEFEAH_DATA_DIR",
        "data_dir",
        ".defeah/pgdata",
        _parse_path,
        "Data folder of the embedded PostgreSQL (used only without DATABASE_URL).",
    ),
    Variable(
        "DEFEAH_EMBEDDED_DB",
        "embedded_database",
        "defeah",
        _parse_text,
        "Database created and used inside the embedded server.",
    ),
    Variable(
        "DEFEAH_POOL_MIN_SIZE",
        "pool_min_size",
        "5",
        _parse_int(0, 1000),
        "Connections the pool keeps open.",
    ),
    Variable(
        "DEFEAH_POOL_MAX_SIZE",
        "pool_max_size",
        "50",
        _parse_int(1, 1000),
        "Upper bound of pool connections.",
    ),
    Variable(
        "DEFEAH_POOL_ACQUIRE_TIMEOUT",
        "acquire_timeout",
        "5",
        _parse_seconds(0.01, 600),
        "Seconds to wait for a free pool connection before DatabaseUnavailable.",
    ),
    Variable(
        "DEFEAH_COMMAND_TIMEOUT",
        "command_timeout",
        "30",
        _parse_seconds(0.01, 3600),
        "Client-side limit (seconds) on one statement round trip.",
    ),
    Variable(
        "DEFEAH_STATEMENT_TIMEOUT",
        "statement_timeout",
        "30",
        _parse_seconds(0, 3600),
        "Server-side statement_timeout in seconds (0 disables).",
    ),
    Variable(
        "DEFEAH_CONNECT_TIMEOUT",
        "connect_timeout",
        "5",
        _parse_seconds(0.01, 600),
        "Seconds to establish one new connection.",
    ),
    Variable(
        "DEFEAH_APPLICATION_NAME",
        "application_name",
        "defeah-db",
        _parse_text,
        "application_name shown in pg_stat_activity.",
    ),
    Variable(
        "DEFEAH_PGBOUNCER",
        "pgbouncer",
        "false",
        _parse_bool,
        "true when DATABASE_URL points at PgBouncer in transaction mode.",
    ),
    Variable(
        "DEFEAH_REPLICA_TIMEOUT",
        "replica_timeout",
        "0.5",
        _parse_seconds(0.01, 60),
        "Seconds a lag-tolerant read waits for a replica connection before using the primary.",
    ),
    Variable(
        "DEFEAH_REPLICA_RETRY",
        "replica_retry",
        "5",
        _parse_seconds(0, 3600),
        "Seconds an unreachable replica is skipped before reads try it again.",
    ),
    Variable(
        "DEFEAH_BCRYPT_ROUNDS",
        "bcrypt_rounds",
        "12",
        _parse_int(4, 31),
        "bcrypt cost factor for new hashes; older costs are upgraded at login.",
    ),
    Variable(
        "DEFEAH_LOCKOUT_THRESHOLD",
        "lockout_threshold",
        "5",
        _parse_int(1, 1000),
        "Consecutive failed sign-ins that lock an account.",
    ),
    Variable(
        "DEFEAH_LOCKOUT_WINDOW",
        "lockout_window",
        "900",
        _parse_seconds(0.001, 31_536_000),
        "Seconds an account stays locked.",
    ),
    Variable(
        "DEFEAH_MIGRATION_LOCK_TIMEOUT",
        "migration_lock_timeout",
        "5",
        _parse_seconds(0.01, 600),
        "lock_timeout (seconds) of every migration statement; a blocked DDL gives up, retries.",
    ),
    Variable(
        "DEFEAH_MIGRATION_STATEMENT_TIMEOUT",
        "migration_statement_timeout",
        "1800",
        _parse_seconds(0, 86_400),
        "statement_timeout (seconds) of every migration statement (0 disables).",
    ),
    Variable(
        "DEFEAH_MIGRATION_RETRIES",
        "migration_retries",
        "3",
        _parse_int(0, 20),
        "Retries of a migration after a lock timeout (backoff 1 s, doubling) before it fails.",
    ),
    Variable("DEFEAH_HOST", "host", "127.0.0.1", _parse_text, "Address the HTTP server binds."),
    Variable("DEFEAH_PORT", "port", "8080", _parse_int(0, 65535), "Port the HTTP server binds."),
    Variable(
        "DEFEAH_HEALTH_TIMEOUT",
        "health_timeout",
        "2",
        _parse_seconds(0.01, 60),
        "Seconds a database health check may take before it reports fail.",
    ),
    Variable(
        "DEFEAH_HEALTH_TOKEN",
        "health_token",
        "",
        _parse_optional_text,
        "Bearer token required to see /health/detailed checks (unset: open).",
    ),
    Variable(
        "DEFEAH_ACCESS_LOG",
        "access_log",
        "true",
        _parse_bool,
        "One JSON line per HTTP request on stderr (logger web.access); false turns it off.",
    ),
)


@dataclass(frozen=True)
class Settings:
    """Validated configuration; build it with ``Settings.from_env()``."""

    database_url: str | None = None
    replica_urls: tuple[str, ...] = ()
    environment: str = "development"
    data_dir: Path = field(default_factory=lambda: Path(".defeah/pgdata").resolve())
    embedded_database: str = "defeah"
    pool_min_size: int = 5
    pool_max_size: int = 50
    acquire_timeout: float = 5.0
    command_timeout: float = 30.0
    statement_timeout: float = 30.0
    connect_timeout: float = 5.0
    application_name: str = "defeah-db"
    pgbouncer: bool = False
    replica_timeout: float = 0.5
    replica_retry: float = 5.0
    bcrypt_rounds: int = 12
    lockout_threshold: int = 5
    lockout_window: float = 900.0
    migration_lock_timeout: float = 5.0
    migration_statement_timeout: float = 1800.0
    migration_retries: int = 3
    host: str = "127.0.0.1"
    port: int = 8080
    health_timeout: float = 2.0
    health_token: str | None = None
    access_log: bool = True

    def __post_init__(self) -> None:
        if self.pool_min_size > self.pool_max_size:
            raise ConfigError(
                f"DEFEAH_POOL_MIN_SIZE ({self.pool_min_size}) must not exceed "
                f"DEFEAH_POOL_MAX_SIZE ({self.pool_max_size})"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for var in VARIABLES:
            raw = env.get(var.env)
            values[var.attr] = var.parse(var.env, var.default if raw is None else raw)
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def embedded(self) -> bool:
        """True when no DATABASE_URL is set and the embedded server will be used."""
        return self.database_url is None

    def __repr__(self) -> str:
        shown = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "database_url" and value:
                value = redact_dsn(value)
            elif f.name == "replica_urls":
                value = tuple(redact_dsn(v) for v in value)
            elif f.name == "health_token" and value:
                value = "***"
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    __str__ = __repr__
