"""Cost of the DAL over raw asyncpg, per repository operation, on the same data and pool settings.

A scratch database gets the migrations and ``--users`` users (default 100,000) loaded with COPY.
Then, for each operation, ``--concurrency`` tasks (default 32) run ``--ops`` calls per round
through the DAL, then the same SQL (the repository's own statements) on a raw asyncpg pool
created with ``Database.pool_options()``, each row turned into a dict (the baseline issue 14
names: hand-written SQL whose caller gets plain mappings); rounds alternate DAL / raw
``--rounds`` times so drift (other load, caches, autovacuum) hits both sides alike.
``create`` includes the bcrypt hash on both sides (cost ``--bcrypt-rounds``, default 4, in a
worker thread), because the repository's create does it.  Target: DAL / raw >= 0.9 ops/s
for every operation.

    .venv/bin/python bench/bench_dal.py [--users 100000] [--ops 2000] [--rounds 6]

Uses DATABASE_URL's server (or the embedded one when unset) and drops its scratch database at
the end.  Client and server share the machine's CPUs: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import bcrypt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.scratch import create_scratch, drop_scratch
from dal import Database, NewUser, User
from dal.db.dsn import describe_dsn
from dal.db.embedded import target_dsn
from dal.db.settings import Settings
from dal.queries import load as load_queries
from dal.users.cursors import decode_cursor, encode_cursor
from dal.users.repository import UsersRepository

Call = Callable[[int], Awaitable[object]]


@dataclass
class Sample:
    ops: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def run_round(call: Call, ops: int, concurrency: int, sample: Sample) -> None:
    counter = iter(range(ops))

    async def worker() -> None:
        for i in counter:
            started = time.perf_counter()
            await call(i)
            sample.latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    sample.seconds += time.perf_counter() - started
    sample.ops += ops


async def load(conn: asyncpg.Connection[Any], count: int) -> None:
    hashed = bcrypt.hashpw(b"bench-password", bcrypt.gensalt(4)).decode()
    now = datetime.now(UTC)
    rows = []
    for i in range(count):
        linked = i % 20 == 0
        rows.append(
            (
                uuid4(),
                f"user{i}@bench.example",
                hashed,
                f"Bench User {i}",
                i % 10 != 0,
                i % 3 == 0,
                f"ig{i}" if linked else None,
                f"token-{i}" if linked else None,
                now + timedelta(hours=i % 2000) if linked else None,
                now - timedelta(seconds=i * 7),
            )
        )
    columns = [
        "id", "email", "hashed_password", "full_name", "is_active", "is_verified",
        "instagram_user_id", "instagram_access_token", "token_expires_at", "created_at",
    ]  # fmt: skip
    await conn.copy_records_to_table("users", records=rows, columns=columns)
    await conn.execute("ANALYZE users")


def construct(row: asyncpg.Record) -> User:
    return User.model_construct(**dict(row))


def mapping_cost(rows: list[asyncpg.Record]) -> dict[str, float]:
    """Best-of-5 microseconds per row for each way of turning a Record into a User."""
    ways: dict[str, Callable[[asyncpg.Record], User]] = {
        "User.from_record": User.from_record,
        "model_validate": lambda row: User.model_validate(dict(row)),
        "model_construct": construct,
    }
    cost = {}
    for name, way in ways.items():
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for row in rows:
                way(row)
            best = min(best, time.perf_counter() - started)
        cost[name] = best / len(rows) * 1e6
    return cost


SQL = load_queries("users")


async def bench(args: argparse.Namespace, server_dsn: str) -> None:
    name = f"defeah_bench_{os.getpid()}"
    dsn = await create_scratch(server_dsn, name)
    try:
        loader = await asyncpg.connect(dsn)
        started = time.perf_counter()
        await load(loader, args.users)
        print(f"loaded {args.users:,} users with COPY in {time.perf_counter() - started:.1f}s")
        sample_rows = await loader.fetch(SQL["get_user"].sql.replace("WHERE id = $1", "LIMIT 1000"))
        ids: list[UUID] = [r["id"] for r in await loader.fetch("SELECT id FROM users")]
        pages = await loader.fetch("SELECT created_at, id FROM users ORDER BY random() LIMIT 200")
        await loader.close()

        costs = mapping_cost(sample_rows)
        print("row -> User: " + ", ".join(f"{k} {v:.1f} us/row" for k, v in costs.items()))

        settings = Settings.from_env().replace(
            database_url=dsn,
            bcrypt_rounds=args.bcrypt_rounds,
            pool_min_size=min(5, args.pool_max),
            pool_max_size=args.pool_max,
        )
        async with Database(settings) as db:
            raw = await asyncpg.create_pool(dsn, **db.pool_options())
            await compare(db, raw, ids, pages, args)
            await raw.close()
    finally:
        await drop_scratch(server_dsn, name)


async def compare(
    db: Database,
    raw: asyncpg.Pool,
    ids: list[UUID],
    pages: list[asyncpg.Record],
    args: argparse.Namespace,
) -> None:
    rng = random.Random(42)
    n = len(ids)
    picks = [rng.randrange(n) for _ in range(args.ops)]
    cursors = [encode_cursor(p["created_at"], p["id"]) for p in pages]
    users = UsersRepository(db)
    threshold, window = users.lockout_account_threshold, users.lockout_window
    round_no = 0

    async def raw_fetchrow(name: str, **values: object) -> object:
        query = SQL[name]
        async with raw.acquire(timeout=db.settings.acquire_timeout) as conn:
            row = await conn.fetchrow(query.sql, *query.args(values))
        return None if row is None else dict(row)

    async def raw_fetch(name: str, **values: object) -> object:
        query = SQL[name]
        async with raw.acquire(timeout=db.settings.acquire_timeout) as conn:
            rows = await conn.fetch(query.sql, *query.args(values))
        return [dict(row) for row in rows]

    async def raw_create(i: int) -> object:
        hashed = await asyncio.to_thread(
            lambda: bcrypt.hashpw(b"bench-password", bcrypt.gensalt(args.bcrypt_rounds)).decode()
        )
        email = f"raw{round_no}-{i}@bench.example"
        return await raw_fetchrow(
            "create_user",
            email=email,
            hashed_password=hashed,
            full_name=None,
            is_active=True,
            is_verified=False,
            timezone="UTC",
            language="en",
        )

    async def dal_create(i: int) -> object:
        email = f"dal{round_no}-{i}@bench.example"
        return await users.create(NewUser(email=email, password="bench-password"))  # type: ignore[arg-type]

    def raw_list(i: int) -> Awaitable[object]:
        after, after_id = decode_cursor(cursors[i % len(cursors)])
        return raw_fetch(
            "list_users_after",
            active=None,
            verified=None,
            limit=51,
            after_created_at=after,
            after_id=after_id,
        )

    operations: dict[str, tuple[Call, Call]] = {
        "get": (
            lambda i: users.get(ids[picks[i]]),
            lambda i: raw_fetchrow("get_user", id=ids[picks[i]]),
        ),
        "get_by_email": (
            lambda i: users.get_by_email(f"User{picks[i]}@bench.example"),
            lambda i: raw_fetchrow("get_user_by_email", email=f"User{picks[i]}@bench.example"),
        ),
        "create": (dal_create, raw_create),
        "record_login_failure": (
            lambda i: users.record_login_failure(ids[picks[i]]),
            lambda i: raw_fetchrow(
                "record_login_failure", id=ids[picks[i]], threshold=threshold, window=window
            ),
        ),
        "record_login_success": (
            lambda i: users.record_login_success(ids[picks[i]]),
            lambda i: raw_fetchrow(
                "record_login_success", id=ids[picks[i]], upgraded_hash=None, verified_hash=None
            ),
        ),
        "list (page of 50)": (
            lambda i: users.list(limit=50, cursor=cursors[i % len(cursors)]),
            raw_list,
        ),
    }
    print(
        f"{args.concurrency} tasks, {args.ops} ops x {args.rounds} alternating rounds per side, "
        f"pool min {db.settings.pool_min_size} / max {db.settings.pool_max_size}, "
        f"bcrypt cost {args.bcrypt_rounds} (create)\n"
    )
    header = (
        f"{'operation':<22} {'DAL ops/s':>10} {'raw ops/s':>10} {'ratio':>6} "
        f"{'DAL p50':>8} {'raw p50':>8} {'DAL p99':>8} {'raw p99':>8}"
    )
    print(header)
    print("-" * len(header))
    for name, (dal_call, raw_call) in operations.items():
        dal, rawsample = Sample(), Sample()
        warm = min(args.ops, max(args.concurrency * 4, args.ops // 10))
        round_no += 1
        await run_round(dal_call, warm, args.concurrency, Sample())
        await run_round(raw_call, warm, args.concurrency, Sample())
        for turn in range(args.rounds):
            round_no += 1
            sides = [(dal_call, dal), (raw_call, rawsample)]
            for call, sample in sides if turn % 2 == 0 else sides[::-1]:  # alternate who starts
                await run_round(call, args.ops, args.concurrency, sample)
        ratio = dal.rate / rawsample.rate
        print(
            f"{name:<22} {dal.rate:>10,.0f} {rawsample.rate:>10,.0f} {ratio:>6.2f} "
            f"{dal.pct(0.5):>6.2f}ms {rawsample.pct(0.5):>6.2f}ms "
            f"{dal.pct(0.99):>6.2f}ms {rawsample.pct(0.99):>6.2f}ms",
            flush=True,
        )


def build_parser() -> argparse.ArgumentParser:
    """The command line (docs/benchmarks.md shows it; tests/test_docs_commands.py parses it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--bcrypt-rounds", type=int, default=4)
    parser.add_argument(
        "--pool-max", type=int, default=32, help="max pool size of each side (2 pools open)"
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    settings = Settings.from_env()
    with target_dsn(settings) as dsn:
        print(f"server: {describe_dsn(dsn)}; CPUs: {os.cpu_count()}")
        asyncio.run(bench(args, dsn))


if __name__ == "__main__":
    main()
