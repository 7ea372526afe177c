"""A complete ``users`` row as the DAL selects it, for model tests that need no database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any


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
