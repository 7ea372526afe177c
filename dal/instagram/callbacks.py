"""``InstagramCallbacks``: what Meta's two Instagram callbacks do to the data, over
``dal/queries/instagram_callbacks.sql`` (tables of migration 0010).

Meta calls a deauthorize URL when a person removes the app on Instagram and a data deletion
URL when they ask for their data to be deleted.  Both carry a signed request that the web layer
verifies; this module gets the Instagram user id from it and a digest that identifies the
delivery (SHA-256 of its signature).  Every call is one transaction that records the request
under its digest *before* changing anything, so a second delivery of the same signed request
-- a retry, a replay, or the same request arriving twice at once -- waits for the first one's
commit on the unique key, finds its row and does nothing again: same confirmation code, erased
once.  What is erased, and why the account stays, is docs/security.md's Instagram section.
"""

from __future__ import annotations

import secrets
from typing import Final
from uuid import UUID

import asyncpg

from dal.arguments import expect
from dal.db.connections import Acquirer, Connection
from dal.db.statements import Statements
from dal.errors import DalError, InvalidUserData
from dal.instagram.models import Deauthorization, DeletionRequest, InstagramAccount

DIGEST_BYTES: Final = 32  # SHA-256
# 24 random bytes: 32 base64url characters, 192 bits; far beyond guessing, and ≥ 16 characters
# as Meta's examples and our CHECK want.
CODE_BYTES: Final = 24
CODE_LENGTH: Final = 32


def _check_digest(digest: bytes) -> None:
    expect("digest", digest, bytes)
    if len(digest) != DIGEST_BYTES:
        raise InvalidUserData("digest", f"must be {DIGEST_BYTES} bytes (a SHA-256 digest)")


def new_confirmation_code() -> str:
    """A fresh, unguessable confirmation code (URL-safe, so it can sit in the status URL)."""
    return secrets.token_urlsafe(CODE_BYTES)


def _request(row: asyncpg.Record, *, repeated: bool) -> DeletionRequest:
    return DeletionRequest(
        confirmation_code=row["confirmation_code"],
        status=row["status"],
        received_at=row["received_at"],
        repeated=repeated,
    )


class InstagramCallbacks:
    """The callbacks' data work; ``InstagramCallbacks(db)`` with a ``Database`` (or any
    acquirer).  Needs no token cipher: it only clears tokens."""

    def __init__(self, db: Acquirer) -> None:
        self._db = db
        self._sql = Statements(db, "instagram_callbacks")

    def __repr__(self) -> str:
        return f"<InstagramCallbacks on {self._db!r}>"

    async def deauthorize(
        self, instagram_user_id: str, digest: bytes, *, conn: Connection | None = None
    ) -> Deauthorization:
        """Disconnect the account holding ``instagram_user_id`` (token and Instagram fields
        cleared, the account kept) and record it; a repeated ``digest`` changes nothing."""
        account = InstagramAccount(instagram_user_id=instagram_user_id)
        _check_digest(digest)
        if conn is None:
            async with self._db.acquire() as pooled, pooled.transaction():
                return await self._deauthorize(account, digest, pooled)
        async with conn.transaction():
            return await self._deauthorize(account, digest, conn)

    async def _deauthorize(
        self, account: InstagramAccount, digest: bytes, conn: Connection
    ) -> Deauthorization:
        values = {"digest": digest}
        if await self._sql.row("record_deauthorization", values, conn) is None:
            earlier = await self._sql.row("deauthorization_outcome", values, conn)
            outcome = earlier["outcome"] if earlier else "not_connected"
            return Deauthorization(outcome=outcome, repeated=True)
        cleared = await self._cleared(account, conn)
        outcome = "not_connected" if cleared is None else "disconnected"
        note = {"digest": digest, "outcome": outcome, "user_id": cleared}
        await self._sql.row("note_deauthorization", note, conn)
        return Deauthorization(outcome=outcome, repeated=False)

    async def delete_data(
        self, instagram_user_id: str, digest: bytes, *, conn: Connection | None = None
    ) -> DeletionRequest:
        """Erase what is held about ``instagram_user_id`` (the Instagram id, username, token,
        expiry and refresh bookkeeping of the account holding it) and record the request
        under a new confirmation code; a repeated ``digest`` returns the first code and
        erases nothing again."""
        account = InstagramAccount(instagram_user_id=instagram_user_id)
        _check_digest(digest)
        if conn is None:
            async with self._db.acquire() as pooled, pooled.transaction():
                return await self._delete_data(account, digest, pooled)
        async with conn.transaction():
            return await self._delete_data(account, digest, conn)

    async def _delete_data(
        self, account: InstagramAccount, digest: bytes, conn: Connection
    ) -> DeletionRequest:
        values = {"digest": digest, "code": new_confirmation_code()}
        if await self._sql.row("record_deletion_request", values, conn) is None:
            earlier = await self._sql.row("deletion_request_by_digest", {"digest": digest}, conn)
            if earlier is None:  # only under a caller's REPEATABLE READ snapshot
                raise DalError("the deletion request was recorded concurrently; retry")
            return _request(earlier, repeated=True)
        cleared = await self._cleared(account, conn)
        status = "nothing_held" if cleared is None else "completed"
        note = {"digest": digest, "status": status, "user_id": cleared}
        row = await self._sql.row("note_deletion_request", note, conn)
        if row is None:  # recorded by this very transaction a moment ago
            raise DalError("the deletion request vanished inside its own transaction")
        return _request(row, repeated=False)

    async def _cleared(self, account: InstagramAccount, conn: Connection) -> UUID | None:
        """The id of the account that held the Instagram user (now cleared), or None."""
        values = {"instagram_user_id": account.instagram_user_id}
        row = await self._sql.row("clear_instagram_account", values, conn)
        return None if row is None else UUID(str(row["id"]))

    async def deletion_request(
        self, code: str, *, conn: Connection | None = None
    ) -> DeletionRequest | None:
        """The request with confirmation ``code`` for its status page, or None.  Read on the
        primary: the code was handed out a moment ago, a replica may not have it yet."""
        expect("code", code, str)
        if len(code) != CODE_LENGTH:  # no code we issued: no round trip
            return None
        row = await self._sql.row("deletion_request", {"code": code}, conn)
        return None if row is None else _request(row, repeated=False)
