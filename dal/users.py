"""``UsersRepository``: the users aggregate, over the statements of ``dal/queries/users.sql``.

The SQL lives in that file, where a DBA reads it; this class adds what SQL cannot: argument
checks, password hashing off the event loop, pagination cursors and rows mapped to models.

Every method takes an optional ``conn``: pass one from ``Database.transaction()`` to make
several calls one transaction; without it the method acquires from the pool itself.
Lag-tolerant reads (``get``, ``get_by_email``, ``list``, ``expiring_instagram_tokens``) acquire
with ``readonly=True`` so they may be served by a replica; writes and ``authenticate`` -- which
must see the latest lockout state -- always use the primary.

Secrets are never read by accident: no ``User`` carries the password hash or the Instagram
token.  The token is encrypted on the way in (``connect_instagram``, ``record_token_refreshed``,
``dal.tokens``) and decrypted only by ``instagram_token`` and ``claim_tokens_due``.
"""

from __future__ import annotations

import builtins
import functools
import logging
from datetime import datetime, timedelta
from typing import Final
from uuid import UUID

import asyncpg
from pydantic import SecretStr

from dal.arguments import expect
from dal.cursors import decode_cursor, encode_cursor
from dal.driver import Acquirer, Connection
from dal.errors import InvalidUserData, NotFound, TokenUnreadable
from dal.models import (
    TOKEN_EXPIRES_MAX,
    TOKEN_EXPIRES_MIN,
    DueToken,
    InstagramConnection,
    LoginFailure,
    NewUser,
    RefreshedToken,
    TokenRefreshFailure,
    User,
    UserPage,
    UserUpdate,
)
from dal.passwords import PasswordHasher
from dal.signin import SignIn
from dal.statements import Statements
from dal.tokens import TokenCipher, cipher_for

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 200
MAX_EXPIRING: Final = 1000
# Every storable expiry lies within this distance of any "now" inside the storable range, so a
# longer window means nothing more -- and ``now() + window`` could overflow PostgreSQL.
MAX_EXPIRY_WINDOW: Final = TOKEN_EXPIRES_MAX - TOKEN_EXPIRES_MIN
# Instagram refreshes a long-lived token only once it is at least 24 hours old.
MIN_REFRESH_AGE: Final = timedelta(hours=24)
MAX_CLAIM: Final = 1000
# Instagram's OAuthException code for an invalid (revoked, expired) access token.
INVALID_TOKEN_CODE: Final = "190"  # noqa: S105 -- an error code, not a password
# Recorded for a stored token no configured key decrypts: like 190, only a reconnect helps.
UNREADABLE_TOKEN_CODE: Final = "unreadable"  # noqa: S105 -- an error code, not a password
REAUTH_CODES: Final = frozenset({INVALID_TOKEN_CODE, UNREADABLE_TOKEN_CODE})
# After a failed refresh the row rests for this long per consecutive failure (at most a day),
# so a persistently failing token is retried at a falling rate rather than in a hot loop.
RETRY_AFTER_STEP: Final = timedelta(minutes=5)
RETRY_AFTER_MAX: Final = timedelta(days=1)


def _required(row: asyncpg.Record | None, user_id: UUID) -> asyncpg.Record:
    if row is None:
        raise NotFound(f"user {user_id} not found")
    return row


def _user(row: asyncpg.Record | None, user_id: UUID) -> User:
    return User.from_record(_required(row, user_id))


