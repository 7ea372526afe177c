"""With keys configured only well-formed ciphertext is a token (issue 20, item 9).

A value written straight into the column -- plaintext, or shaped almost like a stored value --
is refused by ``instagram.token``, never handed to the refresher, and never sealed by
``reencrypt``; legacy plaintext becomes a token only through the explicit, counted
``reencrypt --adopt-plaintext``."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from uuid import UUID

import pytest

from dal import Database
from dal.errors import TokenUnreadable
from dal.instagram.reencrypt import reencrypt, remaining
from dal.instagram.repository import InstagramRepository
from dal.users.repository import UsersRepository
from tests.commands import run_cli
from tests.factories import make_settings, stored_column
from tests.test_tokens import link, make_due, new_user

LEGACY = "IGQWRlegacy-token-written-before-encryption-0123"


async def sealed_value(db: Database, user_id: UUID, token: str) -> str:
    """A genuine stored value (v1:<key>:<base64>) of ``token`` for ``user_id``."""
    await InstagramRepository(db).connect(user_id, link(token, account=f"ig-{user_id}"))
    value = await stored_column(db, user_id, "instagram_access_token")
    assert isinstance(value, str) and value.startswith("v1:")
    return value


def planted(kind: str, genuine: str) -> str:
    """The value a hostile writer puts into the column, from a genuine stored one."""
    body = genuine.split(":", 2)[2]
    return {
        "plaintext": "attacker-plaintext-token",
        "upper": "V1" + genuine[2:],
        "v2": "v2:k1:abc",
        "space": " " + genuine,
        "newline": genuine + "\n",
        "no-body": "v1:k1:",
        "no-key": f"v1::{body}",
        "bad-base64": "v1:k1:not*base64",
        "short": "v1:k1:QUJD",
    }[kind]


KINDS = ["plaintext", "upper", "v2", "space", "newline", "no-body", "no-key", "bad-base64", "short"]


async def plant(db: Database, user_id: UUID, value: str) -> None:
    async with db.acquire() as conn:
        await conn.execute(
            "UPDATE users SET instagram_access_token = $1 WHERE id = $2", value, user_id
        )


@pytest.mark.parametrize("kind", KINDS)
async def test_a_planted_value_is_refused_everywhere(db: Database, kind: str) -> None:
    users = UsersRepository(db)
    instagram = InstagramRepository(db)
    victim, honest = [await new_user(users, f"{n}@example.com") for n in ("victim", "honest")]
    value = planted(kind, await sealed_value(db, victim, "real-token"))
    await sealed_value(db, honest, "honest-token")
    await plant(db, victim, value)
    # The one read of the token: a typed error naming the user, never the value.
    with pytest.raises(TokenUnreadable) as caught:
        await instagram.token(victim)
    assert caught.value.user_id == victim
    # Without the user id: a random UUID once held "abc", the v2 kind's body, by chance.
    message = str(caught.value).replace(str(victim), "<user id>")
    assert value.strip() not in message and "abc" not in message
    # The refresher never gets it: the claim records it instead (and backs off or flags it).
    await make_due(db, [victim, honest])
    claimed = await instagram.claim_due(timedelta(days=7), limit=10)
    assert [due.user_id for due in claimed] == [honest]
    async with db.acquire() as conn:
        error = await conn.fetchval("SELECT token_refresh_error FROM users WHERE id = $1", victim)
    assert error == ("plaintext" if kind == "plaintext" else "unreadable")
    # reencrypt leaves it as it is and does not call the job done.
    result = await reencrypt(db, instagram.cipher)
    assert result.rewritten == 0 and result.plaintext + result.unreadable == 1
    assert await stored_column(db, victim, "instagram_access_token") == value
    assert await remaining(db, instagram.cipher) == 1


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "plaintext"])
async def test_adopting_plaintext_never_adopts_a_damaged_stored_form(
    db: Database, kind: str
) -> None:
    """``V1:…``, `` v1:…``, ``v2:…``: shaped like a stored value, so damaged or planted, never
    a legacy token -- left alone even by ``--adopt-plaintext``."""
    users = UsersRepository(db)
    victim = await new_user(users, "victim@example.com")
    value = planted(kind, await sealed_value(db, victim, "real-token"))
    await plant(db, victim, value)
    instagram = InstagramRepository(db)
    result = await reencrypt(db, instagram.cipher, adopt_plaintext=True)
    assert (result.rewritten, result.adopted, result.unreadable) == (0, 0, 1)
    assert await stored_column(db, victim, "instagram_access_token") == value


def test_adopt_plaintext_is_explicit_counted_and_logged(clean_dsn: str) -> None:
    """Without the flag reencrypt refuses legacy plaintext (exit 1, says how to adopt it); with
    it the values are sealed, the count is logged, and they read as tokens."""

    async def setup() -> list[UUID]:
        async with Database(make_settings(clean_dsn)) as db:
            users = UsersRepository(db)
            ids = [await new_user(users, f"l{n}@example.com") for n in range(3)]
            for n, user_id in enumerate(ids):
                await plant(db, user_id, f"{LEGACY}-{n}")
            await sealed_value(db, await new_user(users, "sealed@example.com"), "real-token")
            return ids

    async def read(ids: list[UUID]) -> list[str]:
        async with Database(make_settings(clean_dsn)) as db:
            instagram = InstagramRepository(db)
            tokens = [await instagram.token(user_id) for user_id in ids]
            return [t.get_secret_value() for t in tokens if t is not None]

    ids = asyncio.run(setup())
    refused = run_cli(clean_dsn, "reencrypt")
    assert refused.returncode == 1, refused.stderr
    assert "3 plaintext" in refused.stdout and "--adopt-plaintext" in refused.stdout
    assert LEGACY not in refused.stdout + refused.stderr
    adopted = run_cli(clean_dsn, "reencrypt", "--adopt-plaintext")
    assert adopted.returncode == 0, adopted.stderr
    assert "adopted 3 legacy plaintext token(s)" in adopted.stderr  # the log line
    assert "adopted 3" in adopted.stdout
    assert LEGACY not in adopted.stdout + adopted.stderr
    assert asyncio.run(read(ids)) == [f"{LEGACY}-{n}" for n in range(3)]
    again = run_cli(clean_dsn, "reencrypt", "--adopt-plaintext")  # a one-off: nothing left
    assert again.returncode == 0 and "adopted 0" in again.stdout
