"""Throughput and latency of the health routes against a minimal aiohttp + asyncpg app.

Each app runs as its own process on the same (scratch, migrated) database, loaded by ``wrk``
with the same connection count.  On this kind of shared 2-core VM a server's throughput drifts
by 20% (at times 2x) from one minute to the next, more than the differences being measured, so
there are two modes:

- ``--mode shared`` (the default, the figure for the 0.8x target): every app at the same time,
  all servers pinned to CPU 0 and one ``wrk -t1`` per app on CPU 1 (``taskset``).  The kernel
  gives each busy server an equal share of CPU 0, so each one's req/s is what its share buys,
  and a drift of the machine hits all of them within the same seconds: the req/s ratio is the
  ratio of CPU cost per request (it repeated within a few percent here, where sequential
  runs' ratios ranged from 0.4x to 1.4x).  Each server runs in a session of its own, so the
  kernel's autogroup scheduling shares the core per process, not per thread.  The absolute
  req/s are those of a third of a core, and latencies include waiting for it.  On the database
  route the servers also wait for PostgreSQL (unpinned), so that ratio mixes in latency.
- ``--mode paired``: one app at a time with the whole machine, each round running every app
  back to back (the order rotating), the ratio taken within the round; unpinned (servers and
  ``wrk -t2`` share both cores) as issue 14 first measured it, or with ``--pin`` each server
  on CPU 0 and ``wrk -t1`` on CPU 1.  The absolute figures, noisy ratios.

The table reports medians over ``--rounds`` (ratios taken within a round) and their range, and
in both modes requests per CPU second of each server (``/proc/PID/stat``), its cost per
request whatever share of the machine it got.  Target: our app >= 0.8x the minimal one.

    .venv/bin/python -m bench.bench_web [--mode shared|paired] [--pin] [--rounds 8]
        [--connections 64] [--duration 3]

Uses DATABASE_URL, or the embedded server (DEFEAH_DATA_DIR) when unset.  Needs ``wrk``
(Debian: ``apt-get install wrk``) and, for the shared mode and ``--pin``, ``taskset`` and two
CPUs.  Our app runs twice: as shipped (JSON access log on, to /dev/null) and with
DEFEAH_ACCESS_LOG=false, since the minimal app logs nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from bench.scratch import create_scratch, drop_scratch
from dal.db.dsn import describe_dsn
from dal.db.embedded import target_dsn
from dal.db.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}
APPS = ("minimal", "defeah-db", "defeah-db, no access log")
# Routes per app, in the same order: liveness, then the database round trip.
ROUTES = {
    "minimal": ("/health", "/database"),
    "defeah-db": ("/api/v1/health", "/api/v1/health/database"),
    "defeah-db, no access log": ("/api/v1/health", "/api/v1/health/database"),
}


# What each app runs after the Python interpreter, its port appended.
COMMANDS = {
    "minimal": [str(ROOT / "bench" / "minimal_app.py")],
    "defeah-db": ["-m", "web", "--port"],
    "defeah-db, no access log": ["-m", "web", "--port"],
}


def app_envs(dsn: str, **extra: str) -> dict[str, dict[str, str]]:
    """Each app's environment: the same database, our app once more with the access log off."""
    env = {**os.environ, "DATABASE_URL": dsn, **extra}
    return {app: env for app in APPS} | {
        "defeah-db, no access log": {**env, "DEFEAH_ACCESS_LOG": "false"}
    }


def app_label(app: str) -> str:
    return "minimal aiohttp+asyncpg" if app == "minimal" else app


