"""Sign-in storm: sign-ins per second vs bare bcrypt, and health latency idle vs during the storm.

The app and the storm share one process and one event loop, as a real service runs them: the
aiohttp app (``web.app.create_app``) serves on a loopback port while tasks of the same loop sign
users in through the app's own ``Database``.  ``wrk`` loads ``/api/v1/health/database``:

1. bare ``bcrypt.checkpw`` on all cores (plain threads), checks per second;
2. successful sign-ins per second at the same cost, storm alone (target >= 0.9x of 1.);
3. health p50/p99 idle, then during the storm (target: p99 <= 2x idle), ``--runs`` times in a
   row (issue 24: every run, not on average), each run with the machine's load average, CPU
   steal and run queue (bench/machine.py) so a run the machine spoiled can be told apart;
4. sign-ins arriving evenly at 80 % of 1.'s rate: p99 of a successful sign-in against one
   bcrypt check on an idle thread (target: <= one check + 15 ms).

    DATABASE_URL=... .venv/bin/python -m bench.bench_signin_storm [--rounds 12] [--duration 10]
        [--runs 5] [--event-loop auto]

``--workers``/``--niceness``/``--nice-only`` replace the bcrypt workers (default: one per core in
the SCHED_IDLE class at nice 19) to compare the alternatives, e.g. ``--nice-only`` is the nice-19
threads of issue 14, ``--nice-only --niceness 0`` plain threads as ``asyncio.to_thread`` was;
``--detached`` hashes in worker processes of their own session (bench/detached_bcrypt.py).
Needs ``wrk`` (Debian: ``apt-get install -y wrk``).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from uuid import uuid4

import bcrypt
from aiohttp import web

from bench.bench_web import Run, free_port, to_ms
from bench.detached_bcrypt import DetachedWorkers
from bench.machine import Machine
from bench.scratch import create_scratch, drop_scratch
from dal import NewUser
from dal.db import event_loop
from dal.db.dsn import describe_dsn
from dal.db.embedded import target_dsn
from dal.db.settings import Settings
from dal.errors import Overloaded
from dal.users import passwords
from dal.users.passwords import BcryptWorkers, usable_cores
from dal.users.repository import UsersRepository
from web.app import DATABASE, create_app

PASSWORD = "storm-password"
EMAIL = "storm@example.com"


def settings_for(dsn: str, rounds: int) -> Settings:
    return Settings(
        database_url=dsn,
        pool_min_size=4,
        pool_max_size=16,
        acquire_timeout=60.0,
        bcrypt_rounds=rounds,
        bcrypt_queue_limit=100_000,
        bcrypt_queue_timeout=600,
        lockout_threshold=1000,
        lockout_ip_threshold=1_000_000,
        lockout_account_threshold=1_000_000,
    )


def bare_bcrypt(hashed: bytes, cores: int, duration: float) -> float:
    """checkpw per second on ``cores`` plain threads for ``duration`` seconds."""
    deadline = time.perf_counter() + duration

    def loop() -> int:
        done = 0
        while time.perf_counter() < deadline:
            bcrypt.checkpw(PASSWORD.encode(), hashed)
            done += 1
        return done

    started = time.perf_counter()
    with ThreadPoolExecutor(cores) as pool:
        total = sum(pool.map(lambda _: loop(), range(cores)))
    return total / (time.perf_counter() - started)


def one_check_ms(hashed: bytes, times: int = 5) -> float:
    """Median duration of one checkpw on one thread: the floor of a sign-in's latency."""
    spent = []
    for _ in range(times):
        started = time.perf_counter()
        bcrypt.checkpw(PASSWORD.encode(), hashed)
        spent.append(time.perf_counter() - started)
    return sorted(spent)[times // 2] * 1000


class TimedChecks:
    """``passwords.check_sync`` timed in the worker while installed: how long the checks
    themselves took, so a sign-in's latency can be told from its bcrypt check's."""

    def __init__(self) -> None:
        self.ms: list[float] = []
        self._check = passwords.check_sync

    def timed(self, password: bytes, hashed: str) -> bool:
        started = time.perf_counter()
        try:
            return self._check(password, hashed)
        finally:
            self.ms.append((time.perf_counter() - started) * 1000)

    def __enter__(self) -> TimedChecks:
        passwords.check_sync = self.timed
        return self

    def __exit__(self, *exc: object) -> None:
        passwords.check_sync = self._check

    def summary(self) -> str:
        ms = sorted(self.ms)
        if not ms:
            return "no check timed"
        return f"the checks themselves took p50 {ms[len(ms) // 2]:.1f} ms, max {ms[-1]:.1f} ms"


async def paced(users: UsersRepository, rate: float, duration: float) -> list[float]:
    """Sign-ins started evenly at ``rate``/s for ``duration`` s; each successful one's ms."""
    latencies: list[float] = []

    async def one(i: int) -> None:
        started = time.perf_counter()
        with suppress(Overloaded):
            await users.authenticate(EMAIL, PASSWORD, client_ip=f"10.200.{i % 250}.1")
            latencies.append((time.perf_counter() - started) * 1000)

    tasks = []
    began = time.perf_counter()
    for i in range(max(1, int(rate * duration))):
        await asyncio.sleep(max(0.0, began + i / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return sorted(latencies)


async def storm(users: UsersRepository, stop: asyncio.Event, concurrency: int) -> int:
    """Sign in with ``concurrency`` tasks until ``stop``; successful sign-ins."""
    count = 0

    async def one(worker: int) -> None:
        nonlocal count
        i = 0
        while not stop.is_set():
            i += 1
            ip = f"10.{worker}.{i % 250}.1"
            with suppress(Overloaded):
                await users.authenticate(EMAIL, PASSWORD, client_ip=ip)
                count += 1

    await asyncio.gather(*(one(w) for w in range(concurrency)))
    return count


async def timed_storm(users: UsersRepository, duration: float, concurrency: int) -> float:
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(duration, stop.set)
    started = time.perf_counter()
    count = await storm(users, stop, concurrency)
    return count / (time.perf_counter() - started)


async def wrk(url: str, connections: int, duration: float) -> Run:
    """``wrk`` as a subprocess, so this loop keeps serving while it runs."""
    proc = await asyncio.create_subprocess_exec(
        *("wrk", "-t", "1", "-c", str(connections), "-d", f"{duration:g}s", "--latency", url),
        stdout=asyncio.subprocess.PIPE,
    )
    out = (await proc.communicate())[0].decode()
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.MULTILINE))
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.MULTILINE)
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if rps is None or len(latency) != 2:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    failed = int(errors[1]) if errors else 0
    return Run(float(rps[1]), to_ms(latency["50"]), to_ms(latency["99"]), failed)


