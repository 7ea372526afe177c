"""Pydantic models of a user: the row as stored (``User``) and the inputs that write it.

``NewUser`` and ``UserUpdate`` enforce the same rules as the SQL CHECKs and column types of
``users`` (``dal.inputs``), so bad input is refused before a round trip with the ``(field,
rule)`` the repository reports when the database itself refuses a row.

A ``User`` holds no secret at all: the statements behind it do not select the password hash
or the Instagram token (it says ``has_instagram_token`` instead); the hash is read only by
sign-in and the token only by ``InstagramRepository.token``.  A new password is ``SecretStr``
*and* excluded from ``repr``/``model_dump``/JSON, so neither a log line nor an API response
built from a model can leak it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, IPvAnyAddress, StrictBool

from dal.errors import InvalidUserData, NotFound
from dal.inputs import Email, FullName, LanguageTag, Password, TimeZoneName, UserInput
from dal.rules import COUNTER_MAX, RULE_NOT_NULL


class NewUser(UserInput):
    """What ``UsersRepository.create`` needs; the password is hashed there, never stored."""

    email: Email
    password: Password = Field(repr=False, exclude=True)
    full_name: FullName | None = None
    is_active: StrictBool = True
    is_verified: StrictBool = False
    timezone: TimeZoneName = "UTC"
    language: LanguageTag = "en"


class UserUpdate(UserInput):
    """A partial update: only the fields given (``model_fields_set``) change.

    ``full_name=None`` clears the name; the other columns are NOT NULL, so ``None`` is refused
    for them.  A new ``password`` is hashed with the configured cost.
    """

    email: Email | None = None
    password: Password | None = Field(default=None, repr=False, exclude=True)
    full_name: FullName | None = None
    is_active: StrictBool | None = None
    is_verified: StrictBool | None = None
    timezone: TimeZoneName | None = None
    language: LanguageTag | None = None

    if not TYPE_CHECKING:

        def __init__(self, **data: Any) -> None:
            for name in ("email", "password", "is_active", "is_verified", "timezone", "language"):
                if name in data and data[name] is None:
                    raise InvalidUserData(name, RULE_NOT_NULL)
            super().__init__(**data)


class User(BaseModel):
    """One row of ``users`` as the read statements return it: every column but the secrets.

    Datetimes are timezone-aware UTC (asyncpg decodes ``timestamptz`` that way).  The repository
    builds instances from rows it trusts without validating them again (``from_record``); direct
    construction validates as usual.
    """

    model_config = ConfigDict(frozen=True, hide_input_in_errors=True)

    id: UUID
    email: str
    full_name: str | None
    is_active: bool
    is_verified: bool
    instagram_user_id: str | None
    has_instagram_token: bool
    instagram_username: str | None
    token_expires_at: datetime | None
    instagram_needs_reauth: bool
    timezone: str
    language: str
    last_login_at: datetime | None
    login_count: int = Field(ge=0, le=COUNTER_MAX)  # CHECK non_negative_login_count, INTEGER
    failed_login_attempts: int = Field(ge=0, le=COUNTER_MAX)  # saturates in SQL at the maximum
    locked_until: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_record(cls, row: Any) -> User:
        """A ``User`` from a row of the users statements' column list (a Record or a mapping).

        The row comes from our own statement against a table whose types and CHECKs already
        guarantee every field, so it is not validated again: the instance's slots are filled
        directly, which measured faster than both ``model_validate`` and ``model_construct``
        (whose per-field Python loop is slower than validation in Rust; bench/bench_dal.py
        prints all three, docs/benchmarks.md keeps the figures).  It falls back to
        ``model_validate`` if pydantic ever changes the instance layout checked below.

        One thing the table does not guarantee: a timestamp written as ``'infinity'`` or
        ``'-infinity'`` by SQL.  asyncpg returns those as *naive* ``datetime.max``/``min``, which
        would make every comparison with an aware "now" raise ``TypeError``; they are read as
        the same instants in UTC, so infinity still sorts after (and -infinity before) any time.
        The check is one ``tzinfo`` look-up per timestamp column.
        """
        values = dict(row)
        for column in _TIMESTAMP_COLUMNS:
            value = values[column]
            if value is not None and value.tzinfo is None:
                values[column] = value.replace(tzinfo=UTC)
        if not _FAST_LAYOUT:
            return cls.model_validate(values)
        user = _new(cls)
        _set(user, "__dict__", values)
        _set(user, "__pydantic_fields_set__", _ALL_FIELDS)
        _set(user, "__pydantic_extra__", None)
        _set(user, "__pydantic_private__", None)
        return user

    @property
    def is_locked(self) -> bool:
        """True while ``locked_until`` lies in the future (compared with the current time)."""
        return self.locked_until is not None and self.locked_until > datetime.now(UTC)

    @property
    def has_instagram_connected(self) -> bool:
        return self.instagram_user_id is not None and self.has_instagram_token

    @property
    def instagram_token_expired(self) -> bool:
        """True when a connected token's expiry has passed; False without a token or expiry."""
        return (
            self.has_instagram_connected
            and self.token_expires_at is not None
            and self.token_expires_at <= datetime.now(UTC)
        )


