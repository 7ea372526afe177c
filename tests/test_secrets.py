"""Secrets -- the password, its hash, the Instagram token, the DSN password -- never show up in
reprs, str(), dumps, JSON, log records or error messages, on any path we can drive."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest

from dal import Database, InstagramConnection, NewUser, User
from dal.errors import DalError, DuplicateEmail, InvalidCredentials, InvalidUserData
from tests.conftest import make_settings
from tests.factories import user_row
from tests.pg import with_password

PASSWORD = "Pa55-phrase-never-shown"
TOKEN = "IGQVJ-secret-token-never-shown"
DSN_PASSWORD = "dsn-pass-never-shown"


def views(obj: object) -> list[str]:
    """Every textual form a model commonly ends up in."""
    out = [repr(obj), str(obj), f"{obj}", f"{obj!r}"]
    dump = getattr(obj, "model_dump", None)
    if dump is not None:
        out += [
            str(dump()),
            str(dump(mode="json")),
            json.dumps(dump(mode="json")),
            obj.model_dump_json(),  # type: ignore[attr-defined]
            str(dump(include={"hashed_password", "instagram_access_token", "password"})),
        ]
    return out


def assert_hidden(texts: list[str], *secrets: str) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text, (secret, text)


async def test_no_secret_in_models_logs_or_errors(
    clean_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    messages: list[str] = []
    async with Database(make_settings(with_password(clean_dsn, DSN_PASSWORD))) as db:
        new = NewUser(email="ada@example.com", password=PASSWORD, full_name="Ada")  # type: ignore[arg-type]
        user = await db.users.create(new)
        hashed = user.hashed_password.get_secret_value()
        link = InstagramConnection(
            instagram_user_id="1784",
            access_token=TOKEN,  # type: ignore[arg-type]
            token_expires_at=datetime.now(UTC) + timedelta(days=1),
        )
        linked = await db.users.connect_instagram(user.id, link)
        assert linked.instagram_access_token is not None
        assert linked.instagram_access_token.get_secret_value() == TOKEN
        signed_in = await db.users.authenticate("ada@example.com", PASSWORD)
        page = await db.users.list()

        failures: list[DalError] = []
        for attempt in (
            db.users.create(NewUser(email="ADA@example.com", password=PASSWORD)),  # type: ignore[arg-type]
            db.users.authenticate("ada@example.com", PASSWORD + "x"),
            db.users.authenticate("nobody@example.com", PASSWORD),
            db.users.authenticate("ada@example.com", PASSWORD * 4),
        ):
            with pytest.raises(DalError) as caught:
                await attempt
            failures.append(caught.value)
        assert [type(f) for f in failures] == [
            DuplicateEmail,
            InvalidCredentials,
            InvalidCredentials,
            InvalidUserData,
        ]
        messages += [str(f) for f in failures] + [repr(f) for f in failures]
        messages += [repr(db), repr(db.users), repr(db.settings), db.describe]

    with pytest.raises(InvalidUserData) as long_pw:
        NewUser(email="ada@example.com", password=PASSWORD * 4)  # type: ignore[arg-type]
    messages += [str(long_pw.value), repr(long_pw.value), str(long_pw.value.__cause__)]

    texts = messages + [r.getMessage() for r in caplog.records] + [caplog.text]
    for model in (new, link, user, linked, signed_in, page):
        texts += views(model)
    assert_hidden(texts, PASSWORD, hashed, TOKEN, DSN_PASSWORD)
    # Sanity: the views were not empty and really carried the user.
    assert any("ada@example.com" in t for t in views(linked))


def test_user_built_by_validation_hides_secrets_too() -> None:
    user = User.model_validate(
        user_row(
            hashed_password="$2b$12$" + "H" * 53,
            instagram_user_id="1",
            instagram_access_token=TOKEN,
            instagram_username="ada",
            token_expires_at=datetime.now(UTC),
        )
    )
    dumped = user.model_dump()
    assert "hashed_password" not in dumped and "instagram_access_token" not in dumped
    assert_hidden(views(user), "H" * 53, TOKEN)


async def test_unreachable_database_error_hides_the_dsn_password() -> None:
    db = Database(make_settings(f"postgresql://ada:{DSN_PASSWORD}@127.0.0.1:9/nowhere"))
    with pytest.raises(DalError) as caught:
        await db.users.get_by_email("ada@example.com")
    assert_hidden([str(caught.value), repr(caught.value), repr(db)], DSN_PASSWORD)
    await db.close()