@dataclass(frozen=True)
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_s: float = 0.0  # CPU seconds the server spent during the run

    def per_cpu_second(self, duration: float) -> float:
        """Requests answered per CPU second of the server: its cost, whatever its share."""
        return self.rps * duration / self.cpu_s if self.cpu_s else float("nan")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(port: int, path: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"bench: server on port {port} exited with {proc.returncode}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)
        finally:
            conn.close()
    sys.exit(f"bench: server on port {port} never answered {path}")


@contextmanager
def server(command: list[str], env: dict[str, str], port: int, probe: str) -> Iterator[int]:
    """A server process (its pid yielded) in a session of its own: with the kernel's autogroup
    scheduling, CPU time is then shared per process, not per thread, so a server's extra
    threads (our log writer) do not earn it a larger share of a shared core."""
    proc = subprocess.Popen(
        [*pinned(SERVER_CPU), *command],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_ready(port, probe, proc)
        yield proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def scratch_database(server_dsn: str) -> Iterator[str]:
    """A migrated scratch database (the database route checks the schema), dropped after."""
    name = f"bench_web_{os.getpid()}"
    dsn = asyncio.run(create_scratch(server_dsn, name))
    try:
        yield dsn
    finally:
        asyncio.run(drop_scratch(server_dsn, name))


def to_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match[1]) * UNITS[match[2]]


SERVER_CPU, WRK_CPU = "0", "1"
PIN: list[bool] = [False]  # set by --pin


def pinned(cpu: str) -> list[str]:
    """``taskset -c cpu`` in front of a command when pinning, else nothing."""
    return ["taskset", "-c", cpu] if PIN[0] else []


def wrk_command(url: str, connections: int, duration: float) -> list[str]:
    threads = "1" if PIN[0] else str(min(2, connections))
    return [
        *pinned(WRK_CPU),
        *("wrk", "-t", threads, "-c", str(connections), "-d", f"{duration:g}s", "--latency", url),
    ]


def parse_wrk(out: str) -> Run:
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.MULTILINE))
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.MULTILINE)
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    if rps is None or len(latency) != 2:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    failed = int(errors[1]) if errors else 0
    if socket_errors:
        failed += sum(int(n) for n in socket_errors.groups())
    return Run(float(rps[1]), to_ms(latency["50"]), to_ms(latency["99"]), failed)


def wrk(url: str, connections: int, duration: float) -> Run:
    command = wrk_command(url, connections, duration)
    return parse_wrk(subprocess.run(command, capture_output=True, text=True, check=True).stdout)


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (``/proc/PID/stat``)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime: fields 14, 15


def wrk_together(urls: dict[str, str], connections: int, duration: float) -> dict[str, Run]:
    """One wrk per app, all started at once and run for the same seconds."""
    procs = {
        app: subprocess.Popen(
            wrk_command(url, connections, duration), stdout=subprocess.PIPE, text=True
        )
        for app, url in urls.items()
    }
    outputs = {app: proc.communicate()[0] for app, proc in procs.items()}
    for app, proc in procs.items():
        if proc.returncode != 0:
            raise RuntimeError(f"wrk for {app} exited with {proc.returncode}")
    return {app: parse_wrk(out) for app, out in outputs.items()}


