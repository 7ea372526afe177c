"""The fields of ``Settings``, grouped by what they configure.  Each field is declared once:
type, default, bounds, environment variable (its alias) and the sentence the README's table
shows.  ``Settings`` (``dal.db.settings``) composes the groups and adds the cross-field rules,
the secrets and the constructors."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, Field, SecretStr

from dal.db.event_loop import EventLoopChoice, parse_choice
from dal.db.paths import default_data_dir
from dal.db.setting_types import (
    Dsn,
    DsnList,
    Environment,
    Seconds,
    Text,
    lowered,
    setting,
    stripped,
)

# ASVS 4.0 V2.2.1: at most 100 failed sign-ins per account per hour (checked on production).
ASVS_FAILURES_PER_HOUR = 100
HOUR = 3600.0
MIN_PRODUCTION_TOKEN = 16  # characters of DEFEAH_HEALTH_TOKEN / DEFEAH_METRICS_TOKEN on production


class DatabaseSettings(BaseModel):
    """Where the database is and how the pools reach it."""

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
    environment: Annotated[Environment, BeforeValidator(lowered)] = setting(
        "development",
        "DEFEAH_ENV",
        "`development`, `test`, `staging` or `production`; production refuses the destructive "
        "verbs (rollback, seed, clear, generate, ...) without `--force`.",
    )
    data_dir: Annotated[Path, BeforeValidator(stripped)] = Field(
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
    event_loop: Annotated[EventLoopChoice, BeforeValidator(parse_choice)] = setting(
        "auto",
        "DEFEAH_EVENT_LOOP",
        "Event loop of the server and the CLI: `auto` (uvloop when installed, else asyncio), "
        "`uvloop` (an error without it) or `asyncio`.",
    )


class SignInSettings(BaseModel):
    """bcrypt and the sign-in budgets."""

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
    bcrypt_yield_to_loop: bool = setting(
        True,
        "DEFEAH_BCRYPT_YIELD_TO_LOOP",
        "While the server's event loop is busy (on a CPU or waiting for one half the time or "
        "more), one bcrypt worker fewer hashes at once, so sign-ins leave a core to the loop's "
        "neighbours (at most one core's worth of sign-ins meanwhile; `dal.users.loop_pressure`); "
        "`false` keeps every worker hashing.",
    )
    signin_refusal_hold: Seconds = setting(
        2.0,
        "DEFEAH_SIGNIN_REFUSAL_HOLD",
        "Seconds a process refuses a spent sign-in key itself (no database round trip) after "
        "the database refused it; `0` asks the database every time.",
        ge=0,
        le=60,
    )
    signin_refusal_delay: Seconds = setting(
        0.05,
        "DEFEAH_SIGNIN_REFUSAL_DELAY",
        "Seconds a refusal made in process waits before it answers (no CPU, no connection): a "
        "flood gets one refusal per delay per connection; `0` answers at once.",
        ge=0,
        le=10,
    )
    signin_event_flush: Seconds = setting(
        10.0,
        "DEFEAH_SIGNIN_EVENT_FLUSH",
        "Seconds between the `auth_events` summary rows of refusals made in process (one row "
        "per spent key per interval, with the count).",
        ge=0.01,
        le=3600,
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
        40,
        "DEFEAH_LOCKOUT_ACCOUNT_THRESHOLD",
        "Failed sign-ins per email per account window from addresses it never signed in from; "
        "then it locks for them.",
        ge=1,
        le=1_000_000,
    )
    lockout_known_threshold: int = setting(
        10,
        "DEFEAH_LOCKOUT_KNOWN_THRESHOLD",
        "Failed sign-ins per email per account window from addresses where it signed in before "
        "(a budget of their own: strangers cannot spend it).",
        ge=1,
        le=1_000_000,
    )
    lockout_account_window: Seconds = setting(
        3600.0,
        "DEFEAH_LOCKOUT_ACCOUNT_WINDOW",
        "Seconds of one window of the account and known budgets (and of the account lock).",
        ge=0.001,
        le=31_536_000,
    )
    lockout_consecutive_limit: int = setting(
        100,
        "DEFEAH_LOCKOUT_CONSECUTIVE_LIMIT",
        "Failures since an email's last success after which no check runs until a success or "
        "`defeah-db unlock` (strangers stop that many known-budget units earlier).",
        ge=2,
        le=100,
    )

    def failures_per_hour(self) -> int:
        """The most failed sign-ins these budgets let through on one account in any hour.

        Every attempt spends either the account (strangers) or the known budget of its email,
        each at most its threshold per window; windows follow one another without overlap, so
        an hour meets at most ``ceil(3600 / window) + 1`` of them -- two at the default 3600 s,
        which is how (40 + 10) per window stays within ASVS V2.2.1's 100 per hour even across
        a window edge."""
        windows = math.ceil(HOUR / self.lockout_account_window) + 1
        return (self.lockout_account_threshold + self.lockout_known_threshold) * windows


class MigrationSettings(BaseModel):
    """The session limits and retries of every migration run."""

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


class HttpSettings(BaseModel):
    """The HTTP server: address, client timeouts, health and shutdown."""

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
    # 1,000 in total: below the file limit systemd gives a service (1,024 soft; raised to the
    # hard limit at start, and the cap is kept below whatever limit remains).  100 per address:
    # a browser opens 6, a NAT'd office a few dozen; behind a proxy, raise it to the total.
    http_max_connections: int = setting(
        1000,
        "DEFEAH_HTTP_MAX_CONNECTIONS",
        "Client connections open at once, at most (also kept below the file limit); when full, "
        "the oldest idle one is closed for a new one, and with none idle the new one is refused.",
        ge=1,
        le=1_000_000,
    )
    http_max_connections_per_address: int = setting(
        100,
        "DEFEAH_HTTP_MAX_CONNECTIONS_PER_ADDRESS",
        "Client connections open at once from one address (IPv4, IPv6 /64), at most; the same "
        "rule at that address's cap. Behind a proxy, set it to `DEFEAH_HTTP_MAX_CONNECTIONS`.",
        ge=1,
        le=1_000_000,
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


class SecretSettings(BaseModel):
    """Bearer tokens of the routes and the Instagram key ring; never in a repr."""

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
        description="Bearer token required by `GET /metrics` (unset: open, but closed to "
        "everyone on production; set but blank: error; on production at least "
        f"{MIN_PRODUCTION_TOKEN} characters).",
        repr=False,
    )
    access_log: bool = setting(
        True,
        "DEFEAH_ACCESS_LOG",
        "One JSON line per HTTP request on stderr (logger `web.access`); `false` turns it off.",
    )
