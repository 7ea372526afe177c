"""The HTTP server as a real process on a real port: restarts of its database, signals, secrets.

Tests that stop a database use a server of their own (an embedded PostgreSQL in a temporary
folder), never the shared test server.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from dal.db.dsn import describe_dsn
from dal.db.embedded import EmbeddedServer
from dal.migrations import runner as migrations
from tests.pg import with_password
from tests.test_web_routes import free_port

ROOT = Path(__file__).resolve().parent.parent
HEALTH_TIMEOUT = 1.0
BOUND = HEALTH_TIMEOUT + 1.5  # a failing check must answer within its timeout (plus slack)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    elapsed: float

    def json(self) -> dict[str, object]:
        return dict(json.loads(self.body))

    def text(self) -> str:
        return json.dumps(self.headers) + self.body.decode()


@dataclass
class WebProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    replies: list[Reply]

    def request(
        self, path: str, method: str = "GET", headers: dict[str, str] | None = None
    ) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        started = time.perf_counter()
        try:
            conn.request(method, path, headers=headers or {})
            resp = conn.getresponse()
            reply = Reply(resp.status, dict(resp.getheaders()), resp.read(), 0.0)
        finally:
            conn.close()
        reply.elapsed = time.perf_counter() - started
        self.replies.append(reply)
        return reply

    def output(self) -> str:
        return self.log.read_text()

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.proc.send_signal(signum)
        return self.proc.wait(timeout=30)


@contextmanager
def web_process(
    tmp_path: Path,
    env: dict[str, str],
    *args: str,
    module: str = "web",
    preexec_fn: Callable[[], object] | None = None,
) -> Iterator[WebProcess]:
    port = free_port()
    log = tmp_path / f"web-{port}.log"
    command = [sys.executable, "-m", module, *args, "--port", str(port)]
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            preexec_fn=preexec_fn,  # e.g. a lowered file limit (tests/test_connection_limits.py)
        )
    server = WebProcess(proc, port, log, [])
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, f"server exited early:\n{server.output()}"
            try:
                if server.request("/api/v1/health").status == 200:
                    break
            except OSError:
                pass  # not listening yet
            assert time.monotonic() < deadline, f"server never answered:\n{server.output()}"
            time.sleep(0.1)
        yield server
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEFEAH_", "DATABASE_"))}
    env.update(
        DEFEAH_HEALTH_TIMEOUT=str(HEALTH_TIMEOUT),
        DEFEAH_CONNECT_TIMEOUT="1",
        DEFEAH_POOL_MIN_SIZE="1",
        DEFEAH_POOL_MAX_SIZE="4",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def assert_no_secret(server: WebProcess, *secret_values: str) -> None:
    seen = [r.text() for r in server.replies] + [server.output()]
    for value in secret_values:
        for text in seen:
            assert value not in text


def assert_access_lines_are_json(output: str) -> int:
    lines = [line for line in output.splitlines() if " web.access: " in line]
    for line in lines:
        entry = json.loads(line.split(" web.access: ", 1)[1])
        assert {"method", "path", "status", "ms"} <= set(entry)
    return len(lines)


def postmaster_pid(data_dir: Path) -> int | None:
    pid_file = data_dir / "postmaster.pid"
    return int(pid_file.read_text().split()[0]) if pid_file.exists() else None


def wait_for(predicate: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


@pytest.mark.slow
def test_serves_through_a_database_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "pgdata"
    own = EmbeddedServer(data_dir, "defeah_web")
    dsn = own.start()
    try:
        migrations.apply(dsn)
        password, token = f"pw-{secrets.token_hex(8)}", f"tok-{secrets.token_hex(12)}"
        env = base_env(DATABASE_URL=with_password(dsn, password), DEFEAH_HEALTH_TOKEN=token)
        auth = {"Authorization": f"Bearer {token}"}
        with web_process(tmp_path, env) as server:
            pid = server.proc.pid
            assert server.request("/api/v1/health").status == 200
            assert server.request("/api/v1/health/database").status == 200
            full = server.request("/api/v1/health/detailed", headers=auth)
            assert full.status == 200 and full.json()["status"] == "pass"
            assert server.request("/api/v1/health/detailed").status == 401

            own.stop()
            assert postmaster_pid(data_dir) is None
            live = server.request("/api/v1/health")
            assert live.status == 200 and live.json()["status"] == "pass"
            for path in ("/api/v1/health/database", "/readyz", "/api/v1/health/detailed"):
                reply = server.request(path, headers=auth)
                assert reply.status == 503, (path, reply.body)
                assert reply.json()["status"] == "fail"
                assert reply.elapsed < BOUND, (path, reply.elapsed)
            assert server.request("/api/v1/health/detailed").status == 401

            own = EmbeddedServer(data_dir, "defeah_web")
            assert own.start() == dsn  # same socket, same DSN: the app's settings still hold
            wait_for(lambda: server.request("/api/v1/health/database").status == 200)
            assert server.request("/api/v1/health/detailed", headers=auth).status == 200
            assert server.proc.pid == pid and server.proc.poll() is None  # never restarted

            assert server.stop(signal.SIGTERM) == 0
        output = server.output()
        assert "serving http://127.0.0.1:" in output and describe_dsn(dsn) in output
        assert output.rstrip().endswith("web: stopped"), output[-500:]
        assert "Traceback" not in output
        assert assert_access_lines_are_json(output) >= 10
        assert_no_secret(server, password, token)
    finally:
        own.stop()


def test_no_secret_in_responses_or_logs(tmp_path: Path, fresh_dsn: str) -> None:
    """On the session's server: TCP with DATABASE_URL set, its unix socket otherwise."""
    password, token = f"pw-{secrets.token_hex(8)}", f"tok-{secrets.token_hex(12)}"
    secret_dsn = with_password(fresh_dsn, password)
    env = base_env(DATABASE_URL=secret_dsn, DEFEAH_HEALTH_TOKEN=token)
    auth = {"Authorization": f"Bearer {token}"}
    with web_process(tmp_path, env) as server:
        for path in ("/api/v1/health", "/api/v1/health/database", "/livez", "/readyz"):
            assert server.request(path).status == 200
            assert server.request(path, "HEAD").status == 200
        assert server.request("/api/v1/health/detailed", headers=auth).status == 200
        for headers in ({}, {"Authorization": "Bearer x"}):
            assert server.request("/api/v1/health/detailed", headers=headers).status == 401
        assert server.request("/missing?token=" + token).status == 404
        assert server.request("/api/v1/health", "DELETE").status == 405
        assert server.stop(signal.SIGINT) == 0
    assert_no_secret(server, password, token)
    assert describe_dsn(fresh_dsn) in server.output()


