"""Secrets -- the password, its hash, the Instagram token, the DSN password -- never show up in
reprs, str(), dumps, JSON, log records or error messages, on any path we can drive."""

from __future__ import annotations

import json
import logging
import socket
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import pytest
from aiohttp.test_utils import TestClient, TestServer

from dal import Database, InstagramConnection, NewUser, User
from dal.db.dsn import describe_dsn, dsn_secrets, redact_dsn
from dal.db.settings import Settings
from dal.errors import DalError, DuplicateEmail, InvalidCredentials, InvalidUserData
from dal.instagram.repository import InstagramRepository
from dal.users.repository import UsersRepository
from tests.commands import run_cli
from tests.factories import make_settings, stored_hash, user_row
from tests.pg import with_password
from web.app import create_app

PASSWORD = "Pa55-phrase-never-shown"
TOKEN = "IGQVJ-secret-token-never-shown"
DSN_PASSWORD = "dsn-pass-never-shown"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
        user = await UsersRepository(db).create(new)
        hashed = await stored_hash(db, user.id)
        link = InstagramConnection(
            instagram_user_id="1784",
            access_token=TOKEN,  # type: ignore[arg-type]
            token_expires_at=datetime.now(UTC) + timedelta(days=1),
        )
        linked = await InstagramRepository(db).connect(user.id, link)
        token = await InstagramRepository(db).token(user.id)
        assert token is not None and token.get_secret_value() == TOKEN
        signed_in = await UsersRepository(db).authenticate("ada@example.com", PASSWORD)
        page = await UsersRepository(db).list()

        failures: list[DalError] = []
        for attempt in (
            UsersRepository(db).create(NewUser(email="ADA@example.com", password=PASSWORD)),  # type: ignore[arg-type]
            UsersRepository(db).authenticate("ada@example.com", PASSWORD + "x"),
            UsersRepository(db).authenticate("nobody@example.com", PASSWORD),
            UsersRepository(db).authenticate("ada@example.com", PASSWORD * 4),
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
        messages += [repr(db), repr(UsersRepository(db)), repr(db.settings), db.describe]

    with pytest.raises(InvalidUserData) as long_pw:
        NewUser(email="ada@example.com", password=PASSWORD * 4)  # type: ignore[arg-type]
    messages += [str(long_pw.value), repr(long_pw.value), str(long_pw.value.__cause__)]

    texts = messages + [r.getMessage() for r in caplog.records] + [caplog.text]
    for model in (new, link, user, linked, signed_in, page, token):
        texts += views(model)
    assert_hidden(texts, PASSWORD, hashed, TOKEN, DSN_PASSWORD)
    # Sanity: the views were not empty and really carried the user.
    assert any("ada@example.com" in t for t in views(linked))


def test_user_has_no_secret_even_when_given_one() -> None:
    """A ``User`` has no field for the hash or the token: a row that carries them anyway
    (say, a hand-written SELECT *) loses them on validation."""
    assert not {"hashed_password", "instagram_access_token"} & set(User.model_fields)
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
        await UsersRepository(db).get_by_email("ada@example.com")
    assert_hidden([str(caught.value), repr(caught.value), repr(db)], DSN_PASSWORD)
    await db.close()


# -- DSN passwords in every form a libpq URL can carry them (issue 9, item 2) -------------------

SECRET = "hunter2-dsn"


def secret_forms(dsn: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """``dsn`` (host, port, database and parameters kept) carrying a secret in each form:
    name -> (URL, the strings that must never show)."""
    parts = urlsplit(dsn)
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or "postgres"

    def url(password: str = "", *params: str) -> str:
        userinfo = f"{user}:{password}" if password else user
        query = "&".join(p for p in (parts.query, *params) if p)
        return urlunsplit(parts._replace(netloc=f"{userinfo}@{host}", query=query))

    encoded = f"{SECRET}%23%40x"  # hunter2-dsn#@x
    return {
        "userinfo": (url(SECRET), (SECRET,)),
        "percent-encoded userinfo": (url(encoded), (SECRET, encoded, f"{SECRET}#@x")),
        "password parameter": (url("", f"password={SECRET}"), (SECRET,)),
        "sslpassword parameter": (url("", "sslmode=disable", f"sslpassword={SECRET}"), (SECRET,)),
        "percent-encoded parameter": (
            url("", f"password={SECRET}%26x%3D"),
            (SECRET, f"{SECRET}%26x%3D", f"{SECRET}&x="),
        ),
    }


FORMS = list(secret_forms("postgresql://app@db.internal:6432/defeah"))


def form(dsn: str, name: str) -> tuple[str, tuple[str, ...]]:
    return secret_forms(dsn)[name]


@pytest.mark.parametrize("name", FORMS)
def test_redaction_hides_each_form_and_keeps_the_rest(name: str) -> None:
    url, hidden = form("postgresql://app@db.internal:6432/defeah", name)
    redacted = redact_dsn(url)
    assert_hidden([redacted, describe_dsn(url)], *hidden)
    assert redacted.startswith("postgresql://app") and "db.internal:6432/defeah" in redacted
    assert "***" in redacted
    assert describe_dsn(url) == "db.internal:6432/defeah"
    assert set(hidden) <= dsn_secrets(url) | {SECRET}


def test_redaction_keeps_harmless_parameters_in_place() -> None:
    url = "postgresql://app:pw@db:5432/defeah?sslmode=require&password=pw2&application_name=x"
    assert redact_dsn(url) == (
        "postgresql://app:***@db:5432/defeah?sslmode=require&password=***&application_name=x"
    )
    assert redact_dsn("postgresql://app@db/defeah?sslmode=require") == (
        "postgresql://app@db/defeah?sslmode=require"
    )


@pytest.mark.parametrize("name", FORMS)
async def test_settings_and_database_reprs_hide_each_form(name: str) -> None:
    url, hidden = form("postgresql://app@db.internal:6432/defeah", name)
    replica, _ = form("postgresql://app@replica.internal:6432/defeah", name)
    settings = Settings.from_env({"DATABASE_URL": url, "DATABASE_REPLICA_URL": replica})
    db = Database(settings)
    texts = [repr(settings), str(settings), repr(db), db.describe]
    assert_hidden(texts, *hidden)
    assert "db.internal" in repr(settings) and "replica.internal" in repr(settings)
    quoted = f"boom: {url} / {replica} / {' '.join(dsn_secrets(url))}"  # as drivers quote them
    assert_hidden([settings.scrub(quoted)], *hidden)
    assert settings.scrub(quoted).startswith("boom: postgresql://app")
    await db.close()


@pytest.mark.parametrize("name", FORMS)
@pytest.mark.parametrize("verb", ["status", "seed"])
def test_cli_errors_hide_each_form(name: str, verb: str) -> None:
    """Both drivers: yoyo/psycopg2 (status) and asyncpg (seed), on a port nobody listens on."""
    url, hidden = form("postgresql://app@127.0.0.1:1/defeah", name)
    done = run_cli(url, verb)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("defeah-db: error: ") and done.stderr.count("\n") == 1
    assert_hidden([done.stdout, done.stderr], *hidden)


@pytest.mark.parametrize("verb", ["status", "seed", "createdb", "up --no-serve"])
def test_cli_hides_a_password_the_driver_quotes_back(verb: str) -> None:
    """libpq quotes a malformed percent-escape back: 'invalid percent-encoded token: "pw%zz"'."""
    for url in (
        "postgresql://app:pw%zz-secret@127.0.0.1:1/defeah",
        "postgresql://app@127.0.0.1:1/defeah?password=pw%zz-secret",
    ):
        done = run_cli(url, *verb.split())
        assert done.returncode == 1, done.stderr
        assert done.stderr.startswith("defeah-db: error: ") and done.stderr.count("\n") == 1
        assert_hidden([done.stdout, done.stderr], "pw%zz-secret", "zz-secret")


@pytest.mark.parametrize("name", FORMS)
@pytest.mark.parametrize("reachable", [True, False], ids=["up", "down"])
async def test_detailed_health_hides_each_form(
    fresh_dsn: str, name: str, *, reachable: bool
) -> None:
    target = fresh_dsn if reachable else f"postgresql://postgres@127.0.0.1:{free_port()}/defeah"
    url, hidden = form(target, name)
    settings = make_settings(url, health_timeout=1.0)
    app = create_app(settings)
    async with TestClient(TestServer(app)) as client, client.get("/api/v1/health/detailed") as resp:
        body = await resp.text()
    assert_hidden([body], *hidden)
    assert describe_dsn(url) in body  # the componentId is still there, minus the secret
    assert (json.loads(body)["status"] == "pass") is reachable
