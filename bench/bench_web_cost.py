"""CPU instructions per request of the health routes, ours vs a minimal aiohttp app (callgrind).

Why next to bench_web.py's throughput: on this kind of shared VM, req/s of the same server
drifts by 20% from one minute to the next, more than the differences being measured.
``valgrind --tool=callgrind`` counts the instructions a process executes, which does not
depend on what else the machine is doing: two runs of the same build agreed within 2% (time
stamps, ports and garbage collection still vary a little).  So the ratio minimal / ours of
instructions per request is a repeatable measure of what our code adds per request (it ignores
cache misses and GIL hand-offs, which throughput includes).

Each server (``bench/minimal_app.py``; ``python -m web`` as shipped, access log on, to
/dev/null; and with DEFEAH_ACCESS_LOG=false) runs under callgrind twice, serving ``--few``
then ``--many`` requests on one keep-alive connection from a client outside valgrind; the
difference of the two totals divided by the difference of the request counts is the cost of
one request, start-up and shutdown cancelled out.  Target (issue 14): ours >= 0.8x the
minimal app, i.e. minimal's instructions / ours >= 0.8.

    DATABASE_URL=... .venv/bin/python -m bench.bench_web_cost [--few 200] [--many 1200]

Needs valgrind (Debian: ``apt-get install valgrind``); about a minute per server and route.
"""

from __future__ import annotations

import argparse
import http.client
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.bench_web import (
    APPS,
    COMMANDS,
    ROOT,
    ROUTES,
    app_envs,
    app_label,
    free_port,
    scratch_database,
)
from dal.db.embedded import target_dsn
from dal.db.settings import Settings


def serve_requests(port: int, path: str, count: int) -> None:
    """Wait for the server, then ``count`` sequential GETs on one connection."""
    deadline = time.monotonic() + 120  # valgrind starts Python slowly
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("GET", path)
            conn.getresponse().read()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    for _ in range(count):
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"{path} answered {response.status}")
    conn.close()


def instructions(app: str, path: str, count: int, env: dict[str, str], work: Path) -> int:
    """Total instructions of one server process that answered ``count + 1`` requests."""
    port = free_port()
    log = work / f"callgrind-{port}.log"
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={work / f'callgrind-{port}.out'}",
        f"--log-file={log}",
        sys.executable,
        *COMMANDS[app],
        str(port),
    ]
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        serve_requests(port, path, count)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    found = re.search(r"Collected : (\d+)", log.read_text())
    if found is None:
        raise RuntimeError(f"no instruction count in {log}")
    return int(found[1])


def build_parser() -> argparse.ArgumentParser:
    """The command line (docs/benchmarks.md shows it; tests/test_docs_commands.py parses it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--few", type=int, default=200, help="requests of the short run")
    parser.add_argument("--many", type=int, default=1200, help="requests of the long run")
    return parser


def main() -> int:
    args = build_parser().parse_args()
    if shutil.which("valgrind") is None:
        print("bench: valgrind is not installed; apt-get install -y valgrind", file=sys.stderr)
        return 2
    with (
        target_dsn(Settings.from_env()) as server_dsn,
        scratch_database(server_dsn) as dsn,
        tempfile.TemporaryDirectory() as tmp,
    ):
        envs = app_envs(dsn, PYTHONHASHSEED="0")
        per_request: dict[tuple[str, str], float] = {}
        for case in range(len(ROUTES["minimal"])):
            for app in APPS:
                path = ROUTES[app][case]
                few, many = (
                    instructions(app, path, n, envs[app], Path(tmp)) for n in (args.few, args.many)
                )
                cost = (many - few) / (args.many - args.few)
                per_request[(ROUTES["defeah-db"][case], app)] = cost
                print(f"  {app:25} {path:28} {cost:,.0f}", file=sys.stderr)
    print(f"callgrind, {args.many} - {args.few} requests on one connection per server")
    print()
    print("| route | app | instructions per request | minimal / this |")
    print("|---|---|---:|---:|")
    for route in ROUTES["defeah-db"]:
        base_cost = per_request[(route, "minimal")]
        for app in APPS:
            cost = per_request[(route, app)]
            print(f"| `{route}` | {app_label(app)} | {cost:,.0f} | {base_cost / cost:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
