"""An erasure that commits while a sign-in of that person is checking its password leaves
nothing behind (found by a hostile review of issue 23): the attempt's event and the account
stamp go by the users row, which the erasure removed, so the attempt records nothing."""

from __future__ import annotations

import asyncio
import threading

import bcrypt
import pytest

from dal import Database, NewUser
from dal.db.settings import Settings
from dal.errors import InvalidCredentials
from dal.users.repository import UsersRepository
from tests.pg import query
from tests.privacy_helpers import TEST_PEPPER

PASSWORD = "in-flight correct horse"
EMAIL = "inflight@example.com"


@pytest.mark.parametrize("typed", [PASSWORD, "in-flight wrong horse"], ids=["right", "wrong"])
async def test_a_sign_in_checking_its_password_during_an_erasure_leaves_no_trace(
    clean_dsn: str, settings: Settings, monkeypatch: pytest.MonkeyPatch, typed: str
) -> None:
    checking, release = threading.Event(), threading.Event()
    real_check = bcrypt.checkpw

    def held_check(password: bytes, hashed: bytes) -> bool:
        checking.set()
        release.wait(30)
        return real_check(password, hashed)

    async with Database(settings.replace(erasure_pepper=TEST_PEPPER)) as db:
        users = UsersRepository(db)
        user = await users.create(NewUser(email=EMAIL, password=PASSWORD))
        monkeypatch.setattr(bcrypt, "checkpw", held_check)
        attempt = asyncio.create_task(
            users.authenticate("InFlight@Example.com", typed, client_ip="192.0.2.9")
        )
        assert await asyncio.to_thread(checking.wait, 30), "the check never started"
        await users.erase(user.id)  # commits while the password is being checked
        release.set()
        with pytest.raises(InvalidCredentials):
            await attempt
    left = query(
        clean_dsn,
        "SELECT (SELECT count(*) FROM auth_events WHERE user_id = %(id)s OR email = %(email)s) "
        "AS events, (SELECT count(*) FROM sign_in_known_addresses WHERE user_id = %(id)s) "
        "AS addresses, (SELECT count(*) FROM users WHERE id = %(id)s) AS users",
        {"id": str(user.id), "email": EMAIL},
    )
    assert left == [{"events": 0, "addresses": 0, "users": 0}]
