"""Settings, each declared once: type, default, bounds, environment variable and doc together.

``Settings`` is a pydantic-settings class.  Every field names its environment variable (its
alias), its default and its bounds, and carries the sentence the README's configuration table
shows (``markdown_table()`` renders it; a test fails when the README's copy is stale).

A malformed value stops start-up with a ``ConfigError`` whose one-line message names the
variable (``DEFEAH_POOL_MAX_SIZE: expected an integer, got 'lots'``) instead of pydantic's
multi-line report or a confusing driver error later.  Secrets (DSN passwords, the health token)
never appear in ``repr``/``str``.

``Settings(...)`` with keywords takes those values and the rest from the process environment,
as any pydantic-settings class; ``Settings.from_env(mapping)`` reads only ``mapping`` (tests,
tools that build an environment).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from annotated_types import Ge, Le
from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from dal.db.dsn import DSN_SCHEMES, dsn_secrets, redact_dsn, scrub, split_dsn
from dal.db.paths import default_data_dir
from dal.errors import ConfigError

ENVIRONMENTS = ("development", "test", "staging", "production")
# Where a secret's development fallback (a generated key file) is not acceptable.
SECRET_ENVIRONMENTS = ("staging", "production")
# What a required secret must look like, for the error that says it is missing.
REQUIRED_FORMAT = {"token_keys": "id:base64key,..., 32-byte AES keys; the first encrypts"}
MIN_PRODUCTION_TOKEN = 16  # characters of DEFEAH_HEALTH_TOKEN on production
Environment = Literal["development", "test", "staging", "production"]


def _dsn(value: object) -> object:
    """A ``postgresql://`` URL naming a database; ``""`` means unset (the embedded server)."""
    if not isinstance(value, str):
        return value
    raw = value.strip()
    if not raw:
        return None
    try:
        parts = split_dsn(raw)
    except ValueError:
        # urllib's own message can quote a piece of the password (an unencoded / ? or # in it
        # makes the rest look like a port), so it is never shown.
        raise ValueError(
            "not a valid URL (is the port a number, and are /, ? and # in the password "
            "percent-encoded?)"
        ) from None
    if parts.scheme not in DSN_SCHEMES:
        raise ValueError(
            "expected a postgresql://user:password@host:port/database URL, "
            f"got scheme {parts.scheme!r}"
        )
    if not parts.path.lstrip("/"):
        raise ValueError("the URL names no database (add /<database> to the path)")
    return raw


def _dsn_list(value: object) -> object:
    if isinstance(value, str):
        return tuple(_dsn(u) for u in value.split(",") if u.strip())
    if isinstance(value, list | tuple):
        return tuple(_dsn(u) for u in value)
    return value


def _stripped(value: object) -> object:
    return value.strip() if isinstance(value, str) else value


def _lowered(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


Dsn = Annotated[str | None, BeforeValidator(_dsn)]
DsnList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_dsn_list)]
Text = Annotated[str, BeforeValidator(_stripped), Field(min_length=1)]
Seconds = float

_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("defeah_environ", default=None)


