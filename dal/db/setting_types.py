"""The value types of ``Settings`` and how one is declared: DSNs checked for a scheme and a
database (never quoting a password back), trimmed text, and the environment source that
``Settings.from_env`` points at a mapping of its own."""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field
from pydantic_settings import EnvSettingsSource, NoDecode

from dal.db.dsn import DSN_SCHEMES, split_dsn

ENVIRONMENTS = ("development", "test", "staging", "production")
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


def stripped(value: object) -> object:
    return value.strip() if isinstance(value, str) else value


def lowered(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


Dsn = Annotated[str | None, BeforeValidator(_dsn)]
DsnList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_dsn_list)]
Text = Annotated[str, BeforeValidator(stripped), Field(min_length=1)]
Seconds = float

ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("defeah_environ", default=None)


class EnvironSource(EnvSettingsSource):
    """The environment source, reading ``Settings.from_env``'s mapping when one is given."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        environ = ENVIRON.get()
        return dict(os.environ if environ is None else environ)


def setting(default: Any, env: str, doc: str, **bounds: Any) -> Any:
    """One declaration: default, environment variable, README sentence and bounds."""
    return Field(default, validation_alias=env, description=doc, **bounds)
