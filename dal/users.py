"""``UsersRepository``: every statement the application runs against ``users``.

Each statement is a named constant below, written by hand with ``$n`` parameters (read them as
you would an aiosql file: the comment says what the statement is for and which index serves
it).  No SQL is ever assembled from input: the partial update, the filters and the pagination
are single static statements whose parameters switch parts on or off.

Every method takes an optional ``conn``: pass one from ``Database.transaction()`` to make several
calls one transaction; without it the method acquires from the pool itself.  Lag-tolerant
reads (``get``, ``get_by_email``, ``list``, ``expiring_instagram_tokens``) acquire with
``readonly=True`` so they may be served by a replica; writes and ``authenticate`` -- which must
see the latest lockout state -- always use the primary.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import struct
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final
from uuid import UUID

import asyncpg

from dal.errors import (
    InvalidUserData,
    NotFound,
)
from dal.models import (
    InstagramConnection,
    LoginFailure,
    NewUser,
    User,
    UserPage,
    UserUpdate,
)
from dal.passwords import PasswordHasher
from dal.pgerrors import DRIVER_ERRORS, translate
from dal.signin import SignIn

if TYPE_CHECKING:
    from dal.database import Connection, Database

DEFAULT_PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 200
MAX_EXPIRING: Final = 1000

USER_COLUMNS: Final = """
    id, email, hashed_password, full_name, is_active, is_verified,
    instagram_user_id, instagram_access_token, instagram_username, token_expires_at,
    timezone, language, last_login_at, login_count, failed_login_attempts, locked_until,
    created_at, updated_at"""

# name: get_user
# One user by primary key (users_pkey).
GET_USER: Final = f"SELECT {USER_COLUMNS} FROM users WHERE id = $1"

# name: get_user_by_email
# One user by email, ignoring case: the expression matches the unique index
# users_email_lower_key (0002), so this is an index lookup, not a scan.
GET_USER_BY_EMAIL: Final = f"SELECT {USER_COLUMNS} FROM users WHERE lower(email) = lower($1)"

# name: create_user
# Insert a user; the database fills id, timestamps and counters.  Unique violations on
# users_email_key / users_email_lower_key mean the email is taken.
CREATE_USER: Final = f"""
INSERT INTO users (email, hashed_password, full_name, is_active, is_verified, timezone, language)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING {USER_COLUMNS}"""

# name: update_user
# Partial update in one static statement.  NOT NULL columns use COALESCE (NULL = keep);
# full_name may be set to NULL, so a flag ($4) says whether to touch it.  The trigger
# users_set_updated_at moves updated_at only when something really changed.
UPDATE_USER: Final = f"""
UPDATE users SET
    email = COALESCE($2, email),
    hashed_password = COALESCE($3, hashed_password),
    full_name = CASE WHEN $4::boolean THEN $5 ELSE full_name END,
    is_active = COALESCE($6, is_active),
    is_verified = COALESCE($7, is_verified),
    timezone = COALESCE($8, timezone),
    language = COALESCE($9, language)
WHERE id = $1
RETURNING {USER_COLUMNS}"""

# name: delete_user
DELETE_USER: Final = "DELETE FROM users WHERE id = $1 RETURNING id"

# name: list_users
# First page, newest first.  ($n IS NULL OR ...) turns a filter off.  Served by a backward
# scan of the spec's idx_users_created_at (plus an incremental sort on id for equal
# timestamps), which stops after $3 rows; tests/test_query_plans.py asserts the plan.
LIST_USERS: Final = f"""
SELECT {USER_COLUMNS} FROM users
WHERE ($1::boolean IS NULL OR is_active = $1)
  AND ($2::boolean IS NULL OR is_verified = $2)
ORDER BY created_at DESC, id DESC
LIMIT $3"""

# name: list_users_after
# Next pages: keyset pagination on (created_at, id), strictly after the cursor's row.  The
# row comparison starts the backward scan of idx_users_created_at at the cursor, so page 1000
# costs what page 1 costs (an OFFSET would read and discard every earlier row).
LIST_USERS_AFTER: Final = f"""
SELECT {USER_COLUMNS} FROM users
WHERE ($1::boolean IS NULL OR is_active = $1)
  AND ($2::boolean IS NULL OR is_verified = $2)
  AND (created_at, id) < ($4::timestamptz, $5::uuid)
