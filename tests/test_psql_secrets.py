"""Issue 20 item 5: ``defeah-db psql`` keeps the DSN's secrets out of psql's command line,
which every local user can read; they travel in psql's environment (0400 in /proc)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.commands import ROOT, cli_env
from tests.pg import with_password

PASSWORD = "pw-Secret-7f3a"
PASSPHRASE = "key-Passphrase-91c2"


def _children(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (psql may be a wrapper that execs the real one)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            kids = (task / "children").read_text().split() if (task / "children").exists() else []
            found += [int(k) for k in kids]
            todo += [int(k) for k in kids]
    return found


def _psql_process(cli: subprocess.Popen[str], deadline: float) -> tuple[bytes, dict[str, str]]:
    """The command line and environment of the ``psql`` the CLI started, read from /proc."""
    until = time.monotonic() + deadline
    while time.monotonic() < until and cli.poll() is None:
        for pid in _children(cli.pid):
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() != "psql":
                    continue
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                raw = Path(f"/proc/{pid}/environ").read_bytes()
            except (FileNotFoundError, ProcessLookupError):
                continue  # exec'd or gone between the reads
            env = dict(e.split("=", 1) for e in raw.decode().split("\0") if "=" in e)
            return cmdline, env
        time.sleep(0.01)
    raise AssertionError("no psql child seen")


@pytest.mark.parametrize(
    ("how", "query_string"),
    [
        ("userinfo", ""),
        ("parameter", f"?password={PASSWORD}"),
        ("percent-encoded", "?password=" + PASSWORD.replace("-", "%2D")),
        ("with sslpassword", f"?sslpassword={PASSPHRASE}"),
    ],
)
def test_psql_gets_the_password_in_its_environment_never_in_argv(
    fresh_dsn: str, how: str, query_string: str
) -> None:
    dsn = with_password(fresh_dsn, PASSWORD) if how != "parameter" else fresh_dsn
    if query_string:  # the embedded server's DSN already has a query (?host=)
        dsn += ("&" if "?" in dsn else "?") + query_string.removeprefix("?")
    cli = subprocess.Popen(
        [sys.executable, "-m", "cli", "psql", "-At", "-c", "SELECT 'ok', pg_sleep(1.5)"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=cli_env(dsn),
    )
    try:
        cmdline, env = _psql_process(cli, deadline=60)
        service_file = env.get("PGSERVICEFILE")
        service_mode = os.stat(service_file).st_mode if service_file else None
        folder_mode = os.stat(Path(service_file).parent).st_mode if service_file else None
        out, err = cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == 0, err
    assert out.startswith("ok|"), out
    assert PASSWORD.encode() not in cmdline and b"%2D" not in cmdline, cmdline
    assert PASSPHRASE.encode() not in cmdline, cmdline
    assert b"password" not in cmdline, cmdline
    assert env["PGPASSWORD"] == PASSWORD
    if "sslpassword" in query_string:
        assert service_file is not None and service_mode is not None and folder_mode is not None
        assert stat.S_IMODE(service_mode) == 0o600
        assert stat.S_IMODE(folder_mode) == 0o700
        assert not Path(service_file).exists()  # removed once psql exited
        assert b"service=defeah-db" in cmdline
    else:
        assert service_file is None
