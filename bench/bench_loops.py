"""The event loop's share: the DAL's ``get_by_email`` on uvloop vs asyncio vs pgbench's C client
on the same statement and table, and the health routes served on each loop.

A scratch database gets ``--users`` users (COPY, as bench/bench_dal.py loads them).  Then:

1. ``--rounds`` rounds (default 5), each running the three clients one after the other in an
   order that rotates per round: the DAL on uvloop, the DAL on asyncio (each a fresh pool,
   started through ``dal.db.event_loop.run`` as the CLI and the server start theirs), and
   ``pgbench -M prepared`` on a script holding the repository's own ``get_user_by_email``
   statement (``$1`` replaced by ``'user' || :n || '@bench.example'``: pgbench sets only
   numbers).  Same connection count (``--concurrency``) and ops per round on each side.  Shown:
   ops/s and client CPU microseconds per op (``time.process_time`` / the children's rusage),
   the figure that survives a shared machine, and the ratios within each round, median and range.
2. Two ``python -m web`` servers, ``DEFEAH_EVENT_LOOP=uvloop`` and ``=asyncio``, at the same
   time, both pinned to CPU 0 with one ``wrk -t1`` each on CPU 1 (bench/bench_web.py's shared
   mode): ``/api/v1/health`` and ``/api/v1/health/database``, req/s and requests per server
   CPU second, ratio uvloop/asyncio per round.

Every round prints the load average and the CPU steal and run queue of the machine during it
(``/proc/stat``, ``/proc/loadavg``), so a noisy round can be told from a slow loop.

    .venv/bin/python -m bench.bench_loops [--users 100000] [--ops 20000] [--rounds 5]
        [--concurrency 32] [--pgbench-threads 1] [--duration 3] [--connections 64]

Uses DATABASE_URL (or the embedded server); needs pgbench, wrk and taskset.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

import asyncpg

from bench import bench_web
from bench.bench_dal import load
from bench.machine import Machine
from bench.scratch import create_scratch, drop_scratch
from dal import Database
from dal.db import event_loop
from dal.db.dsn import describe_dsn
from dal.db.embedded import target_dsn
from dal.db.settings import Settings
from dal.queries import load as load_queries
from dal.users.repository import UsersRepository

CLIENTS = ("uvloop", "asyncio", "pgbench")
LOOPS = ("uvloop", "asyncio")
ROUTES = ("/api/v1/health", "/api/v1/health/database")
MINIMAL_ROUTES = ("/health", "/database")


@dataclass(frozen=True)
class Side:
    rate: float  # ops/s
    cpu_us: float  # client CPU microseconds per op


async def dal_round(settings: Settings, emails: list[str], concurrency: int) -> Side:
    """``get_by_email`` for every email, ``concurrency`` tasks on one fresh pool; a warm-up of
    a tenth first (connections opened, statements prepared)."""
    async with Database(settings) as db:
        users = UsersRepository(db)

        async def drive(batch: list[str]) -> None:
            it = iter(batch)

            async def worker() -> None:
                for email in it:
                    await users.get_by_email(email)

            await asyncio.gather(*(worker() for _ in range(concurrency)))

        await drive(emails[: len(emails) // 10])
        cpu, started = time.process_time(), time.perf_counter()
        await drive(emails)
        elapsed, used = time.perf_counter() - started, time.process_time() - cpu
    return Side(len(emails) / elapsed, used / len(emails) * 1e6)


def profile(settings: Settings, emails: list[str], concurrency: int) -> None:
    """One DAL round on uvloop under cProfile: where the client's time per call goes."""
    profiler = cProfile.Profile()

    async def profiled() -> None:
        await dal_round(settings, emails[: len(emails) // 10], concurrency)  # warm, unprofiled
        profiler.enable()
        try:
            await dal_round(settings, emails, concurrency)
        finally:
            profiler.disable()

    event_loop.run(profiled(), "uvloop")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def pgbench_script(users: int) -> str:
    sql = load_queries("users")["get_user_by_email"].sql
    statement = " ".join(sql.replace("$1", "('user' || :n || '@bench.example')").split())
    return f"\\set n random(0, {users - 1})\n{statement};\n"


def pgbench_round(dsn: str, script: Path, ops: int, args: argparse.Namespace) -> Side:
    per_client = max(1, ops // args.concurrency)
    command = [
        *("pgbench", "-n", "-M", "prepared", "-f", str(script)),
        *("-c", str(args.concurrency), "-j", str(args.pgbench_threads), "-t", str(per_client)),
        dsn,
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    tps = re.search(r"^tps = ([\d.]+) \(without initial connection time\)", done.stdout, re.M)
    if tps is None:
        raise RuntimeError(f"cannot parse pgbench output:\n{done.stdout}{done.stderr}")
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Side(float(tps[1]), used / (per_client * args.concurrency) * 1e6)


def median(values: list[float]) -> float:
    return bench_web.median(values)


def spread(values: list[float]) -> str:
    return f"{median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def dal_part(dsn: str, args: argparse.Namespace) -> None:
    settings = Settings.from_env().replace(
        database_url=dsn, pool_min_size=args.concurrency, pool_max_size=args.concurrency
    )
    rng = random.Random(24)
    emails = [f"User{rng.randrange(args.users)}@bench.example" for _ in range(args.ops)]
    if args.profile:
        profile(settings, emails, args.concurrency)
        return
    sides: dict[str, list[Side]] = {c: [] for c in CLIENTS}
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "get_by_email.sql"
        script.write_text(pgbench_script(args.users))
        print(f"pgbench script:\n{script.read_text()}")
        for round_no in range(args.rounds):
            order = CLIENTS[round_no % 3 :] + CLIENTS[: round_no % 3]
            machine = Machine.sample()
            for client in order:
                if client == "pgbench":
                    side = pgbench_round(dsn, script, args.ops, args)
                else:
                    loop: event_loop.EventLoopChoice = "uvloop" if client == "uvloop" else "asyncio"
                    side = event_loop.run(dal_round(settings, emails, args.concurrency), loop)
                sides[client].append(side)
            print(
                f"round {round_no + 1} ({' > '.join(order)}): "
                + ", ".join(
                    f"{c} {sides[c][-1].rate:,.0f}/s {sides[c][-1].cpu_us:.0f} us CPU/op"
                    for c in CLIENTS
                )
                + f"; {machine.since()}",
                flush=True,
            )
    ratio = {
        "uvloop / asyncio ops/s": [
            u.rate / a.rate for u, a in zip(sides["uvloop"], sides["asyncio"], strict=True)
        ],
        "uvloop / pgbench ops/s": [
            u.rate / p.rate for u, p in zip(sides["uvloop"], sides["pgbench"], strict=True)
        ],
        "asyncio / pgbench ops/s": [
            a.rate / p.rate for a, p in zip(sides["asyncio"], sides["pgbench"], strict=True)
        ],
        "asyncio / uvloop CPU per op": [
            a.cpu_us / u.cpu_us for u, a in zip(sides["uvloop"], sides["asyncio"], strict=True)
        ],
    }
    print(f"\nget_by_email, {args.concurrency} connections, {args.ops:,} ops per round, "
          f"{args.rounds} rounds (median, range)")  # fmt: skip
    print("| client | ops/s | client CPU us/op |\n|---|---:|---:|")
    for client in CLIENTS:
        rates = [s.rate for s in sides[client]]
        cpu = [s.cpu_us for s in sides[client]]
        label = "pgbench (C, -M prepared)" if client == "pgbench" else f"DAL on {client}"
        print(f"| {label} | {median(rates):,.0f} ({min(rates):,.0f}-{max(rates):,.0f}) "
              f"| {median(cpu):.0f} ({min(cpu):.0f}-{max(cpu):.0f}) |")  # fmt: skip
    print("\n| ratio within a round | median (range) |\n|---|---:|")
    for label, values in ratio.items():
        print(f"| {label} | {spread(values)} |")


def serve_command(app: str) -> list[str]:
    """The server process for ``--app`` (its port is appended)."""
    if app == "minimal":  # the least aiohttp + asyncpg can do: the loops' own ceiling
        return [sys.executable, str(Path(__file__).with_name("minimal_app.py"))]
    return [sys.executable, "-m", "web", "--port"]


def web_part(dsn: str, args: argparse.Namespace) -> None:
    bench_web.PIN[0] = True
    ports = {loop: bench_web.free_port() for loop in LOOPS}
    env = {**os.environ, "DATABASE_URL": dsn, "DEFEAH_ACCESS_LOG": "false"}
    results: dict[tuple[str, str], list[bench_web.Run]] = {}
    routes = MINIMAL_ROUTES if args.app == "minimal" else ROUTES
    with ExitStack() as stack:
        pids = {
            loop: stack.enter_context(
                bench_web.server(
                    [*serve_command(args.app), str(ports[loop])],
                    {**env, "DEFEAH_EVENT_LOOP": loop},
                    ports[loop],
                    routes[1],
                )
            )
            for loop in LOOPS
        }
        for round_no in range(args.rounds):
            for route in routes:
                urls = {loop: f"http://127.0.0.1:{ports[loop]}{route}" for loop in LOOPS}
                bench_web.wrk_together(urls, args.connections, args.warmup)
                machine = Machine.sample()
                before = {loop: bench_web.cpu_seconds(pid) for loop, pid in pids.items()}
                runs = bench_web.wrk_together(urls, args.connections, args.duration)
                for loop, run in runs.items():
                    cpu = bench_web.cpu_seconds(pids[loop]) - before[loop]
                    results.setdefault((route, loop), []).append(replace(run, cpu_s=cpu))
                print(
                    f"round {round_no + 1} {route}: "
                    + ", ".join(f"{loop} {runs[loop].rps:,.0f} req/s" for loop in LOOPS)
                    + f"; {machine.since()}",
                    flush=True,
                )
    print(f"\nhealth routes, both servers at once on CPU 0, wrk -t1 -c {args.connections} "
          f"each on CPU 1, {args.duration}s x {args.rounds} rounds, access log off "
          "(median, range)")  # fmt: skip
    print("| route | loop | req/s | p99 ms | req per CPU s | uvloop/asyncio req/s "
          "| uvloop/asyncio per CPU s |\n|---|---|---:|---:|---:|---:|---:|")  # fmt: skip
    for route in routes:
        uv, aio = results[(route, "uvloop")], results[(route, "asyncio")]
        rps = [u.rps / a.rps for u, a in zip(uv, aio, strict=True)]
        per_cpu = [
            u.per_cpu_second(args.duration) / a.per_cpu_second(args.duration)
            for u, a in zip(uv, aio, strict=True)
        ]
        for loop, runs in (("uvloop", uv), ("asyncio", aio)):
            cells = (
                f"{median([r.rps for r in runs]):,.0f}",
                f"{median([r.p99_ms for r in runs]):.1f}",
                f"{median([r.per_cpu_second(args.duration) for r in runs]):,.0f}",
            )
            tail = f"{spread(rps)} | {spread(per_cpu)}" if loop == "uvloop" else " | "
            print(f"| {route} | {loop} | {' | '.join(cells)} | {tail} |")


async def prepare(server_dsn: str, name: str, users: int) -> str:
    dsn = await create_scratch(server_dsn, name)
    conn = await asyncpg.connect(dsn)
    try:
        await load(conn, users)
    finally:
        await conn.close()
    return dsn


def build_parser() -> argparse.ArgumentParser:
    """The command line (docs/benchmarks.md shows it; tests/test_docs_commands.py parses it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--ops", type=int, default=20_000, help="get_by_email calls per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--pgbench-threads", type=int, default=1, help="pgbench -j")
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of wrk before each run")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections per server")
    parser.add_argument("--skip-web", action="store_true", help="only the DAL part")
    parser.add_argument("--skip-dal", action="store_true", help="only the web part")
    parser.add_argument(
        "--app",
        choices=("ours", "minimal"),
        default="ours",
        help="the web part serves our app, or bench/minimal_app.py (the loops' ceiling)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="cProfile one DAL round on uvloop instead"
    )
    return parser


def main() -> int:
    args = build_parser().parse_args()
    missing = [tool for tool in ("pgbench", "wrk", "taskset") if shutil.which(tool) is None]
    if missing or event_loop.resolved_name("auto") != "uvloop":
        print(f"bench: needs uvloop, pgbench, wrk and taskset; missing: {missing}", file=sys.stderr)
        return 2
    with target_dsn(Settings.from_env()) as server_dsn:
        name = f"bench_loops_{os.getpid()}"
        started = time.perf_counter()
        dsn = asyncio.run(prepare(server_dsn, name, args.users))
        try:
            loaded = time.perf_counter() - started
            print(f"server: {describe_dsn(dsn)}; CPUs: {os.cpu_count()}; {args.users:,} users "
                  f"loaded in {loaded:.1f}s; {Machine.sample().since()}")  # fmt: skip
            if not args.skip_dal:
                dal_part(dsn, args)
            if not (args.skip_web or args.profile):
                web_part(dsn, args)
        finally:
            asyncio.run(drop_scratch(server_dsn, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