def measure_round(
    urls: dict[str, str], pids: dict[str, int], args: argparse.Namespace, round_no: int
) -> dict[str, Run]:
    """Every app's run of one round: together (shared mode) or one after the other; each run
    with the CPU seconds its server spent meanwhile."""
    if args.mode == "shared":
        wrk_together(urls, args.connections, args.warmup)
        before = {app: cpu_seconds(pid) for app, pid in pids.items()}
        runs = wrk_together(urls, args.connections, args.duration)
        return {
            app: replace(run, cpu_s=cpu_seconds(pids[app]) - before[app])
            for app, run in runs.items()
        }
    runs = {}
    order = APPS[round_no % len(APPS) :] + APPS[: round_no % len(APPS)]
    for app in order:
        wrk(urls[app], args.connections, args.warmup)
        started = cpu_seconds(pids[app])
        run = wrk(urls[app], args.connections, args.duration)
        runs[app] = replace(run, cpu_s=cpu_seconds(pids[app]) - started)
    return runs


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def build_parser() -> argparse.ArgumentParser:
    """The command line (docs/benchmarks.md shows it; tests/test_docs_commands.py parses it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=1, help="seconds (wrk takes whole seconds)")
    parser.add_argument(
        "--mode",
        choices=("shared", "paired"),
        default="shared",
        help="all apps at once sharing CPU 0 (default), or one at a time (see the docstring)",
    )
    parser.add_argument(
        "--pin", action="store_true", help="paired mode: servers on CPU 0, wrk on CPU 1"
    )
    return parser


def main() -> int:
    args = build_parser().parse_args()
    PIN[0] = args.pin or args.mode == "shared"
    if PIN[0] and ((os.cpu_count() or 1) < 2 or shutil.which("taskset") is None):
        print("bench: pinning needs 2 CPUs and taskset (util-linux)", file=sys.stderr)
        return 2
    if shutil.which("wrk") is None:
        print(
            "bench: wrk is not installed; on Debian/Ubuntu: apt-get install -y wrk", file=sys.stderr
        )
        return 2

    settings = Settings.from_env()
    with target_dsn(settings) as server_dsn, scratch_database(server_dsn) as dsn:
        ports = {app: free_port() for app in APPS}
        envs = app_envs(dsn)
        results: dict[tuple[str, str], list[Run]] = {}
        pids: dict[str, int] = {}
        with ExitStack() as stack:
            for app in APPS:
                command = [sys.executable, *COMMANDS[app], str(ports[app])]
                probe = ROUTES[app][1]
                pids[app] = stack.enter_context(server(command, envs[app], ports[app], probe))
            for round_no in range(args.rounds):
                for case in range(len(ROUTES["minimal"])):
                    urls = {
                        app: f"http://127.0.0.1:{ports[app]}{ROUTES[app][case]}" for app in APPS
                    }
                    for app, run in measure_round(urls, pids, args, round_no).items():
                        results.setdefault((ROUTES["defeah-db"][case], app), []).append(run)
                        print(
                            f"  {app:25} {urls[app]:45} {run.rps:9.0f} req/s"
                            f" {run.cpu_s:6.2f} CPU s",
                            file=sys.stderr,
                        )

    if args.mode == "shared":
        how = "all apps at once, servers sharing CPU 0, one wrk -t1 each on CPU 1"
    elif args.pin:
        how = "one app at a time, server on CPU 0, wrk -t1 on CPU 1"
    else:
        how = "one app at a time, not pinned, wrk -t2"
    print(f"database: {describe_dsn(dsn)}; {args.connections} connections per app, "
          f"{args.duration:g}s x {args.rounds} rounds, {how}; medians shown")  # fmt: skip
    if args.mode == "shared":
        busy = [
            sum(results[(route, app)][i].cpu_s for app in APPS) / args.duration
            for route in ROUTES["defeah-db"]
            for i in range(args.rounds)
        ]
        print(f"CPU 0 busy with the servers: {min(busy):.0%} to {max(busy):.0%} of each run "
              "(near 100%: the servers, not wrk, were the limit); latencies include waiting "
              "for the shared core")  # fmt: skip
    print()
    print(
        "| route | app | req/s | p50 ms | p99 ms | non-2xx/errors | vs minimal | rounds' range "
        "| req per CPU s | vs minimal per CPU s |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for route in ROUTES["defeah-db"]:
        base = results[(route, "minimal")]
        for app in APPS:
            runs = results[(route, app)]
            ratios = [run.rps / paired.rps for run, paired in zip(runs, base, strict=True)]
            per_cpu = [run.per_cpu_second(args.duration) for run in runs]
            cpu_ratios = [
                run.per_cpu_second(args.duration) / paired.per_cpu_second(args.duration)
                for run, paired in zip(runs, base, strict=True)
            ]
            label = app_label(app)
            rps, p50, p99 = (
                median([getattr(r, f) for r in runs]) for f in ("rps", "p50_ms", "p99_ms")
            )
            errors = sum(r.errors for r in runs)
            print(
                f"| `{route}` | {label} | {rps:.0f} | {p50:.2f} | {p99:.2f} | {errors} "
                f"| {median(ratios):.2f}x | {min(ratios):.2f}-{max(ratios):.2f}x "
                f"| {median(per_cpu):.0f} | {median(cpu_ratios):.2f}x |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
