"""Pydantic models of a user: the row as stored (``User``) and the inputs that write it.

The input models (``NewUser``, ``UserUpdate``, ``InstagramConnection``) enforce the same rules as
the SQL CHECKs and column types of ``users`` -- so bad input is refused before a round trip, with
the same ``(field, rule)`` the repository reports when the database itself refuses a row -- plus
the rules SQL cannot express (a real IANA time zone, the 72-byte bcrypt limit).

Constructing an input model with bad data raises ``dal.errors.InvalidUserData`` (a ``ValueError``
naming the first offending field and its rule), not pydantic's ``ValidationError``: the DAL's
callers handle one error vocabulary, and the message can never echo the rejected input (which
may be a password).  The pydantic error, with every problem listed but inputs hidden, stays
available as ``__cause__``.

A ``User`` holds no secret at all: the statements behind it do not select the password hash
or the Instagram token (it says ``has_instagram_token`` instead); the hash is read only by
sign-in and the token only by ``UsersRepository.instagram_token``.  Input secrets (passwords,
tokens) are ``SecretStr`` *and* excluded from ``repr``/``model_dump``/JSON, so neither a log
line nor an API response built from a model can leak them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal
from uuid import UUID
from zoneinfo import available_timezones

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyAddress,
    SecretStr,
    Strict,
    StrictBool,
    ValidationError,
)
from pydantic_core import PydanticCustomError

from dal.errors import InvalidUserData

# -- the table's limits, in one place ---------------------------------------------------------

EMAIL_MIN_LENGTH: Final = 5  # CHECK email_min_length
EMAIL_MAX_LENGTH: Final = 255  # VARCHAR(255)
FULL_NAME_MIN_LENGTH: Final = 2  # CHECK full_name_min_length
FULL_NAME_MAX_LENGTH: Final = 255
TIMEZONE_MAX_LENGTH: Final = 50
LANGUAGE_MAX_LENGTH: Final = 5
INSTAGRAM_USER_ID_MAX_LENGTH: Final = 100
INSTAGRAM_USERNAME_MAX_LENGTH: Final = 255
PASSWORD_MAX_BYTES: Final = 72  # bcrypt reads no further; we refuse instead of truncating
# Real Instagram tokens are a few hundred characters.  The table stores the *encrypted* form
# (dal/tokens.py: base64 plus a short prefix, about 4/3 of the UTF-8 size), capped at 4096
# characters by CHECK instagram_access_token_max_length (0004); 2048 bytes of plaintext
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


def _fail(rule: str) -> PydanticCustomError:
    return PydanticCustomError("user_rule", rule)


@cache
def iana_time_zones() -> frozenset[str]:
    """Zone names from the tz database (``tzdata`` backs it where the OS has none).

    ``localtime`` is a machine-specific alias, not a zone a user can name, so it is left out.
    """
    return frozenset(available_timezones() - {"localtime"})


def _text(value: str) -> str:
    # PostgreSQL text cannot hold NUL, and a lone surrogate cannot be encoded as UTF-8: both
    # would otherwise reach the driver and fail there without naming the field.
    if "\x00" in value:
        raise _fail(RULE_NUL)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _fail(RULE_UNICODE) from None
    return value


def _bounded(limit: int) -> AfterValidator:
    def check(value: str) -> str:
        if len(value) > limit:
            raise _fail(rule_max_length(limit))
        return _text(value)

    return AfterValidator(check)


def _email(value: str) -> str:
    if len(value) > EMAIL_MAX_LENGTH:
        raise _fail(rule_max_length(EMAIL_MAX_LENGTH))
    if len(value) < EMAIL_MIN_LENGTH:
        raise _fail(RULE_EMAIL_MIN)
    if EMAIL_PATTERN.fullmatch(value) is None:
        raise _fail(RULE_EMAIL_FORMAT)
    return value


def _full_name(value: str) -> str:
    if len(value) > FULL_NAME_MAX_LENGTH:
        raise _fail(rule_max_length(FULL_NAME_MAX_LENGTH))
    if len(value) < FULL_NAME_MIN_LENGTH:
        raise _fail(RULE_FULL_NAME_MIN)
    return _text(value)


def _timezone(value: str) -> str:
    if len(value) > TIMEZONE_MAX_LENGTH:
        raise _fail(rule_max_length(TIMEZONE_MAX_LENGTH))
    if value not in iana_time_zones():
        raise _fail(RULE_TIMEZONE)
    return value


def _language(value: str) -> str:
    if len(value) > LANGUAGE_MAX_LENGTH:
        raise _fail(rule_max_length(LANGUAGE_MAX_LENGTH))
    if LANGUAGE_PATTERN.fullmatch(value) is None:
        raise _fail(RULE_LANGUAGE)
    return value


def check_password(password: str) -> str:
    """The password rules, also applied by ``authenticate`` to what a user types."""
    if not password:
        raise _fail(RULE_EMPTY)
    try:
        size = len(password.encode("utf-8"))
    except UnicodeEncodeError:
        raise _fail(RULE_UNICODE) from None
    if size > PASSWORD_MAX_BYTES:
        raise _fail(RULE_PASSWORD_BYTES)
    return password


def _password(secret: SecretStr) -> SecretStr:
    check_password(secret.get_secret_value())
    return secret


def _access_token(secret: SecretStr) -> SecretStr:
    value = secret.get_secret_value()
    if not value:
        raise _fail(RULE_EMPTY)
    _text(value)
    if len(value.encode("utf-8")) > ACCESS_TOKEN_MAX_BYTES:
        raise _fail(RULE_ACCESS_TOKEN_MAX)
    return secret


def _token_expiry(value: datetime) -> datetime:
    if not TOKEN_EXPIRES_MIN <= value < TOKEN_EXPIRES_MAX:
        raise _fail(RULE_EXPIRY_RANGE)
    return value


# Strict: only str (no bytes, no numbers); SecretStr fields take a str or a SecretStr.
StrictText = Annotated[str, Strict()]
Email = Annotated[StrictText, AfterValidator(_email)]
FullName = Annotated[StrictText, AfterValidator(_full_name)]
TimeZoneName = Annotated[StrictText, AfterValidator(_timezone)]
LanguageTag = Annotated[StrictText, AfterValidator(_language)]
Password = Annotated[SecretStr, Strict(), AfterValidator(_password)]
InstagramUserId = Annotated[StrictText, Field(min_length=1), _bounded(INSTAGRAM_USER_ID_MAX_LENGTH)]
InstagramUsername = Annotated[
    StrictText, Field(min_length=1), _bounded(INSTAGRAM_USERNAME_MAX_LENGTH)
]
AccessToken = Annotated[SecretStr, Strict(), AfterValidator(_access_token)]
TokenExpiry = Annotated[AwareDatetime, AfterValidator(_token_expiry)]


def invalid_user_data(exc: ValidationError) -> InvalidUserData:
    """The first problem of a pydantic error as ``InvalidUserData(field, rule)``."""
    # The input is read only to tell "null" from "wrong type"; it never enters the message.
    first = exc.errors(include_url=False)[0]
    raised = first.get("ctx", {}).get("error")
    if isinstance(raised, InvalidUserData):  # from a nested __init__ (model_validate path)
        return InvalidUserData(raised.field, raised.rule)
    field = str(first["loc"][0]) if first["loc"] else exc.title
    if first["type"] == "missing":
        rule = "is required"
    elif first["type"] == "extra_forbidden":
        rule = "is not a known field"
    elif first.get("input", ...) is None:
        rule = RULE_NOT_NULL
    else:
        rule = first["msg"]
    return InvalidUserData(field, rule)


@contextmanager
def _as_invalid_user_data() -> Iterator[None]:
    try:
        yield
    except ValidationError as exc:
        raise invalid_user_data(exc) from exc


class UserInput(BaseModel):
    """Base of the write models: strict about unknown fields, never echoes input in errors.

    Text and flag fields are strict (``StrictText``, ``StrictBool``): lax mode would turn
    ``b"ada@x.io"`` into a string and ``"no"`` or ``0`` into ``False`` -- a caller's bug
    silently becoming data.  Not model-wide: the custom ``__init__`` below makes pydantic
    re-validate ``model_validate_json`` input in Python mode, where a strict datetime field
    would refuse the ISO 8601 text JSON carries.
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,
        validate_default=False,
    )

    # Hidden from the type checker so that the pydantic plugin still synthesises the typed
    # keyword ``__init__``; at run time every entry point raises InvalidUserData instead.
    if not TYPE_CHECKING:

        def __init__(self, **data: Any) -> None:
            with _as_invalid_user_data():
                super().__init__(**data)

        @classmethod
        def model_validate(cls, *args: Any, **kwargs: Any) -> Any:
            with _as_invalid_user_data():
                return super().model_validate(*args, **kwargs)

        @classmethod
        def model_validate_json(cls, *args: Any, **kwargs: Any) -> Any:
            with _as_invalid_user_data():
                return super().model_validate_json(*args, **kwargs)


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


