"""How long a busy thread waits for its core beside bcrypt threads of each scheduling kind.

A thread shaped like a serving event loop (on a CPU for 0.9 ms, asleep for 0.1 ms, again and
again) runs for ``--duration`` seconds while one bcrypt thread per core checks passwords at cost
12, the bcrypt threads either absent (``none``), at nice 19 (``nice``: the bcrypt workers
before issue 24) or in Linux's ``SCHED_IDLE`` class (``idle``: ``dal.users.passwords`` now).
Printed per kind: the busy thread's involuntary context switches and its wait for a core per
second (``/proc/self/task/TID``), and its wake-up delay after each 0.1 ms sleep (p99, max).
Each kind runs in a process of its own (a thread cannot leave SCHED_IDLE without privilege).

    .venv/bin/python -m bench.bench_wakeup [--duration 5] [--kinds none,nice,idle]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time

import bcrypt

from bench.machine import Machine
from dal.users.passwords import usable_cores

KINDS = ("none", "nice", "idle")


def hashing(kind: str, until: float, hashed: bytes) -> None:
    if kind == "nice":
        os.nice(19)
    elif kind == "idle":
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    while time.monotonic() < until:
        bcrypt.checkpw(b"wakeup", hashed)


def serving(seconds: float) -> str:
    """The loop-shaped thread (the caller's); its figures."""
    machine = Machine.sample()
    delays = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        busy_until = time.perf_counter() + 0.0009
        while time.perf_counter() < busy_until:
            pass
        slept = time.perf_counter()
        time.sleep(0.0001)
        delays.append(time.perf_counter() - slept)
    delays.sort()
    return (
        f"preempted {machine.preempted_count() / seconds:.0f}/s, waited for a core "
        f"{machine.waited_ms() / seconds:.1f} ms/s, wake-up after a 0.1 ms sleep p99 "
        f"{delays[int(len(delays) * 0.99)] * 1000:.2f} ms, max {delays[-1] * 1000:.2f} ms"
    )


def one_kind(kind: str, duration: float) -> None:
    hashed = bcrypt.hashpw(b"wakeup", bcrypt.gensalt(12))
    until = time.monotonic() + duration + 1.0
    threads = [
        threading.Thread(target=hashing, args=(kind, until, hashed))
        for _ in range(usable_cores() if kind != "none" else 0)
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # every bcrypt thread hashing
    print(f"| {kind} | {serving(duration)} |", flush=True)
    for thread in threads:
        thread.join()


def build_parser() -> argparse.ArgumentParser:
    """The command line (docs/benchmarks.md shows it; tests/test_docs_commands.py parses it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per kind")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated: none,nice,idle")
    parser.add_argument("--one", choices=KINDS, help=argparse.SUPPRESS)  # the child process
    return parser


def main() -> int:
    args = build_parser().parse_args()
    if args.one:
        one_kind(args.one, args.duration)
        return 0
    kinds = args.kinds.split(",")
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        print(f"bench: unknown kinds {unknown}; choose from {', '.join(KINDS)}", file=sys.stderr)
        return 2
    if "idle" in kinds and not hasattr(os, "SCHED_IDLE"):
        print("bench: SCHED_IDLE is Linux's; run --kinds none,nice here", file=sys.stderr)
        return 2
    print(f"{usable_cores()} cores; {args.duration:g} s per kind\n")
    print("| bcrypt threads | the loop-shaped thread |\n|---|---|")
    for kind in kinds:
        command = [sys.executable, "-m", "bench.bench_wakeup", "--one", kind]
        subprocess.run([*command, "--duration", str(args.duration)], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
