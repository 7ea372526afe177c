"""Test inputs: a complete ``users`` row for model tests, and test settings."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from dal.config import Settings


def user_row(**overrides: Any) -> dict[str, Any]:
    """Every column with a valid value; ``overrides`` replace some."""
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "email": "ada@example.com",
        "hashed_password": "$2b$04$" + "h" * 53,
        "full_name": "Ada",
        "is_active": True,
        "is_verified": False,
        "instagram_user_id": None,
        "instagram_access_token": None,
        "instagram_username": None,
        "token_expires_at": None,
        "timezone": "UTC",
        "language": "en",
        "last_login_at": None,
        "login_count": 0,
        "failed_login_attempts": 0,
        "locked_until": None,
        "created_at": now,
        "updated_at": now,
    }
    values.update(overrides)
    return values


def make_settings(dsn: str, **overrides: object) -> Settings:
    """Settings for tests on ``dsn``: small pool, short timeouts, bcrypt cost 4.  Built from an
    empty environment, so a developer's own DEFEAH_* variables never change a test."""
    defaults: dict[str, object] = {
        "database_url": dsn,
        "pool_min_size": 1,
        "pool_max_size": 10,
        "acquire_timeout": 5.0,
        "command_timeout": 10.0,
        "statement_timeout": 10.0,
        "bcrypt_rounds": 4,
        "health_timeout": 1.0,
    }
    return Settings.from_env({}).replace(**{**defaults, **overrides})