@pytest.mark.slow
def _schema_checked(document: object) -> bool:
    return isinstance(document, dict) and "postgresql:schema" in document.get("checks", {})


def test_serve_with_embedded_server_leaves_no_postgres_behind(tmp_path: Path) -> None:
    data_dir = tmp_path / "dev-pgdata"
    env = base_env(DEFEAH_DATA_DIR=str(data_dir), DEFEAH_EMBEDDED_DB="defeah_webtest")
    with web_process(tmp_path, env) as server:
        # Not migrated (serve never migrates), so readiness is 503 "behind" once the database
        # answers: the schema check appears only after a successful round trip.
        wait_for(lambda: _schema_checked(server.request("/readyz").json()), timeout=60)
        pid = postmaster_pid(data_dir)
        assert pid is not None and psutil.pid_exists(pid)
        assert server.stop(signal.SIGTERM) == 0
    wait_for(lambda: not psutil.pid_exists(pid), timeout=10)
    assert postmaster_pid(data_dir) is None


def test_up_migrates_and_serves_until_ctrl_c(tmp_path: Path, empty_dsn: str) -> None:
    env = base_env(DATABASE_URL=empty_dsn)
    with web_process(tmp_path, env, "up", module="cli") as server:
        detailed = server.request("/api/v1/health/detailed")
        assert detailed.status == 200, detailed.body
        schema = detailed.json()["checks"]["postgresql:migrations"][0]  # type: ignore[index]
        assert schema["status"] == "pass" and schema["observedValue"]["pending"] == []
        assert server.stop(signal.SIGINT) == 0
    assert migrations.status(empty_dsn).pending == ()
    assert "migrations:" in server.output() and "web: stopped" in server.output()


def test_hung_database_neither_blocks_probes_nor_shutdown(tmp_path: Path) -> None:
    """A listener that never accepts: connections open at TCP level, then nothing answers."""
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(64)
        port = hung.getsockname()[1]
        env = base_env(DATABASE_URL=f"postgresql://postgres:pw-hung@127.0.0.1:{port}/hung")
        with web_process(tmp_path, env) as server:
            for path in ("/api/v1/health/database", "/api/v1/health/detailed"):
                reply = server.request(path)
                assert reply.status == 503 and reply.elapsed < BOUND, (path, reply.elapsed)
            assert server.request("/api/v1/health").status == 200
            # connection attempts still pending are cancelled: exit is not stuck
            assert server.stop(signal.SIGTERM) == 0
    assert "web: stopped" in server.output()


@contextmanager
def frozen(postmaster: int) -> Iterator[None]:
    """The whole server (postmaster and every backend) SIGSTOPped: a hung database."""
    procs = [psutil.Process(postmaster), *psutil.Process(postmaster).children(recursive=True)]
    for proc in procs:
        proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        for proc in procs:
            if proc.is_running():
                proc.send_signal(signal.SIGCONT)


@pytest.mark.slow
def test_stopped_database_keeps_health_and_shutdown_within_budget(tmp_path: Path) -> None:
    """A SIGSTOPped server answers nothing and closes nothing: probes still answer within the
    health timeout (the connection cut off is discarded, not reset), no task error is left
    unretrieved, and SIGTERM exits within DEFEAH_SHUTDOWN_TIMEOUT (the pool is terminated)."""
    data_dir = tmp_path / "pgdata"
    own = EmbeddedServer(data_dir, "defeah_stop")
    dsn = own.start()
    shutdown_timeout = 3.0
    try:
        migrations.apply(dsn)
        env = base_env(
            DATABASE_URL=dsn,
            DEFEAH_SHUTDOWN_TIMEOUT=str(shutdown_timeout),
            # idle connections left when SIGTERM comes: closing them needs the server's answer
            DEFEAH_POOL_MIN_SIZE="8",
            DEFEAH_POOL_MAX_SIZE="8",
        )
        with web_process(tmp_path, env) as server:
            assert server.request("/readyz").status == 200
            assert server.request("/api/v1/health/detailed").status == 200
            pid = postmaster_pid(data_dir)
            assert pid is not None
            with frozen(pid):
                for path in ("/readyz", "/api/v1/health/detailed", "/readyz"):
                    reply = server.request(path)
                    assert reply.status == 503, (path, reply.body)
                    assert reply.elapsed < HEALTH_TIMEOUT + 0.5, (path, reply.elapsed)
                assert server.request("/livez").status == 200
                started = time.monotonic()
                server.proc.send_signal(signal.SIGTERM)
                assert server.proc.wait(timeout=shutdown_timeout + 10) == 0
                assert time.monotonic() - started < shutdown_timeout + 2
        output = server.output()
        assert "never retrieved" not in output, output
        assert "web: stopped" in output
    finally:
        own.stop()
