"""Token refresh bookkeeping benchmark: claim_tokens_due + record_token_refreshed throughput
with 1 and 4 worker processes, and the cost of encryption per token next to a plain read.

On a scratch database of the target server: ``--users`` users (default 1,000,000), a quarter
connected, every connected token due (issued 50 days ago, expiring within 7 days).  Each
worker process claims ``--batch`` tokens at a time and records each as refreshed (the Graph
call left out: this measures the database side).  Target: 4 workers >= 3x one worker.

Run: ``DATABASE_URL=... python -m bench.bench_tokens [--users 1000000] [--seconds 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
import timeit
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg

from bench.scratch import create_scratch, drop_scratch
from dal import Database
from dal.config import Settings
from dal.embedded import target_dsn
from dal.tokens import TokenCipher, parse_keys
from dal.users import UsersRepository

KEYS = "bench:" + "YmVuY2gtb25seS1rZXktbm90LWEtc2VjcmV0LTMyYnk="

FILL = """
INSERT INTO users (email, hashed_password, instagram_user_id, instagram_access_token,
                   token_expires_at, token_issued_at)
SELECT 'tok' || g || '@bench.example', 'x',
       CASE WHEN g % 4 = 0 THEN 'ig' || g END,
       CASE WHEN g % 4 = 0 THEN 'IGQWRbench' || g END,
       CASE WHEN g % 4 = 0 THEN now() + (g % 10000) * interval '1 minute' END,
       CASE WHEN g % 4 = 0 THEN now() - interval '50 days' END
FROM generate_series(1, $1) AS g
"""


def settings_for(dsn: str) -> Settings:
    return Settings(
        database_url=dsn, pool_min_size=1, pool_max_size=2, token_keys=KEYS, bcrypt_rounds=4
    )


async def _work(dsn: str, seconds: float, batch: int) -> float:
    """Claims+records per second of one worker, timed after its pool is up."""
    done = 0
    async with Database(settings_for(dsn)) as db:
        started = time.perf_counter()
        users = UsersRepository(db)
        expires = datetime.now(UTC) + timedelta(days=60)
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            claimed = await users.claim_tokens_due(timedelta(days=7), limit=batch)
            if not claimed:
                break
            for due in claimed:
                await users.record_token_refreshed(due.user_id, "IGQWRrefreshed", expires)
                done += 1
        return done / (time.perf_counter() - started)


def worker(job: tuple[str, float, int]) -> float:
    return asyncio.run(_work(*job))


def throughput(dsn: str, workers: int, seconds: float, batch: int) -> float:
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return sum(pool.map(worker, [(dsn, seconds, batch)] * workers))


def crypto_cost() -> dict[str, float]:
    """Microseconds per token: encrypt, decrypt, and a plain read of the same string."""
    cipher = TokenCipher(parse_keys(KEYS))
    user = UUID(int=1)
    token = "IGQWR" + "x" * 200
    sealed = cipher.encrypt(user, token)
    n = 20_000
    return {
        "encrypt": timeit.timeit(lambda: cipher.encrypt(user, token), number=n) / n * 1e6,
        "decrypt": timeit.timeit(lambda: cipher.decrypt(user, sealed), number=n) / n * 1e6,
        "plain read (legacy passthrough)": timeit.timeit(
            lambda: cipher.decrypt(user, token), number=n
        )
        / n
        * 1e6,
    }


async def prepare(server_dsn: str, users: int) -> str:
    dsn = await create_scratch(server_dsn, "bench_tokens")
    conn = await asyncpg.connect(dsn)  # no pool: the fill outlasts the command timeout
    try:
        await conn.execute(FILL, users)
        await conn.execute("ANALYZE users")
    finally:
        await conn.close()
    return dsn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch", type=int, default=50)
    args = parser.parse_args()
    for name, micros in crypto_cost().items():
        print(f"{name:>32}: {micros:6.2f} us/token")
    with target_dsn(Settings(token_keys=KEYS)) as server:
        asyncio.run(drop_scratch(server, "bench_tokens"))
        dsn = asyncio.run(prepare(server, args.users))
        try:
            rates = {w: throughput(dsn, w, args.seconds, args.batch) for w in (1, 4)}
        finally:
            asyncio.run(drop_scratch(server, "bench_tokens"))
    print(f"users: {args.users:,} ({args.users // 4:,} due), batch {args.batch}")
    for workers, rate in rates.items():
        print(f"{workers} worker(s): {rate:,.0f} claim+record/s")
    print(f"4 workers / 1 worker: {rates[4] / rates[1]:.2f}x (target >= 3x)")


if __name__ == "__main__":
    main()
