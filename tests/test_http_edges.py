"""HTTP edges against a real server process on loopback: slow clients, malformed requests, a
stalled stderr.  Each server is pointed at a closed database port: these routes need none, and
start-up only waits ``DEFEAH_CONNECT_TIMEOUT`` before serving anyway.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from dal.db.settings import Settings
from dal.errors import ConfigError
from tests.test_web_process import ROOT, WebProcess, base_env, web_process
from tests.test_web_routes import free_port
from web import access_log
from web.access_log import AccessLog, quoted
from web.log_sink import LineSink

HEADER_TIMEOUT = 1.0
KEEPALIVE_TIMEOUT = 5.0
MARGIN = 1.5  # scheduling slack on a loaded 2-core machine


def no_database_env(**extra: str) -> dict[str, str]:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/none"
    return base_env(
        DATABASE_URL=dead,
        DEFEAH_HTTP_HEADER_TIMEOUT=str(HEADER_TIMEOUT),
        DEFEAH_HTTP_KEEPALIVE_TIMEOUT=str(KEEPALIVE_TIMEOUT),
        **extra,
    )


def is_closed(sock: socket.socket) -> bool:
    """True once the server has closed its end (EOF or reset); never blocks."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(4096) == b""
    except ConnectionError:
        return True


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setblocking(False)
    return sock


def livez_ms(port: int) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    started = time.perf_counter()
    try:
        conn.request("GET", "/livez")
        assert conn.getresponse().status == 200
    finally:
        conn.close()
    return (time.perf_counter() - started) * 1000


def test_slow_and_silent_connections_are_cut_off_while_livez_answers(tmp_path: Path) -> None:
    head = b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 200
    with web_process(tmp_path, no_database_env()) as server:
        silent = [connect(server.port) for _ in range(50)]
        slow = [connect(server.port) for _ in range(50)]
        opened = time.monotonic()
        deadline = opened + HEADER_TIMEOUT + MARGIN
        open_socks = set(silent + slow)
        sent = 0
        while open_socks and time.monotonic() < deadline:
            for sock in slow:
                if sock in open_socks:
                    try:
                        sock.send(head[sent : sent + 1])
                    except ConnectionError:
                        open_socks.discard(sock)
            sent += 1
            open_socks -= {sock for sock in open_socks if is_closed(sock)}
            assert livez_ms(server.port) < 1000
            time.sleep(0.05)
        elapsed = time.monotonic() - opened
        for sock in silent + slow:
            sock.close()
        assert not open_socks, f"{len(open_socks)} of 100 still open after {elapsed:.1f}s"
        assert sent < len(head)  # the slow ones never finished their head
        assert livez_ms(server.port) < 1000
    cut_off = [line for line in server.output().splitlines() if "no complete request head" in line]
    assert 1 <= len(cut_off) <= 2, cut_off  # 100 closures, rate-limited to a line or two


def test_keep_alive_idles_until_its_own_timeout_but_a_slow_next_head_is_cut(
    tmp_path: Path,
) -> None:
    request = b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n"
    with web_process(tmp_path, no_database_env()) as server:
        idle, trickle = connect(server.port), connect(server.port)
        for sock in (idle, trickle):
            sock.sendall(request)
        time.sleep(0.3)
        for sock in (idle, trickle):
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        trickle_closed_at = idle_closed_at = None
        while idle_closed_at is None and time.monotonic() < started + KEEPALIVE_TIMEOUT + MARGIN:
            if trickle_closed_at is None:
                if is_closed(trickle):
                    trickle_closed_at = time.monotonic() - started
                else:
                    trickle.send(b"G")
            if is_closed(idle):
                idle_closed_at = time.monotonic() - started
            time.sleep(0.1)
        idle.close()
        trickle.close()
    assert trickle_closed_at is not None and trickle_closed_at < HEADER_TIMEOUT + MARGIN
    # an idle kept-alive socket is not a slow head: it lives until the keep-alive timeout
    assert idle_closed_at is not None and idle_closed_at > HEADER_TIMEOUT + MARGIN


