"""Erasing a user (GDPR art. 17), and erasing again after a backup is restored.

``erase`` removes, in one transaction, everything the service holds about one account: the
``users`` row (with its Instagram connection and token), every ``auth_events`` row of its id
or of its normalized email in every partition (the default one included), and the email's
sign-in budgets; it leaves a receipt without personal data (``dal.users.receipts``).  A
backup taken before the erasure still holds the user, so ``reapply`` digests every id and
email of a restored database with the pepper and erases again whatever a receipt names --
only rows no newer than the erasure, so a later account of the same email is left alone.
A sign-in in flight at the erasure writes nothing after it (``record_failure`` and
``record_success`` go by the users row).

Both delete data, so both pass the production guard.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from uuid import UUID

from dal.db.connections import Acquirer, Connection
from dal.db.production_guard import guard
from dal.db.statements import run
from dal.errors import InvalidUserData, NotFound
from dal.queries import load
from dal.users.receipts import Pepper, Receipt
from dal.users.signin import normalize_email

PRIVACY_SQL: Final = load("privacy")
CURSOR_PREFETCH: Final = 1000


@dataclass(frozen=True)
class ErasureReport:
    user_id: UUID
    events: int
    budgets: int
    erased_at: datetime


@dataclass(frozen=True)
class ReapplyReport:
    receipts: int
    users: int
    events: int
    budgets: int


async def resolve(conn: Connection, who: str) -> UUID:
    """The account named by ``who``, a user id or an email (any case, spaces around);
    ``NotFound`` (one line, naming nobody) when there is none."""
    who = who.strip()
    try:
        return UUID(who)
    except ValueError:
        pass
    if "@" not in who:
        raise InvalidUserData("user", "expected a user id (UUID) or an email")
    rows = await run(conn, PRIVACY_SQL["user_id_by_email"], {"email": normalize_email(who)})
    if not rows:
        raise NotFound("no user with this email")
    user_id: UUID = rows[0]["id"]
    return user_id


async def erase(
    db: Acquirer, who: str | UUID, pepper: Pepper, *, force: bool = False
) -> ErasureReport:
    """Erase the account ``who`` (id or email) in one transaction; ``NotFound`` and nothing
    changed when it does not exist (or no longer does)."""
    async with db.acquire() as conn:
        await guard(conn, db.settings, "erase a user", force=force)
        async with conn.transaction():
            user_id = who if isinstance(who, UUID) else await resolve(conn, who)
            rows = await run(conn, PRIVACY_SQL["lock_erase_target"], {"user_id": user_id})
            if not rows:
                raise NotFound(f"no user {user_id}")
            email: str = rows[0]["email"]
            done = (
                await run(
                    conn,
                    PRIVACY_SQL["erase_user"],
                    {
                        "user_id": user_id,
                        "email": email,
                        "user_hmac": pepper.user(user_id),
                        "email_hmac": pepper.email(email),
                    },
                )
            )[0]
    return ErasureReport(user_id, done["events"], done["budgets"], done["erased_at"])


async def receipts(db: Acquirer) -> list[Receipt]:
    """Every receipt of this database, oldest first."""
    async with db.acquire() as conn:
        rows = await run(conn, PRIVACY_SQL["all_receipts"], {})
    return [Receipt(r["erased_at"], r["user_hmac"], r["email_hmac"]) for r in rows]


async def _digested(
    conn: Connection, pepper: Pepper, wanted: set[str]
) -> tuple[dict[str, UUID], dict[str, str]]:
    """The user ids and emails the database holds whose digest is in ``wanted`` (the
    receipts'), by digest; everything is streamed through cursors and only matches are kept,
    so memory follows the receipts, not the size of the log."""
    ids: dict[str, UUID] = {}
    emails: dict[str, str] = {}

    def keep_id(user_id: UUID) -> None:
        digest = pepper.user(user_id)
        if digest in wanted:
            ids[digest] = user_id

    def keep_email(email: str) -> None:
        digest = pepper.email(email)
        if digest in wanted:
            emails[digest] = email

    async with conn.transaction(readonly=True):
        query = PRIVACY_SQL["known_users"]
        async for row in conn.cursor(query.sql, prefetch=CURSOR_PREFETCH):
            keep_id(row["id"])
            keep_email(row["email"])
        query = PRIVACY_SQL["logged_user_ids"]
        async for row in conn.cursor(query.sql, prefetch=CURSOR_PREFETCH):
            keep_id(row["user_id"])
        query = PRIVACY_SQL["logged_emails"]
        async for row in conn.cursor(query.sql, prefetch=CURSOR_PREFETCH):
            keep_email(row["email"])
    return ids, emails


async def reapply(
    db: Acquirer, pepper: Pepper, brought: Iterable[Receipt] = (), *, force: bool = False
) -> ReapplyReport:
    """Erase again everyone a receipt names -- this database's receipts and ``brought`` ones
    (from ``erasure-receipts`` output kept outside the backup), which are stored here too.
    Each receipt is its own transaction; running it twice changes nothing the second time."""
    users = events = budgets = 0
    async with db.acquire() as conn:
        await guard(conn, db.settings, "reapply erasures", force=force)
        for receipt in brought:
            values = {
                "erased_at": receipt.erased_at,
                "user_hmac": receipt.user_hmac,
                "email_hmac": receipt.email_hmac,
            }
            await run(conn, PRIVACY_SQL["keep_receipt"], values)
        rows = await run(conn, PRIVACY_SQL["all_receipts"], {})
        wanted = {r["user_hmac"] for r in rows} | {r["email_hmac"] for r in rows}
        ids, emails = await _digested(conn, pepper, wanted)
        for row in rows:
            user_id = ids.get(row["user_hmac"])
            email = emails.get(row["email_hmac"])
            if user_id is None and email is None:
                continue
            values = {"user_id": user_id, "email": email, "erased_at": row["erased_at"]}
            async with conn.transaction():
                done = (await run(conn, PRIVACY_SQL["reapply_erasure"], values))[0]
            users += done["users"]
            events += done["events"]
            budgets += done["budgets"]
    return ReapplyReport(len(rows), users, events, budgets)