class InstagramConnection(UserInput):
    """An Instagram account to attach to a user (``UsersRepository.connect_instagram``)."""

    instagram_user_id: InstagramUserId
    access_token: AccessToken = Field(repr=False, exclude=True)
    instagram_username: InstagramUsername | None = None
    token_expires_at: TokenExpiry | None = None


class RefreshedToken(UserInput):
    """A token the Graph API returned (``UsersRepository.record_token_refreshed``): the same
    rules as a connected one, and an expiry is required."""

    access_token: AccessToken = Field(repr=False, exclude=True)
    token_expires_at: TokenExpiry


class User(BaseModel):
    """One row of ``users`` as the read statements return it: every column but the secrets.

    Datetimes are timezone-aware UTC (asyncpg decodes ``timestamptz`` that way).  The repository
    builds instances with ``model_construct`` from rows it trusts (see ``from_record``); direct
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
    login_count: int
    failed_login_attempts: int
    locked_until: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_record(cls, row: Any) -> User:
        """A ``User`` from a row of the users statements' column list (a Record or a mapping).

        The row comes from our own statement against a table whose types and CHECKs already
        guarantee every field, so it is not validated again.  Measured on pydantic 2.14
        (bench/bench_dal.py prints it): ``model_validate`` 3.4 us/row, ``model_construct``
        6.2 us/row (its per-field Python loop is slower than validation in Rust), filling the
        instance's slots directly 1.9 us/row -- what this does, falling back to
        ``model_validate`` if pydantic ever changes the instance layout checked below.

        One thing the table does not guarantee: a timestamp written as ``'infinity'`` or
        ``'-infinity'`` by SQL.  asyncpg returns those as *naive* ``datetime.max``/``min``, which
        would make every comparison with an aware "now" raise ``TypeError``; they are read as
        the same instants in UTC, so infinity still sorts after (and -infinity before) any time.
        The check (one ``tzinfo`` look-up per timestamp column) costs about 0.5 us/row.
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


