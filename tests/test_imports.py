"""Importing every module of the packages, sub-packages included (the benchmarks too: nothing
else imports them), and building objects opens no connection and starts no server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

CODE = """
import dal, dal.db.settings, dal.db.database, dal.migrations.runner, dal.db.embedded
import cli, cli.main
import web
import bench
import importlib, pkgutil
for package in (dal, web, cli, bench):
    for mod in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if not mod.name.endswith(".__main__"):
            importlib.import_module(mod.name)
db = dal.Database.from_env()
print(repr(db))
"""


def test_import_and_construction_open_nothing(tmp_path: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    accepted: list[object] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(conn)

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        env = {
            **os.environ,
            "DATABASE_URL": f"postgresql://u:pw-secret@127.0.0.1:{port}/db",
            "DEFEAH_DATA_DIR": str(tmp_path / "pgdata"),
        }
        out = subprocess.run(
            [sys.executable, "-c", CODE], env=env, capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        assert "pw-secret" not in out.stdout
        env.pop("DATABASE_URL")
        out = subprocess.run(
            [sys.executable, "-c", CODE], env=env, capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
    finally:
        stop.set()
        thread.join()
        listener.close()
    assert accepted == []
    assert not (tmp_path / "pgdata").exists()  # the embedded server was not started either
