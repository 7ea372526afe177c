"""``defeah-db reencrypt``: every stored Instagram token rewritten under the active key.

Rotation is: prepend a new key to ``DEFEAH_TOKEN_KEYS``, run this, then drop the old key.  It
also encrypts legacy plaintext tokens (rows written before encryption, or by ``seeds/``).

Why it is safe to run at any time, production included, without ``--force``:

* it never changes what a token *is*, only how it is sealed, and every write is a
  compare-and-swap on the exact value the batch read (``replace_tokens``): a token connected or
  refreshed meanwhile is left alone, never reverted.  That newer value is under the active key
  only if its writer already had the new key ring: deploy the new ``DEFEAH_TOKEN_KEYS`` to every
  service and refresher first, and drop the old key only once ``remaining()`` is 0 (the command
  says so, and exits 1 otherwise);
* a value that does not decrypt with any configured key is counted and left untouched;
* each batch commits on its own, and finished rows no longer match the batch query, so a run
  killed half-way simply resumes where the table says it stopped.

It cannot lose data, so the production guard does not apply.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from uuid import UUID

import asyncpg

from dal.db.connections import Acquirer
from dal.db.statements import Statements, run_count
from dal.errors import TokenUnreadable
from dal.instagram.keyring import TokenCipher
from dal.progress import ProgressSink

DEFAULT_BATCH: Final = 500
MAX_BATCH: Final = 10_000
FIRST_ID: Final = UUID(int=0)


@dataclass
class ReencryptResult:
    rewritten: int = 0
    changed_meanwhile: int = 0  # compare-and-swap lost: a newer token is already current
    unreadable: int = 0
    batches: int = 0

    def summary(self) -> str:
        return (
            f"re-encrypted {self.rewritten:,} token(s) in {self.batches} batch(es); "
            f"{self.changed_meanwhile:,} changed meanwhile (already current), "
            f"{self.unreadable:,} unreadable (left as they are)"
        )


def _reseal(
    cipher: TokenCipher, rows: Sequence[asyncpg.Record]
) -> tuple[list[UUID], list[str], list[str], int]:
    ids: list[UUID] = []
    olds: list[str] = []
    news: list[str] = []
    unreadable = 0
    for row in rows:
        user_id, stored = row["id"], row["instagram_access_token"]
        try:
            token = cipher.decrypt(user_id, stored)
        except TokenUnreadable:
            unreadable += 1
            continue
        ids.append(user_id)
        olds.append(stored)
        news.append(cipher.encrypt(user_id, token))
    return ids, olds, news, unreadable


async def reencrypt(
    db: Acquirer,
    cipher: TokenCipher,
    *,
    batch: int = DEFAULT_BATCH,
    progress: ProgressSink | None = None,
) -> ReencryptResult:
    """Rewrite every token not under ``cipher``'s active key, ``batch`` rows per transaction."""
    sql = Statements(db, "instagram")
    prefix = cipher.current_prefix
    result = ReencryptResult()
    after = FIRST_ID
    while True:
        values = {"after_id": after, "prefix": prefix, "limit": batch}
        rows = await sql.rows("tokens_to_reencrypt", values)
        if not rows:
            break
        after = rows[-1]["id"]
        # AES work off the event loop: a batch of thousands takes milliseconds of CPU.
        ids, olds, news, unreadable = await asyncio.to_thread(_reseal, cipher, rows)
        async with db.acquire() as conn:
            swapped = await run_count(
                conn, sql["replace_tokens"], {"ids": ids, "olds": olds, "news": news}
            )
        result.rewritten += swapped
        result.changed_meanwhile += len(ids) - swapped
        result.unreadable += unreadable
        result.batches += 1
        if progress is not None:
            progress.update(result.rewritten + result.changed_meanwhile + result.unreadable)
    if progress is not None:
        progress.update(result.rewritten + result.changed_meanwhile + result.unreadable, final=True)
    return result


async def remaining(db: Acquirer, cipher: TokenCipher) -> int:
    """Tokens not yet under the active key (the progress bar's total; 0 when done)."""
    row = await Statements(db, "instagram").row(
        "count_tokens_to_reencrypt", {"prefix": cipher.current_prefix}
    )
    assert row is not None  # count(*) always returns a row
    return int(row["remaining"])
