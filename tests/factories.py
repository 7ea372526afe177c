"""A complete ``users`` row as the DAL selects it, for model tests that need no database; and
the two secrets read straight from the table, which no ``User`` carries any more."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from dal.database import Database


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


async def stored_column(db: Database, user_id: uuid.UUID, column: str) -> Any:
    """``users.<column>`` of one user as stored (the hash, or the token's stored form)."""
    assert column in ("hashed_password", "instagram_access_token")
    async with db.acquire() as conn:
        return await conn.fetchval(f"SELECT {column} FROM users WHERE id = $1", user_id)


async def stored_hash(db: Database, user_id: uuid.UUID) -> str:
    value = await stored_column(db, user_id, "hashed_password")
    assert isinstance(value, str)
    return value
