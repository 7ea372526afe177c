"""The users table's rules, enforced by PostgreSQL itself (no DAL involved)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg2
import psycopg2.errors
import pytest


@pytest.fixture
def cur(fresh_dsn: str) -> Iterator[Any]:
    conn = psycopg2.connect(fresh_dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            yield cursor
    finally:
        conn.close()


def insert(cur: Any, **fields: Any) -> None:
    row = {"email": "ok@example.com", "hashed_password": "x", **fields}
    cols = ", ".join(row)
    marks = ", ".join(["%s"] * len(row))
    cur.execute(f"INSERT INTO users ({cols}) VALUES ({marks})", list(row.values()))


@pytest.mark.parametrize(
    ("fields", "constraint"),
    [
        ({"email": "a@b"}, "email_min_length|valid_email_format"),
        ({"email": "not-an-email"}, "valid_email_format"),
        ({"email": "a b@example.com"}, "valid_email_format"),
        ({"email": "a@example.c"}, "valid_email_format"),
        ({"email": "a@b.c"}, "valid_email_format"),
        ({"full_name": "A"}, "full_name_min_length"),
        ({"full_name": ""}, "full_name_min_length"),
        ({"login_count": -1}, "non_negative_login_count"),
        ({"failed_login_attempts": -1}, "non_negative_failed_attempts"),
    ],
)
def test_spec_checks_reject_bad_rows(cur: Any, fields: dict[str, Any], constraint: str) -> None:
    with pytest.raises(psycopg2.errors.CheckViolation) as info:
        insert(cur, **fields)
    # 'a@b' breaks two rules; PostgreSQL reports whichever it evaluates first.
    assert info.value.diag.constraint_name in constraint.split("|")


def test_good_row_with_defaults(cur: Any) -> None:
    insert(cur, email="Ada.Lovelace+test@Example.co.uk", full_name="Ad")
    cur.execute(
        "SELECT is_active, is_verified, timezone, language, login_count, failed_login_attempts, "
        "created_at = updated_at FROM users"
    )
    assert cur.fetchone() == (True, False, "UTC", "en", 0, 0, True)


def test_email_unique_case_insensitively(cur: Any) -> None:
    insert(cur, email="Alice@Example.io")
    with pytest.raises(psycopg2.errors.UniqueViolation) as info:
        insert(cur, email="alice@example.io")
    assert info.value.diag.constraint_name == "users_email_lower_key"
    with pytest.raises(psycopg2.errors.UniqueViolation):
        insert(cur, email="Alice@Example.io")
    cur.execute("SELECT count(*) FROM users WHERE lower(email) = lower('ALICE@EXAMPLE.IO')")
    assert cur.fetchone() == (1,)


def test_instagram_user_id_unique(cur: Any) -> None:
    insert(cur, email="one@example.io", instagram_user_id="17841400000000001")
    with pytest.raises(psycopg2.errors.UniqueViolation) as info:
        insert(cur, email="two@example.io", instagram_user_id="17841400000000001")
    assert info.value.diag.constraint_name == "users_instagram_user_id_key"


def test_updated_at_moves_on_update_but_not_on_noop(cur: Any) -> None:
    insert(cur)
    cur.execute("SELECT created_at, updated_at FROM users")
    created, updated = cur.fetchone()
    assert created == updated
    time.sleep(0.01)
    cur.execute("UPDATE users SET full_name = 'Grace Hopper'")
    cur.execute("SELECT updated_at FROM users")
    (moved,) = cur.fetchone()
    assert moved > updated
    time.sleep(0.01)
    cur.execute("UPDATE users SET full_name = 'Grace Hopper'")  # no real change
    cur.execute("SELECT updated_at FROM users")
    assert cur.fetchone() == (moved,)


def test_lockout_columns_are_instants(cur: Any) -> None:
    """After 0002 the comparison with now() no longer depends on the session time zone."""
    insert(cur)
    cur.execute("SET timezone = 'Pacific/Kiritimati'")
    cur.execute("UPDATE users SET locked_until = now() + interval '1 minute'")
    cur.execute("SET timezone = 'America/Adak'")
    cur.execute(
        "SELECT locked_until > now(), locked_until < now() + interval '2 minutes' FROM users"
    )
    assert cur.fetchone() == (True, True)
