"""``GET /metrics`` req/s with the exposition cache (as shipped) against the same code with the
cache at 0 s (every scrape renders), the liveness route of the shipped server as the yardstick.

Both servers run as processes on one scratch database, at the same time, pinned to CPU 0, each
loaded by its own ``wrk -t1`` on CPU 1 (bench/bench_web.py's shared mode, for the reasons given
there): each server's req/s is what its share of the core buys, and the machine's drifts hit
both within the same seconds.  Each round measures ``/metrics`` on both servers together,
then ``/livez`` on both; the table gives medians over ``--rounds`` and the within-round ratio.

    .venv/bin/python -m bench.bench_metrics_http [--rounds 5] [--connections 8] [--duration 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from contextlib import ExitStack

from bench.bench_web import (
    PIN,
    cpu_seconds,
    free_port,
    median,
    scratch_database,
    server,
    wrk_together,
)
from dal.db.dsn import describe_dsn
from dal.db.embedded import target_dsn
from dal.db.settings import Settings

# The uncached side: the shipped server with the cache set to 0 s before it starts.
UNCACHED = (
    "import sys, web.metrics; web.metrics.EXPOSITION_CACHE_SECONDS = 0.0; "
    "from web.__main__ import main; sys.exit(main(sys.argv[1:]))"
)
SIDES = {
    "cached 1 s (shipped)": ["-m", "web", "--port"],
    "uncached (0 s)": ["-c", UNCACHED, "--port"],
}


def build_parser() -> argparse.ArgumentParser:
    """The command line (docs/benchmarks.md shows it; tests/test_docs_commands.py parses it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    return parser


def main() -> int:
    args = build_parser().parse_args()
    if (os.cpu_count() or 1) < 2 or not shutil.which("taskset") or not shutil.which("wrk"):
        print("bench: needs 2 CPUs, taskset and wrk (apt-get install -y wrk)", file=sys.stderr)
        return 2
    PIN[0] = True
    results: dict[tuple[str, str], list[float]] = {}
    with target_dsn(Settings.from_env()) as server_dsn, scratch_database(server_dsn) as dsn:
        env = {**os.environ, "DATABASE_URL": dsn, "DEFEAH_ACCESS_LOG": "false"}
        ports = {side: free_port() for side in SIDES}
        with ExitStack() as stack:
            pids = {
                side: stack.enter_context(
                    server([sys.executable, *cmd, str(ports[side])], env, ports[side], "/metrics")
                )
                for side, cmd in SIDES.items()
            }
            for round_no in range(args.rounds):
                for path in ("/metrics", "/livez"):
                    urls = {side: f"http://127.0.0.1:{ports[side]}{path}" for side in SIDES}
                    wrk_together(urls, args.connections, 1)  # warm-up
                    before = {side: cpu_seconds(pid) for side, pid in pids.items()}
                    runs = wrk_together(urls, args.connections, args.duration)
                    for side, run in runs.items():
                        if run.errors:
                            sys.exit(f"bench: {run.errors} errors on {side} {path}")
                        results.setdefault((path, side), []).append(run.rps)
                        cpu = cpu_seconds(pids[side]) - before[side]
                        print(f"  round {round_no + 1} {side:22} {path:9} {run.rps:9.0f} req/s"
                              f" {cpu:5.2f} CPU s", file=sys.stderr)  # fmt: skip
    print(f"database: {describe_dsn(dsn)}; {args.connections} connections per server, "
          f"{args.duration}s x {args.rounds} rounds, both servers at once on CPU 0, "
          "wrk -t1 each on CPU 1; medians")  # fmt: skip
    print()
    print("| route | server | req/s | cached vs uncached (rounds' range) |")
    print("|---|---|---:|---:|")
    cached, uncached = SIDES
    for path in ("/metrics", "/livez"):
        ratios = [
            a / b for a, b in zip(results[(path, cached)], results[(path, uncached)], strict=True)
        ]
        for side in SIDES:
            ratio = (
                f"{median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
                if side == cached
                else ""
            )
            print(f"| `{path}` | {side} | {median(results[(path, side)]):.0f} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
