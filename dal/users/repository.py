"""``UsersRepository``: the users aggregate, over the statements of ``dal/queries/users.sql``.

The SQL lives in that file, where a DBA reads it; this class adds what SQL cannot: argument
checks, password hashing off the event loop, pagination cursors and rows mapped to models.
Sign-in is ``dal.users.signin`` (``authenticate`` delegates to it); a user's Instagram
connection is ``dal.instagram.repository``.

Every method takes an optional ``conn``: pass one from ``Database.transaction()`` to make
several calls one transaction; without it the method acquires from the pool itself.
Lag-tolerant reads (``get``, ``get_by_email``, ``list``) acquire with ``readonly=True`` so they
may be served by a replica; writes and ``authenticate`` -- which must see the latest lockout
state -- always use the primary.  No ``User`` carries the password hash or the Instagram token.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final
from uuid import UUID

from dal.arguments import expect
from dal.db.connections import Acquirer, Connection
from dal.db.statements import Statements
from dal.errors import InvalidUserData, NotFound
from dal.users import erasure, export
from dal.users.cursors import decode_cursor, encode_cursor
from dal.users.models import (
    LoginFailure,
    NewUser,
    User,
    UserPage,
    UserUpdate,
    required_row,
    user_row,
)
from dal.users.passwords import PasswordHasher
from dal.users.receipts import settings_pepper
from dal.users.signin import SignIn

DEFAULT_PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 200


class UsersRepository:
    """The users aggregate; ``UsersRepository(db)`` with a ``Database`` (or any acquirer)."""

    def __init__(self, db: Acquirer) -> None:
        self._db = db
        self._sql = Statements(db, "users")
        settings = db.settings
        self.passwords = PasswordHasher(
            settings.bcrypt_rounds, settings.bcrypt_queue_limit, settings.bcrypt_queue_timeout
        )
        self.lockout_account_threshold = settings.lockout_account_threshold
        self.lockout_window = timedelta(seconds=settings.lockout_window)
        self.sign_in = SignIn(db, self.passwords)

    def __repr__(self) -> str:
        return f"<UsersRepository on {self._db!r}>"

    # -- reads ---------------------------------------------------------------------------------

    async def get(self, user_id: UUID, *, conn: Connection | None = None) -> User:
        """The user with this id; ``NotFound`` otherwise."""
        expect("user_id", user_id, UUID)
        row = await self._sql.row("get_user", {"id": user_id}, conn, readonly=True)
        return user_row(row, user_id)

    async def get_by_email(self, email: str, *, conn: Connection | None = None) -> User:
        """The user with this email, compared case-insensitively; ``NotFound`` otherwise."""
        expect("email", email, str)
        row = await self._sql.row("get_user_by_email", {"email": email}, conn, readonly=True)
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
        expect("active", active, bool, optional=True)
        expect("verified", verified, bool, optional=True)
        expect("limit", limit, int)
        expect("cursor", cursor, str, optional=True)
        if limit < 1:
            raise InvalidUserData("limit", "must be at least 1")
        size = min(limit, MAX_PAGE_SIZE)
        values: dict[str, object] = {"active": active, "verified": verified, "limit": size + 1}
        name = "list_users"
        if cursor is not None:
            name = "list_users_after"
            values["after_created_at"], values["after_id"] = decode_cursor(cursor)
        rows = await self._sql.rows(name, values, conn, readonly=True)
        users = [User.from_record(row) for row in rows[:size]]
        next_cursor = None
        if len(rows) > size:
            last = users[-1]
            next_cursor = encode_cursor(last.created_at, last.id)
        return UserPage(users=users, next_cursor=next_cursor)

    # -- writes --------------------------------------------------------------------------------

    async def create(self, new: NewUser, *, conn: Connection | None = None) -> User:
        """Insert a user (hashing the password off the event loop); ``DuplicateEmail`` when
        the email exists in any letter case."""
        expect("new", new, NewUser)
        hashed = await self.passwords.hash(new.password.get_secret_value())
        values = new.model_dump(exclude={"password"}) | {"hashed_password": hashed}
        row = await self._sql.row("create_user", values, conn)
        assert row is not None  # INSERT ... RETURNING always returns the row
        return User.from_record(row)

    async def update(
        self, user_id: UUID, changes: UserUpdate, *, conn: Connection | None = None
    ) -> User:
        """Apply the fields set in ``changes``; the others keep their value."""
        expect("user_id", user_id, UUID)
        expect("changes", changes, UserUpdate)
        hashed = None
        if changes.password is not None:
            hashed = await self.passwords.hash(changes.password.get_secret_value())
        values = changes.model_dump(exclude={"password"}) | {
            "id": user_id,
            "hashed_password": hashed,
            "set_full_name": "full_name" in changes.model_fields_set,
        }
        return user_row(await self._sql.row("update_user", values, conn), user_id)

    async def delete(self, user_id: UUID, *, conn: Connection | None = None) -> None:
        """Delete the user; ``NotFound`` when there is none."""
        expect("user_id", user_id, UUID)
        required_row(await self._sql.row("delete_user", {"id": user_id}, conn), user_id)

    # -- sign-in -------------------------------------------------------------------------------

    async def record_login_success(self, user_id: UUID, *, conn: Connection | None = None) -> User:
        """Stamp a successful sign-in and clear failures and lock (for other sign-in paths)."""
        expect("user_id", user_id, UUID)
        values = {"id": user_id, "upgraded_hash": None, "verified_hash": None}
        return user_row(await self._sql.row("record_login_success", values, conn), user_id)

    async def record_login_failure(
        self, user_id: UUID, *, conn: Connection | None = None
    ) -> LoginFailure:
        """Count a failed sign-in from another sign-in path; at the account-wide ceiling
        (``DEFEAH_LOCKOUT_ACCOUNT_THRESHOLD``) the account locks for the window, for every
        address ``authenticate`` does not know as the account's (the counter saturates at
        INTEGER's maximum)."""
        expect("user_id", user_id, UUID)
        values = {
            "id": user_id,
            "threshold": self.lockout_account_threshold,
            "window": self.lockout_window,
        }
        row = required_row(await self._sql.row("record_login_failure", values, conn), user_id)
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
        """The user for ``email``/``password``, with the sign-in recorded (``dal.users.signin``).

        Raises ``InvalidUserData`` for input no account can have (empty or over-long email,
        password empty or over 72 bytes, ``client_ip`` not an address), before any work.  Then
        one atomic claim on the attempt budgets decides, before bcrypt, whether the password
        is checked at all: ``AccountLocked`` when an account budget of the email is spent
        (strangers' or known addresses', or 100 failures in a row), ``TooManyAttempts`` when
        ``client_ip`` spent its ceiling across emails, and ``InvalidCredentials`` -- the very
        answer of a wrong password -- when this (email, network) budget is spent, even for the
        right password.  A checked attempt raises ``InvalidCredentials`` for an unknown email
        (after the same bcrypt work as a real check) or a wrong password, and
        ``AccountInactive`` only once the password is right.  A hash with an outdated cost is
        upgraded.  Each attempt writes one ``auth_events`` row.
        """
        expect("email", email, str)
        expect("password", password, str)
        expect("client_ip", client_ip, str, optional=True)
        expect("user_agent", user_agent, str, optional=True)
        return await self.sign_in.authenticate(
            email, password, client_ip=client_ip, user_agent=user_agent
        )

    # -- personal data (docs/security.md#personal-data) ----------------------------------------

    async def erase(self, user_id: UUID, *, force: bool = False) -> erasure.ErasureReport:
        """Erase the user and everything held about them in one transaction, leaving a receipt
        without personal data (``dal.users.erasure``); ``NotFound`` and nothing changed when
        there is no such user.  Refused on production unless ``force``."""
        expect("user_id", user_id, UUID)
        pepper = settings_pepper(self._db.settings, "erasing a user")
        return await erasure.erase(self._db, user_id, pepper, force=force)

    async def export(self, user_id: UUID, out: export.Sink) -> int:
        """Write the user's export document (``dal.users.export``) to ``out``, streaming; the
        number of sign-in events written.  ``NotFound`` before any output without the user."""
        expect("user_id", user_id, UUID)
        pepper = settings_pepper(self._db.settings, "exporting a user")
        return await export.export(self._db, user_id, pepper, out)