ORDER BY created_at DESC, id DESC
LIMIT $3"""

# name: connect_instagram
# Attach an Instagram account.  users_instagram_user_id_key keeps one user per account.
CONNECT_INSTAGRAM: Final = f"""
UPDATE users SET
    instagram_user_id = $2,
    instagram_access_token = $3,
    instagram_username = $4,
    token_expires_at = $5
WHERE id = $1
RETURNING {USER_COLUMNS}"""

# name: disconnect_instagram
DISCONNECT_INSTAGRAM: Final = f"""
UPDATE users SET
    instagram_user_id = NULL,
    instagram_access_token = NULL,
    instagram_username = NULL,
    token_expires_at = NULL
WHERE id = $1
RETURNING {USER_COLUMNS}"""

# name: expiring_instagram_tokens
# Connected users whose token is still valid but expires within $1, soonest first (for a
# refresh job).  Served by the partial index users_token_expires_at_idx (0003).
EXPIRING_INSTAGRAM_TOKENS: Final = f"""
SELECT {USER_COLUMNS} FROM users
WHERE token_expires_at > now()
  AND token_expires_at <= now() + $1::interval
  AND instagram_access_token IS NOT NULL
ORDER BY token_expires_at, id
LIMIT $2"""

# name: record_login_success
# Successful sign-in: stamp it, count it, clear the failure counter and any lock.  When $2 is
# given it is an upgraded hash of the same password; it replaces the stored hash only if that
# is still $3 (the one we verified), so a password change racing the sign-in is never undone.
RECORD_LOGIN_SUCCESS: Final = f"""
UPDATE users SET
    last_login_at = now(),
    login_count = login_count + 1,
    failed_login_attempts = 0,
    locked_until = NULL,
    hashed_password = CASE WHEN hashed_password = $3 THEN COALESCE($2, hashed_password)
                           ELSE hashed_password END
WHERE id = $1
RETURNING {USER_COLUMNS}"""

# name: record_login_failure
# Failed sign-in, atomically: the increment reads the row's current value under its row lock,
# so N concurrent failures count N (a read-then-write in Python would lose some).  Reaching the
# threshold $2 locks the account for $3 from now.
RECORD_LOGIN_FAILURE: Final = """
UPDATE users SET
    failed_login_attempts = failed_login_attempts + 1,
    locked_until = CASE WHEN failed_login_attempts + 1 >= $2 THEN now() + $3::interval
                        ELSE locked_until END
