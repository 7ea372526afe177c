"""What the privacy tests share: a person with a full history (signed in, failed, throttled
budgets, Instagram connected, an attempt in the default partition), and counting their traces."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import pytest

from dal import Database, NewUser
from dal.errors import InvalidCredentials
from dal.instagram.models import InstagramConnection
from dal.instagram.repository import InstagramRepository
from dal.users.repository import UsersRepository
from tests.pg import query

# A fixed, public pepper for the tests (never a production value).
TEST_PEPPER = "test-only-erasure-pepper-not-a-secret-0123456789"
PASSWORD = "correct horse battery"
WRONG = "tr0ub4dor&3"
INSTAGRAM_TOKEN = "IGQVJ-test-token-that-must-never-leak-0001"
# Long before any partition exists, so the row lands in auth_events_default.
OLD_ATTEMPT = datetime.fromisoformat("2019-03-01T12:00:00+00:00")


@dataclass(frozen=True)
class Person:
    user_id: UUID
    email: str  # as typed at sign-up (mixed case)
    instagram_user_id: str
    instagram_username: str

    @property
    def normalized(self) -> str:
        return self.email.strip().lower()


async def make_person(db: Database, tag: str) -> Person:
    """A user who signed in, failed twice (once before the account existed: no user id),
    connected Instagram, and has an old attempt in the default partition."""
    users = UsersRepository(db)
    email = f"Erin.{tag}@Example.COM"
    person_ig = f"1784140{zlib.crc32(tag.encode()):010d}"
    with pytest.raises(InvalidCredentials):
        await users.authenticate(email, WRONG, client_ip="203.0.113.9")  # no account yet
    user = await users.create(NewUser(email=email, password=PASSWORD, full_name="Erin Tester"))
    await users.authenticate(email.upper(), PASSWORD, client_ip="198.51.100.7", user_agent="UA/1")
    with pytest.raises(InvalidCredentials):
        await users.authenticate(email, WRONG, client_ip="198.51.100.7")
    await InstagramRepository(db).connect(
        user.id,
        InstagramConnection(
            instagram_user_id=person_ig,
            access_token=INSTAGRAM_TOKEN,
            instagram_username=f"erin_{tag.lower()}_ig",
        ),
    )
    query(
        db.settings.database_url or "",
        "INSERT INTO auth_events (occurred_at, email, user_id, result, decided_by) "
        "VALUES (%s, %s, %s, 'invalid_credentials', 'password')",
        (OLD_ATTEMPT, email.lower(), str(user.id)),
    )
    return Person(user.id, email, person_ig, f"erin_{tag.lower()}_ig")


def traces(dsn: str, person: Person) -> dict[str, int]:
    """Rows anywhere that still name the person (by id or normalized email)."""
    uid, email = str(person.user_id), person.normalized
    counts = {}
    for name, statement, params in (
        (
            "users",
            "SELECT count(*) AS n FROM users WHERE id = %s OR lower(email) = %s",
            (uid, email),
        ),
        (
            "events",
            "SELECT count(*) AS n FROM auth_events WHERE user_id = %s OR email = %s",
            (uid, email),
        ),
        (
            "default_partition",
            "SELECT count(*) AS n FROM auth_events_default WHERE user_id = %s OR email = %s",
            (uid, email),
        ),
        ("budgets", "SELECT count(*) AS n FROM sign_in_budgets WHERE email = %s", (email,)),
        (
            "instagram",
            "SELECT count(*) AS n FROM users WHERE instagram_user_id = %s",
            (person.instagram_user_id,),
        ),
    ):
        counts[name] = query(dsn, statement, params)[0]["n"]
    return counts


def table_counts(dsn: str) -> dict[str, int]:
    rows = query(
        dsn,
        "SELECT (SELECT count(*) FROM users) AS users, (SELECT count(*) FROM auth_events) AS "
        "events, (SELECT count(*) FROM sign_in_budgets) AS budgets, "
        "(SELECT count(*) FROM erasure_receipts) AS receipts",
    )
    return dict(rows[0])
