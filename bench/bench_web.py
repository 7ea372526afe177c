"""Throughput and latency of the health routes against a minimal aiohttp + asyncpg app.

Both servers run as their own process on the same (scratch, migrated) database and are loaded
by ``wrk`` with the same connection count, one after the other (never at the same time).  On
this kind of shared 2-core VM, throughput drifts by 20% from one run to the next, so the
comparison is paired: each round runs every app back to back (the order rotating), its ratio
to the minimal app is taken within the round, and the table reports the median over
``--rounds`` of those ratios (and of req/s and latencies).  By default, as issue 14 measured it,
nothing is pinned (servers and ``wrk -t2`` share both cores); ``--pin`` runs each server on CPU
0 and ``wrk -t1`` on CPU 1 through ``taskset``: the single-core view (the event loop and the
access log's writer thread share one core).  Target: our app >= 0.8x the minimal one.

    .venv/bin/python bench/bench_web.py [--connections 64] [--duration 3] [--rounds 8] [--pin]

Uses DATABASE_URL, or the embedded server (DEFEAH_DATA_DIR) when unset.  Needs ``wrk``
(Debian: ``apt-get install wrk``).  Our app runs twice: as shipped (JSON access log on, to
/dev/null) and with DEFEAH_ACCESS_LOG=false, since the minimal app logs nothing.
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
from dataclasses import dataclass
from pathlib import Path

from bench.scratch import create_scratch, drop_scratch
from dal.config import Settings
from dal.dsn import describe_dsn
from dal.embedded import target_dsn

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
def server(command: list[str], env: dict[str, str], port: int, probe: str) -> Iterator[None]:
    proc = subprocess.Popen(
        [*pinned(SERVER_CPU), *command],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(port, probe, proc)
        yield
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


def wrk(url: str, connections: int, duration: float) -> Run:
    threads = "1" if PIN[0] else str(min(2, connections))
    command = [
        *pinned(WRK_CPU),
        *("wrk", "-t", threads, "-c", str(connections), "-d", f"{duration:g}s", "--latency"),
    ]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
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


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=1, help="seconds (wrk takes whole seconds)")
    parser.add_argument(
        "--pin", action="store_true", help="servers on CPU 0, wrk on CPU 1 (needs taskset)"
    )
    args = parser.parse_args()
    if args.pin and ((os.cpu_count() or 1) < 2 or shutil.which("taskset") is None):
        print("bench: --pin needs 2 CPUs and taskset (util-linux)", file=sys.stderr)
        return 2
    PIN[0] = args.pin
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
        with ExitStack() as stack:
            for app in APPS:
                command = [sys.executable, *COMMANDS[app], str(ports[app])]
                probe = ROUTES[app][1]
                stack.enter_context(server(command, envs[app], ports[app], probe))
            for round_no in range(args.rounds):
                order = APPS[round_no % len(APPS) :] + APPS[: round_no % len(APPS)]
                for case in range(len(ROUTES["minimal"])):
                    for app in order:
                        url = f"http://127.0.0.1:{ports[app]}{ROUTES[app][case]}"
                        wrk(url, args.connections, args.warmup)
                        run = wrk(url, args.connections, args.duration)
                        results.setdefault((ROUTES["defeah-db"][case], app), []).append(run)
                        print(f"  {app:25} {url:45} {run.rps:9.0f} req/s", file=sys.stderr)

    pin = "servers on CPU 0, wrk on CPU 1" if args.pin else "not pinned"
    print(f"database: {describe_dsn(dsn)}; {args.connections} connections, "
          f"{args.duration:g}s x {args.rounds} paired rounds, {pin}; medians shown")  # fmt: skip
    print()
    print("| route | app | req/s | p50 ms | p99 ms | non-2xx/errors | vs minimal | rounds' range |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for route in ROUTES["defeah-db"]:
        base = results[(route, "minimal")]
        for app in APPS:
            runs = results[(route, app)]
            ratios = [run.rps / paired.rps for run, paired in zip(runs, base, strict=True)]
            ratio = median(ratios)
            label = app_label(app)
            rps, p50, p99 = (
                median([getattr(r, f) for r in runs]) for f in ("rps", "p50_ms", "p99_ms")
            )
            errors = sum(r.errors for r in runs)
            print(
                f"| `{route}` | {label} | {rps:.0f} | {p50:.2f} | {p99:.2f} | {errors} "
                f"| {ratio:.2f}x | {min(ratios):.2f}-{max(ratios):.2f}x |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
