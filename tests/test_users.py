"""UsersRepository against a real PostgreSQL: every method, its not-found and duplicate paths,
the error translation, pagination and caller-owned transactions."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from pydantic import SecretStr

from dal import Database, InstagramConnection, NewUser, User, UserUpdate
from dal.errors import (
    DuplicateEmail,
    DuplicateInstagramAccount,
    InvalidUserData,
    NotFound,
)
from dal.instagram.repository import MAX_EXPIRY_WINDOW, InstagramRepository
from dal.users.cursors import encode_cursor
from dal.users.repository import MAX_PAGE_SIZE, UsersRepository
from tests.factories import make_settings, stored_hash

PASSWORD = "correct horse battery"


def new_user(email: str = "ada@example.com", **kw: object) -> NewUser:
    return NewUser(email=email, password=PASSWORD, **kw)  # type: ignore[arg-type]


async def test_create_returns_every_column(db: Database) -> None:
    user = await UsersRepository(db).create(
        new_user(full_name="Ada Lovelace", timezone="Europe/London", language="en-GB")
    )
    assert isinstance(user, User)
    assert isinstance(user.id, uuid.UUID)
    assert user.email == "ada@example.com"
    assert user.full_name == "Ada Lovelace"
    assert (user.is_active, user.is_verified) == (True, False)
    assert (user.timezone, user.language) == ("Europe/London", "en-GB")
    assert (user.login_count, user.failed_login_attempts) == (0, 0)
    assert user.last_login_at is None and user.locked_until is None
    assert user.instagram_user_id is None and not user.has_instagram_token
    assert user.created_at.tzinfo is not None and user.created_at.utcoffset() == timedelta(0)
    assert abs(user.created_at - datetime.now(UTC)) < timedelta(minutes=1)
    stored = await stored_hash(db, user.id)
    assert stored.startswith("$2b$04$") and PASSWORD not in stored
    assert set(User.model_fields) == {
        "id", "email", "full_name", "is_active", "is_verified",
        "instagram_user_id", "has_instagram_token", "instagram_username", "token_expires_at",
        "instagram_needs_reauth", "timezone", "language", "last_login_at", "login_count",
        "failed_login_attempts", "locked_until", "created_at", "updated_at",
    }  # fmt: skip


async def test_get_and_get_by_email_ignore_case(db: Database) -> None:
    created = await UsersRepository(db).create(new_user("Grace.Hopper@Example.COM"))
    assert await UsersRepository(db).get(created.id) == created
    assert await UsersRepository(db).get_by_email("grace.hopper@example.com") == created
    assert await UsersRepository(db).get_by_email("GRACE.HOPPER@EXAMPLE.COM") == created


async def test_not_found_paths(db: Database) -> None:
    missing = uuid.uuid4()
    with pytest.raises(NotFound, match=str(missing)):
        await UsersRepository(db).get(missing)
    with pytest.raises(NotFound):
        await UsersRepository(db).get_by_email("nobody@example.com")
    with pytest.raises(NotFound):
        await UsersRepository(db).update(missing, UserUpdate(full_name="Someone"))
    with pytest.raises(NotFound):
        await UsersRepository(db).delete(missing)
    with pytest.raises(NotFound):
        await InstagramRepository(db).connect(missing, InstagramConnection(
            instagram_user_id="1", access_token="t"  # type: ignore[arg-type]
        ))  # fmt: skip
    with pytest.raises(NotFound):
        await InstagramRepository(db).disconnect(missing)
    with pytest.raises(NotFound):
        await UsersRepository(db).record_login_success(missing)
    with pytest.raises(NotFound):
        await UsersRepository(db).record_login_failure(missing)


@pytest.mark.parametrize("second", ["ada@example.com", "ADA@example.com", "Ada@Example.Com"])
async def test_duplicate_email_in_any_case(db: Database, second: str) -> None:
    await UsersRepository(db).create(new_user("ada@example.com"))
    with pytest.raises(DuplicateEmail) as caught:
        await UsersRepository(db).create(new_user(second))
    assert second not in str(caught.value)
    async with db.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM users") == 1


async def test_update_to_another_users_email_is_duplicate(db: Database) -> None:
    await UsersRepository(db).create(new_user("ada@example.com"))
    bob = await UsersRepository(db).create(new_user("bob@example.com"))
    with pytest.raises(DuplicateEmail):
        await UsersRepository(db).update(bob.id, UserUpdate(email="ADA@example.com"))
    assert (await UsersRepository(db).get(bob.id)).email == "bob@example.com"


async def test_partial_update_changes_only_given_fields(db: Database) -> None:
    user = await UsersRepository(db).create(new_user(full_name="Ada"))
    hashed = await stored_hash(db, user.id)
    changed = await UsersRepository(db).update(user.id, UserUpdate(language="fr", is_verified=True))
    assert (changed.language, changed.is_verified) == ("fr", True)
    assert changed.full_name == "Ada" and changed.email == user.email
    assert changed.timezone == user.timezone and changed.is_active is True
    assert await stored_hash(db, user.id) == hashed
    assert changed.updated_at > user.updated_at

    cleared = await UsersRepository(db).update(user.id, UserUpdate(full_name=None))
    assert cleared.full_name is None and cleared.language == "fr"

    untouched = await UsersRepository(db).update(user.id, UserUpdate())
    assert untouched == cleared  # no-op: the trigger leaves updated_at alone


async def test_update_password_stores_a_new_hash(db: Database) -> None:
    user = await UsersRepository(db).create(new_user())
    hashed = await stored_hash(db, user.id)
    await UsersRepository(db).update(user.id, UserUpdate(password="a new passphrase"))
    assert await stored_hash(db, user.id) != hashed
    assert await UsersRepository(db).authenticate(user.email, "a new passphrase")


async def test_delete(db: Database) -> None:
    user = await UsersRepository(db).create(new_user())
    await UsersRepository(db).delete(user.id)
    with pytest.raises(NotFound):
        await UsersRepository(db).get(user.id)
    with pytest.raises(NotFound):
        await UsersRepository(db).delete(user.id)


async def test_instagram_connect_disconnect(db: Database) -> None:
    user = await UsersRepository(db).create(new_user())
    expires = datetime.now(UTC) + timedelta(days=30)
    link = InstagramConnection(
        instagram_user_id="17841400000000001",
        access_token="IGQVJ-token-value",  # type: ignore[arg-type]
        instagram_username="ada.codes",
        token_expires_at=expires,
    )
    connected = await InstagramRepository(db).connect(user.id, link)
    assert connected.has_instagram_connected and not connected.instagram_token_expired
    assert connected.instagram_username == "ada.codes"
    assert connected.token_expires_at == expires
    assert connected.has_instagram_token and not connected.instagram_needs_reauth
    token = await InstagramRepository(db).token(user.id)
    assert token is not None and token.get_secret_value() == "IGQVJ-token-value"

    other = await UsersRepository(db).create(new_user("bob@example.com"))
    with pytest.raises(DuplicateInstagramAccount) as caught:
        await InstagramRepository(db).connect(other.id, link)
    assert "IGQVJ" not in str(caught.value) and "17841400000000001" not in str(caught.value)
    # Reconnecting the same account to the same user (a refreshed token) is fine.
    await InstagramRepository(db).connect(user.id, link)

    gone = await InstagramRepository(db).disconnect(user.id)
    assert not gone.has_instagram_connected
    assert (gone.instagram_user_id, gone.has_instagram_token) == (None, False)
    assert await InstagramRepository(db).token(user.id) is None
    assert (gone.instagram_username, gone.token_expires_at) == (None, None)
    # Now the account is free for another user.
    assert (await InstagramRepository(db).connect(other.id, link)).has_instagram_connected


async def test_expired_token_property(db: Database) -> None:
    user = await UsersRepository(db).create(new_user())
    link = InstagramConnection(
        instagram_user_id="42",
        access_token="tok",  # type: ignore[arg-type]
        token_expires_at=datetime.now(UTC) - timedelta(seconds=1),
    )
    assert (await InstagramRepository(db).connect(user.id, link)).instagram_token_expired


async def test_expiring_instagram_tokens(db: Database) -> None:
    now = datetime.now(UTC)
    expiries = {
        "soon": now + timedelta(hours=2),
        "sooner": now + timedelta(hours=1),
        "later": now + timedelta(days=10),
        "expired": now - timedelta(hours=1),
    }
    ids = {}
    for name, expires in expiries.items():
        user = await UsersRepository(db).create(new_user(f"{name}@example.com"))
        ids[name] = user.id
        await InstagramRepository(db).connect(user.id, InstagramConnection(
            instagram_user_id=name, access_token="t", token_expires_at=expires,  # type: ignore[arg-type]
        ))  # fmt: skip
    await UsersRepository(db).create(new_user("never@example.com"))

    due = await InstagramRepository(db).expiring_tokens(timedelta(days=1))
    assert [u.id for u in due] == [ids["sooner"], ids["soon"]]
    assert [
        u.id for u in await InstagramRepository(db).expiring_tokens(timedelta(days=1), limit=1)
    ] == [ids["sooner"]]
    everyone = await InstagramRepository(db).expiring_tokens(timedelta(days=30))
    assert [u.id for u in everyone] == [ids["sooner"], ids["soon"], ids["later"]]
    # the /metrics gauge counts the same rows without reading them
    assert await InstagramRepository(db).count_expiring_tokens(timedelta(days=1)) == 2
    assert await InstagramRepository(db).count_expiring_tokens(timedelta(days=30)) == 3
    with pytest.raises(InvalidUserData) as caught:
        await InstagramRepository(db).expiring_tokens(timedelta(0))
    assert caught.value.field == "within"


async def _make_users(db: Database, count: int) -> list[User]:
    """``count`` users with distinct, known creation times (oldest first)."""
    users = [
        await UsersRepository(db).create(new_user(f"user{i:03d}@example.com")) for i in range(count)
    ]
    base = datetime(2024, 1, 1, tzinfo=UTC)
    async with db.acquire() as conn:
        for i, user in enumerate(users):
            # Pairs share a timestamp, so the id tie-breaker of the keyset is exercised too.
            await conn.execute(
                "UPDATE users SET created_at = $2, is_verified = $3 WHERE id = $1",
                user.id,
                base + timedelta(minutes=i // 2),
                i % 3 == 0,
            )
    return [await UsersRepository(db).get(u.id) for u in users]


def _newest_first(users: list[User]) -> list[uuid.UUID]:
    return [u.id for u in sorted(users, key=lambda u: (u.created_at, u.id), reverse=True)]


async def test_list_keyset_pagination_visits_every_user_once(db: Database) -> None:
    users = await _make_users(db, 23)
    seen: list[uuid.UUID] = []
    cursor = None
    pages = 0
    while True:
        page = await UsersRepository(db).list(limit=5, cursor=cursor)
        pages += 1
        assert len(page.users) <= 5
        seen.extend(u.id for u in page.users)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == 5
    assert seen == _newest_first(users)


async def test_list_filters(db: Database) -> None:
    users = await _make_users(db, 12)
    await UsersRepository(db).update(users[0].id, UserUpdate(is_active=False))
    verified = await UsersRepository(db).list(verified=True, limit=100)
    assert [u.id for u in verified.users] == _newest_first([u for u in users if u.is_verified])
    assert verified.next_cursor is None
    inactive = await UsersRepository(db).list(active=False)
    assert [u.id for u in inactive.users] == [users[0].id]
    both = await UsersRepository(db).list(active=True, verified=False)
    assert all(u.is_active and not u.is_verified for u in both.users)
    assert len(both.users) == len([u for u in users[1:] if not u.is_verified])


async def test_list_pagination_is_stable_under_inserts(db: Database) -> None:
    users = await _make_users(db, 10)
    first = await UsersRepository(db).list(limit=4)
    await UsersRepository(db).create(new_user("newcomer@example.com"))  # newest: before the cursor
    rest = await UsersRepository(db).list(limit=100, cursor=first.next_cursor)
    assert [u.id for u in first.users + rest.users] == _newest_first(users)


async def test_list_limit_rules(db: Database) -> None:
    await _make_users(db, 3)
    with pytest.raises(InvalidUserData) as caught:
        await UsersRepository(db).list(limit=0)
    assert caught.value.field == "limit"
    page = await UsersRepository(db).list(limit=MAX_PAGE_SIZE * 10)
    assert len(page.users) == 3  # capped, not refused
    with pytest.raises(InvalidUserData) as bad:
        await UsersRepository(db).list(cursor="not-a-cursor")
    assert bad.value.field == "cursor"
    empty = await UsersRepository(db).list(
        cursor=encode_cursor(datetime(2000, 1, 1, tzinfo=UTC), uuid.uuid4())
    )
    assert empty.users == [] and empty.next_cursor is None


async def test_methods_join_a_caller_transaction(db: Database) -> None:
    async with db.transaction() as conn:
        user = await UsersRepository(db).create(new_user(), conn=conn)
        await UsersRepository(db).update(user.id, UserUpdate(full_name="In Tx"), conn=conn)
        assert (await UsersRepository(db).get(user.id, conn=conn)).full_name == "In Tx"
    assert (await UsersRepository(db).get(user.id)).full_name == "In Tx"

    with pytest.raises(RuntimeError):
        async with db.transaction() as conn:
            await UsersRepository(db).create(new_user("rolled@example.com"), conn=conn)
            raise RuntimeError("abort")
    with pytest.raises(NotFound):
        await UsersRepository(db).get_by_email("rolled@example.com")


async def test_a_duplicate_inside_a_transaction_is_typed(db: Database) -> None:
    await UsersRepository(db).create(new_user())
    with pytest.raises(DuplicateEmail):
        async with db.transaction() as conn:
            await UsersRepository(db).create(new_user("ADA@example.com"), conn=conn)


async def test_64_simultaneous_creates_of_one_email(clean_dsn: str) -> None:
    settings = make_settings(clean_dsn, pool_max_size=64, pool_min_size=1, acquire_timeout=30.0)
    async with Database(settings) as db:
        spellings = ["racer@example.com", "RACER@example.com", "Racer@Example.com"]
        results = await asyncio.gather(
            *(UsersRepository(db).create(new_user(spellings[i % 3])) for i in range(64)),
            return_exceptions=True,
        )
        created = [r for r in results if isinstance(r, User)]
        duplicates = [r for r in results if isinstance(r, DuplicateEmail)]
        assert len(created) == 1, [type(r).__name__ for r in results if not isinstance(r, User)]
        assert len(duplicates) == 63
        async with db.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM users") == 1


async def test_database_refusals_become_invalid_user_data(db: Database) -> None:
    """Input that skipped pydantic (model_construct) is refused by the CHECKs and column types,
    and the repository names the field and the rule instead of leaking asyncpg errors."""
    cases = [
        ({"email": "not-an-email"}, "email", "valid_email_format"),
        ({"email": "a@b."}, "email", "email_min_length"),
        ({"full_name": "A"}, "full_name", "full_name_min_length"),
        ({"timezone": "T" * 51}, "timezone", "varchar(50)"),
        ({"language": "abcdef"}, "language", "varchar(5)"),
        ({"email": "x" * 250 + "@example.com"}, "email", "varchar(255)"),
        ({"full_name": "nul\x00byte"}, "full_name", "NUL"),
    ]
    for fields, field, rule in cases:
        values = {
            "email": "ok@example.com",
            "password": PASSWORD,
            "full_name": None,
            "is_active": True,
            "is_verified": False,
            "timezone": "UTC",
            "language": "en",
            **fields,
        }
        values["password"] = SecretStr(PASSWORD)
        unchecked = NewUser.model_construct(**values)
        with pytest.raises(InvalidUserData) as caught:
            await UsersRepository(db).create(unchecked)
        assert caught.value.field == field, fields
        assert rule in caught.value.rule, (fields, caught.value.rule)
        assert not isinstance(caught.value.__cause__, asyncpg.PostgresError)


async def test_bad_id_type_is_invalid_user_data(db: Database) -> None:
    with pytest.raises(InvalidUserData) as caught:
        await UsersRepository(db).get("not-a-uuid")  # type: ignore[arg-type]
    assert caught.value.field == "user_id"
    assert "not-a-uuid" not in str(caught.value)


@pytest.mark.parametrize("infinity", ["infinity", "-infinity"])
async def test_infinite_timestamps_written_by_sql_read_back_aware(
    db: Database, infinity: str
) -> None:
    """A DBA's UPDATE ... = 'infinity' must not break every later read of the user."""
    user = await UsersRepository(db).create(new_user())
    await InstagramRepository(db).connect(
        user.id,
        InstagramConnection(instagram_user_id="42", access_token="t"),  # type: ignore[arg-type]
    )
    async with db.acquire() as conn:
        await conn.execute(
            "UPDATE users SET token_expires_at = $2::text::timestamptz,"
            " locked_until = $2::text::timestamptz, last_login_at = $2::text::timestamptz"
            " WHERE id = $1",
            user.id,
            infinity,
        )
    for read in (
        await UsersRepository(db).get(user.id),
        await UsersRepository(db).get_by_email("ada@example.com"),
        (await UsersRepository(db).list()).users[0],
    ):
        for value in (read.token_expires_at, read.locked_until, read.last_login_at):
            assert value is not None and value.utcoffset() == timedelta(0)
        assert read.instagram_token_expired is (infinity == "-infinity")
        assert read.is_locked is (infinity == "infinity")
    # The refresh job's window query skips tokens that never (or always) expired.
    assert await InstagramRepository(db).expiring_tokens(timedelta(days=1)) == []


async def test_expiring_window_too_long_to_compute_is_invalid_user_data(db: Database) -> None:
    for within in (timedelta(days=999_999_999), timedelta.max):
        with pytest.raises(InvalidUserData) as caught:
            await InstagramRepository(db).expiring_tokens(within)
        assert caught.value.field == "within"
    # The longest window accepted still runs (it covers every storable expiry).
    assert await InstagramRepository(db).expiring_tokens(MAX_EXPIRY_WINDOW) == []
