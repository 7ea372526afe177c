"""Translation of asyncpg exceptions into ``dal.errors``, for statements on ``users``.

The repository catches ``DRIVER_ERRORS`` around every statement and raises what ``translate``
returns, so no asyncpg type escapes the DAL.  Messages are built from constraint names, column
names and SQLSTATE codes only: PostgreSQL's own message or detail can quote the offending value
(``Key (email)=(...) already exists``, ``invalid input syntax ... "<value>"``), and the driver's
client-side errors quote the argument, which could be a token or a hash.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import asyncpg

from dal.db.failures import CONNECTION_ERRORS
from dal.errors import (
    DalError,
    DatabaseUnavailable,
    DuplicateEmail,
    DuplicateInstagramAccount,
    InvalidUserData,
    LockBusy,
)
from dal.rules import CHECK_RULES, COLUMN_LIMITS, RULE_NOT_NULL, RULE_NUL, rule_max_length

EMAIL_UNIQUE = frozenset({"users_email_key", "users_email_lower_key"})
INSTAGRAM_UNIQUE = "users_instagram_user_id_key"

_ARGUMENT = re.compile(r"query argument \$(\d+)")


def translate(exc: BaseException, params: Mapping[str, object] | None = None) -> DalError:
    """The ``dal.errors`` exception for ``exc``; ``params`` names the statement's arguments
    in ``$1, $2, ...`` order so that errors without a column name can still name the field.
    """
    params = params or {}
    if isinstance(exc, asyncpg.exceptions.UniqueViolationError):
        if exc.constraint_name in EMAIL_UNIQUE:
            return DuplicateEmail("a user with this email already exists")
        if exc.constraint_name == INSTAGRAM_UNIQUE:
            return DuplicateInstagramAccount(
                "this Instagram account is already connected to another user"
            )
        return DalError(f"unique constraint {exc.constraint_name} violated")
    if isinstance(exc, asyncpg.exceptions.CheckViolationError):
        field, rule = CHECK_RULES.get(
            exc.constraint_name or "", ("users", f"CHECK {exc.constraint_name}")
        )
        return InvalidUserData(field, rule)
    if isinstance(exc, asyncpg.exceptions.NotNullViolationError):
        return InvalidUserData(exc.column_name or "users", RULE_NOT_NULL)
    if isinstance(exc, asyncpg.exceptions.StringDataRightTruncationError):
        for field, value in params.items():
            limit = COLUMN_LIMITS.get(field)
            if isinstance(value, str) and limit is not None and len(value) > limit:
                return InvalidUserData(field, rule_max_length(limit))
        return InvalidUserData("users", "a value is longer than its column allows")
    if isinstance(
        exc,
        asyncpg.exceptions.CharacterNotInRepertoireError
        | asyncpg.exceptions.UntranslatableCharacterError,
    ):
        for field, value in params.items():
            if isinstance(value, str) and "\x00" in value:
                return InvalidUserData(field, RULE_NUL)
        return InvalidUserData("users", "a value is not valid text")
    if isinstance(exc, asyncpg.exceptions.DataError):
        # Raised by the driver before sending: an argument it cannot encode.
        match = _ARGUMENT.search(str(exc))
        names = list(params)
        if match and 0 < int(match.group(1)) <= len(names):
            return InvalidUserData(names[int(match.group(1)) - 1], "has the wrong type or value")
        return InvalidUserData("users", "an argument has the wrong type or value")
    if isinstance(exc, asyncpg.exceptions.LockNotAvailableError):
        return LockBusy("gave up waiting for a lock within lock_timeout (55P03)")
    if isinstance(exc, CONNECTION_ERRORS):
        return DatabaseUnavailable(f"database connection failed ({type(exc).__name__})")
    sqlstate = getattr(exc, "sqlstate", None) or "no SQLSTATE"
    return DalError(f"unexpected database error {sqlstate} ({type(exc).__name__})")