class UserPage(BaseModel):
    """One page of ``UsersRepository.list``; pass ``next_cursor`` back for the next page."""

    model_config = ConfigDict(frozen=True)

    users: list[User]
    next_cursor: str | None


class DueToken(BaseModel):
    """A token leased by ``claim_tokens_due``: refresh it, then record the outcome."""

    model_config = ConfigDict(frozen=True)

    user_id: UUID
    token: SecretStr = Field(repr=False, exclude=True)
    expires_at: datetime
    # When this claim's lease ends; passed back to the record methods it fences them: once
    # the lease ran out and another worker claimed the row, this worker's writes match nothing.
    lease_until: datetime


class TokenRefreshFailure(BaseModel):
    """Outcome of ``record_token_refresh_failed``."""

    model_config = ConfigDict(frozen=True)

    failures: int
    needs_reauth: bool


class LoginFailure(BaseModel):
    """Outcome of recording a failed sign-in."""

    model_config = ConfigDict(frozen=True)

    failed_login_attempts: int
    locked_until: datetime | None

    @property
    def locked(self) -> bool:
        return self.locked_until is not None and self.locked_until > datetime.now(UTC)


AuthResult = Literal[
    "success", "invalid_credentials", "locked", "throttled", "inactive", "unlocked"
]


class AuthEvent(BaseModel):
    """One row of ``auth_events``: a sign-in attempt (or an operator unlock) and what decided it.

    ``decided_by`` is ``password`` for a checked attempt, the budget key that refused it
    (``account``, ``ip <address>``, ``network <network>``), or ``operator``.
    """

    model_config = ConfigDict(frozen=True)

    occurred_at: datetime
    email: str
    user_id: UUID | None
    result: AuthResult
    client_ip: IPvAnyAddress | None
    user_agent: str | None
    decided_by: str