WHERE id = $1
RETURNING failed_login_attempts, locked_until"""

_CURSOR = struct.Struct(">q16s")  # microseconds since the epoch, UUID bytes
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def encode_cursor(created_at: datetime, user_id: UUID) -> str:
    """An opaque token for "the rows after this one" (clients must not parse it)."""
    micros = (created_at - _EPOCH) // timedelta(microseconds=1)
    raw = _CURSOR.pack(micros, user_id.bytes)
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        micros, uuid_bytes = _CURSOR.unpack(raw)
        return _EPOCH + timedelta(microseconds=micros), UUID(bytes=uuid_bytes)
    except (binascii.Error, struct.error, ValueError, OverflowError):
        raise InvalidUserData("cursor", "is not a cursor returned by list()") from None


async def _translated_fetch(
    conn: Connection, query: str, args: Sequence[object], names: Sequence[str]
) -> builtins.list[asyncpg.Record]:
    """``conn.fetch`` whose driver errors become ``dal.errors`` naming the field (``names``
    labels ``args`` in ``$n`` order).  Translated here, inside the acquire block, so that
    ``Database.acquire`` only ever sees errors that are about the connection itself."""
    try:
        return await conn.fetch(query, *args)
    except DRIVER_ERRORS as exc:
        raise translate(exc, dict(zip(names, args, strict=True))) from None


class UsersRepository:
    """The users aggregate's queries; get one from ``Database.users``."""

    def __init__(self, db: Database) -> None:
        self._db = db
        settings = db.settings
        self.passwords = PasswordHasher(settings.bcrypt_rounds)
        self.lockout_threshold = settings.lockout_threshold
        self.lockout_account_threshold = settings.lockout_account_threshold
        self.lockout_window = timedelta(seconds=settings.lockout_window)
        self.sign_in = SignIn(db, self.passwords)

    def __repr__(self) -> str:
        return f"<UsersRepository on {self._db!r}>"

    # -- plumbing ------------------------------------------------------------------------------

    async def _fetch(
        self,
        query: str,
        args: Sequence[object],
        names: Sequence[str],
        conn: Connection | None,
        *,
        readonly: bool = False,
    ) -> builtins.list[asyncpg.Record]:
        """Run one statement on ``conn`` or a pooled connection."""
        if conn is not None:
            return await _translated_fetch(conn, query, args, names)
        async with self._db.acquire(readonly=readonly) as pooled:
            return await _translated_fetch(pooled, query, args, names)

    async def _fetchrow(
        self,
        query: str,
        args: Sequence[object],
        names: Sequence[str],
        conn: Connection | None,
        *,
        readonly: bool = False,
    ) -> asyncpg.Record | None:
        """``_fetch`` for statements that address one row (by key or RETURNING)."""
        rows = await self._fetch(query, args, names, conn, readonly=readonly)
        return rows[0] if rows else None

    @staticmethod
    def _required(row: asyncpg.Record | None, user_id: UUID) -> asyncpg.Record:
        if row is None:
            raise NotFound(f"user {user_id} not found")
        return row

    @classmethod
    def _found(cls, row: asyncpg.Record | None, user_id: UUID) -> User:
        return User.from_record(cls._required(row, user_id))

    # -- reads ---------------------------------------------------------------------------------

    async def get(self, user_id: UUID, *, conn: Connection | None = None) -> User:
        """The user with this id; ``NotFound`` otherwise."""
        row = await self._fetchrow(GET_USER, (user_id,), ("id",), conn, readonly=True)
        return self._found(row, user_id)

    async def get_by_email(self, email: str, *, conn: Connection | None = None) -> User:
        """The user with this email, compared case-insensitively; ``NotFound`` otherwise."""
        row = await self._fetchrow(GET_USER_BY_EMAIL, (email,), ("email",), conn, readonly=True)
        if row is None:
            raise NotFound("no user with this email")
        return User.from_record(row)

    async def list(
        self,
        *,
        active: bool | None = None,
        verified: bool | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
        conn: Connection | None = None,
    ) -> UserPage:
        """Users newest first, ``limit`` (capped at ``MAX_PAGE_SIZE``) at a time.

        ``active``/``verified`` filter when not None.  Pass the page's ``next_cursor`` to get
        the following page; it is None on the last page.  Rows inserted meanwhile never make a
        page repeat or skip a row (keyset, not OFFSET).
        """
        if limit < 1:
            raise InvalidUserData("limit", "must be at least 1")
        size = min(limit, MAX_PAGE_SIZE)
        names = ("active", "verified", "limit")
        if cursor is None:
            rows = await self._fetch(
                LIST_USERS, (active, verified, size + 1), names, conn, readonly=True
            )
        else:
            after, after_id = decode_cursor(cursor)
            rows = await self._fetch(
                LIST_USERS_AFTER,
                (active, verified, size + 1, after, after_id),
                (*names, "cursor", "cursor"),
                conn,
                readonly=True,
            )
        users = [User.from_record(row) for row in rows[:size]]
        next_cursor = None
        if len(rows) > size:
            last = users[-1]
            next_cursor = encode_cursor(last.created_at, last.id)
        return UserPage(users=users, next_cursor=next_cursor)

    async def expiring_instagram_tokens(
        self, within: timedelta, *, limit: int = MAX_EXPIRING, conn: Connection | None = None
    ) -> builtins.list[User]:
        """Connected users whose token has not expired yet but will within ``within``."""
        if within <= timedelta(0):
            raise InvalidUserData("within", "must be a positive duration")
        if limit < 1:
            raise InvalidUserData("limit", "must be at least 1")
        rows = await self._fetch(
            EXPIRING_INSTAGRAM_TOKENS,
            (within, min(limit, MAX_EXPIRING)),
            ("within", "limit"),
            conn,
            readonly=True,
        )
        return [User.from_record(row) for row in rows]

    # -- writes --------------------------------------------------------------------------------

    async def create(self, new: NewUser, *, conn: Connection | None = None) -> User:
        """Insert a user (hashing the password off the event loop); ``DuplicateEmail`` when
        the email exists in any letter case."""
        hashed = await self.passwords.hash(new.password.get_secret_value())
        row = await self._fetchrow(
            CREATE_USER,
            (
                new.email,
                hashed,
                new.full_name,
                new.is_active,
                new.is_verified,
                new.timezone,
                new.language,
            ),
            (
                "email",
                "hashed_password",
                "full_name",
                "is_active",
                "is_verified",
                "timezone",
                "language",
            ),
            conn,
        )
        assert row is not None  # INSERT ... RETURNING always returns the row
        return User.from_record(row)

    async def update(
        self, user_id: UUID, changes: UserUpdate, *, conn: Connection | None = None
    ) -> User:
        """Apply the fields set in ``changes``; the others keep their value."""
        given = changes.model_fields_set
        hashed = None
        if changes.password is not None:
            hashed = await self.passwords.hash(changes.password.get_secret_value())
        row = await self._fetchrow(
            UPDATE_USER,
            (
                user_id,
                changes.email,
                hashed,
                "full_name" in given,
                changes.full_name,
                changes.is_active,
                changes.is_verified,
                changes.timezone,
                changes.language,
            ),
            (
                "id",
                "email",
                "hashed_password",
                "full_name",
                "full_name",
                "is_active",
                "is_verified",
                "timezone",
                "language",
            ),
            conn,
        )
        return self._found(row, user_id)

    async def delete(self, user_id: UUID, *, conn: Connection | None = None) -> None:
        """Delete the user; ``NotFound`` when there is none."""
        self._required(await self._fetchrow(DELETE_USER, (user_id,), ("id",), conn), user_id)

    async def connect_instagram(
        self, user_id: UUID, link: InstagramConnection, *, conn: Connection | None = None
    ) -> User:
        """Attach (or replace) the user's Instagram account; ``DuplicateInstagramAccount`` when
        another user has it."""
        row = await self._fetchrow(
            CONNECT_INSTAGRAM,
            (
                user_id,
                link.instagram_user_id,
                link.access_token.get_secret_value(),
                link.instagram_username,
                link.token_expires_at,
            ),
            (
                "id",
                "instagram_user_id",
                "instagram_access_token",
                "instagram_username",
                "token_expires_at",
            ),
            conn,
        )
        return self._found(row, user_id)

    async def disconnect_instagram(self, user_id: UUID, *, conn: Connection | None = None) -> User:
        """Forget the user's Instagram account and token."""
        row = await self._fetchrow(DISCONNECT_INSTAGRAM, (user_id,), ("id",), conn)
        return self._found(row, user_id)

    # -- sign-in -------------------------------------------------------------------------------

    async def record_login_success(self, user_id: UUID, *, conn: Connection | None = None) -> User:
        """Stamp a successful sign-in and clear failures and lock (for other sign-in paths)."""
        row = await self._fetchrow(
            RECORD_LOGIN_SUCCESS, (user_id, None, None), ("id", "hashed_password", "id"), conn
        )
        return self._found(row, user_id)

    async def record_login_failure(
        self, user_id: UUID, *, conn: Connection | None = None
    ) -> LoginFailure:
        """Count a failed sign-in from another sign-in path; at the account-wide ceiling
        (``DEFEAH_LOCKOUT_ACCOUNT_THRESHOLD``) the account locks for everyone for the window."""
        row = await self._fetchrow(
            RECORD_LOGIN_FAILURE,
            (user_id, self.lockout_account_threshold, self.lockout_window),
            ("id", "threshold", "window"),
            conn,
        )
        row = self._required(row, user_id)
        return LoginFailure(
            failed_login_attempts=row["failed_login_attempts"], locked_until=row["locked_until"]
        )

    async def authenticate(
        self,
        email: str,
        password: str,
        *,
        client_ip: str | None = None,
        user_agent: str | None = None,
    ) -> User:
        """The user for ``email``/``password``, with the sign-in recorded (``dal.signin``).

        Raises ``InvalidUserData`` for input no account can have (empty or over-long email,
        password empty or over 72 bytes, ``client_ip`` not an address), before any work.  Then
        one atomic claim on the attempt budgets decides, before bcrypt, whether the password
        is checked at all: ``AccountLocked`` when the email's account-wide ceiling is reached
        (for everyone), ``TooManyAttempts`` when ``client_ip`` spent its ceiling across
        emails, and ``InvalidCredentials`` -- the very answer of a wrong password -- when this
        (email, network) budget is spent, even for the right password.  A checked attempt
        raises ``InvalidCredentials`` for an unknown email (after the same bcrypt work as a
        real check) or a wrong password, and ``AccountInactive`` only once the password is
        right.  A hash with an outdated cost is upgraded.  Each attempt writes one
        ``auth_events`` row.
        """
        return await self.sign_in.authenticate(
            email, password, client_ip=client_ip, user_agent=user_agent
        )