def _check_window(within: timedelta) -> None:
    expect("within", within, timedelta)
    if within <= timedelta(0):
        raise InvalidUserData("within", "must be a positive duration")
    if within > MAX_EXPIRY_WINDOW:
        raise InvalidUserData(
            "within", f"must be at most {MAX_EXPIRY_WINDOW.days} days (every storable expiry)"
        )


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
        self._settings = settings

    @functools.cached_property
    def tokens(self) -> TokenCipher:
        """The token cipher, built on first use: only reading or writing a token needs the key
        ring (on staging/production ``DEFEAH_TOKEN_KEYS``; refused here when unset)."""
        settings = self._settings
        settings.require("reading or writing an Instagram token", "token_keys")
        secret = settings.token_keys
        return cipher_for(None if secret is None else secret.get_secret_value(), settings.data_dir)

    def __repr__(self) -> str:
        return f"<UsersRepository on {self._db!r}>"

    # -- reads ---------------------------------------------------------------------------------

    async def get(self, user_id: UUID, *, conn: Connection | None = None) -> User:
        """The user with this id; ``NotFound`` otherwise."""
        expect("user_id", user_id, UUID)
        row = await self._sql.row("get_user", {"id": user_id}, conn, readonly=True)
        return _user(row, user_id)

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

    async def expiring_instagram_tokens(
        self, within: timedelta, *, limit: int = MAX_EXPIRING, conn: Connection | None = None
    ) -> builtins.list[User]:
        """Connected users whose token has not expired yet but will within ``within``."""
        _check_window(within)
        expect("limit", limit, int)
        if limit < 1:
            raise InvalidUserData("limit", "must be at least 1")
        values = {"within": within, "limit": min(limit, MAX_EXPIRING)}
        rows = await self._sql.rows("expiring_instagram_tokens", values, conn, readonly=True)
        return [User.from_record(row) for row in rows]

    async def count_expiring_instagram_tokens(
        self, within: timedelta, *, conn: Connection | None = None
    ) -> int:
        """How many tokens ``expiring_instagram_tokens`` would find, without reading them."""
        _check_window(within)
        values = {"within": within}
        row = await self._sql.row("count_expiring_instagram_tokens", values, conn, readonly=True)
        return int(row["due"]) if row else 0

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
        return _user(await self._sql.row("update_user", values, conn), user_id)

    async def delete(self, user_id: UUID, *, conn: Connection | None = None) -> None:
        """Delete the user; ``NotFound`` when there is none."""
        expect("user_id", user_id, UUID)
        _required(await self._sql.row("delete_user", {"id": user_id}, conn), user_id)

    async def connect_instagram(
        self, user_id: UUID, link: InstagramConnection, *, conn: Connection | None = None
    ) -> User:
        """Attach (or replace) the user's Instagram account; ``DuplicateInstagramAccount`` when
        another user has it."""
        expect("user_id", user_id, UUID)
        expect("link", link, InstagramConnection)
        sealed = self.tokens.encrypt(user_id, link.access_token.get_secret_value())
        values = {
            "id": user_id,
            "instagram_user_id": link.instagram_user_id,
            "instagram_access_token": sealed,
            "instagram_username": link.instagram_username,
            "token_expires_at": link.token_expires_at,
        }
        return _user(await self._sql.row("connect_instagram", values, conn), user_id)

    async def disconnect_instagram(self, user_id: UUID, *, conn: Connection | None = None) -> User:
        """Forget the user's Instagram account and token."""
        expect("user_id", user_id, UUID)
        row = await self._sql.row("disconnect_instagram", {"id": user_id}, conn)
        return _user(row, user_id)

    # -- the token and its refresh ------------------------------------------------------------

    async def instagram_token(
        self, user_id: UUID, *, conn: Connection | None = None
    ) -> SecretStr | None:
        """The user's Instagram token, decrypted; None when none is connected.

        ``NotFound`` without such a user; ``TokenUnreadable`` when the stored value does not
        decrypt with any configured key (or was sealed for another user).  Read on the primary:
        a replica may still hold a token the user has just replaced.
        """
        expect("user_id", user_id, UUID)
        row = _required(await self._sql.row("instagram_token", {"id": user_id}, conn), user_id)
        stored = row["instagram_access_token"]
        if stored is None:
            return None
        return SecretStr(self.tokens.decrypt(user_id, stored))

    async def claim_tokens_due(
        self,
        within: timedelta,
        *,
        limit: int = 100,
        lease: timedelta = timedelta(minutes=5),
        conn: Connection | None = None,
    ) -> builtins.list[DueToken]:
        """Lease up to ``limit`` tokens that are due: not expired, expiring within ``within``,
        at least 24 h old, not ``needs_reauth``, not leased by a live worker.

        One statement (FOR UPDATE SKIP LOCKED), so concurrent workers -- processes, hosts,
        PgBouncer in transaction mode -- get disjoint sets.  A lease that runs out (its worker
        died) makes the row claimable again.  A claimed value that does not decrypt is not
        returned: it is recorded as a failure with code ``unreadable`` (needs_reauth).
        """
        expect("within", within, timedelta)
        expect("limit", limit, int)
        expect("lease", lease, timedelta)
        if not timedelta(0) < within <= MAX_EXPIRY_WINDOW:
            raise InvalidUserData("within", "must be a positive duration of at most 9999 years")
        if not timedelta(0) < lease <= timedelta(days=1):
            raise InvalidUserData("lease", "must be a positive duration of at most one day")
        if not 1 <= limit <= MAX_CLAIM:
            raise InvalidUserData("limit", f"must be from 1 to {MAX_CLAIM}")
        values = {"within": within, "min_age": MIN_REFRESH_AGE, "limit": limit, "lease": lease}
        rows = await self._sql.rows("claim_tokens_due", values, conn)
        due = []
        for row in rows:
            try:
                token = self.tokens.decrypt(row["id"], row["instagram_access_token"])
            except TokenUnreadable as exc:
                # One unreadable row must not sink the batch or the worker (it would be claimed
                # again every lease): flag it needs_reauth, as an invalid token is.
                log.warning("%s; flagged needs_reauth", exc)
                await self.record_token_refresh_failed(
                    row["id"], UNREADABLE_TOKEN_CODE, lease_until=row["lease_until"], conn=conn
                )
                continue
            due.append(
                DueToken(
                    user_id=row["id"],
                    token=SecretStr(token),
                    expires_at=row["token_expires_at"],
                    lease_until=row["lease_until"],
                )
            )
        return due

    async def record_token_refreshed(
        self,
        user_id: UUID,
        token: SecretStr | str,
        expires_at: datetime,
        *,
        lease_until: datetime | None = None,
        conn: Connection | None = None,
    ) -> bool:
        """Store a refreshed token (encrypted) and its expiry; clear failures, flag and lease.

        False (nothing written) when the row is no longer leased: the user reconnected or
        disconnected meanwhile, and that newer state wins over a refresh of the old token.
        With ``lease_until`` (the claim's ``DueToken.lease_until``) also False when the row is
        leased by a later claim: this worker's lease ran out and another worker owns it now.
        """
        expect("user_id", user_id, UUID)
        expect("expires_at", expires_at, datetime)
        expect("lease_until", lease_until, datetime, optional=True)
        checked = RefreshedToken(access_token=token, token_expires_at=expires_at)
        sealed = self.tokens.encrypt(user_id, checked.access_token.get_secret_value())
        values = {
            "id": user_id,
            "token": sealed,
            "expires_at": checked.token_expires_at,
            "lease_until": lease_until,
        }
        return await self._sql.row("record_token_refreshed", values, conn) is not None

    async def record_token_refresh_failed(
        self,
        user_id: UUID,
        code: str,
        *,
        lease_until: datetime | None = None,
        conn: Connection | None = None,
    ) -> TokenRefreshFailure | None:
        """Count a failed refresh with its ``code`` (Graph error code such as ``"190"``, or
        ``http_429``, ``timeout``...).  ``"190"`` (invalid token) and ``"unreadable"`` (no key
        decrypts it) set ``needs_reauth``: no more claims until the user reconnects.  Otherwise
        the lease becomes a back-off of 5 minutes per consecutive failure (at most a day).
        None when no longer leased (or, with ``lease_until``, leased by a later claim).
        """
        expect("user_id", user_id, UUID)
        expect("code", code, str)
        expect("lease_until", lease_until, datetime, optional=True)
        if not 1 <= len(code) <= 64:
            raise InvalidUserData("code", "must be 1 to 64 characters")
        values = {
            "id": user_id,
            "code": code,
            "needs_reauth": code in REAUTH_CODES,
            "retry_step": RETRY_AFTER_STEP,
            "retry_max": RETRY_AFTER_MAX,
            "lease_until": lease_until,
        }
        row = await self._sql.row("record_token_refresh_failed", values, conn)
        if row is None:
            return None
        return TokenRefreshFailure(
            failures=row["token_refresh_failures"], needs_reauth=row["needs_reauth"]
        )

    async def release_token_claims(
        self,
        user_ids: builtins.list[UUID],
        *,
        leases: builtins.list[datetime] | None = None,
        conn: Connection | None = None,
    ) -> int:
        """Give back leases of claimed tokens not refreshed (a stopping worker); how many.

        ``leases`` (parallel to ``user_ids``, each claim's ``DueToken.lease_until``) leaves alone
        the rows another worker re-claimed after this worker's lease ran out."""
        expect("user_ids", user_ids, list)
        expect("leases", leases, list, optional=True)
        if leases is not None and len(leases) != len(user_ids):
            raise InvalidUserData("leases", "must have one entry per user id")
        if not user_ids:
            return 0
        fences: builtins.list[datetime | None] = [*leases] if leases else [None] * len(user_ids)
        values = {"ids": user_ids, "leases": fences}
        rows = await self._sql.rows("release_token_claims", values, conn)
        return len(rows)

    # -- sign-in -------------------------------------------------------------------------------

    async def record_login_success(self, user_id: UUID, *, conn: Connection | None = None) -> User:
        """Stamp a successful sign-in and clear failures and lock (for other sign-in paths)."""
        expect("user_id", user_id, UUID)
        values = {"id": user_id, "upgraded_hash": None, "verified_hash": None}
        return _user(await self._sql.row("record_login_success", values, conn), user_id)

    async def record_login_failure(
        self, user_id: UUID, *, conn: Connection | None = None
    ) -> LoginFailure:
        """Count a failed sign-in from another sign-in path; at the account-wide ceiling
        (``DEFEAH_LOCKOUT_ACCOUNT_THRESHOLD``) the account locks for everyone for the window."""
        expect("user_id", user_id, UUID)
        values = {
            "id": user_id,
            "threshold": self.lockout_account_threshold,
            "window": self.lockout_window,
        }
        row = _required(await self._sql.row("record_login_failure", values, conn), user_id)
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
        expect("email", email, str)
        expect("password", password, str)
        expect("client_ip", client_ip, str, optional=True)
        expect("user_agent", user_agent, str, optional=True)
        return await self.sign_in.authenticate(
            email, password, client_ip=client_ip, user_agent=user_agent
        )
