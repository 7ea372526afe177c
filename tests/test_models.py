"""The pydantic models without a database: input rules, typed errors, row mapping, properties."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import SecretStr

from dal import InstagramConnection, NewUser, User, UserUpdate, rules
from dal.errors import InvalidUserData
from dal.inputs import UserInput, iana_time_zones
from dal.users import models
from tests.factories import user_row


def make(**kw: Any) -> NewUser:
    values: dict[str, Any] = {"email": "ada@example.com", "password": "pw-long-enough", **kw}
    return NewUser(**values)


@pytest.mark.parametrize(
    ("fields", "field", "rule"),
    [
        ({"email": "ada@example"}, "email", "valid_email_format"),
        ({"email": "ada@example.c"}, "email", "valid_email_format"),
        ({"email": "a b@example.com"}, "email", "valid_email_format"),
        ({"email": "ada@example.com\n"}, "email", "valid_email_format"),
        ({"email": "ada@exa_mple.com"}, "email", "valid_email_format"),
        ({"email": "ada@example.\u212aa"}, "email", "valid_email_format"),  # Kelvin sign
        ({"email": "a@b."}, "email", "email_min_length"),
        ({"email": "a" * 250 + "@ex.io"}, "email", "varchar(255)"),
        ({"email": None}, "email", "must not be null"),
        ({"email": 42}, "email", "valid string"),
        ({"full_name": "A"}, "full_name", "full_name_min_length"),
        ({"full_name": ""}, "full_name", "full_name_min_length"),
        ({"full_name": "N" * 256}, "full_name", "varchar(255)"),
        ({"full_name": "Ada\x00"}, "full_name", "NUL"),
        ({"full_name": "Ada\ud800"}, "full_name", "surrogate"),
        ({"timezone": "Mars/Olympus"}, "timezone", "IANA"),
        ({"timezone": "europe/paris"}, "timezone", "IANA"),
        ({"timezone": "localtime"}, "timezone", "IANA"),
        ({"timezone": "A/" + "b" * 49}, "timezone", "varchar(50)"),
        ({"language": "english"}, "language", "varchar(5)"),
        ({"language": "e"}, "language", "language tag"),
        ({"language": "en_GB"}, "language", "language tag"),
        ({"password": ""}, "password", "must not be empty"),
        ({"password": "x" * 73}, "password", "72 bytes"),
        ({"password": "é" * 37}, "password", "72 bytes"),
        ({"password": "\U0001f512" * 19}, "password", "72 bytes"),
        ({"is_active": "perhaps"}, "is_active", "boolean"),
        ({"nickname": "ada"}, "nickname", "not a known field"),
    ],
)
def test_new_user_rejections_name_field_and_rule(
    fields: dict[str, Any], field: str, rule: str
) -> None:
    with pytest.raises(InvalidUserData) as caught:
        make(**fields)
    assert caught.value.field == field
    assert rule in caught.value.rule
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    "fields",
    [
        {"email": "a@b.io"},
        {"email": "A.B-C_d%e+f@Sub-Domain.Example.MUSEUM"},
        {"email": "x" * 243 + "@example.com"},  # exactly 255
        {"full_name": "Al"},
        {"full_name": "N" * 255},
        {"full_name": "Zoë Ñandú 李"},
        {"timezone": "America/Argentina/Buenos_Aires"},
        {"language": "pt-BR"},
        {"language": "fil"},
        {"password": "x" * 72},
        {"password": "é" * 36},
    ],
)
def test_new_user_accepts_the_edges(fields: dict[str, Any]) -> None:
    user = make(**fields)
    for name, value in fields.items():
        got = getattr(user, name)
        assert (got.get_secret_value() if isinstance(got, SecretStr) else got) == value


def test_time_zones_come_from_the_tz_database() -> None:
    zones = iana_time_zones()
    assert {"UTC", "Europe/Paris", "Asia/Kolkata"} <= zones
    assert max(len(z) for z in zones) <= 50


def test_validate_entry_points_raise_invalid_user_data_too() -> None:
    with pytest.raises(InvalidUserData) as caught:
        NewUser.model_validate(
            {"email": "ada@example.com", "password": "pw-long-enough", "full_name": "A"}
        )
    assert caught.value.field == "full_name"
    with pytest.raises(InvalidUserData) as from_json:
        NewUser.model_validate_json('{"email": "nope", "password": "pw-long-enough"}')
    assert from_json.value.field == "email"
    with pytest.raises(InvalidUserData) as missing:
        NewUser.model_validate({"email": "ada@example.com"})
    assert (missing.value.field, missing.value.rule) == ("password", "is required")


def test_update_is_partial_and_refuses_null_for_not_null_columns() -> None:
    update = UserUpdate(full_name=None, language="fr")
    assert update.model_fields_set == {"full_name", "language"}
    assert UserUpdate().model_fields_set == set()
    for name in ("email", "password", "is_active", "is_verified", "timezone", "language"):
        with pytest.raises(InvalidUserData) as caught:
            UserUpdate(**{name: None})
        assert (caught.value.field, caught.value.rule) == (name, "must not be null")
    with pytest.raises(InvalidUserData) as bad:
        UserUpdate(email="bad")
    assert bad.value.field == "email"


def test_instagram_connection_rules() -> None:
    ok = InstagramConnection(
        instagram_user_id="1784",
        access_token="tok",  # type: ignore[arg-type]
        token_expires_at=datetime.now(UTC),
    )
    assert ok.instagram_username is None
    cases: list[tuple[dict[str, Any], str]] = [
        ({"token_expires_at": datetime(2030, 1, 1)}, "token_expires_at"),  # naive
        ({"access_token": ""}, "access_token"),
        ({"instagram_user_id": ""}, "instagram_user_id"),
        ({"instagram_user_id": "9" * 101}, "instagram_user_id"),
        ({"instagram_username": "u" * 256}, "instagram_username"),
    ]
    for fields, field in cases:
        values: dict[str, Any] = {"instagram_user_id": "1", "access_token": "t", **fields}
        with pytest.raises(InvalidUserData) as caught:
            InstagramConnection(**values)
        assert caught.value.field == field


def test_from_record_equals_full_validation() -> None:
    for values in (
        user_row(),
        user_row(
            instagram_user_id="1", has_instagram_token=True, token_expires_at=datetime.now(UTC)
        ),
    ):
        fast = User.from_record(values)
        validated = User.model_validate(values)
        assert fast == validated
        assert fast.model_dump() == validated.model_dump()
        assert fast.model_dump_json() == validated.model_dump_json()
        assert fast.model_fields_set == set(User.model_fields)
        assert fast.model_copy(update={"login_count": 3}).login_count == 3
        assert pickle.loads(pickle.dumps(fast)) == fast  # noqa: S301 - our own object
    assert models._FAST_LAYOUT  # the fast path is the one exercised here


def test_user_properties() -> None:
    now = datetime.now(UTC)
    assert not User.from_record(user_row()).is_locked
    assert User.from_record(user_row(locked_until=now + timedelta(minutes=1))).is_locked
    assert not User.from_record(user_row(locked_until=now - timedelta(seconds=1))).is_locked

    plain = User.from_record(user_row())
    assert not plain.has_instagram_connected and not plain.instagram_token_expired
    linked = user_row(instagram_user_id="1", has_instagram_token=True)
    assert User.from_record(linked).has_instagram_connected
    assert not User.from_record(linked).instagram_token_expired  # no expiry known
    expired = User.from_record({**linked, "token_expires_at": now - timedelta(seconds=1)})
    assert expired.instagram_token_expired
    fresh = User.from_record({**linked, "token_expires_at": now + timedelta(days=1)})
    assert not fresh.instagram_token_expired


def link(**fields: Any) -> InstagramConnection:
    values: dict[str, Any] = {"instagram_user_id": "1", "access_token": "t", **fields}
    return InstagramConnection(**values)


@pytest.mark.parametrize(
    "expires",
    [
        datetime.max.replace(tzinfo=UTC),  # asyncpg would store +infinity
        datetime.min.replace(tzinfo=UTC),  # ... and -infinity
        datetime(9999, 12, 31, tzinfo=UTC),
        datetime(9999, 12, 31, 20, tzinfo=timezone(timedelta(hours=-5))),  # year 10000 in UTC
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1, 1, 2, tzinfo=UTC),
    ],
)
def test_token_expiry_outside_the_storable_range_is_refused(expires: datetime) -> None:
    with pytest.raises(InvalidUserData) as caught:
        link(token_expires_at=expires)
    assert caught.value.field == "token_expires_at"
    assert "1970" in caught.value.rule and "9999" in caught.value.rule


@pytest.mark.parametrize(
    "expires",
    [
        rules.TOKEN_EXPIRES_MIN,
        rules.TOKEN_EXPIRES_MAX - timedelta(microseconds=1),
        datetime(9999, 12, 30, 23, tzinfo=timezone(timedelta(hours=14))),
    ],
)
def test_token_expiry_at_the_edges_of_the_range_is_accepted(expires: datetime) -> None:
    assert link(token_expires_at=expires).token_expires_at == expires


@pytest.mark.parametrize(
    ("column", "sentinel"),
    [
        # What asyncpg returns for timestamptz 'infinity' / '-infinity': naive datetime.max/min.
        ("token_expires_at", datetime.max),
        ("token_expires_at", datetime.min),
        ("locked_until", datetime.max),
        ("last_login_at", datetime.min),
        ("created_at", datetime.min),
        ("updated_at", datetime.max),
    ],
)
def test_infinite_timestamps_read_back_aware(column: str, sentinel: datetime) -> None:
    row = user_row(instagram_user_id="1", has_instagram_token=True, **{column: sentinel})
    user = User.from_record(row)
    value = getattr(user, column)
    assert value == sentinel.replace(tzinfo=UTC) and value.utcoffset() == timedelta(0)
    # The properties compare with an aware "now": no TypeError, and infinity means "never".
    assert user.instagram_token_expired is (
        column == "token_expires_at" and sentinel is datetime.min
    )
    assert user.is_locked is (column == "locked_until")
    assert user.model_dump_json()


@pytest.mark.parametrize(
    ("model", "fields", "field"),
    [
        (NewUser, {"email": b"ada@example.com"}, "email"),
        (NewUser, {"password": b"pw"}, "password"),
        (NewUser, {"is_active": "no"}, "is_active"),
        (NewUser, {"is_active": 0}, "is_active"),
        (NewUser, {"is_verified": "yes"}, "is_verified"),
        (NewUser, {"full_name": b"Ada"}, "full_name"),
        (NewUser, {"timezone": b"UTC"}, "timezone"),
        (NewUser, {"language": b"en"}, "language"),
        (UserUpdate, {"is_active": "no"}, "is_active"),
        (UserUpdate, {"email": b"ada@example.com"}, "email"),
        (InstagramConnection, {"instagram_user_id": 1784}, "instagram_user_id"),
        (InstagramConnection, {"access_token": b"tok"}, "access_token"),
        (InstagramConnection, {"instagram_username": b"ada"}, "instagram_username"),
    ],
)
def test_input_models_are_strict_for_strings_and_booleans(
    model: type[UserInput], fields: dict[str, Any], field: str
) -> None:
    required: dict[type[UserInput], dict[str, Any]] = {
        NewUser: {"email": "ada@example.com", "password": "pw-long-enough"},
        UserUpdate: {},
        InstagramConnection: {"instagram_user_id": "1", "access_token": "t"},
    }
    with pytest.raises(InvalidUserData) as caught:
        model(**{**required[model], **fields})
    assert caught.value.field == field
    assert "valid" in caught.value.rule  # "should be a valid string/boolean"
    for value in fields.values():
        assert repr(value) not in str(caught.value) and str(value) not in str(caught.value)


def test_strict_models_still_parse_json_and_aware_datetimes() -> None:
    parsed = InstagramConnection.model_validate_json(
        '{"instagram_user_id": "1", "access_token": "t",'
        ' "token_expires_at": "2030-01-01T00:00:00Z"}'
    )
    assert parsed.token_expires_at == datetime(2030, 1, 1, tzinfo=UTC)
    assert (
        NewUser.model_validate_json(
            '{"email": "ada@example.com", "password": "pw-long-enough", "is_active": false}'
        ).is_active
        is False
    )


def test_access_token_is_capped_at_2048_bytes() -> None:
    """2048 bytes of plaintext: its encrypted form stays inside the table's 4096-character
    CHECK (tests/test_validation_parity.py shows the largest one stored)."""
    assert rules.ACCESS_TOKEN_MAX_BYTES == 2048
    token = link(access_token="t" * 2048).access_token.get_secret_value()
    assert len(token) == 2048
    for too_long in ("t" * 2049, "é" * 1025):
        with pytest.raises(InvalidUserData) as caught:
            link(access_token=too_long)
        assert caught.value.field == "access_token"
        assert "2048 bytes" in caught.value.rule
    with pytest.raises(InvalidUserData):
        link(access_token="t" * 10_000_000)
