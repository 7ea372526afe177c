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

from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import (
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from dal.db.dsn import dsn_secrets, redact_dsn, scrub
from dal.db.privacy_settings import InstagramCallbackSettings, PrivacySettings
from dal.db.setting_groups import (
    ASVS_FAILURES_PER_HOUR,
    MIN_PRODUCTION_TOKEN,
    DatabaseSettings,
    HttpSettings,
    MigrationSettings,
    SecretSettings,
    SignInSettings,
)
from dal.db.setting_types import (
    ENVIRON,
    EnvironSource,
)
from dal.db.settings_errors import config_error, variable
from dal.errors import ConfigError

# Where a secret's development fallback (a generated key file) is not acceptable.
SECRET_ENVIRONMENTS = ("staging", "production")
# What a required secret must look like, for the error that says it is missing.
REQUIRED_FORMAT = {
    "token_keys": "id:base64key,..., 32-byte AES keys; the first encrypts",
    "erasure_pepper": "a random secret of at least 32 characters, never changed",
}


class Settings(
    InstagramCallbackSettings,
    PrivacySettings,
    SecretSettings,
    HttpSettings,
    MigrationSettings,
    SignInSettings,
    DatabaseSettings,
    BaseSettings,
):
    """Validated configuration; ``Settings.from_env()`` reads the environment."""

    model_config = SettingsConfigDict(
        frozen=True,
        case_sensitive=True,
        populate_by_name=True,
        extra="ignore",
        hide_input_in_errors=False,
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
        return init_settings, EnvironSource(settings_cls, case_sensitive=True)

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
        if self.lockout_known_threshold >= self.lockout_consecutive_limit:
            raise ValueError(
                f"DEFEAH_LOCKOUT_KNOWN_THRESHOLD ({self.lockout_known_threshold}) must be below "
                f"DEFEAH_LOCKOUT_CONSECUTIVE_LIMIT ({self.lockout_consecutive_limit})"
            )
        hourly = self.failures_per_hour()
        if hourly > ASVS_FAILURES_PER_HOUR and self.environment == "production":
            raise ValueError(
                f"sign-in budgets allow {hourly} failed sign-ins per account per hour; "
                f"DEFEAH_ENV=production needs at most {ASVS_FAILURES_PER_HOUR} (ASVS V2.2.1): "
                "lower DEFEAH_LOCKOUT_ACCOUNT_THRESHOLD / DEFEAH_LOCKOUT_KNOWN_THRESHOLD or "
                "lengthen DEFEAH_LOCKOUT_ACCOUNT_WINDOW"
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
        found |= set(self.instagram_app_secrets)
        if self.erasure_pepper is not None:
            found.add(self.erasure_pepper.get_secret_value())
        return frozenset(found - {""})

    @property
    def instagram_app_secrets(self) -> tuple[str, ...]:
        """The Meta app secrets that verify a callback (empty: the callbacks are off)."""
        if self.instagram_app_secret is None:
            return ()
        return tuple(self.instagram_app_secret.get_secret_value().split(","))

    def require_callbacks(self, purpose: str) -> None:
        """Refuse ``purpose`` (a serving verb) when the Instagram callbacks are on without
        ``DEFEAH_PUBLIC_URL``: Meta would be handed a status URL nobody can open.  Checked by
        the verbs that serve, not when settings load: a DBA's verbs need neither."""
        if self.instagram_app_secret is None:
            return
        if self.public_url is None:
            raise ConfigError(
                f"{purpose}: DEFEAH_INSTAGRAM_APP_SECRET turns on the Instagram callbacks, "
                "which need DEFEAH_PUBLIC_URL (the service's public base URL, for the data "
                "deletion status page)"
            )
        if self.environment == "production" and not self.public_url.startswith("https://"):
            # Meta calls and links only https URLs; a plain-http status page is a typo here
            raise ConfigError(f"{purpose}: DEFEAH_PUBLIC_URL must be https:// on production")

    def scrub(self, text: str) -> str:
        """``text`` (typically a driver's error) with every configured secret replaced."""
        return scrub(text, self.secrets)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise config_error(type(self).model_fields, exc) from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``environ`` alone (default: the process environment)."""
        token = ENVIRON.set(environ)
        try:
            return cls()
        finally:
            ENVIRON.reset(token)

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied and validated again (the environment is not read)."""
        values = {name: getattr(self, name) for name in type(self).model_fields}
        token = ENVIRON.set({})
        try:
            return type(self)(**{**values, **changes})
        finally:
            ENVIRON.reset(token)

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
    """The environment variable of ``Settings`` field ``field``."""
    return variable(Settings.model_fields, field)