class _EnvironSource(EnvSettingsSource):
    """The environment source, reading ``Settings.from_env``'s mapping when one is given."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        environ = _ENVIRON.get()
        return dict(os.environ if environ is None else environ)


def setting(default: Any, env: str, doc: str, **bounds: Any) -> Any:
    """One declaration: default, environment variable, README sentence and bounds."""
    return Field(default, validation_alias=env, description=doc, **bounds)


class Settings(BaseSettings):
    """Validated configuration; ``Settings.from_env()`` reads the environment."""

    model_config = SettingsConfigDict(
        frozen=True,
        case_sensitive=True,
        populate_by_name=True,
        extra="ignore",
        hide_input_in_errors=False,
    )

    database_url: Dsn = setting(
        None,
        "DATABASE_URL",
        "PostgreSQL URL `postgresql://user:pass@host:port/db`, the same for psql, the app and "
        "`yoyo`. Unset: the embedded server.",
    )
    replica_urls: DsnList = setting(
        (),
        "DATABASE_REPLICA_URL",
        "Comma-separated read-replica URLs; lag-tolerant reads go there (docs/scale.md).",
    )
    environment: Annotated[Environment, BeforeValidator(_lowered)] = setting(
        "development",
        "DEFEAH_ENV",
        "`development`, `test`, `staging` or `production`; production refuses the destructive "
        "verbs (rollback, seed, clear, generate, ...) without `--force`.",
    )
    data_dir: Annotated[Path, BeforeValidator(_stripped)] = Field(
        default_factory=default_data_dir,
        validation_alias="DEFEAH_DATA_DIR",
        description="Data folder of the embedded PostgreSQL (only without `DATABASE_URL`). "
        "Default: `.defeah/pgdata` in the checkout.",
    )
    embedded_database: Text = setting(
        "defeah", "DEFEAH_EMBEDDED_DB", "Database created and used inside the embedded server."
    )
    pool_min_size: int = setting(
        5, "DEFEAH_POOL_MIN_SIZE", "Connections the pool keeps open.", ge=0, le=1000
    )
    pool_max_size: int = setting(
        50,
        "DEFEAH_POOL_MAX_SIZE",
        "Upper bound of pool connections (the original design allowed 20 + 30 overflow).",
        ge=1,
        le=1000,
    )
    acquire_timeout: Seconds = setting(
        5.0,
        "DEFEAH_POOL_ACQUIRE_TIMEOUT",
        "Seconds to wait for a free pool connection before `DatabaseUnavailable`.",
        ge=0.01,
        le=600,
    )
    command_timeout: Seconds = setting(
        30.0,
        "DEFEAH_COMMAND_TIMEOUT",
        "Client-side limit (seconds) on one statement round trip.",
        ge=0.01,
        le=3600,
    )
    statement_timeout: Seconds = setting(
        30.0,
        "DEFEAH_STATEMENT_TIMEOUT",
        "Server-side `statement_timeout` in seconds (`0` disables; not sent behind PgBouncer).",
        ge=0,
        le=3600,
    )
    connect_timeout: Seconds = setting(
        5.0,
        "DEFEAH_CONNECT_TIMEOUT",
        "Seconds to establish one new connection.",
        ge=0.01,
        le=600,
    )
    application_name: Text = setting(
        "defeah-db",
        "DEFEAH_APPLICATION_NAME",
        "`application_name` in `pg_stat_activity`; also the health documents' `serviceId`.",
    )
    pgbouncer: bool = setting(
        False,
        "DEFEAH_PGBOUNCER",
        "`true` when `DATABASE_URL` points at PgBouncer in transaction mode.",
    )
    replica_timeout: Seconds = setting(
        0.5,
        "DEFEAH_REPLICA_TIMEOUT",
        "Seconds a lag-tolerant read waits for a replica connection before using the primary.",
        ge=0.01,
        le=60,
    )
    replica_retry: Seconds = setting(
        5.0,
        "DEFEAH_REPLICA_RETRY",
        "Seconds an unreachable replica is skipped before reads try it again.",
        ge=0,
        le=3600,
    )
    bcrypt_rounds: int = setting(
        12,
        "DEFEAH_BCRYPT_ROUNDS",
        "bcrypt cost for new hashes; hashes of another cost are upgraded at the next login.",
        ge=4,
        le=31,
    )
    bcrypt_queue_limit: int = setting(
        128,
        "DEFEAH_BCRYPT_QUEUE_LIMIT",
        "Password checks that may wait for a bcrypt worker (one per core); more are refused "
        "at once with `Overloaded`.",
        ge=1,
        le=1_000_000,
    )
    bcrypt_queue_timeout: Seconds = setting(
        5.0,
        "DEFEAH_BCRYPT_QUEUE_TIMEOUT",
        "Seconds a password check may wait for a bcrypt worker before `Overloaded`.",
        ge=0.001,
        le=600,
    )
    lockout_threshold: int = setting(
        5,
        "DEFEAH_LOCKOUT_THRESHOLD",
        "Failed sign-ins per (email, client network) per window before that network is refused.",
        ge=1,
        le=1000,
    )
    lockout_window: Seconds = setting(
        900.0,
        "DEFEAH_LOCKOUT_WINDOW",
        "Seconds of one sign-in budget window (and of the account-wide lock).",
        ge=0.001,
        le=31_536_000,
    )
    lockout_ip_threshold: int = setting(
        20,
        "DEFEAH_LOCKOUT_IP_THRESHOLD",
        "Failed sign-ins per client address (IPv4, IPv6 /64) per window, across all emails.",
        ge=1,
        le=1_000_000,
    )
    lockout_account_threshold: int = setting(
        50,
        "DEFEAH_LOCKOUT_ACCOUNT_THRESHOLD",
        "Failed sign-ins per email per window from all networks before it locks for everyone.",
        ge=1,
        le=1_000_000,
    )
    migration_lock_timeout: Seconds = setting(
        5.0,
        "DEFEAH_MIGRATION_LOCK_TIMEOUT",
        "`lock_timeout` (seconds) of every migration statement; a blocked DDL gives up, retries.",
        ge=0.01,
        le=600,
    )
    migration_statement_timeout: Seconds = setting(
        1800.0,
        "DEFEAH_MIGRATION_STATEMENT_TIMEOUT",
        "`statement_timeout` (seconds) of every migration statement (`0` disables).",
        ge=0,
        le=86_400,
    )
    migration_retries: int = setting(
        3,
        "DEFEAH_MIGRATION_RETRIES",
        "Retries of a migration after a lock timeout (backoff 1 s, doubling) before it fails.",
        ge=0,
        le=20,
    )
    host: Text = setting("127.0.0.1", "DEFEAH_HOST", "Address the HTTP server binds.")
    port: int = setting(
        8080, "DEFEAH_PORT", "Port the HTTP server binds (`0`: any free port).", ge=0, le=65535
    )
    # 10 s: real clients send a request head in one packet; 10 s still covers a few TCP
    # retransmissions on a bad link and frees a slow or silent socket's descriptor fast.
    http_header_timeout: Seconds = setting(
        10.0,
        "DEFEAH_HTTP_HEADER_TIMEOUT",
        "Seconds a client has to send a complete request head (slow or silent: closed).",
        ge=0.1,
        le=300,
    )
    # 75 s: longer than the idle timeout of the proxies usually in front (AWS ALB, nginx: 60 s),
    # so the proxy closes first and never reuses a socket we just closed (a spurious 502).
    http_keepalive_timeout: Seconds = setting(
        75.0,
        "DEFEAH_HTTP_KEEPALIVE_TIMEOUT",
        "Seconds an idle keep-alive connection stays open; keep it above a proxy's (often 60).",
        ge=0.1,
        le=3600,
    )
    health_timeout: Seconds = setting(
        2.0,
        "DEFEAH_HEALTH_TIMEOUT",
        "Seconds a database health check may take before it reports `fail`.",
        ge=0.01,
        le=60,
    )
    shutdown_timeout: Seconds = setting(
        10.0,
        "DEFEAH_SHUTDOWN_TIMEOUT",
        "Seconds SIGTERM/SIGINT may take: in-flight requests get half, closing the pools the "
        "rest, then their connections are terminated.",
        ge=0.1,
        le=600,
    )
    health_token: str | None = Field(
        None,
        validation_alias="DEFEAH_HEALTH_TOKEN",
        description="Bearer token required to see the checks of `/api/v1/health/detailed` "
        f"(unset: open; set but blank: error; on production at least {MIN_PRODUCTION_TOKEN} "
        "characters).",
        repr=False,
    )
    token_keys: SecretStr | None = Field(
        None,
        validation_alias="DEFEAH_TOKEN_KEYS",
        description="Instagram token keys, `id:base64key,...` (AES-256: 32 bytes each); the "
        "first encrypts, all decrypt. Unset: a key generated once into `.defeah/token-keys` "
        "(mode 0600) on development/test; on staging/production required by what reads or "
        "writes tokens (`up`, `serve`, `refresh-tokens`, `reencrypt`), not by the DBA's verbs.",
        repr=False,
    )
    instagram_graph_url: Text = setting(
        "https://graph.instagram.com",
        "DEFEAH_INSTAGRAM_GRAPH_URL",
        "Base URL of the Instagram Graph API that `defeah-db refresh-tokens` calls.",
    )
    metrics_token: str | None = Field(
        None,
        validation_alias="DEFEAH_METRICS_TOKEN",
        description="Bearer token required by `GET /metrics` (unset: open; set but blank: "
        f"error; on production at least {MIN_PRODUCTION_TOKEN} characters).",
        repr=False,
    )
    access_log: bool = setting(
        True,
        "DEFEAH_ACCESS_LOG",
        "One JSON line per HTTP request on stderr (logger `web.access`); `false` turns it off.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # No .env file or secrets folder: the environment is the one source of configuration.
        return init_settings, _EnvironSource(settings_cls, case_sensitive=True)

    @field_validator("health_token", "metrics_token", mode="before")
    @classmethod
    def _token(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            raise ValueError(
                "is empty or blank; unset it to leave the route open, or give it a value"
            )
        return value.strip() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.pool_min_size > self.pool_max_size:
            raise ValueError(
                f"DEFEAH_POOL_MIN_SIZE ({self.pool_min_size}) must not exceed "
                f"DEFEAH_POOL_MAX_SIZE ({self.pool_max_size})"
            )
        for env, token in (
            ("DEFEAH_HEALTH_TOKEN", self.health_token),
            ("DEFEAH_METRICS_TOKEN", self.metrics_token),
        ):
            short = token is not None and len(token) < MIN_PRODUCTION_TOKEN
            if short and self.environment == "production":  # a guessable token protects nothing
                raise ValueError(
                    f"{env}: must be at least {MIN_PRODUCTION_TOKEN} characters on "
                    f"DEFEAH_ENV=production (got {len(token or '')})"
                )
        return self

    def require(self, purpose: str, *fields: str) -> None:
        """Refuse ``purpose`` on staging/production when a secret it needs is unset.

        Secrets are checked where they are used, not when settings load: a DBA migrating,
        checking drift or unlocking an account needs database credentials only (least
        privilege), while serving or touching Instagram tokens needs the key ring too.
        """
        if self.environment not in SECRET_ENVIRONMENTS:
            return
        for name in fields:
            if getattr(self, name) is None:
                raise ConfigError(
                    f"{purpose} needs {env_name(name)} on DEFEAH_ENV={self.environment} "
                    f"({REQUIRED_FORMAT[name]})"
                )

    @property
    def secrets(self) -> frozenset[str]:
        """Every secret value configured: DSN passwords (all URLs, all forms) and the token."""
        found = set(dsn_secrets(self.database_url or ""))
        for url in self.replica_urls:
            found |= dsn_secrets(url)
        found |= {token for token in (self.health_token, self.metrics_token) if token}
        if self.token_keys is not None:
            for entry in self.token_keys.get_secret_value().split(","):
                found.add(entry.partition(":")[2].strip())
        return frozenset(found - {""})

    def scrub(self, text: str) -> str:
        """``text`` (typically a driver's error) with every configured secret replaced."""
        return scrub(text, self.secrets)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise config_error(type(self), exc) from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``environ`` alone (default: the process environment)."""
        token = _ENVIRON.set(environ)
        try:
            return cls()
        finally:
            _ENVIRON.reset(token)

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied and validated again (the environment is not read)."""
        values = {name: getattr(self, name) for name in type(self).model_fields}
        token = _ENVIRON.set({})
        try:
            return type(self)(**{**values, **changes})
        finally:
            _ENVIRON.reset(token)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            if name == "database_url" and isinstance(value, str):
                yield name, redact_dsn(value)
            elif name == "replica_urls":
                yield name, tuple(redact_dsn(v) for v in value)
            else:
                yield name, value
        if self.health_token is not None:
            yield "health_token", "***"
        if self.metrics_token is not None:
            yield "metrics_token", "***"


def env_name(field: str) -> str:
    alias = Settings.model_fields[field].validation_alias
    return alias if isinstance(alias, str) else field


def _bounds(field: str) -> tuple[Any, Any]:
    lo = hi = None
    for meta in Settings.model_fields[field].metadata:
        if isinstance(meta, Ge):
            lo = meta.ge
        elif isinstance(meta, Le):
            hi = meta.le
    return lo, hi


def _message(field: str | None, error: Mapping[str, Any]) -> str:
    """Our wording of one pydantic error: what was expected, and what was given."""
    kind, given = error["type"], error.get("input")
    if kind in ("int_parsing", "int_from_float", "int_type"):
        return f"expected an integer, got {given!r}"
    if kind in ("float_parsing", "float_type"):
        return f"expected a number of seconds, got {given!r}"
    if kind in ("bool_parsing", "bool_type"):
        return f"expected true/false, got {given!r}"
    if kind == "literal_error":
        return f"expected one of {', '.join(ENVIRONMENTS)}, got {given!r}"
    if kind in ("greater_than_equal", "less_than_equal") and field is not None:
        lo, hi = _bounds(field)
        return f"must be between {lo:g} and {hi:g}, got {given}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "value_error":
        return str(error["ctx"]["error"])
    return str(error["msg"])


def config_error(cls: type[Settings], exc: ValidationError) -> ConfigError:
    """The first problem of ``exc`` as one line naming the variable."""
    error = exc.errors(include_url=False)[0]
    loc = error["loc"]
    if not loc:  # a rule across variables; its message names them itself
        return ConfigError(_message(None, error))
    by_env = {env_name(name): name for name in cls.model_fields}
    field = by_env.get(str(loc[0]), str(loc[0]))
    return ConfigError(f"{env_name(field)}: {_message(field, error)}")