# Shared by every row-built instance; safe because User is frozen (nothing adds to it).
_ALL_FIELDS: Final[set[str]] = set(User.model_fields)
# The timestamptz columns, which asyncpg decodes naive only for +/-infinity.
_TIMESTAMP_COLUMNS: Final = (
    "token_expires_at",
    "last_login_at",
    "locked_until",
    "created_at",
    "updated_at",
)
# The instance layout User.from_record fills in; anything else and it validates instead.
_FAST_LAYOUT: Final = (
    BaseModel.__slots__
    == (
        "__dict__",
        "__pydantic_fields_set__",
        "__pydantic_extra__",
        "__pydantic_private__",
    )
    and not User.__pydantic_post_init__
)
_new = object.__new__
_set = object.__setattr__


def required_row(row: Any, user_id: UUID) -> Any:
    """``row``, or ``NotFound`` naming the user when a statement keyed by ``user_id`` found none."""
    if row is None:
        raise NotFound(f"user {user_id} not found")
    return row


def user_row(row: Any, user_id: UUID) -> User:
    """The ``User`` of ``row`` (``required_row``'s rule)."""
    return User.from_record(required_row(row, user_id))


class UserPage(BaseModel):
    """One page of ``UsersRepository.list``; pass ``next_cursor`` back for the next page."""

    model_config = ConfigDict(frozen=True)

    users: list[User]
    next_cursor: str | None


class LoginFailure(BaseModel):
    """Outcome of recording a failed sign-in."""

    model_config = ConfigDict(frozen=True)

    failed_login_attempts: int
    locked_until: datetime | None

    @property
    def locked(self) -> bool:
        return self.locked_until is not None and self.locked_until > datetime.now(UTC)


AuthResult = Literal[
    "success", "invalid_credentials", "locked", "throttled", "inactive", "unlocked", "overloaded"
]


class AuthEvent(BaseModel):
    """One row of ``auth_events``: a sign-in attempt (or an operator unlock) and what decided it.

    ``decided_by`` is ``password`` for a checked attempt, the budget key that refused it
    (``account``, ``known``, ``streak``, ``ip <address>``, ``network <network>``), or
    ``operator``.
    """

    model_config = ConfigDict(frozen=True)

    occurred_at: datetime
    email: str
    user_id: UUID | None
    result: AuthResult
    client_ip: IPvAnyAddress | None
    user_agent: str | None
    decided_by: str
    # A summary of in-process refusals stands for ``attempts`` of them, up to
    # ``last_occurred_at``; any other event is one attempt (``last_occurred_at`` None).
    attempts: int = 1
    last_occurred_at: datetime | None = None
