"""Test inputs: a complete ``users`` row for model tests, test settings, and the two secrets
read straight from the table, which no ``User`` carries any more."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from dal.db.database import Database
from dal.db.settings import Settings
from tests.commands import TEST_TOKEN_KEYS


def user_row(**overrides: Any) -> dict[str, Any]:
    """Every column with a valid value; ``overrides`` replace some."""
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "email": "ada@example.com",
        "full_name": "Ada",
        "is_active": True,
        "is_verified": False,
        "instagram_user_id": None,
        "has_instagram_token": False,
        "instagram_username": None,
        "token_expires_at": None,
        "instagram_needs_reauth": False,
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
        "token_keys": TEST_TOKEN_KEYS,  # the ring the CLI subprocesses use (tests/commands.py)
    }
    return Settings.from_env({}).replace(**{**defaults, **overrides})


async def stored_column(db: Database, user_id: uuid.UUID, column: str) -> Any:
    """``users.<column>`` of one user as stored (the hash, or the token's stored form)."""
    assert column in ("hashed_password", "instagram_access_token")
    async with db.acquire() as conn:
        return await conn.fetchval(f"SELECT {column} FROM users WHERE id = $1", user_id)


async def stored_hash(db: Database, user_id: uuid.UUID) -> str:
    value = await stored_column(db, user_id, "hashed_password")
    assert isinstance(value, str)
    return value
