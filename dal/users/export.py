"""Exporting a user (GDPR art. 15 and 20): one JSON document, written as it is read.

The document (schema in docs/security.md, ``version`` first) holds the profile without the
password hash, the Instagram connection without the token, every kept sign-in event of the
user id or normalized email, and the receipts of earlier erasures of that email.  Events come
through a server-side cursor inside one read-only transaction (one consistent snapshot) and go
out in chunks, each written off the event loop, so memory stays bounded by the chunk size
however long the log is (tests/test_privacy_export.py measures it at 100,000 events).  Each
event is the JSON PostgreSQL makes of the row, so a column added to ``auth_events`` later is
exported without a change here.

Sections are written in order by ``SECTIONS``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol
from uuid import UUID

from dal.db.connections import Acquirer, Connection
from dal.db.statements import run
from dal.errors import NotFound
from dal.queries import load
from dal.users.erasure import resolve
from dal.users.receipts import Pepper
from dal.users.signin import normalize_email

PRIVACY_SQL: Final = load("privacy")
VERSION: Final = 1
CHUNK_ROWS: Final = 1000


class Sink(Protocol):
    """Where the document goes: a text file or stdout."""

    def write(self, text: str, /) -> int: ...


@dataclass
class Subject:
    """Whom the export is about, and the connection it reads on (one snapshot)."""

    conn: Connection
    user_id: UUID
    email: str
    pepper: Pepper
    out: Sink
    events: int = 0

    async def write(self, text: str) -> None:
        await asyncio.to_thread(self.out.write, text)


def _json(value: Any) -> str:
    return json.dumps(value, default=_plain, ensure_ascii=False)


def _plain(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"not exportable: {type(value).__name__}")


async def _profile(subject: Subject, row: Any) -> None:
    names = [
        "id",
        "email",
        "full_name",
        "is_active",
        "is_verified",
        "timezone",
        "language",
        "last_login_at",
        "login_count",
        "failed_login_attempts",
        "locked_until",
        "created_at",
        "updated_at",
    ]
    await subject.write(f'"profile": {_json({name: row[name] for name in names})}')


async def _instagram(subject: Subject, row: Any) -> None:
    if row["instagram_user_id"] is None and not row["has_token"]:
        connection: dict[str, Any] | None = None
    else:
        names = [
            "instagram_user_id",
            "instagram_username",
            "has_token",
            "token_expires_at",
            "token_issued_at",
            "token_refresh_failures",
            "token_refresh_error",
            "needs_reauth",
        ]
        connection = {name: row[name] for name in names}
    await subject.write(f', "instagram": {_json(connection)}')


async def _receipts(subject: Subject, row: Any) -> None:
    values = {
        "user_hmac": subject.pepper.user(subject.user_id),
        "email_hmac": subject.pepper.email(subject.email),
    }
    found = await run(subject.conn, PRIVACY_SQL["receipts_for"], values)
    listed = [
        {"erased_at": r["erased_at"], "matched": "user id" if r["same_user"] else "email"}
        for r in found
    ]
    await subject.write(f', "erasure_receipts": {_json(listed)}')


async def _deletion_requests(subject: Subject, row: Any) -> None:
    """Meta's data deletion requests carried out for this account (migration 0010)."""
    found = await run(
        subject.conn, PRIVACY_SQL["export_deletion_requests"], {"user_id": subject.user_id}
    )
    listed = [dict(r) for r in found]
    await subject.write(f', "instagram_deletion_requests": {_json(listed)}')


async def _deauthorizations(subject: Subject, row: Any) -> None:
    """Meta's deauthorize callbacks received for this account (migration 0010)."""
    found = await run(
        subject.conn, PRIVACY_SQL["export_deauthorizations"], {"user_id": subject.user_id}
    )
    listed = [dict(r) for r in found]
    await subject.write(f', "instagram_deauthorizations": {_json(listed)}')


async def _known_addresses(subject: Subject, row: Any) -> None:
    """The addresses the account signed in from, which earn the known budget (migration 0011)."""
    found = await run(
        subject.conn, PRIVACY_SQL["export_known_addresses"], {"user_id": subject.user_id}
    )
    listed = [dict(r) for r in found]
    await subject.write(f', "known_addresses": {_json(listed)}')


async def _events(subject: Subject, row: Any) -> None:
    await subject.write(', "sign_in_events": [')
    query = PRIVACY_SQL["export_events"]
    args = query.args({"user_id": subject.user_id, "email": subject.email})
    chunk: list[str] = []
    async for event in subject.conn.cursor(query.sql, *args, prefetch=CHUNK_ROWS):
        chunk.append(("\n" if subject.events == 0 else ",\n") + event["event"])
        subject.events += 1
        if len(chunk) >= CHUNK_ROWS:
            await subject.write("".join(chunk))
            chunk.clear()
    await subject.write("".join(chunk) + "]")


Section = Callable[[Subject, Any], Awaitable[None]]
SECTIONS: Final[tuple[Section, ...]] = (
    _profile,
    _instagram,
    _receipts,
    _deletion_requests,
    _deauthorizations,
    _known_addresses,
    _events,
)


async def export(db: Acquirer, who: str | UUID, pepper: Pepper, out: Sink) -> int:
    """Write the document of the account ``who`` (id or email) to ``out``; the number of
    events written.  ``NotFound`` before anything is written when there is no such user."""
    async with db.acquire() as conn, conn.transaction(readonly=True, isolation="repeatable_read"):
        user_id = who if isinstance(who, UUID) else await resolve(conn, who)
        rows = await run(conn, PRIVACY_SQL["export_profile"], {"user_id": user_id})
        if not rows:
            raise NotFound(f"no user {user_id}")
        row = rows[0]
        subject = Subject(conn, user_id, normalize_email(row["email"]), pepper, out)
        exported_at = (await run(conn, PRIVACY_SQL["export_clock"], {}))[0]["now"]
        await subject.write(f'{{"version": {VERSION}, "exported_at": {_json(exported_at)}, ')
        for section in SECTIONS:
            await section(subject, row)
        await subject.write("}\n")
    return subject.events
