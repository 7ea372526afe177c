"""Meta's Instagram callbacks through a real aiohttp server on the real PostgreSQL: what they
change, what they refuse, replays and concurrent deliveries, and what the status page shows.

Signed requests are built as Meta documents them (tests/meta_requests.py), not with the code
under test.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient

from dal.db.database import Database
from dal.db.settings import Settings
from dal.errors import ConfigError, InvalidUserData
from dal.instagram.callbacks import InstagramCallbacks
from dal.instagram.models import InstagramConnection
from dal.instagram.repository import InstagramRepository
from dal.users.models import NewUser
from dal.users.repository import UsersRepository
from tests.commands import ROOT, cli_env
from tests.factories import make_settings
from tests.meta_requests import (
    IG_USER,
    OLD_SECRET,
    PUBLIC_URL,
    SECRET,
    b64url,
    form,
    payload,
    signed,
)
from tests.test_web_routes import free_port, serving
from web.instagram_callbacks import CALLBACKS_HANDLED, CALLBACKS_REJECTED

DEAUTHORIZE = "/api/v1/instagram/deauthorize"
DELETION = "/api/v1/instagram/data-deletion"
EMAIL = "ada@example.com"
USERNAME = "ada.lovelace"
TOKEN = "IGQVJ-test-token-not-a-real-one"
PROBLEM = "application/problem+json"


@pytest.fixture
def cb_settings(fresh_dsn: str) -> Settings:
    return make_settings(
        fresh_dsn, instagram_app_secret=f"{SECRET},{OLD_SECRET}", public_url=PUBLIC_URL
    )


@pytest_asyncio.fixture
async def client(cb_settings: Settings) -> AsyncIterator[TestClient]:
    async with serving(cb_settings) as test_client:
        yield test_client


async def connected_user(settings: Settings, ig_user: str = IG_USER) -> uuid.UUID:
    async with Database(settings) as db:
        user = await UsersRepository(db).create(
            NewUser(email=EMAIL, password="correct horse", full_name="Ada Lovelace")
        )
        link = InstagramConnection(
            instagram_user_id=ig_user, access_token=TOKEN, instagram_username=USERNAME
        )
        await InstagramRepository(db).connect(user.id, link)
        return user.id


async def reconnect(settings: Settings, user_id: uuid.UUID) -> None:
    async with Database(settings) as db:
        link = InstagramConnection(
            instagram_user_id=IG_USER, access_token=TOKEN, instagram_username=USERNAME
        )
        await InstagramRepository(db).connect(user_id, link)


async def user_row(settings: Settings, user_id: uuid.UUID) -> dict[str, Any] | None:
    conn = await asyncpg.connect(settings.database_url, statement_cache_size=0)
    try:
        row = await conn.fetchrow("SELECT * FROM users WHERE id = $1", user_id)
    finally:
        await conn.close()
    return None if row is None else dict(row)


async def table(settings: Settings, name: str) -> list[dict[str, Any]]:
    assert name in ("instagram_deletion_requests", "instagram_deauthorizations")
    conn = await asyncpg.connect(settings.database_url, statement_cache_size=0)
    try:
        return [dict(r) for r in await conn.fetch(f"SELECT * FROM {name} ORDER BY received_at")]
    finally:
        await conn.close()


def assert_disconnected(row: dict[str, Any] | None) -> None:
    assert row is not None, "the account itself must stay"
    assert row["email"] == EMAIL
    for column in (
        "instagram_user_id",
        "instagram_access_token",
        "instagram_username",
        "token_expires_at",
        "token_issued_at",
        "token_refresh_error",
        "refresh_claimed_until",
    ):
        assert row[column] is None, column
    assert row["token_refresh_failures"] == 0 and row["needs_reauth"] is False


async def post(client: TestClient, path: str, signed_request: str) -> tuple[int, Any, str]:
    async with client.post(path, data=form(signed_request)) as resp:
        return resp.status, resp.content_type, await resp.text()


def counted(counter: Any, *labels: str) -> float:
    return float(counter.labels(*labels).value)


def rejected_count(callback: str) -> float:
    return sum(c.value for labels, c in CALLBACKS_REJECTED.children() if labels[0] == callback)


# -- what the callbacks do -----------------------------------------------------------------------


async def test_without_an_app_secret_no_callback_route_exists(fresh_dsn: str) -> None:
    async with serving(make_settings(fresh_dsn)) as client:
        for path in (DEAUTHORIZE, DELETION):
            status, kind, _ = await post(client, path, signed(payload()))
            assert (status, kind) == (404, PROBLEM), path
        async with client.get(f"{DELETION}/{'a' * 32}") as resp:
            assert resp.status == 404


@pytest.mark.parametrize("server", ["aiohttp", "ours"])
async def test_deauthorize_disconnects_the_instagram_user_and_keeps_the_account(
    cb_settings: Settings, server: str
) -> None:
    user_id = await connected_user(cb_settings)
    before = counted(CALLBACKS_HANDLED, "deauthorize", "disconnected")
    async with serving(cb_settings, server=server) as client:
        status, kind, body = await post(client, DEAUTHORIZE, signed(payload()))
    assert (status, kind) == (200, "application/json"), body
    assert_disconnected(await user_row(cb_settings, user_id))
    [record] = await table(cb_settings, "instagram_deauthorizations")
    assert record["outcome"] == "disconnected" and record["user_id"] == user_id
    assert counted(CALLBACKS_HANDLED, "deauthorize", "disconnected") == before + 1


async def test_deauthorize_of_an_unknown_instagram_user_is_recorded_and_changes_nothing(
    cb_settings: Settings, client: TestClient
) -> None:
    user_id = await connected_user(cb_settings)
    status, _, _ = await post(client, DEAUTHORIZE, signed(payload("17841499999999999")))
    assert status == 200
    row = await user_row(cb_settings, user_id)
    assert row is not None and row["instagram_user_id"] == IG_USER
    [record] = await table(cb_settings, "instagram_deauthorizations")
    assert record["outcome"] == "not_connected" and record["user_id"] is None


async def test_a_request_signed_with_the_secret_being_retired_still_verifies(
    cb_settings: Settings, client: TestClient
) -> None:
    user_id = await connected_user(cb_settings)
    status, _, _ = await post(client, DEAUTHORIZE, signed(payload(), OLD_SECRET))
    assert status == 200
    assert_disconnected(await user_row(cb_settings, user_id))


async def test_data_deletion_erases_the_instagram_data_and_answers_url_and_code(
    cb_settings: Settings, client: TestClient
) -> None:
    user_id = await connected_user(cb_settings)
    status, kind, text = await post(client, DELETION, signed(payload()))
    assert (status, kind) == (200, "application/json"), text
    body = json.loads(text)
    assert set(body) == {"url", "confirmation_code"}
    code = body["confirmation_code"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{16,}", code), code
    assert body["url"] == f"{PUBLIC_URL}/api/v1/instagram/data-deletion/{code}"
    assert_disconnected(await user_row(cb_settings, user_id))
    [request] = await table(cb_settings, "instagram_deletion_requests")
    assert request["confirmation_code"] == code
    assert request["status"] == "completed" and request["user_id"] == user_id
    assert IG_USER.encode() not in request["request_digest"]


async def test_codes_are_distinct_and_random(cb_settings: Settings, client: TestClient) -> None:
    codes = set()
    for n in range(20):
        _, _, text = await post(client, DELETION, signed(payload(f"1784{n:013d}")))
        codes.add(json.loads(text)["confirmation_code"])
    assert len(codes) == 20
    assert len(set().union(*codes)) > 40  # spread over the base64url alphabet, not a counter


async def test_the_status_page_says_what_happened_and_nothing_about_the_person(
    cb_settings: Settings, client: TestClient
) -> None:
    user_id = await connected_user(cb_settings)
    _, _, text = await post(client, DELETION, signed(payload()))
    code = json.loads(text)["confirmation_code"]
    path = f"{DELETION}/{code}"
    async with client.get(path, headers={"Accept": "application/json"}) as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
        assert resp.headers["Cache-Control"] == "no-store" and resp.headers["Vary"] == "Accept"
        document = json.loads(await resp.text())
    assert document["status"] == "completed" and document["confirmation_code"] == code
    assert set(document) == {"confirmation_code", "status", "received_at", "message"}
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    async with client.get(path, headers={"Accept": browser}) as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
        page = await resp.text()
    assert "We deleted the data we held about your Instagram account" in page and code in page
    async with client.get(path) as resp:  # no Accept: a program, JSON
        assert resp.content_type == "application/json"
    for shown in (json.dumps(document), page):
        for personal in (EMAIL, "Ada", IG_USER, USERNAME, str(user_id), TOKEN):
            assert personal.lower() not in shown.lower(), personal


async def test_nothing_held_is_said_in_plain_words(
    cb_settings: Settings, client: TestClient
) -> None:
    _, _, text = await post(client, DELETION, signed(payload("17841412345678901")))
    code = json.loads(text)["confirmation_code"]
    async with client.get(f"{DELETION}/{code}", headers={"Accept": "text/html"}) as resp:
        page = await resp.text()
    assert "nothing to delete" in page
    async with client.get(f"{DELETION}/{code}") as resp:
        assert json.loads(await resp.text())["status"] == "nothing_held"


@pytest.mark.parametrize("code", ["A" * 32, "short", "x" * 33, "%2e%2e", "<script>" * 4])
async def test_an_unknown_code_is_404(client: TestClient, code: str) -> None:
    async with client.get(f"{DELETION}/{code}", headers={"Accept": "text/html"}) as resp:
        assert resp.status == 404 and resp.content_type == PROBLEM
        assert "<script>" not in await resp.text()


async def test_the_status_outlives_the_account_and_no_longer_points_at_it(
    cb_settings: Settings, client: TestClient
) -> None:
    user_id = await connected_user(cb_settings)
    _, _, text = await post(client, DELETION, signed(payload()))
    code = json.loads(text)["confirmation_code"]
    async with Database(cb_settings) as db:
        await UsersRepository(db).delete(user_id)
    [request] = await table(cb_settings, "instagram_deletion_requests")
    assert request["user_id"] is None  # ON DELETE SET NULL
    async with client.get(f"{DELETION}/{code}") as resp:
        assert resp.status == 200


# -- replays and concurrent deliveries -----------------------------------------------------------


async def test_the_same_deletion_request_twice_gives_one_code_and_erases_once(
    cb_settings: Settings, client: TestClient
) -> None:
    user_id = await connected_user(cb_settings)
    request = signed(payload())
    _, _, first = await post(client, DELETION, request)
    await reconnect(cb_settings, user_id)  # the person connects again afterwards
    before = counted(CALLBACKS_HANDLED, "data_deletion", "repeated")
    status, _, second = await post(client, DELETION, request)
    assert status == 200 and json.loads(second) == json.loads(first)
    row = await user_row(cb_settings, user_id)
    assert row is not None and row["instagram_user_id"] == IG_USER, "a replay erased again"
    assert len(await table(cb_settings, "instagram_deletion_requests")) == 1
    assert counted(CALLBACKS_HANDLED, "data_deletion", "repeated") == before + 1


async def test_a_replayed_deauthorize_does_not_disconnect_a_reconnected_account(
    cb_settings: Settings, client: TestClient
) -> None:
    user_id = await connected_user(cb_settings)
    request = signed(payload())
    assert (await post(client, DEAUTHORIZE, request))[0] == 200
    await reconnect(cb_settings, user_id)
    assert (await post(client, DEAUTHORIZE, request))[0] == 200
    row = await user_row(cb_settings, user_id)
    assert row is not None and row["instagram_user_id"] == IG_USER
    assert len(await table(cb_settings, "instagram_deauthorizations")) == 1


async def test_a_new_request_about_the_same_person_is_a_new_request(
    cb_settings: Settings, client: TestClient
) -> None:
    await connected_user(cb_settings)
    _, _, first = await post(client, DELETION, signed(payload()))
    _, _, second = await post(client, DELETION, signed(payload(issued_at=int(time.time()) - 5)))
    assert json.loads(first)["confirmation_code"] != json.loads(second)["confirmation_code"]
    statuses = [r["status"] for r in await table(cb_settings, "instagram_deletion_requests")]
    assert sorted(statuses) == ["completed", "nothing_held"]


@pytest.mark.parametrize("path", [DELETION, DEAUTHORIZE])
async def test_concurrent_identical_requests_are_carried_out_once(
    cb_settings: Settings, client: TestClient, path: str
) -> None:
    user_id = await connected_user(cb_settings)
    request = signed(payload())
    answers = await asyncio.gather(*(post(client, path, request) for _ in range(12)))
    assert {status for status, _, _ in answers} == {200}
    assert len({text for _, _, text in answers}) == 1  # one confirmation code for all
    name = "instagram_deletion_requests" if path == DELETION else "instagram_deauthorizations"
    [record] = await table(cb_settings, name)
    assert record["user_id"] == user_id  # the one that did the work saw the account
    assert_disconnected(await user_row(cb_settings, user_id))


# -- refusals ------------------------------------------------------------------------------------


def _tampered_payload() -> str:
    """A valid signature over one payload, sent with another (the user id changed)."""
    signature = signed(payload()).partition(".")[0]
    return f"{signature}.{b64url(payload('17841400000000002'))}"


def _tampered_signature() -> str:
    signature, _, encoded = signed(payload()).partition(".")
    flipped = ("B" if signature[0] == "A" else "A") + signature[1:]
    return f"{flipped}.{encoded}"


def _extra_dot() -> str:
    return signed(payload()) + ".e30"


def _signed_text(text: bytes) -> str:
    return signed(text)


NOW = int(time.time())
REFUSED: dict[str, Any] = {
    "tampered payload": _tampered_payload,
    "tampered signature": _tampered_signature,
    "wrong secret": lambda: signed(payload(), "a-different-app-secret"),
    "empty secret": lambda: signed(payload(), ""),
    "wrong algorithm": lambda: signed(payload(algorithm="HMAC-SHA1")),
    "lower-case algorithm": lambda: signed(payload(algorithm="hmac-sha256")),
    "no algorithm": lambda: signed(payload(algorithm=None)),
    "algorithm not a string": lambda: signed(payload(algorithm=["HMAC-SHA256"])),
    "no dot": lambda: signed(payload()).replace(".", ""),
    "empty": lambda: "",
    "only a dot": lambda: ".",
    "no signature": lambda: "." + signed(payload()).partition(".")[2],
    "no payload": lambda: signed(payload()).partition(".")[0] + ".",
    "extra dot": _extra_dot,
    "two dots": lambda: signed(payload()).replace(".", ".."),
    "standard base64": lambda: signed(payload()).replace("-", "+").replace("_", "/") + "+/",
    "short signature": lambda: b64url(b"x" * 16) + "." + b64url(payload()),
    "non-JSON payload": lambda: _signed_text(b"user_id=1&algorithm=HMAC-SHA256"),
    "non-UTF-8 payload": lambda: _signed_text(b"\xff\xfe{}"),
    "JSON array": lambda: _signed_text(b'["HMAC-SHA256", 1, "1"]'),
    "NaN issued_at": lambda: _signed_text(
        b'{"algorithm":"HMAC-SHA256","issued_at":NaN,"user_id":"1"}'
    ),
    "huge issued_at": lambda: _signed_text(
        b'{"algorithm":"HMAC-SHA256","issued_at":' + b"9" * 5000 + b',"user_id":"1"}'
    ),
    "issued_at 1e999": lambda: signed(payload(issued_at=1e999)),
    "issued_at 10**300": lambda: signed(payload(issued_at=10**300)),
    "negative issued_at": lambda: signed(payload(issued_at=-(10**30))),
    "issued_at as text": lambda: signed(payload(issued_at=str(NOW))),
    "issued_at true": lambda: signed(payload(issued_at=True)),
    "issued_at float": lambda: signed(payload(issued_at=NOW + 0.5)),
    "expired": lambda: signed(payload(issued_at=NOW - 3601 - 60)),
    "from the future": lambda: signed(payload(issued_at=NOW + 3600)),
    "no issued_at": lambda: signed(payload(issued_at=None)),
    "no user_id": lambda: signed(payload(None)),
    "empty user_id": lambda: signed(payload("")),
    "huge user_id": lambda: signed(payload(10**200)),
    "long user_id": lambda: signed(payload("1" * 101)),
    "user_id object": lambda: signed(payload({"id": IG_USER})),
    "deep nesting": lambda: _signed_text(b"[" * 5000 + b"]" * 5000),
}


def _assert_refusal(status: int, kind: str, text: str) -> None:
    assert (status, kind) == (400, PROBLEM), text
    assert json.loads(text) == {
        "type": "about:blank",
        "title": "Bad Request",
        "status": 400,
        "detail": "The signed request was not accepted.",
    }


@pytest.mark.parametrize("path", [DELETION, DEAUTHORIZE])
async def test_every_bad_signed_request_is_the_same_400_and_changes_nothing(
    cb_settings: Settings, client: TestClient, path: str
) -> None:
    user_id = await connected_user(cb_settings)
    callback = "data_deletion" if path == DELETION else "deauthorize"
    rejected_before = rejected_count(callback)
    for name, make in REFUSED.items():
        status, kind, text = await post(client, path, make())
        assert status == 400, name
        _assert_refusal(status, kind, text)
    row = await user_row(cb_settings, user_id)
    assert row is not None and row["instagram_user_id"] == IG_USER
    assert await table(cb_settings, "instagram_deletion_requests") == []
    assert await table(cb_settings, "instagram_deauthorizations") == []
    rejected = rejected_count(callback)
    assert rejected == rejected_before + len(REFUSED)
    async with client.get("/metrics") as resp:
        exposition = await resp.text()
    assert (
        f'defeah_instagram_callbacks_rejected_total{{callback="{callback}",reason="signature"}}'
        in exposition
    )


async def test_padded_base64url_is_accepted_too(cb_settings: Settings, client: TestClient) -> None:
    user_id = await connected_user(cb_settings)
    request = signed(payload(), padded=True)
    assert "=" in request
    status, _, _ = await post(client, DEAUTHORIZE, request)
    assert status == 200
    assert_disconnected(await user_row(cb_settings, user_id))


async def test_the_accepted_age_is_configurable(fresh_dsn: str) -> None:
    strict = make_settings(
        fresh_dsn,
        instagram_app_secret=SECRET,
        public_url=PUBLIC_URL,
        instagram_signed_request_max_age=60,
    )
    async with serving(strict) as client:
        old = signed(payload(issued_at=int(time.time()) - 120))
        assert (await post(client, DELETION, old))[0] == 400
        fresh = signed(payload(issued_at=int(time.time()) - 30))
        assert (await post(client, DELETION, fresh))[0] == 200


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        ("signed_request=x&signed_request=y", {}),  # the field twice
        ("", {}),  # no field
        ("signed_request", {}),  # not a form
        ("{}", {"Content-Type": "application/json"}),
        ("signed_request=\u00e9", {"Content-Type": "application/x-www-form-urlencoded"}),
        ("&".join(f"f{n}=1" for n in range(50)), {}),
    ],
    ids=["twice", "missing", "not a form", "JSON body", "non-ASCII", "many fields"],
)
async def test_a_body_that_is_not_one_signed_request_field_is_refused(
    client: TestClient, body: str, headers: dict[str, str]
) -> None:
    kind = {"Content-Type": "application/x-www-form-urlencoded", **headers}
    async with client.post(DELETION, data=body.encode(), headers=kind) as resp:
        _assert_refusal(resp.status, resp.content_type, await resp.text())


async def test_a_one_megabyte_body_is_refused_without_being_read(
    cb_settings: Settings, client: TestClient
) -> None:
    big = form(signed(payload()) + "A" * 1024 * 1024)
    before = counted(CALLBACKS_REJECTED, "data_deletion", "too_large")
    started = time.monotonic()
    async with client.post(DELETION, data=big) as resp:
        _assert_refusal(resp.status, resp.content_type, await resp.text())
    assert time.monotonic() - started < 5
    assert counted(CALLBACKS_REJECTED, "data_deletion", "too_large") == before + 1


async def test_a_chunked_body_over_8_kb_is_refused(client: TestClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"signed_request="
        for _ in range(64):
            yield b"A" * 1024

    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    async with client.post(DELETION, data=chunks(), headers=headers) as resp:
        assert "Content-Length" not in resp.request_info.headers
        _assert_refusal(resp.status, resp.content_type, await resp.text())


async def test_the_app_secret_appears_in_no_output(
    cb_settings: Settings, client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    texts = [repr(cb_settings), str(cb_settings), str(cb_settings.model_dump())]
    for make in (lambda: signed(payload()), lambda: signed(payload(), "wrong")):
        texts.append((await post(client, DELETION, make()))[2])
    async with client.get("/metrics") as resp:
        texts.append(await resp.text())
    texts.append(caplog.text)
    for text in texts:
        assert SECRET not in text and OLD_SECRET not in text
    assert {SECRET, OLD_SECRET} <= cb_settings.secrets  # and scrub() removes them from errors


# -- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["-m", "cli", "serve"], ["-m", "cli", "up"], ["-m", "web"]])
def test_serving_with_the_callbacks_on_needs_the_public_url(
    fresh_dsn: str, command: list[str]
) -> None:
    env = cli_env(fresh_dsn, DEFEAH_INSTAGRAM_APP_SECRET=f"{SECRET},{OLD_SECRET}")
    done = subprocess.run(
        [sys.executable, *command, "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert done.returncode == 1, done
    [line] = done.stderr.splitlines()
    assert "DEFEAH_PUBLIC_URL" in line and "DEFEAH_INSTAGRAM_APP_SECRET" in line
    assert SECRET not in line and OLD_SECRET not in line
    assert done.stdout == "" or "migrations" not in done.stdout  # refused before any work


def test_production_callbacks_need_an_https_public_url() -> None:
    on = {"DEFEAH_ENV": "production", "DEFEAH_INSTAGRAM_APP_SECRET": SECRET}
    with pytest.raises(ConfigError, match="https"):
        Settings.from_env({**on, "DEFEAH_PUBLIC_URL": "http://x.example"}).require_callbacks("up")
    Settings.from_env({**on, "DEFEAH_PUBLIC_URL": PUBLIC_URL}).require_callbacks("up")
    Settings.from_env({"DEFEAH_ENV": "production"}).require_callbacks("up")  # callbacks off


def test_app_secrets_are_a_comma_separated_list_that_never_echoes() -> None:
    parsed = Settings.from_env({"DEFEAH_INSTAGRAM_APP_SECRET": f" {SECRET} , {OLD_SECRET} "})
    assert parsed.instagram_app_secrets == (SECRET, OLD_SECRET)
    assert Settings.from_env({"DEFEAH_INSTAGRAM_APP_SECRET": "  "}).instagram_app_secrets == ()
    assert Settings.from_env({}).instagram_app_secrets == ()
    with pytest.raises(ConfigError, match=r"^DEFEAH_INSTAGRAM_APP_SECRET: .*empty entry") as info:
        Settings.from_env({"DEFEAH_INSTAGRAM_APP_SECRET": f"{SECRET},,{OLD_SECRET}"})
    assert SECRET not in str(info.value) and OLD_SECRET not in str(info.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://accounts.example.test/", "https://accounts.example.test"),
        ("http://127.0.0.1:8080/defeah", "http://127.0.0.1:8080/defeah"),
        ("ftp://accounts.example.test", None),
        ("accounts.example.test", None),
        ("https://accounts.example.test/?a=1", None),
        ("https://user:hunter2-secret@accounts.example.test", None),
    ],
)
def test_the_public_url_is_an_http_base_url(value: str, expected: str | None) -> None:
    if expected is not None:
        assert Settings.from_env({"DEFEAH_PUBLIC_URL": value}).public_url == expected
        return
    with pytest.raises(ConfigError, match=r"^DEFEAH_PUBLIC_URL: ") as info:
        Settings.from_env({"DEFEAH_PUBLIC_URL": value})
    assert "hunter2" not in str(info.value)


async def test_a_database_outage_is_a_503_that_meta_may_retry(fresh_dsn: str) -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/none"
    down = make_settings(
        dead,
        instagram_app_secret=SECRET,
        public_url=PUBLIC_URL,
        connect_timeout=0.5,
        acquire_timeout=0.5,
    )
    async with serving(down) as client:
        for path in (DEAUTHORIZE, DELETION):
            status, kind, text = await post(client, path, signed(payload()))
            assert (status, kind) == (503, PROBLEM), text
        async with client.get(f"{DELETION}/{'A' * 32}") as resp:
            assert resp.status == 503 and resp.headers["Retry-After"] == "5"


async def test_the_dal_checks_its_arguments_before_any_statement(cb_settings: Settings) -> None:
    async with Database(cb_settings) as db:
        callbacks = InstagramCallbacks(db)
        with pytest.raises(InvalidUserData, match="digest"):
            await callbacks.deauthorize(IG_USER, b"short")
        with pytest.raises(InvalidUserData, match="instagram_user_id"):
            await callbacks.delete_data(17841400000000001, bytes(32))  # type: ignore[arg-type]
        with pytest.raises(InvalidUserData, match="instagram_user_id"):
            await callbacks.delete_data("1" * 101, bytes(32))
        assert await callbacks.deletion_request("A" * 32) is None
    assert await table(cb_settings, "instagram_deletion_requests") == []
