"""Every users-repository method through PgBouncer in transaction mode, plus the repository's
concurrency guarantees with many more concurrent tasks than PgBouncer has server connections.

The DAL pool is twice PgBouncer's server pool, and the concurrency tests run 64 tasks on it, so
clients queue in PgBouncer and consecutive statements of one DAL connection land on different
server backends -- where session state or named prepared statements would break.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
import pytest_asyncio

from dal.db.database import Database
from dal.errors import (
    AccountLocked,
    DuplicateEmail,
    DuplicateInstagramAccount,
    InvalidCredentials,
    NotFound,
)
from dal.instagram.models import InstagramConnection
from dal.instagram.repository import InstagramRepository
from dal.users.models import NewUser, UserUpdate
from dal.users.repository import UsersRepository
from tests.factories import make_settings
from tests.scale.conftest import BOUNCER_POOL_SIZE

pytestmark = pytest.mark.scale

CONCURRENT = 64
PASSWORD = "correct horse battery staple"


@pytest_asyncio.fixture
async def bdb(bouncer_dsn: str) -> AsyncIterator[Database]:
    settings = make_settings(
        bouncer_dsn, pgbouncer=True, pool_max_size=2 * BOUNCER_POOL_SIZE, acquire_timeout=30.0
    )
    async with Database(settings) as database:
        yield database


async def test_every_repository_method_through_pgbouncer(bdb: Database) -> None:
    users = UsersRepository(bdb)
    instagram = InstagramRepository(bdb)
    ada = await users.create(NewUser(email="Ada@Example.com", password=PASSWORD, full_name="Ada"))
    bob = await users.create(NewUser(email="bob@example.com", password=PASSWORD, is_verified=True))
    with pytest.raises(DuplicateEmail):
        await users.create(NewUser(email="ADA@example.COM", password=PASSWORD))

    assert (await users.get(ada.id)).email == "Ada@Example.com"
    assert (await users.get_by_email("ada@EXAMPLE.com")).id == ada.id
    with pytest.raises(NotFound):
        await users.get(uuid4())

    renamed = await users.update(ada.id, UserUpdate(full_name="Ada L.", language="fr"))
    assert (renamed.full_name, renamed.language) == ("Ada L.", "fr")

    first = await users.list(limit=1)
    assert [u.id for u in first.users] == [bob.id] and first.next_cursor
    second = await users.list(limit=1, cursor=first.next_cursor)
    assert [u.id for u in second.users] == [ada.id] and second.next_cursor is None
    assert [u.id for u in (await users.list(verified=True)).users] == [bob.id]

    soon = datetime.now(UTC) + timedelta(hours=1)
    link = InstagramConnection(
        instagram_user_id="1789", access_token="tok-secret", token_expires_at=soon
    )
    assert (await instagram.connect(ada.id, link)).has_instagram_connected
    with pytest.raises(DuplicateInstagramAccount):
        await instagram.connect(bob.id, link)
    assert [u.id for u in await instagram.expiring_tokens(timedelta(days=1))] == [ada.id]
    assert not (await instagram.disconnect(ada.id)).has_instagram_connected

    failure = await users.record_login_failure(bob.id)
    assert failure.failed_login_attempts == 1
    assert (await users.record_login_success(bob.id)).failed_login_attempts == 0
    signed_in = await users.authenticate("ADA@example.com", PASSWORD)
    assert signed_in.login_count == 1
    with pytest.raises(InvalidCredentials):
        await users.authenticate("ada@example.com", "wrong password")

    await users.delete(bob.id)
    with pytest.raises(NotFound):
        await users.delete(bob.id)


async def test_concurrent_wrong_passwords_count_every_attempt(bdb: Database) -> None:
    users = UsersRepository(bdb)
    target = await users.create(NewUser(email="target@example.com", password=PASSWORD))
    results = await asyncio.gather(
        *(users.record_login_failure(target.id) for _ in range(CONCURRENT))
    )
    assert sorted(r.failed_login_attempts for r in results) == list(range(1, CONCURRENT + 1))
    after = await users.get(target.id)
    assert after.failed_login_attempts == CONCURRENT and after.is_locked
    with pytest.raises(AccountLocked):
        await users.authenticate("target@example.com", PASSWORD)


async def test_concurrent_creates_of_one_email_make_one_user(bdb: Database) -> None:
    users = UsersRepository(bdb)
    outcomes = await asyncio.gather(
        *(
            users.create(NewUser(email="same@example.com", password=PASSWORD))
            for _ in range(CONCURRENT)
        ),
        return_exceptions=True,
    )
    created = [o for o in outcomes if not isinstance(o, BaseException)]
    duplicates = [o for o in outcomes if isinstance(o, DuplicateEmail)]
    assert (len(created), len(duplicates)) == (1, CONCURRENT - 1)
    assert [u.id for u in (await users.list()).users] == [created[0].id]
