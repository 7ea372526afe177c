"""Idle keep-alive sockets from one address against a server at systemd's file limit (issue 20,
item 4): are fresh clients still served, and how much does the server log?

The server (``python -m web``, access log off so that every line counted is one the flood
caused) starts under ``prlimit --nofile=SOFT:HARD`` (default 1024:1024: no room to raise the
soft limit, the worst case).  ``--sockets`` connections from 127.0.0.2 each make one request
and then idle, as many at once as the client keeps; meanwhile and afterwards fresh clients,
from 127.0.0.1 and from the flooding address, each make one request on a new connection.
Reported: the flood's connections served, fresh clients served and their slowest answer, the
flood's sockets the server still holds, and the server's log lines.

    .venv/bin/python -m bench.bench_connection_flood [--sockets 1100] [--nofile 1024:1024]
"""

from __future__ import annotations

import argparse
import http.client
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.bench_web import free_port, wait_ready
from dal.db.embedded import target_dsn
from dal.db.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
REQUEST = b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n"


def idle_socket(port: int, source: str) -> socket.socket | None:
    sock = socket.socket()
    sock.settimeout(2)
    sock.bind((source, 0))
    try:
        sock.connect(("127.0.0.1", port))
        sock.sendall(REQUEST)
        if not sock.recv(4096).startswith(b"HTTP/1.1 200"):
            raise ConnectionError
    except OSError:
        sock.close()
        return None
    return sock


def fresh_client_ms(port: int, source: str) -> float | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5, source_address=(source, 0))
    started = time.perf_counter()
    try:
        conn.request("GET", "/livez")
        ok = conn.getresponse().status == 200
    except OSError:
        return None
    finally:
        conn.close()
    return (time.perf_counter() - started) * 1000 if ok else None


def still_open(sock: socket.socket) -> bool:
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    if not poller.poll(0):
        return True
    try:
        return sock.recv(4096) != b""
    except ConnectionError:
        return False


def build_parser() -> argparse.ArgumentParser:
    """The command line (docs/benchmarks.md shows it; tests/test_docs_commands.py parses it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=1100)
    parser.add_argument("--nofile", default="1024:1024", help="the server's SOFT:HARD limit")
    return parser


def main() -> int:
    args = build_parser().parse_args()
    port = free_port()
    with target_dsn(Settings.from_env()) as dsn, tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        env = {**os.environ, "DATABASE_URL": dsn, "DEFEAH_ACCESS_LOG": "false"}
        command = ["prlimit", f"--nofile={args.nofile}", sys.executable, "-m", "web"]
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                [*command, "--port", str(port)], cwd=ROOT, env=env, stdout=sink, stderr=sink
            )
        try:
            wait_ready(port, "/livez", proc)
            started = time.monotonic()
            flood, fresh = [], []
            for n in range(args.sockets):
                flood.append(idle_socket(port, "127.0.0.2"))
                if n % 100 == 99:  # fresh clients during the flood
                    fresh += [fresh_client_ms(port, s) for s in ("127.0.0.1", "127.0.0.2")]
            flood_seconds = time.monotonic() - started
            fresh += [fresh_client_ms(port, s) for s in ("127.0.0.1", "127.0.0.2") * 2]
            time.sleep(0.5)
            held = sum(1 for sock in flood if sock is not None and still_open(sock))
            limits = Path(f"/proc/{proc.pid}/limits").read_text()
            nofile = next(line for line in limits.splitlines() if "open files" in line)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            for sock in flood:
                if sock is not None:
                    sock.close()
        lines = log.read_text().splitlines()
    served = [ms for ms in fresh if ms is not None]
    print(f"server: prlimit --nofile={args.nofile} ({' '.join(nofile.split()[3:5])} "
          f"soft/hard after start), access log off")  # fmt: skip
    print(f"flood: {sum(s is not None for s in flood)} of {args.sockets} idle "
          f"keep-alive sockets from 127.0.0.2 served in {flood_seconds:.1f} s; "
          f"{held} still held by the server at the end")  # fmt: skip
    slowest = f"{max(served):.1f} ms" if served else "-"
    print(f"fresh clients: {len(served)} of {len(fresh)} served, slowest {slowest}")
    print(f"server log: {len(lines)} lines")
    for line in lines:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