async def every_worker_back(limit: float = 5.0) -> None:
    """Wait (at most ``limit`` s) until the loop-pressure watcher gave every bcrypt worker back
    after the probes (``dal.users.loop_pressure.HOLD`` after the loop calms down)."""
    workers = passwords.BCRYPT
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if workers.share == workers.workers:
            return
        await asyncio.sleep(0.05)


def loop_share(machine: Machine, seconds: float, run: Run | None = None) -> str:
    """What the loop's thread got of a CPU since ``machine``: waited for one, ran (per probe
    when ``run`` is given: more per probe for the same work means a slower core), preempted."""
    ran = machine.ran_ms()
    per_probe = f" = {ran * 1000 / (run.rps * seconds):.0f} us/probe" if run and run.rps else ""
    return (
        f"waited {machine.waited_ms() / seconds:.0f} ms/s, ran {ran / seconds:.0f} ms/s"
        f"{per_probe}, preempted {machine.preempted_count() / seconds:.0f}/s"
    )


async def health_under_storm(
    users: UsersRepository, url: str, args: argparse.Namespace
) -> tuple[Run, str]:
    """The probes' figures during the storm, and the loop thread's share of a CPU meanwhile."""
    stop = asyncio.Event()
    started = time.perf_counter()
    storming = asyncio.create_task(storm(users, stop, args.concurrency))
    await asyncio.sleep(1.0)  # the storm at full speed before measuring
    machine = Machine.sample()
    run = await wrk(url, args.connections, args.duration)
    share = loop_share(machine, args.duration, run)
    stop.set()
    signed_in = await storming / (time.perf_counter() - started)
    return run, f"{share}, {signed_in:.2f} sign-ins/s"


def line(label: str, run: Run, base: Run | None = None) -> str:
    ratio = f"{run.p99_ms / base.p99_ms:.2f}x" if base else "1.00x"
    return (
        f"| {label} | {run.rps:,.0f} | {run.p50_ms:.2f} | {run.p99_ms:.2f} | {run.errors} "
        f"| {ratio} |"
    )