@pytest.mark.parametrize(
    "chunks",
    [
        [b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\nGET /livez HTTP/1.1\r\nHo"],
        [b"GET /livez HTTP/1.1\r\nHost: x\r\n\r", b"\nGET /li"],  # the blank line split
    ],
    ids=["one-packet", "split-blank-line"],
)
def test_a_partial_head_after_a_complete_request_gets_the_head_timeout(
    tmp_path: Path, chunks: list[bytes]
) -> None:
    """Issue 20, item 14: the bytes of the next head came in the same packet as the complete
    first request, so no later byte ever started the head timer: the socket stayed for the
    keep-alive timeout."""
    with web_process(tmp_path, no_database_env()) as server:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        for chunk in chunks:
            sock.sendall(chunk)
            time.sleep(0.2)
        started = time.monotonic()
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")  # the first request is answered
        sock.setblocking(False)
        closed_at = None
        while closed_at is None and time.monotonic() < started + KEEPALIVE_TIMEOUT + MARGIN:
            if is_closed(sock):
                closed_at = time.monotonic() - started
            time.sleep(0.05)
        sock.close()
    assert closed_at is not None and closed_at < HEADER_TIMEOUT + MARGIN, closed_at


def test_a_body_in_pieces_is_not_a_slow_head(tmp_path: Path) -> None:
    """The other side of the rule: bytes that complete no head but belong to the body of the
    request before them never start the head timer; the socket then idles to keep-alive."""
    with web_process(tmp_path, no_database_env()) as server:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        sock.sendall(b"POST /livez HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab")
        time.sleep(0.2)
        sock.sendall(b"cde")
        started = time.monotonic()
        assert sock.recv(4096).startswith(b"HTTP/1.1 405")
        sock.settimeout(KEEPALIVE_TIMEOUT + MARGIN)
        assert sock.recv(4096) == b""  # closed by the server ...
        closed_at = time.monotonic() - started
        sock.close()
    assert closed_at > HEADER_TIMEOUT + MARGIN, closed_at  # ... at keep-alive, not head, time


def raw_exchange(port: int, payload: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def assert_hardened_headers(headers: dict[str, str]) -> None:
    assert headers["server"] == "defeah-db"  # no "Python/3.x aiohttp/3.x"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-store"


def wait_for_line(server: WebProcess, needle: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while needle not in server.output():
        assert time.monotonic() < deadline, f"{needle!r} never logged"
        time.sleep(0.05)


def test_malformed_requests_get_a_short_problem_and_a_rate_limited_warning(
    tmp_path: Path,
) -> None:
    secret = "s3cret-in-request"
    bad = [
        f"GET /{secret}\x00nul HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
        f"NOT A REQUEST LINE {secret} {'x' * 4000}\r\n\r\n".encode(),
    ]
    with web_process(tmp_path, no_database_env()) as server:
        for i in range(50):
            status, headers, body = raw_exchange(server.port, bad[i % 2])
            assert status == 400
            assert secret.encode() not in body and len(body) < 300, body
            assert headers["content-type"].startswith("application/problem+json")
            assert json.loads(body)["status"] == 400
            assert_hardened_headers(headers)
        for path, expected in (("/livez", 200), ("/missing", 404), ("/api/v1/health", 200)):
            status, headers, _ = raw_exchange(
                server.port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
            )
            assert status == expected
            assert_hardened_headers(headers)
        status, headers, _ = raw_exchange(
            server.port, b"DELETE /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert status == 405
        assert_hardened_headers(headers)
        for path in ("/livez", "/missing"):  # aiohttp answers an Expect before routing on
            head = f"GET {path} HTTP/1.1\r\nHost: x\r\nExpect: x\r\nConnection: close\r\n\r\n"
            status, headers, body = raw_exchange(server.port, head.encode())
            assert status == 417
            assert headers["content-type"].startswith("application/problem+json")
            assert json.loads(body)["status"] == 417
            assert_hardened_headers(headers)
        wait_for_line(server, "rejected a malformed request")
        assert server.stop() == 0
    output = server.output()
    rejected = [line for line in output.splitlines() if "rejected a malformed request" in line]
    assert 1 <= len(rejected) <= 2, rejected  # 50 bad requests, rate-limited
    assert all(" WARNING " in line for line in rejected)
    assert " ERROR " not in output and "Traceback" not in output
    assert secret not in output


@contextmanager
def server_with_stalled_stderr(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """stdout and stderr are pipes nobody reads: after ~64 KB every write to them blocks."""
    port = int(env["DEFEAH_PORT"])
    command = [sys.executable, "-m", "web"]
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "server exited early"
            try:
                livez_ms(port)
                break
            except OSError:
                assert time.monotonic() < deadline, "server never answered"
                time.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()


def test_stalled_stderr_neither_freezes_the_service_nor_blocks_shutdown() -> None:
    port = free_port()
    with server_with_stalled_stderr(no_database_env(DEFEAH_PORT=str(port))) as proc:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        slowest = 0.0
        try:
            for _ in range(2000):  # ~300 KB of access lines: far past a 64 KB pipe
                started = time.perf_counter()
                conn.request("GET", "/livez", headers={"User-Agent": "x" * 150})
                response = conn.getresponse()
                response.read()
                assert response.status == 200
                slowest = max(slowest, time.perf_counter() - started)
        finally:
            conn.close()
        assert slowest < 1.0, slowest
        assert livez_ms(port) < 1000
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert time.monotonic() - started < 10


@pytest.fixture
def stalled_pipe() -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    yield read_end, write_end
    os.close(read_end)
    os.close(write_end)


def test_a_full_sink_drops_and_counts_without_blocking(stalled_pipe: tuple[int, int]) -> None:
    read_end, write_end = stalled_pipe
    sink = LineSink(write_end, capacity=100)
    access = AccessLog(sink)
    logger = access.logger_class()(logging.getLogger("test.access"), "")
    request, response = make_mocked_request("GET", "/livez"), web.Response(body=b"ok")
    line = "x" * 1000 + "\n"
    started = time.monotonic()
    accepted = sum(sink.put(line) for _ in range(1000))  # ~1 MB into a 64 KB pipe
    for _ in range(50):
        logger.log(request, response, 0.001)
    assert time.monotonic() - started < 1.0  # never waited for the stalled reader
    assert accepted < 1000
    assert access.dropped == 50
    assert sink.dropped == 1000 - accepted + 50
    assert not sink.flush(timeout=0.2)  # bounded, and says the output is stuck

    reader = threading.Thread(target=drain, args=(read_end, 10.0, (received := [])))
    reader.start()
    assert sink.flush(timeout=10)  # space returned: the queue drains, the drops are reported
    reader.join(15)
    text = b"".join(received).decode()
    reported = [int(n) for n in re.findall(r"WARNING web\.log: (\d+) log lines dropped", text)]
    assert sum(reported) == sink.dropped


def drain(fd: int, seconds: float, into: list[bytes]) -> None:
    """Read ``fd`` until it stays quiet for a moment (or ``seconds`` pass)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        readable, _, _ = select.select([fd], [], [], 0.5)
        if not readable:
            return
        into.append(os.read(fd, 65536))


@pytest.mark.parametrize("name", ["DEFEAH_HTTP_HEADER_TIMEOUT", "DEFEAH_HTTP_KEEPALIVE_TIMEOUT"])
def test_connection_timeouts_are_positive(name: str) -> None:
    """0 would mean "no timer" to aiohttp: idle sockets held forever, the bug this prevents."""
    with pytest.raises(ConfigError, match=f"{name}: must be between"):
        Settings.from_env({name: "0"})
    assert Settings.from_env({}).http_header_timeout == 10.0
    assert Settings.from_env({}).http_keepalive_timeout == 75.0


@pytest.mark.parametrize(
    "text", ["/api/v1/health", 'a"b', "back\\slash", "tab\there", "caf\u00e9", "\u2028", ""]
)
def test_quoted_is_the_json_string(text: str) -> None:
    assert json.loads(quoted(text)) == text
    assert "\n" not in quoted(text) and "\u2028" not in quoted(text)


def test_queued_lines_are_written_without_a_flush() -> None:
    read_end, write_end = os.pipe()
    try:
        sink = LineSink(write_end)
        sink.put("one line\n")
        received: list[bytes] = []
        reader = threading.Thread(target=drain, args=(read_end, 2.0, received))
        reader.start()
        reader.join(5)
        assert b"".join(received) == b"one line\n"
    finally:
        os.close(read_end)
        os.close(write_end)


def test_access_lines_are_json_and_the_string_cache_stays_bounded() -> None:
    """The access logger caches the JSON form of the paths, addresses and agents it sees: a
    client sending endless distinct paths must not grow it past its limit, and a hostile path
    (quotes, control characters) is escaped and never cached."""
    access_log._QUOTED.clear()  # start from an empty cache, whatever ran before
    access_log._QUOTED[None] = "null"
    read_end, write_end = os.pipe()
    received: list[bytes] = []
    reader = threading.Thread(target=drain, args=(read_end, 30.0, received))
    try:
        sink = LineSink(write_end)
        logger = AccessLog(sink).logger_class()(logging.getLogger("test.access"), "")
        response = web.Response(body=b"ok")
        paths = [f"/x{n}" for n in range(access_log.QUOTED_LIMIT + 500)]
        for path in ["/q%22%0A%00", "/q%22%0A%00", *paths]:
            request = make_mocked_request("GET", path, headers={"User-Agent": 'ua "1"'})
            logger.log(request, response, 0.0012)
            assert '/q"\n\x00' not in access_log._QUOTED
            assert len(access_log._QUOTED) <= access_log.QUOTED_LIMIT
        assert "/x0" not in access_log._QUOTED and paths[-1] in access_log._QUOTED  # restarted
        reader.start()  # the sink's thread waits on the full pipe meanwhile, the loop never
        assert sink.flush(timeout=10)
        reader.join(35)
    finally:
        os.close(read_end)
        os.close(write_end)
    lines = b"".join(received).decode().splitlines()
    entries = [json.loads(line.split(" INFO web.access: ", 1)[1]) for line in lines]
    assert [entry["path"] for entry in entries] == ['/q"\n\x00', '/q"\n\x00', *paths]
    assert {entry["agent"] for entry in entries} == {'ua "1"'}
    assert entries[0]["ms"] == 1.2 and entries[0]["method"] == "GET"
