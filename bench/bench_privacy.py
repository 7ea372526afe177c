"""Privacy benchmark: erase p99 in a large sign-in log, what its index costs sign-in inserts,
and exporting a user with many events.

On a scratch database of the target server, in one run:

1. ``--events`` rows in ``auth_events`` (this month's partition): ``--targets`` users with
   ``--user-events`` events each (a tenth of them email-only, as attempts before the account
   existed), the rest spread over 500,000 other emails.  The index ``auth_events_email_idx``
   (migration 0009) is built after the fill and its build time reported: that is how long
   0009 holds its SHARE lock on a log of this size.
2. ``erase`` of every target, one after the other: p50, p99, max (target p99 < 100 ms).  Then,
   for comparison, three erasures with the email index dropped.
3. Sign-in event inserts (the ``record_event`` statement, one per transaction) into two plain
   copies of a partition's shape, ``--insert-rows`` rows each, one with the email index and one
   without, in alternating rounds: the ratio is what the index costs every sign-in's write.
4. ``export`` of a user with ``--export-events`` events to a file: seconds and the peak of
   Python allocations (tracemalloc).

Run: ``DATABASE_URL=... python -m bench.bench_privacy [--events 10000000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import tracemalloc
from pathlib import Path
from tempfile import TemporaryDirectory
from uuid import UUID, uuid4

import asyncpg

from bench.scratch import create_scratch, drop_scratch
from dal import Database
from dal.db.dsn import describe_dsn
from dal.db.embedded import target_dsn
from dal.db.settings import Settings
from dal.users import erasure, export
from dal.users.receipts import Pepper

PEPPER = Pepper(b"bench-only-pepper-not-a-secret-0123456789")
SLOW = 3  # erasures measured without the email index
EMAIL_INDEX = "CREATE INDEX auth_events_email_idx ON auth_events (email)"


def settings_for(dsn: str) -> Settings:
    return Settings(
        database_url=dsn, pool_min_size=1, pool_max_size=4, acquire_timeout=60.0,
        command_timeout=3600.0, statement_timeout=3600.0,
    )  # fmt: skip


async def fill(conn: asyncpg.Connection, args: argparse.Namespace) -> list[UUID]:
    """The log and the users: the targets, the ``SLOW`` ones, then the export user."""
    await conn.execute("DROP INDEX auth_events_email_idx")
    ids = []
    for n in range(args.targets + SLOW + 1):
        ids.append(
            await conn.fetchval(
                "INSERT INTO users (email, hashed_password) VALUES ($1, 'x') RETURNING id",
                f"target{n}@example.com",
            )
        )
    month = "date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
    spread = f"{month} + (i % 86400) * interval '1 second'"
    for n, user_id in enumerate(ids):
        count = args.export_events if n == len(ids) - 1 else args.user_events
        await conn.execute(
            "INSERT INTO auth_events (occurred_at, email, user_id, result, client_ip, "
            f"user_agent, decided_by) SELECT {spread}, $1, CASE WHEN i % 10 = 0 THEN NULL "
            "ELSE $2::uuid END, 'invalid_credentials', '198.51.100.7', 'Mozilla/5.0 bench', "
            "'password' FROM generate_series(1, $3) AS i",
            f"target{n}@example.com",
            user_id,
            count,
        )
    rest = args.events - (args.targets + SLOW) * args.user_events - args.export_events
    await conn.execute(
        "INSERT INTO auth_events (occurred_at, email, user_id, result, client_ip, decided_by) "
        f"SELECT {spread}, 'u' || (i % 500000) || '@example.com', "
        "CASE WHEN i % 3 = 0 THEN NULL ELSE md5('u' || (i % 500000))::uuid END, "
        "'throttled', '203.0.113.9', 'network 203.0.113.0/24' FROM generate_series(1, $1) AS i",
        rest,
    )
    return ids


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def erase_all(db: Database, ids: list[UUID]) -> list[float]:
    times = []
    for user_id in ids:
        started = time.perf_counter()
        report = await erasure.erase(db, user_id, PEPPER)
        times.append(time.perf_counter() - started)
        assert report.events > 0, report
    return times


SHAPE = (
    "CREATE TABLE {t} (LIKE auth_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS); "
    "ALTER TABLE {t} ADD PRIMARY KEY (occurred_at, id); "
    "CREATE INDEX ON {t} (user_id, occurred_at DESC) WHERE user_id IS NOT NULL; "
    "CREATE INDEX ON {t} (client_ip, occurred_at DESC) WHERE client_ip IS NOT NULL"
)
INSERT = (
    "INSERT INTO {t} (email, user_id, result, client_ip, user_agent, decided_by) "
    "VALUES ($1, $2::uuid, 'invalid_credentials', $3::inet, 'Mozilla/5.0 bench', 'password')"
)


async def insert_cost(
    conn: asyncpg.Connection, rows: int, rounds: int, per: int
) -> tuple[float, float]:
    """Insert time with the email index over without, alternating rounds: each insert its own
    transaction (as sign-ins write: the commit dominates), and all of a round in one
    transaction (the index's own work, without the commit's fsync)."""
    for table, indexed in (("bench_with", True), ("bench_without", False)):
        await conn.execute(SHAPE.format(t=table))
        await conn.execute(
            f"INSERT INTO {table} (occurred_at, email, user_id, result, client_ip, decided_by) "
            "SELECT now() - i * interval '1 second', 'u' || (i % 500000) || '@example.com', "
            "md5('u' || (i % 500000))::uuid, 'throttled', '203.0.113.9', 'password' "
            "FROM generate_series(1, $1) AS i",
            rows,
        )
        if indexed:
            await conn.execute(f"CREATE INDEX ON {table} (email)")
        await conn.execute(f"VACUUM ANALYZE {table}")

    async def one_round(table: str, batched: bool, r: int) -> float:
        statement = INSERT.format(t=table)
        started = time.perf_counter()
        if batched:
            async with conn.transaction():
                for i in range(per):
                    await conn.execute(statement, f"b{r}.{i}@example.com", None, "198.51.100.7")
        else:
            for i in range(per):
                await conn.execute(statement, f"c{r}.{i}@example.com", None, "198.51.100.7")
        return time.perf_counter() - started

    ratios = []
    for batched in (False, True):
        elapsed = {"bench_with": 0.0, "bench_without": 0.0}
        for r in range(rounds):
            order = (
                ("bench_with", "bench_without") if r % 2 == 0 else ("bench_without", "bench_with")
            )
            for table in order:
                elapsed[table] += await one_round(table, batched, r)
        ratios.append(elapsed["bench_with"] / elapsed["bench_without"])
    return ratios[0], ratios[1]


async def bench(args: argparse.Namespace, server_dsn: str) -> None:
    name = f"bench_privacy_{uuid4().hex[:8]}"
    dsn = await create_scratch(server_dsn, name)
    try:
        if not args.inserts_only:
            await erase_and_export(args, dsn)
        conn = await asyncpg.connect(dsn, server_settings={"timezone": "UTC"})
        try:
            each, batched = await insert_cost(conn, args.insert_rows, args.rounds, args.per_round)
            print(
                f"sign-in event inserts, time with the email index / without ({args.insert_rows:,} "
                f"rows each, {args.rounds} alternating rounds of {args.per_round}): "
                f"{each:.2f}x committing each, {batched:.2f}x in one transaction per round"
            )
        finally:
            await conn.close()
    finally:
        await drop_scratch(server_dsn, name)


async def erase_and_export(args: argparse.Namespace, dsn: str) -> None:
    """Parts 1, 2 and 4 of the module docstring."""
    conn = await asyncpg.connect(dsn, server_settings={"timezone": "UTC"})
    try:
        started = time.perf_counter()
        ids = await fill(conn, args)
        print(f"filled {args.events:,} events in {time.perf_counter() - started:.0f} s")
        started = time.perf_counter()
        await conn.execute(EMAIL_INDEX)
        print(f"0009's index on {args.events:,} events: {time.perf_counter() - started:.1f} s")
        await conn.execute("VACUUM ANALYZE auth_events")
    finally:
        await conn.close()
    async with Database(settings_for(dsn)) as db:
        times = await erase_all(db, ids[: args.targets])
        print(
            f"erase, {args.user_events:,} events each, {len(times)} users: "
            f"p50 {percentile(times, 50) * 1000:.1f} ms, p99 {percentile(times, 99) * 1000:.1f}"
            f" ms, max {max(times) * 1000:.1f} ms (target p99 < 100 ms)"
        )
        with TemporaryDirectory() as folder:
            target = Path(folder) / "export.json"
            with target.open("w", encoding="utf-8") as out:
                tracemalloc.start()
                started = time.perf_counter()
                written = await export.export(db, ids[-1], PEPPER, out)
                elapsed = time.perf_counter() - started
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
            size = target.stat().st_size
        print(
            f"export {written:,} events ({size / 1e6:.1f} MB): {elapsed:.2f} s, "
            f"peak Python allocations {peak / 1e6:.1f} MB"
        )
        async with db.acquire() as pooled:
            await pooled.execute("DROP INDEX auth_events_email_idx")
        slow = await erase_all(db, ids[args.targets : args.targets + SLOW])
        print(
            f"erase without auth_events_email_idx, {SLOW} users: "
            + ", ".join(f"{t * 1000:.0f} ms" for t in slow)
        )


def build_parser() -> argparse.ArgumentParser:
    """The command line (docs/benchmarks.md shows it; tests/test_docs_commands.py parses it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000, help="rows in the log")
    parser.add_argument("--targets", type=int, default=100, help="users erased")
    parser.add_argument("--user-events", type=int, default=10_000, help="events per target")
    parser.add_argument("--export-events", type=int, default=100_000)
    parser.add_argument("--insert-rows", type=int, default=1_000_000, help="rows per copy")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--per-round", type=int, default=2000)
    parser.add_argument("--inserts-only", action="store_true", help="only part 3 (the insert cost)")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    with target_dsn(Settings.from_env()) as dsn:
        print(f"server: {describe_dsn(dsn)}; CPUs: {os.cpu_count()}")
        asyncio.run(bench(args, dsn))


if __name__ == "__main__":
    main()
