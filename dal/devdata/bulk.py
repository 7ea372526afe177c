"""Bulk generator: N realistic synthetic users loaded with COPY, for benchmarks and plan checks.

Why COPY: one INSERT per row costs a round trip and a statement each; binary COPY streams rows
straight into the table, and with asyncpg's record encoder in C the Python side only has to make
the tuples.  Rows are produced lazily, so COPY sends a batch while later rows are still being
made, and memory stays flat at any N.

Why batches: each batch is one COPY statement, hence one transaction.  An error or Ctrl-C loses at
most the batch in flight, and the table never holds part of a batch.  The first Ctrl-C lets the
current batch finish and stops; a second one abandons it (the server rolls it back): the
command line does that (``cli/data_verbs.py``), through ``stop`` and the task's cancellation.

Passwords: bcrypt is deliberately slow (~0.25 s at cost 12), so hashing a million passwords is
out of the question.  Every generated user has the documented password ``BULK_PASSWORD``; the
rows share a few hashes of it made at start-up with the configured cost, so authenticating a
generated user costs what a real sign-in costs.

Generated users are recognisable by their address domain (``seeds.BULK_EMAIL_DOMAIN``), which
is how ``defeah-db clear --generated`` finds them and nothing else.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import bcrypt

from dal.db.database import Database
from dal.db.failures import first_line, row_count
from dal.db.production_guard import guard
from dal.devdata.seeds import BULK_EMAIL_DOMAIN, require_table
from dal.errors import SeedError
from dal.progress import ProgressSink

BULK_PASSWORD = "defeah-bulk-dev"  # noqa: S105 - documented development password
DEFAULT_BATCH_SIZE = 20_000
HASH_VARIANTS = 4
HISTORY = timedelta(days=3 * 365)

COLUMNS = (
    "email",
    "hashed_password",
    "full_name",
    "is_active",
    "is_verified",
    "instagram_user_id",
    "instagram_access_token",
    "instagram_username",
    "token_expires_at",
    "timezone",
    "language",
    "last_login_at",
    "login_count",
    "failed_login_attempts",
    "locked_until",
    "created_at",
    "updated_at",
)

FIRST_NAMES = (
    "Amara", "Liam", "Sofia", "Mateo", "Yuki", "Noah", "Priya", "Lucas", "Chloe", "Omar",
    "Elena", "Kwame", "Hannah", "Diego", "Aisha", "Jonas", "Mei", "Rafael", "Ingrid", "Tariq",
    "Zoe", "Arjun", "Camille", "Emeka", "Lena", "Hiroshi", "Isabela", "Finn", "Nadia", "Santiago",
    "Freya", "Ravi", "Lucia", "Malik", "Anouk", "Kenji", "Olivia", "Tomas", "Leila", "Samuel",
)  # fmt: skip
LAST_NAMES = (
    "Okafor", "Schmidt", "Garcia", "Tanaka", "Nguyen", "Silva", "Kowalski", "Haddad", "Murphy",
    "Rossi", "Andersson", "Mensah", "Dubois", "Patel", "Yamamoto", "Costa", "Fischer", "Ortiz",
    "Nakamura", "Ibrahim", "Jensen", "Moreau", "Chen", "Novak", "Alvarez", "Kim", "Bianchi",
    "Osei", "Laurent", "Reyes", "Svensson", "Khan", "Ferreira", "Larsen", "Popescu", "Walsh",
)  # fmt: skip
# (time zone, language) pairs that occur together, roughly weighted by repetition.
LOCALES = (
    ("America/New_York", "en"), ("America/New_York", "en"), ("America/Los_Angeles", "en"),
    ("America/Chicago", "en"), ("Europe/London", "en-GB"), ("Europe/London", "en"),
    ("Europe/Paris", "fr"), ("Europe/Berlin", "de"), ("Europe/Madrid", "es"),
    ("Europe/Rome", "it"), ("Europe/Amsterdam", "nl"), ("Europe/Warsaw", "pl"),
    ("America/Sao_Paulo", "pt-BR"), ("America/Sao_Paulo", "pt-BR"), ("America/Mexico_City", "es"),
    ("America/Bogota", "es"), ("Asia/Tokyo", "ja"), ("Asia/Seoul", "ko"), ("Asia/Kolkata", "hi"),
    ("Asia/Kolkata", "en"), ("Asia/Shanghai", "zh"), ("Asia/Jakarta", "id"),
    ("Africa/Lagos", "en"), ("Africa/Nairobi", "sw"), ("Australia/Sydney", "en-AU"), ("UTC", "en"),
)  # fmt: skip

# Shares of the population.
INSTAGRAM_SHARE = 0.30
INACTIVE_SHARE = 0.04
LOCKED_SHARE = 0.02
VERIFIED_SHARE = 0.75
NEVER_SIGNED_IN_SHARE = 0.12
NO_NAME_SHARE = 0.03


def password_hashes(rounds: int, variants: int = HASH_VARIANTS) -> tuple[str, ...]:
    """A few bcrypt hashes of ``BULK_PASSWORD`` (different salts) for the rows to share."""
    password = BULK_PASSWORD.encode()
    return tuple(bcrypt.hashpw(password, bcrypt.gensalt(rounds)).decode() for _ in range(variants))


@dataclass(frozen=True)
class Population:
    """Everything that fixes the generated rows: same population, same rows (the benchmark
    writes them to CSV for psql and COPYs them from Python, and must compare like with like)."""

    hashes: tuple[str, ...]
    now: datetime
    tag: str = field(default_factory=lambda: secrets.token_hex(4))
    seed: int = 0
    lockout_threshold: int = 5
    lockout_window: timedelta = timedelta(minutes=15)

    def rows(self, count: int, start: int = 0) -> Iterator[tuple[Any, ...]]:
        """Rows ``start`` .. ``start + count - 1`` in ``COLUMNS`` order, valid per every CHECK.

        Uniqueness: each email and Instagram id embeds the run ``tag`` and the row number.
        ``created_at`` is strictly increasing: row i gets a random instant inside the i-th of
        ``count`` equal slices of the last three years.
        """
        rng = random.Random(f"{self.seed}:{self.tag}:{start}")
        rand = rng.random
        now = self.now
        window = self.lockout_window
        threshold = self.lockout_threshold
        hashes = self.hashes
        tag = self.tag
        id_prefix = f"1784{int(tag, 16):010d}"
        span_us = int(HISTORY / timedelta(microseconds=1))
        total = start + count
        step_us = max(span_us // max(total, 1), 1)
        origin = now - timedelta(microseconds=step_us * total)
        us = timedelta(microseconds=1)
        for i in range(start, total):
            first = FIRST_NAMES[int(rand() * len(FIRST_NAMES))]
            last = LAST_NAMES[int(rand() * len(LAST_NAMES))]
            local = f"{first}.{last}.{tag}.{i:x}".lower()
            created = origin + us * (i * step_us + int(rand() * step_us))
            age = now - created
            zone, language = LOCALES[int(rand() * len(LOCALES))]

            if rand() < NEVER_SIGNED_IN_SHARE:
                last_login, logins = None, 0
            else:
                last_login = created + age * rand()
                logins = 1 + int(rand() ** 3 * 400)
            touched = last_login or created

            locked_until = None
            failed = 0
            roll = rand()
            if roll < LOCKED_SHARE:
                locked_at = max(now - window * rand(), created)
                locked_until = locked_at + window
                failed = threshold
                touched = max(touched, locked_at)
            elif roll < 0.12:
                failed = 1 + int(rand() * (threshold - 1))

            ig_id = ig_token = ig_name = expires = None
            if rand() < INSTAGRAM_SHARE:
                ig_id = f"{id_prefix}{i:09d}"
                ig_token = f"IGQWRbulk{rng.getrandbits(160):040x}"
                ig_name = f"{first}.{last}{i % 997}".lower()
                # About one token in six has already expired (-10 .. +50 days).
                expires = now + timedelta(days=60 * rand() - 10)

            yield (
                f"{local}@{BULK_EMAIL_DOMAIN}",
                hashes[i % len(hashes)],
                None if rand() < NO_NAME_SHARE else f"{first} {last}",
                rand() >= INACTIVE_SHARE,
                rand() < VERIFIED_SHARE,
                ig_id,
                ig_token,
                ig_name,
                expires,
                zone,
                language,
                last_login,
                logins,
                failed,
                locked_until,
                created,
                touched,
            )


@dataclass
class BulkResult:
    requested: int
    committed: int = 0
    batches: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    abandoned_batch: bool = False

    @property
    def rate(self) -> float:
        return self.committed / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        if self.interrupted:
            after = (
                "the batch in flight was rolled back"
                if self.abandoned_batch
                else "stopped between batches"
            )
            return (
                f"interrupted: {self.committed:,} of {self.requested:,} users committed "
                f"({self.batches} whole batch(es); {after}) "
                f"in {self.seconds:.1f} s ({self.rate:,.0f} rows/s)"
            )
        return (
            f"generated {self.committed:,} users in {self.batches} batch(es), "
            f"{self.seconds:.1f} s, {self.rate:,.0f} rows/s"
        )


async def generate(
    db: Database,
    count: int,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    force: bool = False,
    stop: asyncio.Event | None = None,
    progress: ProgressSink | None = None,
    result: BulkResult | None = None,
    population: Population | None = None,
) -> BulkResult:
    """COPY ``count`` users in batches; stop cleanly between batches once ``stop`` is set.

    ``result`` is updated after every committed batch, so a caller whose task is cancelled
    mid-batch still knows exactly what was committed.
    """
    result = result if result is not None else BulkResult(requested=count)
    settings = db.settings
    async with db.acquire() as conn:
        await guard(conn, settings, "generate users", force=force)
        await require_table(conn)
        if population is None:
            hashes = await asyncio.to_thread(password_hashes, settings.bcrypt_rounds)
            population = Population(
                hashes=hashes,
                now=datetime.now(UTC),
                lockout_threshold=settings.lockout_threshold,
                lockout_window=timedelta(seconds=settings.lockout_window),
            )
        started = time.perf_counter()
        rows = population.rows(count)
        while result.committed < count:
            if stop is not None and stop.is_set():
                result.interrupted = True
                break
            batch = itertools.islice(rows, min(batch_size, count - result.committed))
            # One COPY statement is one transaction: the batch is committed whole or not at all.
            try:
                status = await conn.copy_records_to_table("users", records=batch, columns=COLUMNS)
            except asyncpg.PostgresError as exc:
                raise SeedError(
                    f"COPY failed ({first_line(exc)}); {result.committed:,} users "
                    f"committed in {result.batches} whole batch(es), the failed batch rolled back"
                ) from None
            result.committed += row_count(status)
            result.batches += 1
            result.seconds = time.perf_counter() - started
            if progress is not None:
                progress.update(result.committed)
    if progress is not None and result.committed:
        progress.update(result.committed, final=True)
    return result
