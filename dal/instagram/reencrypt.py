"""``defeah-db reencrypt``: every stored Instagram token rewritten under the active key.

Rotation is: prepend a new key to ``DEFEAH_TOKEN_KEYS``, run this, then drop the old key.

Legacy plaintext tokens (rows written before encryption, or by ``seeds/``) are sealed only with
``adopt_plaintext`` (``--adopt-plaintext``), an explicit one-off that logs how many it adopted:
a plaintext value is indistinguishable from one planted by whoever can write to the column, so
sealing it must be the operator's decision, never a side effect of a rotation.  Without it they
are counted and left alone (and keep the run from reporting success).  A value shaped like a
stored form but not one (``V1:...``, `` v1:...``, ``v2:...``) is never adopted.

Why it is safe to run at any time, production included, without ``--force``:

* it never changes what a token *is*, only how it is sealed, and every write is a
  compare-and-swap on the exact value the batch read (``replace_tokens``): a token connected or
  refreshed meanwhile is left alone, never reverted.  That newer value is under the active key
  only if its writer already had the new key ring: deploy the new ``DEFEAH_TOKEN_KEYS`` to every
  service and refresher first, and drop the old key only once ``remaining()`` is 0 (the command
  says so, and exits 1 otherwise);
* a value that does not decrypt with any configured key is counted and left untouched, and
  so is plaintext unless adopted;
* each batch commits on its own, and finished rows no longer match the batch query, so a run
  killed half-way simply resumes where the table says it stopped.

It cannot lose data, so the production guard does not apply.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final
from uuid import UUID

import asyncpg

from dal.db.connections import Acquirer
from dal.db.statements import Statements, run_count
from dal.errors import TokenUnreadable
from dal.instagram.keyring import TokenCipher, legacy_plaintext
from dal.progress import ProgressSink

log = logging.getLogger(__name__)

DEFAULT_BATCH: Final = 500
MAX_BATCH: Final = 10_000
FIRST_ID: Final = UUID(int=0)


@dataclass
class ReencryptResult:
    rewritten: int = 0  # adopted ones included
    adopted: int = 0  # legacy plaintext sealed (adopt_plaintext)
    changed_meanwhile: int = 0  # compare-and-swap lost: a newer token is already current
    plaintext: int = 0  # legacy plaintext refused: not adopted
    unreadable: int = 0
    batches: int = 0

    @property
    def seen(self) -> int:
        return self.rewritten + self.changed_meanwhile + self.plaintext + self.unreadable

    def summary(self) -> str:
        return (
            f"re-encrypted {self.rewritten:,} token(s) in {self.batches} batch(es), "
            f"adopted {self.adopted:,} legacy plaintext; "
            f"{self.changed_meanwhile:,} changed meanwhile (already current), "
            f"{self.plaintext:,} plaintext (refused: not ciphertext; --adopt-plaintext seals them "
            f"if they are yours), {self.unreadable:,} unreadable (left as they are)"
        )


@dataclass
class _Batch:
    """One batch's compare-and-swap lists: re-sealed values and adopted plaintext apart, so
    each is counted by what the database really swapped."""

    ids: list[UUID] = field(default_factory=list)
    olds: list[str] = field(default_factory=list)
    news: list[str] = field(default_factory=list)

    def add(self, user_id: UUID, old: str, new: str) -> None:
        self.ids.append(user_id)
        self.olds.append(old)
        self.news.append(new)


def _reseal(
    cipher: TokenCipher, rows: Sequence[asyncpg.Record], adopt_plaintext: bool
) -> tuple[_Batch, _Batch, int, int]:
    resealed, adopted = _Batch(), _Batch()
    plaintext = unreadable = 0
    for row in rows:
        user_id, stored = row["id"], row["instagram_access_token"]
        try:
            resealed.add(user_id, stored, cipher.encrypt(user_id, cipher.decrypt(user_id, stored)))
        except TokenUnreadable:
            if not legacy_plaintext(stored):
                unreadable += 1
            elif adopt_plaintext:
                adopted.add(user_id, stored, cipher.encrypt(user_id, stored))
            else:
                plaintext += 1
    return resealed, adopted, plaintext, unreadable


async def _swap(db: Acquirer, sql: Statements, batch: _Batch) -> int:
    if not batch.ids:
        return 0
    values = {"ids": batch.ids, "olds": batch.olds, "news": batch.news}
    async with db.acquire() as conn:
        return await run_count(conn, sql["replace_tokens"], values)


async def reencrypt(
    db: Acquirer,
    cipher: TokenCipher,
    *,
    batch: int = DEFAULT_BATCH,
    adopt_plaintext: bool = False,
    progress: ProgressSink | None = None,
) -> ReencryptResult:
    """Rewrite every token not under ``cipher``'s active key, ``batch`` rows per transaction;
    with ``adopt_plaintext`` also seal legacy plaintext (logged with the count)."""
    sql = Statements(db, "instagram")
    current = cipher.current_form
    result = ReencryptResult()
    after = FIRST_ID
    while True:
        values = {"after_id": after, "current_form": current, "limit": batch}
        rows = await sql.rows("tokens_to_reencrypt", values)
        if not rows:
            break
        after = rows[-1]["id"]
        # AES work off the event loop: a batch of thousands takes milliseconds of CPU.
        resealed, adopted, plaintext, unreadable = await asyncio.to_thread(
            _reseal, cipher, rows, adopt_plaintext
        )
        swapped, taken = await _swap(db, sql, resealed), await _swap(db, sql, adopted)
        result.rewritten += swapped + taken
        result.adopted += taken
        result.changed_meanwhile += len(resealed.ids) + len(adopted.ids) - swapped - taken
        result.plaintext += plaintext
        result.unreadable += unreadable
        result.batches += 1
        if progress is not None:
            progress.update(result.seen)
    if progress is not None:
        progress.update(result.seen, final=True)
    if adopt_plaintext:
        log.warning("reencrypt: adopted %d legacy plaintext token(s) as tokens", result.adopted)
    return result


async def seal_seed_tokens(db: Acquirer, cipher: TokenCipher, emails: Sequence[str]) -> int:
    """Seal the legacy plaintext tokens of the users with ``emails`` (the seed users).

    The seed file stays runnable by psql, so it writes its invented tokens in plaintext; the
    ``seed`` verb (and ``up``) then seals exactly those rows, so a development database reads
    them.  Adoption stays explicit everywhere else: this names its rows, never the table."""
    sql = Statements(db, "instagram")
    rows = await sql.rows("tokens_of_emails", {"emails": list(emails)})
    _, adopted, _, _ = _reseal(cipher, rows, adopt_plaintext=True)
    return await _swap(db, sql, adopted)


async def remaining(db: Acquirer, cipher: TokenCipher) -> int:
    """Tokens not yet under the active key (the progress bar's total; 0 when done)."""
    row = await Statements(db, "instagram").row(
        "count_tokens_to_reencrypt", {"current_form": cipher.current_form}
    )
    assert row is not None  # count(*) always returns a row
    return int(row["remaining"])
