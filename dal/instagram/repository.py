"""``InstagramRepository``: a user's Instagram connection, over ``dal/queries/instagram.sql``.

Connect and disconnect, the one read of the token, and what refresh workers do with it:
claim the tokens that are due (disjoint leases), record a refresh or a failure, give claims
back.  The token is encrypted on the way in and decrypted only by ``token`` and ``claim_due``
(``dal.instagram.keyring``); the cipher is built on first use, so a caller that only counts
due tokens (``/metrics``) needs neither key ring nor hasher.

Every method takes an optional ``conn`` (see ``UsersRepository``); ``expiring_tokens`` and
``count_expiring_tokens`` are lag-tolerant reads that may go to a replica.
"""

from __future__ import annotations

import builtins
import functools
import logging
from datetime import datetime, timedelta
from typing import Final
from uuid import UUID

from pydantic import SecretStr

from dal.arguments import expect
from dal.db.connections import Acquirer, Connection
from dal.db.statements import Statements
from dal.errors import InvalidUserData, TokenUnreadable
from dal.instagram.keyring import TokenCipher, legacy_plaintext, settings_cipher
from dal.instagram.models import (
    DueToken,
    InstagramConnection,
    RefreshedToken,
    TokenRefreshFailure,
)
from dal.rules import TOKEN_EXPIRES_MAX, TOKEN_EXPIRES_MIN
from dal.users.models import User, required_row, user_row

log = logging.getLogger(__name__)

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
# Recorded for a claimed row holding what looks like a pre-encryption plaintext token: never
# sent anywhere, backed off (not flagged), so it resumes once `reencrypt --adopt-plaintext` ran.
PLAINTEXT_TOKEN_CODE: Final = "plaintext"  # noqa: S105 -- an error code, not a password
REAUTH_CODES: Final = frozenset({INVALID_TOKEN_CODE, UNREADABLE_TOKEN_CODE})
# After a failed refresh the row rests for this long per consecutive failure (at most a day),
# so a persistently failing token is retried at a falling rate rather than in a hot loop.
RETRY_AFTER_STEP: Final = timedelta(minutes=5)
RETRY_AFTER_MAX: Final = timedelta(days=1)


def _check_window(within: timedelta) -> None:
    expect("within", within, timedelta)
    if within <= timedelta(0):
        raise InvalidUserData("within", "must be a positive duration")
    if within > MAX_EXPIRY_WINDOW:
        raise InvalidUserData(
            "within", f"must be at most {MAX_EXPIRY_WINDOW.days} days (every storable expiry)"
        )


class InstagramRepository:
    """Users' Instagram connections; ``InstagramRepository(db)`` with a ``Database`` (or any
    acquirer)."""

    def __init__(self, db: Acquirer) -> None:
        self._db = db
        self._sql = Statements(db, "instagram")
        self._settings = db.settings

    @functools.cached_property
    def cipher(self) -> TokenCipher:
        """The token cipher, built on first use: only reading or writing a token needs the key
        ring (on staging/production ``DEFEAH_TOKEN_KEYS``; refused here when unset)."""
        return settings_cipher(self._settings, "reading or writing an Instagram token")

    def __repr__(self) -> str:
        return f"<InstagramRepository on {self._db!r}>"

    async def expiring_tokens(
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

    async def count_expiring_tokens(
        self, within: timedelta, *, conn: Connection | None = None
    ) -> int:
        """How many tokens ``expiring_tokens`` would find, without reading them."""
        _check_window(within)
        values = {"within": within}
        row = await self._sql.row("count_expiring_instagram_tokens", values, conn, readonly=True)
        return int(row["due"]) if row else 0

    async def connect(
        self, user_id: UUID, link: InstagramConnection, *, conn: Connection | None = None
    ) -> User:
        """Attach (or replace) the user's Instagram account; ``DuplicateInstagramAccount`` when
        another user has it."""
        expect("user_id", user_id, UUID)
        expect("link", link, InstagramConnection)
        sealed = self.cipher.encrypt(user_id, link.access_token.get_secret_value())
        values = {
            "id": user_id,
            "instagram_user_id": link.instagram_user_id,
            "instagram_access_token": sealed,
            "instagram_username": link.instagram_username,
            "token_expires_at": link.token_expires_at,
        }
        return user_row(await self._sql.row("connect_instagram", values, conn), user_id)

    async def disconnect(self, user_id: UUID, *, conn: Connection | None = None) -> User:
        """Forget the user's Instagram account and token."""
        expect("user_id", user_id, UUID)
        row = await self._sql.row("disconnect_instagram", {"id": user_id}, conn)
        return user_row(row, user_id)

    # -- the token and its refresh ------------------------------------------------------------

    async def token(self, user_id: UUID, *, conn: Connection | None = None) -> SecretStr | None:
        """The user's Instagram token, decrypted; None when none is connected.

        ``NotFound`` without such a user; ``TokenUnreadable`` when the stored value does not
        decrypt with any configured key (or was sealed for another user).  Read on the primary:
        a replica may still hold a token the user has just replaced.
        """
        expect("user_id", user_id, UUID)
        row = required_row(await self._sql.row("instagram_token", {"id": user_id}, conn), user_id)
        stored = row["instagram_access_token"]
        if stored is None:
            return None
        return SecretStr(self.cipher.decrypt(user_id, stored))

    async def claim_due(
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
        returned: it is recorded as a failure with code ``unreadable`` (needs_reauth), or
        ``plaintext`` (back-off) for what may be a legacy plaintext token, which is never
        handed out either (see ``keyring``).
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
            stored = row["instagram_access_token"]
            try:
                token = self.cipher.decrypt(row["id"], stored)
            except TokenUnreadable as exc:
                # One unreadable row must not sink the batch or the worker (it would be claimed
                # again every lease): flag it needs_reauth, as an invalid token is -- or, when it
                # may be legacy plaintext awaiting adoption, back off.
                plaintext = legacy_plaintext(stored)
                log.warning("%s; %s", exc, "backing off" if plaintext else "flagged needs_reauth")
                code = PLAINTEXT_TOKEN_CODE if plaintext else UNREADABLE_TOKEN_CODE
                await self.record_refresh_failed(
                    row["id"], code, lease_until=row["lease_until"], conn=conn
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

    async def record_refreshed(
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
        sealed = self.cipher.encrypt(user_id, checked.access_token.get_secret_value())
        values = {
            "id": user_id,
            "token": sealed,
            "expires_at": checked.token_expires_at,
            "lease_until": lease_until,
        }
        return await self._sql.row("record_token_refreshed", values, conn) is not None

    async def record_refresh_failed(
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

    async def release_claims(
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
