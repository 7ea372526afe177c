"""The pydantic models without a database: input rules, typed errors, row mapping, properties."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from dal import InstagramConnection, NewUser, User, UserUpdate, models
from dal.errors import InvalidUserData
from dal.models import iana_time_zones
from tests.factories import user_row


def make(**kw: Any) -> NewUser:
    values: dict[str, Any] = {"email": "ada@example.com", "password": "pw", **kw}
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
        NewUser.model_validate({"email": "ada@example.com", "password": "pw", "full_name": "A"})
    assert caught.value.field == "full_name"
    with pytest.raises(InvalidUserData) as from_json:
        NewUser.model_validate_json('{"email": "nope", "password": "pw"}')
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
            instagram_user_id="1", instagram_access_token="t", token_expires_at=datetime.now(UTC)
        ),
    ):
        fast = User.from_record(values)
        validated = User.model_validate(values)
        assert fast == validated
        assert fast.model_dump() == validated.model_dump()
        assert fast.model_dump_json() == validated.model_dump_json()
        assert fast.model_fields_set == set(User.model_fields)
        assert isinstance(fast.hashed_password, SecretStr)
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
    linked = user_row(instagram_user_id="1", instagram_access_token="t")
    assert User.from_record(linked).has_instagram_connected
    assert not User.from_record(linked).instagram_token_expired  # no expiry known
    expired = User.from_record({**linked, "token_expires_at": now - timedelta(seconds=1)})
    assert expired.instagram_token_expired
    fresh = User.from_record({**linked, "token_expires_at": now + timedelta(days=1)})
    assert not fresh.instagram_token_expired
