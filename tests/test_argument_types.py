"""Every public ``UsersRepository`` and ``InstagramRepository`` method refuses an argument of
the wrong type with ``InvalidUserData`` naming the argument -- before any database work.

The repositories here point at a port nothing listens on: a check that let the value through
would reach the pool and fail with ``DatabaseUnavailable`` (or a raw ``TypeError`` /
``AttributeError`` on the way), never with the ``InvalidUserData`` asserted.
"""

from __future__ import annotations

import inspect
import io
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio

from dal import Database, InstagramConnection, NewUser, UserUpdate
from dal.errors import DatabaseUnavailable, InvalidUserData
from dal.instagram.repository import InstagramRepository
from dal.users.repository import UsersRepository
from tests.factories import make_settings

ID = uuid.uuid4()
SOON = datetime.now(UTC) + timedelta(days=30)
NEW = NewUser(email="ada@example.com", password="pw-long-enough")  # type: ignore[arg-type]
CHANGES = UserUpdate(full_name="Ada")
LINK = InstagramConnection(instagram_user_id="1", access_token="t")  # type: ignore[arg-type]


@dataclass(frozen=True)
class Repositories:
    users: UsersRepository
    instagram: InstagramRepository


Call = Callable[[Repositories, Any], Awaitable[object]]

# (method, argument, call with the bad value in that argument and good values elsewhere)
ENTRY_POINTS: list[tuple[str, str, Call]] = [
    ("users.get", "user_id", lambda r, v: r.users.get(v)),
    ("users.get_by_email", "email", lambda r, v: r.users.get_by_email(v)),
    ("users.list", "active", lambda r, v: r.users.list(active=v)),
    ("users.list", "verified", lambda r, v: r.users.list(verified=v)),
    ("users.list", "limit", lambda r, v: r.users.list(limit=v)),
    ("users.list", "cursor", lambda r, v: r.users.list(cursor=v)),
    ("instagram.expiring_tokens", "within", lambda r, v: r.instagram.expiring_tokens(v)),
    (
        "instagram.expiring_tokens",
        "limit",
        lambda r, v: r.instagram.expiring_tokens(timedelta(days=1), limit=v),
    ),
    (
        "instagram.count_expiring_tokens",
        "within",
        lambda r, v: r.instagram.count_expiring_tokens(v),
    ),
    ("users.create", "new", lambda r, v: r.users.create(v)),
    ("users.update", "user_id", lambda r, v: r.users.update(v, CHANGES)),
    ("users.update", "changes", lambda r, v: r.users.update(ID, v)),
    ("users.delete", "user_id", lambda r, v: r.users.delete(v)),
    ("users.erase", "user_id", lambda r, v: r.users.erase(v)),
    ("users.export", "user_id", lambda r, v: r.users.export(v, io.StringIO())),
    ("instagram.connect", "user_id", lambda r, v: r.instagram.connect(v, LINK)),
    ("instagram.connect", "link", lambda r, v: r.instagram.connect(ID, v)),
    ("instagram.disconnect", "user_id", lambda r, v: r.instagram.disconnect(v)),
    ("users.record_login_success", "user_id", lambda r, v: r.users.record_login_success(v)),
    ("users.record_login_failure", "user_id", lambda r, v: r.users.record_login_failure(v)),
    ("users.authenticate", "email", lambda r, v: r.users.authenticate(v, "pw")),
    ("users.authenticate", "password", lambda r, v: r.users.authenticate("ada@example.com", v)),
    ("instagram.token", "user_id", lambda r, v: r.instagram.token(v)),
    ("instagram.claim_due", "within", lambda r, v: r.instagram.claim_due(v)),
    (
        "instagram.claim_due",
        "limit",
        lambda r, v: r.instagram.claim_due(timedelta(days=7), limit=v),
    ),
    (
        "instagram.claim_due",
        "lease",
        lambda r, v: r.instagram.claim_due(timedelta(days=7), lease=v),
    ),
    (
        "instagram.record_refreshed",
        "user_id",
        lambda r, v: r.instagram.record_refreshed(v, "t", SOON),
    ),
    (
        "instagram.record_refreshed",
        "expires_at",
        lambda r, v: r.instagram.record_refreshed(ID, "t", v),
    ),
    (
        "instagram.record_refresh_failed",
        "user_id",
        lambda r, v: r.instagram.record_refresh_failed(v, "1"),
    ),
    (
        "instagram.record_refresh_failed",
        "code",
        lambda r, v: r.instagram.record_refresh_failed(ID, v),
    ),
    ("instagram.release_claims", "user_ids", lambda r, v: r.instagram.release_claims(v)),
    (
        "users.authenticate",
        "client_ip",
        lambda r, v: r.users.authenticate("a@b.io", "pw", client_ip=v),
    ),
    (
        "users.authenticate",
        "user_agent",
        lambda r, v: r.users.authenticate("a@b.io", "pw", user_agent=v),
    ),
    (
        "users.sign_in.recent_auth_events_for_user",
        "user_id",
        lambda r, v: r.users.sign_in.recent_auth_events_for_user(v),
    ),
    (
        "users.sign_in.recent_auth_events_for_user",
        "limit",
        lambda r, v: r.users.sign_in.recent_auth_events_for_user(ID, limit=v),
    ),
    (
        "users.sign_in.recent_auth_events_for_ip",
        "ip",
        lambda r, v: r.users.sign_in.recent_auth_events_for_ip(v),
    ),
    (
        "users.sign_in.recent_auth_events_for_ip",
        "limit",
        lambda r, v: r.users.sign_in.recent_auth_events_for_ip("203.0.113.7", limit=v),
    ),
]

