"""What every input model shares: validators for the column rules (``dal.rules``), the rules
SQL cannot express (a real IANA time zone, the 72-byte bcrypt limit), and a base class whose
errors are ``dal.errors.InvalidUserData``.

Constructing an input model with bad data raises ``InvalidUserData`` (a ``ValueError`` naming
the first offending field and its rule), not pydantic's ``ValidationError``: the DAL's callers
handle one error vocabulary, and the message can never echo the rejected input (which may be a
password).  The pydantic error, with every problem listed but inputs hidden, stays available
as ``__cause__``.  Input secrets (passwords, tokens) are ``SecretStr`` *and* excluded from
``repr``/``model_dump``/JSON by the models that hold them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import cache
from importlib.resources import files
from typing import TYPE_CHECKING, Annotated, Any
from zoneinfo import available_timezones

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    Strict,
    ValidationError,
)
from pydantic_core import PydanticCustomError

from dal.errors import InvalidUserData
from dal.rules import (
    ACCESS_TOKEN_MAX_BYTES,
    EMAIL_MAX_LENGTH,
    EMAIL_MIN_LENGTH,
    EMAIL_PATTERN,
    FULL_NAME_MAX_LENGTH,
    FULL_NAME_MIN_LENGTH,
    INSTAGRAM_USER_ID_MAX_LENGTH,
    INSTAGRAM_USERNAME_MAX_LENGTH,
    LANGUAGE_MAX_LENGTH,
    LANGUAGE_PATTERN,
    PASSWORD_MAX_BYTES,
    PASSWORD_MIN_LENGTH,
    RULE_ACCESS_TOKEN_MAX,
    RULE_EMAIL_FORMAT,
    RULE_EMAIL_MIN,
    RULE_EMPTY,
    RULE_EXPIRY_RANGE,
    RULE_FULL_NAME_MIN,
    RULE_LANGUAGE,
    RULE_NOT_NULL,
    RULE_NUL,
    RULE_PASSWORD_BYTES,
    RULE_PASSWORD_COMMON,
    RULE_PASSWORD_MIN,
    RULE_TIMEZONE,
    RULE_UNICODE,
    TIMEZONE_MAX_LENGTH,
    TOKEN_EXPIRES_MAX,
    TOKEN_EXPIRES_MIN,
    rule_max_length,
)


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


@cache
def common_passwords() -> frozenset[str]:
    """The shipped list of the 10,000 most common passwords (``dal/common-passwords.txt``,
    package data; its header says where it comes from and under which licence)."""
    text = files("dal").joinpath("common-passwords.txt").read_text(encoding="utf-8")
    return frozenset(line for line in text.splitlines() if line and not line.startswith("#"))


def check_new_password(password: str) -> str:
    """The rules of a password a user chooses (NIST SP 800-63B 5.1.1.2): the sign-in rules,
    at least ``PASSWORD_MIN_LENGTH`` characters, and not on the common-password list (compared
    in lower case and without surrounding spaces, so ``" Password1"`` is refused too)."""
    check_password(password)
    if len(password) < PASSWORD_MIN_LENGTH:
        raise _fail(RULE_PASSWORD_MIN)
    if password.strip().lower() in common_passwords():
        raise _fail(RULE_PASSWORD_COMMON)
    return password


def _password(secret: SecretStr) -> SecretStr:
    check_new_password(secret.get_secret_value())
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