async def bench(args: argparse.Namespace, server_dsn: str) -> None:
    name = f"bench_storm_{uuid4().hex[:8]}"
    dsn = await create_scratch(server_dsn, name)
    cores = usable_cores()
    if args.detached:
        niceness = 0 if args.niceness is None else args.niceness
        passwords.BCRYPT = DetachedWorkers(args.workers or cores, niceness)  # type: ignore[misc]
    elif args.workers or args.niceness is not None or args.nice_only:
        niceness = passwords.NICENESS if args.niceness is None else args.niceness
        passwords.BCRYPT = BcryptWorkers(  # type: ignore[misc]
            args.workers or cores, niceness, idle_class=not args.nice_only
        )
    settings = settings_for(dsn, args.rounds).replace(bcrypt_yield_to_loop=not args.no_yield)
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    try:
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        users = UsersRepository(app[DATABASE])
        user = await users.create(NewUser(email=EMAIL, password=PASSWORD))  # type: ignore[arg-type]
        async with app[DATABASE].acquire() as conn:  # the DAL hands out no hash: read it here
            stored = await conn.fetchval("SELECT hashed_password FROM users WHERE id = $1", user.id)
        hashed = stored.encode()
        url = f"http://127.0.0.1:{port}/api/v1/health/database"

        await passwords.PasswordHasher(4).verify(PASSWORD, hashed.decode())  # workers up
        floor = await asyncio.to_thread(one_check_ms, hashed)
        machine = Machine.sample()
        bare = await asyncio.to_thread(bare_bcrypt, hashed, cores, args.duration)
        alone = Machine.sample()
        rate = await timed_storm(users, args.duration, args.concurrency)
        rates = f"loop during the storm alone: {loop_share(alone, args.duration)}; "
        rates += machine.since()
        await wrk(url, args.connections, 2)  # warm-up
        runs = []
        for _ in range(args.runs):
            machine = Machine.sample()
            idle = await wrk(url, args.connections, args.duration)
            idle_share = loop_share(machine, args.duration, idle)
            machine.note_queue()
            during, storm_share = await health_under_storm(users, url, args)
            note = f"loop idle: {idle_share}; storm: {storm_share}"
            runs.append((idle, during, f"{note}; {machine.since()}"))
        await every_worker_back()  # the paced phase measures steady state, not the hand-back
        machine = Machine.sample()
        with TimedChecks() as checks:
            signins = await paced(users, 0.8 * bare, args.duration)
        paced_note = f"{checks.summary()}; {machine.since()}"
    finally:
        await runner.cleanup()
        await drop_scratch(server_dsn, name)

    workers = passwords.BCRYPT
    print(
        f"database: {describe_dsn(server_dsn)}; {cores} cores; bcrypt cost {args.rounds}; "
        f"bcrypt workers {workers.workers} ({'nice only' if args.nice_only else 'SCHED_IDLE'}, "
        f"{'all hashing' if args.no_yield else 'one fewer while the loop is busy'}); "
        f"storm {args.concurrency} tasks; "
        f"wrk -t1 -c{args.connections} -d{args.duration:g}s"
    )
    print()
    print(
        f"sign-ins: {rate:.2f}/s vs bare checkpw on {cores} cores {bare:.2f}/s = "
        f"{rate / bare:.2f}x (target >= 0.9x); {rates}"
    )
    print()
    print("| `/api/v1/health/database` | req/s | p50 ms | p99 ms | non-2xx | p99 vs idle |")
    print("|---|---:|---:|---:|---:|---:|")
    for number, (idle, during, note) in enumerate(runs, 1):
        print(line(f"run {number} idle", idle))
        print(line(f"run {number} during the storm", during, idle))
        print(f"| run {number} machine: {note} | | | | | |")
    worst = max(during.p99_ms / idle.p99_ms for idle, during, _ in runs)
    print(f"\nworst p99 during / idle over {len(runs)} runs: {worst:.2f}x (target <= 2x)")
    p99 = signins[min(len(signins) - 1, int(0.99 * len(signins)))] if signins else float("nan")
    print(
        f"\nsign-ins paced at 80% of bare ({0.8 * bare:.2f}/s, {len(signins)} succeeded): "
        f"p50 {signins[len(signins) // 2] if signins else float('nan'):.1f} ms, p99 {p99:.1f} ms; "
        f"one check on an idle thread {floor:.1f} ms: p99 - one check = {p99 - floor:.1f} ms "
        f"(target <= 15 ms); {paced_note}"
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line (docs/benchmarks.md shows it; tests/test_docs_commands.py parses it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12, help="bcrypt cost")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--concurrency", type=int, default=32, help="sign-in tasks")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections")
    parser.add_argument("--workers", type=int, default=0, help="bcrypt threads (0: per core)")
    parser.add_argument("--niceness", type=int, default=None, help="bcrypt threads' nice")
    parser.add_argument(
        "--nice-only",
        action="store_true",
        help="bcrypt threads at --niceness only, not in the SCHED_IDLE class (before issue 24)",
    )
    parser.add_argument(
        "--detached",
        action="store_true",
        help="bcrypt in worker processes of their own session (bench/detached_bcrypt.py); "
        "--niceness is then that group's nice (default 0)",
    )
    parser.add_argument(
        "--no-yield",
        action="store_true",
        help="DEFEAH_BCRYPT_YIELD_TO_LOOP=false: every bcrypt worker hashes while the loop is busy",
    )
    parser.add_argument("--runs", type=int, default=5, help="idle/storm health runs in a row")
    parser.add_argument(
        "--event-loop", choices=event_loop.CHOICES, default="auto", help="DEFEAH_EVENT_LOOP"
    )
    return parser


def main() -> int:
    args = build_parser().parse_args()
    if shutil.which("wrk") is None:
        print("bench: wrk is not installed; apt-get install -y wrk", file=sys.stderr)
        return 2
    with target_dsn(Settings.from_env()) as dsn:
        event_loop.run(bench(args, dsn), args.event_loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