# Wrong values per argument kind; None only where the argument is not optional.
BAD: dict[str, list[object]] = {
    "user_id": [str(ID), ID.int, ID.bytes, None, 1.5],
    "email": [b"ada@example.com", 123, None, ["ada@example.com"]],
    "password": [123, b"pw", None, 1.5],
    "active": ["no", 0, 1, "true"],
    "verified": ["yes", 1, b""],
    "limit": [1.5, True, False, "10", None],
    "cursor": [123, b"abc", 1.5, ["x"]],
    "within": [7, 7.0, "P1D", None, True],
    "new": [{"email": "ada@example.com", "password": "pw"}, CHANGES, None],
    "changes": [{"full_name": "Ada"}, NEW, None],
    "link": [{"instagram_user_id": "1", "access_token": "t"}, NEW, None],
    "lease": [300, 300.0, "PT5M", None, True],
    "expires_at": ["2030-01-01T00:00:00Z", 1893456000, None],
    "code": [190, b"190", None],
    "user_ids": [ID, (ID,), {ID}, None, str(ID)],
    "client_ip": [b"203.0.113.7", 3405803783, ["203.0.113.7"]],
    "user_agent": [b"curl", 1, ["curl"]],
    "ip": [b"203.0.113.7", 3405803783, None],
}

CASES = [
    pytest.param(call, argument, value, id=f"{method}-{argument}-{type(value).__name__}-{i}")
    for method, argument, call in ENTRY_POINTS
    for i, value in enumerate(BAD[argument])
]


@pytest_asyncio.fixture
async def offline_repo() -> AsyncIterator[Repositories]:
    db = Database(make_settings("postgresql://nobody@127.0.0.1:9/none", acquire_timeout=0.5))
    yield Repositories(UsersRepository(db), InstagramRepository(db))
    await db.close()


@pytest.mark.parametrize(
    ("prefix", "cls"), [("users", UsersRepository), ("instagram", InstagramRepository)]
)
def test_every_public_method_is_covered(prefix: str, cls: type) -> None:
    public = {
        name
        for name, value in vars(cls).items()
        if not name.startswith("_") and inspect.iscoroutinefunction(value)
    }
    covered = {m.split(".", 1)[1] for m, _, _ in ENTRY_POINTS if m.startswith(prefix + ".")}
    assert public == {method for method in covered if "." not in method}


@pytest.mark.parametrize(("call", "argument", "value"), CASES)
async def test_wrong_argument_type_is_invalid_user_data_naming_it(
    offline_repo: Repositories, call: Call, argument: str, value: object
) -> None:
    with pytest.raises(InvalidUserData) as caught:
        await call(offline_repo, value)
    assert caught.value.field == argument
    assert caught.value.rule.startswith("must be")
    if isinstance(value, str | bytes) and value:
        assert repr(value) not in str(caught.value) and str(value) not in str(caught.value)


@pytest.mark.parametrize(
    "call",
    [
        lambda r: r.users.list(active=None, verified=False, limit=3, cursor=None),
        lambda r: r.instagram.expiring_tokens(timedelta(hours=1), limit=5),
        lambda r: r.users.update(ID, CHANGES),
        lambda r: r.users.authenticate("ada@example.com", "pw"),
    ],
)
async def test_right_types_get_past_the_checks(
    offline_repo: Repositories, call: Callable[[Repositories], Any]
) -> None:
    """The checks do not refuse valid values: these reach the (absent) database."""
    with pytest.raises(DatabaseUnavailable):
        await call(offline_repo)
