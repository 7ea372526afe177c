"""Sign-in benchmark: refusals without bcrypt, sign-ins vs bare bcrypt, pruning a month of events.

All three on a scratch database of the target server, ratios measured in the same run:

1. refused attempts per second once a budget is spent (no bcrypt; target >= 2,000/s);
2. successful sign-ins per second vs bare ``bcrypt.checkpw`` on all cores (target >= 0.9x);
3. ``prune-events`` on a month partition of ``--events`` rows (target < 1 s, no dead tuples
   left, since a partition drop deletes no row).

Run: ``DATABASE_URL=... python -m bench.bench_signin [--events 10000000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from datetime import timedelta
from uuid import uuid4

import asyncpg
import bcrypt

from bench.scratch import create_scratch, drop_scratch
from dal import Database, NewUser
from dal.db.dsn import describe_dsn
from dal.db.embedded import target_dsn
from dal.db.settings import Settings
from dal.errors import InvalidCredentials
from dal.users.repository import UsersRepository
from dal.users.signin_jobs import prune_events

PASSWORD = "bench-password"


def settings_for(dsn: str, rounds: int) -> Settings:
    return Settings(
        database_url=dsn,
        pool_min_size=4,
        pool_max_size=16,
        acquire_timeout=60.0,
        bcrypt_rounds=rounds,
        lockout_account_threshold=1_000_000,
        # The database's refusal path (issue 11); refusals held in process are measured by
        # bench_signin_flood (issue 20).
        signin_refusal_hold=0,
    )


Call = Callable[[], Awaitable[object]]


async def gather_bounded(calls: list[Call], concurrency: int) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(call: Call) -> None:
        async with gate:
            await call()

    await asyncio.gather(*(one(c) for c in calls))


async def refusals(dsn: str, ops: int) -> float:
    async with Database(settings_for(dsn, 4)) as db:
        users = UsersRepository(db)  # one per process, as a service holds it
        user = await users.create(NewUser(email="bench@example.com", password=PASSWORD))  # type: ignore[arg-type]

        async def wrong() -> None:
            with suppress(InvalidCredentials):  # the refusal is what is measured
                await users.authenticate(user.email, "wrong", client_ip="203.0.113.9")

        for _ in range(db.settings.lockout_threshold):
            await wrong()
        started = time.perf_counter()
        await gather_bounded([wrong] * ops, 32)
        return ops / (time.perf_counter() - started)


async def sign_ins_vs_bcrypt(
    dsn: str, rounds: int, ops: int, concurrency: int
) -> tuple[float, float]:
    """Bare checkpw on one thread per core (more threads cannot hash faster) vs sign-ins from
    ``concurrency`` tasks, as a service has many in flight: while one waits on the database,
    another's hash keeps the core busy (the DAL's bcrypt threads are one per core too)."""
    cores = os.cpu_count() or 1
    async with Database(settings_for(dsn, rounds)) as db:
        users = UsersRepository(db)
        user = await users.create(NewUser(email="fast@example.com", password=PASSWORD))  # type: ignore[arg-type]
        async with db.acquire() as conn:
            stored = await conn.fetchval("SELECT hashed_password FROM users WHERE id = $1", user.id)
        hashed = stored.encode()

        def sign_in(i: int) -> Call:
            return lambda: users.authenticate(
                user.email, PASSWORD, client_ip=f"10.{i % 250}.{i // 250 % 250}.1"
            )

        def check() -> Call:
            return lambda: asyncio.to_thread(bcrypt.checkpw, PASSWORD.encode(), hashed)

        started = time.perf_counter()
        await gather_bounded([check() for _ in range(ops)], cores)
        bare = ops / (time.perf_counter() - started)
        started = time.perf_counter()
        await gather_bounded([sign_in(i) for i in range(ops)], concurrency)
        dal = ops / (time.perf_counter() - started)
    return dal, bare


async def prune_a_month(dsn: str, events: int) -> tuple[float, int]:
    conn = await asyncpg.connect(dsn)  # no pool: the fill outlasts the statement timeout
    try:
        await conn.execute(
            "CREATE TABLE auth_events_p202001 PARTITION OF auth_events "
            "FOR VALUES FROM ('2020-01-01 00:00+00') TO ('2020-02-01 00:00+00')"
        )
        await conn.execute(
            "INSERT INTO auth_events (occurred_at, email, result, client_ip, decided_by) "
            "SELECT timestamptz '2020-01-01 00:00+00' + i * interval '200 ms', "
            "'u' || (i % 100000) || '@example.com', 'throttled', '203.0.113.9', "
            "'network 203.0.113.0/24' FROM generate_series(1, $1) AS i",
            events,
        )
        await conn.execute("ANALYZE auth_events")
    finally:
        await conn.close()
    async with Database(settings_for(dsn, 4)) as db:
        started = time.perf_counter()
        report = await prune_events(db, timedelta(days=90))
        elapsed = time.perf_counter() - started
        async with db.acquire() as conn:
            dead = await conn.fetchval(
                "SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables "
                "WHERE relname LIKE 'auth_events%'"
            )
        assert report.dropped_partitions == ("auth_events_p202001",), report
    return elapsed, int(dead)


async def bench(args: argparse.Namespace, server_dsn: str) -> None:
    name = f"bench_signin_{uuid4().hex[:8]}"
    dsn = await create_scratch(server_dsn, name)
    try:
        rate = await refusals(dsn, args.ops)
        print(f"refused attempts (budget spent, no bcrypt): {rate:,.0f}/s (target >= 2,000/s)")
        concurrency = args.concurrency or 4 * (os.cpu_count() or 1)
        dal, bare = await sign_ins_vs_bcrypt(dsn, args.bcrypt_rounds, args.sign_ins, concurrency)
        print(
            f"sign-ins at cost {args.bcrypt_rounds} ({concurrency} tasks): {dal:,.1f}/s vs bare "
            f"checkpw {bare:,.1f}/s on {os.cpu_count()} cores = {dal / bare:.2f}x (target >= 0.9x)"
        )
        elapsed, dead = await prune_a_month(dsn, args.events)
        print(
            f"prune a month of {args.events:,} events: {elapsed:.3f} s, "
            f"{dead} dead tuples left (target < 1 s, 0)"
        )
    finally:
        await drop_scratch(server_dsn, name)


def build_parser() -> argparse.ArgumentParser:
    """The command line (docs/benchmarks.md shows it; tests/test_docs_commands.py parses it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=5000, help="refused attempts")
    parser.add_argument("--sign-ins", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=0, help="sign-in tasks (0: 4 per core)")
    parser.add_argument("--bcrypt-rounds", type=int, default=10)
    parser.add_argument("--events", type=int, default=10_000_000)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    with target_dsn(Settings.from_env()) as dsn:
        print(f"server: {describe_dsn(dsn)}; CPUs: {os.cpu_count()}")
        asyncio.run(bench(args, dsn))


if __name__ == "__main__":
    main()
