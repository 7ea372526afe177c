"""Sign-in flood: legitimate sign-ins while one spent address floods, and what the log grows by.

Issue 20 items 2 and 3.  On a scratch database of the target server, one process, one event
loop (the way a service runs the DAL): legitimate users sign in at ``--rate`` per second
(open loop, each from an address of its own, right password, cost ``--bcrypt-rounds``) while
``--flood-tasks`` tasks send wrong passwords for ever-new emails from one address whose
budget is spent, each as fast as the loop gives it turns.  Phases alternate, ``--rounds``
times: idle (no flood); flood with the in-process hold (``DEFEAH_SIGNIN_REFUSAL_HOLD``) and
delay (``DEFEAH_SIGNIN_REFUSAL_DELAY``), the defaults; flood with the hold but no delay (a
refusal answered at once: the flood then runs as fast as the loop turns); and flood with the
hold off (every refusal a database round trip and a row: the code before issue 20).  Per phase:

* legitimate sign-ins: succeeded / attempted, p50 and p95 latency (target under the flood:
  >= 99 % succeed, p50 <= 2x the idle p50 of the same round);
* flood: attempts per second, ``auth_events`` rows of the flooding address, growth of
  ``auth_events`` (table, indexes, every partition; the legitimate rows included) extrapolated
  to an hour (target <= 100 MB/hour), and whether the log's ``attempts`` add up to every
  attempt made.

    DATABASE_URL=... .venv/bin/python -m bench.bench_signin_flood [--duration 15] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from contextlib import suppress
from dataclasses import dataclass
from uuid import uuid4

from bench.scratch import create_scratch, drop_scratch
from dal import Database, NewUser
from dal.db.dsn import describe_dsn
from dal.db.embedded import target_dsn
from dal.db.settings import Settings
from dal.errors import DalError
from dal.users.repository import UsersRepository

PASSWORD = "flood-bench-password"
ATTACKER = "203.0.113.66"
SIZE = (
    "SELECT coalesce(sum(pg_total_relation_size(relid)), 0) AS bytes,"
    " (SELECT count(*) FROM auth_events WHERE client_ip = $1::inet) AS rows,"
    " (SELECT coalesce(sum(attempts), 0) FROM auth_events WHERE client_ip = $1::inet) AS counted"
    " FROM pg_partition_tree('auth_events')"
)


def settings_for(dsn: str, rounds: int, hold: float, delay: float = 0.05) -> Settings:
    return Settings(
        database_url=dsn,
        pool_min_size=4,
        pool_max_size=16,
        acquire_timeout=30.0,
        bcrypt_rounds=rounds,
        signin_refusal_hold=hold,
        signin_refusal_delay=delay,
    )


@dataclass
class Phase:
    name: str
    ok: int
    tried: int
    latencies: list[float]
    flood: int
    seconds: float
    rows: int
    grown: int
    counted_all: bool

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies) if self.latencies else float("nan")

    @property
    def p95(self) -> float:
        if len(self.latencies) < 20:
            return max(self.latencies, default=float("nan"))
        return statistics.quantiles(self.latencies, n=20)[-1]


async def legitimate(db: Database, emails: list[str], rate: float, seconds: float) -> Phase:
    """Sign-ins at ``rate``/s for ``seconds``, each user from an address of its own."""
    latencies: list[float] = []
    outcomes: list[bool] = []

    async def one(n: int) -> None:
        started = time.perf_counter()
        try:
            await UsersRepository(db).authenticate(
                emails[n % len(emails)], PASSWORD, client_ip=f"10.{n % len(emails)}.0.1"
            )
        except DalError:
            outcomes.append(False)
            return
        latencies.append(time.perf_counter() - started)
        outcomes.append(True)

    tasks = []
    started = time.perf_counter()
    for n in range(int(rate * seconds)):
        delay = started + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n)))
    await asyncio.gather(*tasks)
    return Phase("", sum(outcomes), len(outcomes), latencies, 0, seconds, 0, 0, True)


async def flood(db: Database, stop: asyncio.Event, counter: list[int]) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        try:
            await UsersRepository(db).authenticate(
                f"flood{n}-{id(counter)}@x.io", "wrong-password", client_ip=ATTACKER
            )
        except DalError:
            counter[0] += 1
        await asyncio.sleep(0)  # a real client's next request comes through the loop too


async def phase(
    dsn: str,
    args: argparse.Namespace,
    emails: list[str],
    name: str,
    hold: float | None,
    delay: float,
) -> Phase:
    """One phase on a fresh budget: ``hold`` None means no flood."""
    settings = settings_for(dsn, args.bcrypt_rounds, 2.0 if hold is None else hold, delay)
    async with Database(settings) as db:
        async with db.acquire() as conn:
            await conn.execute("TRUNCATE sign_in_budgets")
            before = await conn.fetchrow(SIZE, ATTACKER)
        for n in range(settings.lockout_ip_threshold + 1):  # spend the address, then one refusal
            with suppress(DalError):  # wrong passwords, then the address's refusal
                await UsersRepository(db).authenticate(
                    f"spend{n}@x.io", "wrong-password", client_ip=ATTACKER
                )
        stop, counter = asyncio.Event(), [0]
        flooders = []
        if hold is not None:
            flooders = [
                asyncio.create_task(flood(db, stop, counter)) for _ in range(args.flood_tasks)
            ]
        started = time.perf_counter()
        result = await legitimate(db, emails, args.rate, args.duration)
        stop.set()
        await asyncio.gather(*flooders)
        seconds = time.perf_counter() - started
        await UsersRepository(db).sign_in.refusals.flush()
        async with db.acquire() as conn:
            after = await conn.fetchrow(SIZE, ATTACKER)
    spent = settings.lockout_ip_threshold + 1
    made = counter[0] + spent
    result.name, result.flood, result.seconds = name, counter[0], seconds
    result.rows = int(after["rows"] - before["rows"])
    result.grown = int(after["bytes"] - before["bytes"])
    result.counted_all = after["counted"] - before["counted"] == made
    return result


def report(p: Phase, idle: Phase) -> str:
    line = (
        f"{p.name:<14} legit {p.ok}/{p.tried} ok ({100 * p.ok / max(p.tried, 1):.1f} %), "
        f"p50 {p.p50 * 1000:.0f} ms ({p.p50 / idle.p50:.2f}x idle), p95 {p.p95 * 1000:.0f} ms"
    )
    if p.flood:
        per_hour = p.grown / p.seconds * 3600 / 1e6
        line += (
            f"; flood {p.flood / p.seconds:,.0f}/s, {p.rows:,} rows "
            f"({p.rows / p.flood:.5f} per attempt), auth_events +{p.grown / 1e6:.2f} MB "
            f"= {per_hour:,.1f} MB/hour, every attempt counted: {p.counted_all}"
        )
    return line


async def bench(args: argparse.Namespace, server_dsn: str) -> None:
    name = f"bench_signin_flood_{uuid4().hex[:8]}"
    dsn = await create_scratch(server_dsn, name)
    try:
        async with Database(settings_for(dsn, args.bcrypt_rounds, 2.0)) as db:
            users = UsersRepository(db)
            emails = [f"user{n}@x.io" for n in range(args.users)]
            await asyncio.gather(
                *(users.create(NewUser(email=e, password=PASSWORD)) for e in emails)  # type: ignore[arg-type]
            )
        for round_ in range(1, args.rounds + 1):
            idle = await phase(dsn, args, emails, f"r{round_} idle", None, args.delay)
            held = await phase(dsn, args, emails, f"r{round_} flood", args.hold, args.delay)
            eager = await phase(dsn, args, emails, f"r{round_} flood/nodelay", args.hold, 0.0)
            off = await phase(dsn, args, emails, f"r{round_} flood/nohold", 0.0, 0.0)
            for p in (idle, held, eager, off):
                print(report(p, idle), flush=True)
    finally:
        await drop_scratch(server_dsn, name)


def build_parser() -> argparse.ArgumentParser:
    """The command line (docs/benchmarks.md shows it; tests/test_docs_commands.py parses it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per phase")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=float, default=4.0, help="legitimate sign-ins per second")
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--flood-tasks", type=int, default=32)
    parser.add_argument("--hold", type=float, default=2.0, help="DEFEAH_SIGNIN_REFUSAL_HOLD")
    parser.add_argument("--delay", type=float, default=0.05, help="DEFEAH_SIGNIN_REFUSAL_DELAY")
    parser.add_argument("--bcrypt-rounds", type=int, default=12)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    with target_dsn(Settings.from_env()) as dsn:
        print(f"server: {describe_dsn(dsn)}; CPUs: {os.cpu_count()}; load {os.getloadavg()}")
        asyncio.run(bench(args, dsn))


if __name__ == "__main__":
    main()
