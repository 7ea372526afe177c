"""The rules of the schema's columns, written once: limits, patterns and the sentence that
explains each.  The input models (``dal.inputs`` and the models built on it) enforce them before
a round trip, and the translation of database errors (``dal.db.translate``) names the same
``(field, rule)`` when PostgreSQL's own CHECK refuses a row, so a mistake reads the same
whichever layer catches it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Final

EMAIL_MIN_LENGTH: Final = 5  # CHECK email_min_length
EMAIL_MAX_LENGTH: Final = 255  # VARCHAR(255)
FULL_NAME_MIN_LENGTH: Final = 2  # CHECK full_name_min_length
FULL_NAME_MAX_LENGTH: Final = 255
TIMEZONE_MAX_LENGTH: Final = 50
LANGUAGE_MAX_LENGTH: Final = 5
INSTAGRAM_USER_ID_MAX_LENGTH: Final = 100
INSTAGRAM_USERNAME_MAX_LENGTH: Final = 255
PASSWORD_MAX_BYTES: Final = 72  # bcrypt reads no further; we refuse instead of truncating
# NIST SP 800-63B 5.1.1.2: a password a user chooses has at least 8 characters (code points).
# Only new passwords (create, update) are held to it and to the common-password list; sign-in
# checks what it is given against the stored hash, so an older, shorter password still works
# until it is changed.  No SQL CHECK can apply: the table holds only the bcrypt hash.
PASSWORD_MIN_LENGTH: Final = 8
# The largest INTEGER: the users counters (failed_login_attempts, login_count) saturate here in
# SQL instead of overflowing, and the User model's bounds say the same.
COUNTER_MAX: Final = 2**31 - 1
# Real Instagram tokens are a few hundred characters.  The table stores the *encrypted* form
# (dal/instagram/keyring.py: base64 plus a short prefix, about 4/3 of the UTF-8 size), capped at
# 4096 characters by CHECK instagram_access_token_max_length (0004); 2048 bytes of plaintext
# encrypt to at most about 2,800 characters, well inside it, and leave room for format changes.
ACCESS_TOKEN_MAX_BYTES: Final = 2048
STORED_TOKEN_MAX_LENGTH: Final = 4096
# The token expiries we store: [1970-01-01, 9999-12-31) UTC.  asyncpg writes datetime.max and
# datetime.min as 'infinity'/'-infinity' and reads those back naive; later instants would not
# fit a Python datetime once converted to UTC.  No real expiry lies outside this range.
TOKEN_EXPIRES_MIN: Final = datetime(1970, 1, 1, tzinfo=UTC)
TOKEN_EXPIRES_MAX: Final = datetime(9999, 12, 31, tzinfo=UTC)

# The CHECK valid_email_format, evaluated by PostgreSQL with ``~*`` (case-insensitive).  Python
# needs re.ASCII so that IGNORECASE does not fold non-ASCII letters (the Kelvin sign K, the long
# s) into [A-Za-z] the way PostgreSQL never does, and fullmatch because ``$`` in Python also
# matches before a trailing newline.
EMAIL_PATTERN: Final = re.compile(
    r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}", re.IGNORECASE | re.ASCII
)
# A short BCP 47 tag: language, optionally a region ("en", "fil", "pt-BR", "zh-CN").
LANGUAGE_PATTERN: Final = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z]{2})?", re.ASCII)

# Rule texts shared by the pydantic validators and the repository's translation of database
# errors, so the same mistake reads the same whichever layer catches it.
RULE_EMAIL_FORMAT: Final = "must look like name@domain.tld (CHECK valid_email_format)"
RULE_EMAIL_MIN: Final = f"must be at least {EMAIL_MIN_LENGTH} characters (CHECK email_min_length)"
RULE_FULL_NAME_MIN: Final = (
    f"must be null or at least {FULL_NAME_MIN_LENGTH} characters (CHECK full_name_min_length)"
)
RULE_NUL: Final = "must not contain NUL characters"
RULE_UNICODE: Final = "must be valid Unicode (no lone surrogates)"
RULE_TIMEZONE: Final = "must be an IANA time zone name such as Europe/Paris"
RULE_LANGUAGE: Final = "must be a language tag such as en or pt-BR"
RULE_EMPTY: Final = "must not be empty"
RULE_PASSWORD_BYTES: Final = (
    f"must be at most {PASSWORD_MAX_BYTES} bytes in UTF-8 (bcrypt ignores anything longer)"
)
RULE_PASSWORD_MIN: Final = f"must be at least {PASSWORD_MIN_LENGTH} characters"
RULE_PASSWORD_COMMON: Final = "must not be a commonly used password"  # noqa: S105 (a rule)
RULE_NOT_NULL: Final = "must not be null"
RULE_AWARE: Final = "must be a timezone-aware datetime"
RULE_EXPIRY_RANGE: Final = "must be from 1970-01-01 up to (excluding) 9999-12-31 UTC"
RULE_ACCESS_TOKEN_MAX: Final = f"must be at most {ACCESS_TOKEN_MAX_BYTES} bytes in UTF-8"
RULE_STORED_TOKEN_MAX: Final = (
    f"stored (encrypted) form must be at most {STORED_TOKEN_MAX_LENGTH} characters "
    "(CHECK instagram_access_token_max_length)"
)


def rule_max_length(limit: int) -> str:
    return f"must be at most {limit} characters (varchar({limit}))"


# Which column each CHECK constraint guards, and the rule it enforces.
CHECK_RULES: Final[dict[str, tuple[str, str]]] = {
    "valid_email_format": ("email", RULE_EMAIL_FORMAT),
    "email_min_length": ("email", RULE_EMAIL_MIN),
    "full_name_min_length": ("full_name", RULE_FULL_NAME_MIN),
    "non_negative_failed_attempts": ("failed_login_attempts", "must not be negative"),
    "non_negative_login_count": ("login_count", "must not be negative"),
    "instagram_access_token_max_length": ("instagram_access_token", RULE_STORED_TOKEN_MAX),
}
# Upper bounds of the text columns the DAL writes (None: unbounded TEXT).
COLUMN_LIMITS: Final[dict[str, int | None]] = {
    "email": EMAIL_MAX_LENGTH,
    "full_name": FULL_NAME_MAX_LENGTH,
    "timezone": TIMEZONE_MAX_LENGTH,
    "language": LANGUAGE_MAX_LENGTH,
    "instagram_user_id": INSTAGRAM_USER_ID_MAX_LENGTH,
    "instagram_username": INSTAGRAM_USERNAME_MAX_LENGTH,
    "instagram_access_token": None,
}
