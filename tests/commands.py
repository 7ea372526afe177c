"""Running the ``defeah-db`` command line as a user would: a subprocess with its own env."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# A fixed, public key ring for the tests that run as staging/production (which require one).
TEST_TOKEN_KEYS = "test:" + "dGVzdC1vbmx5LWtleS1ub3QtYS1zZWNyZXQtMzJieXQ="


def cli_env(dsn: str, **env: str) -> dict[str, str]:
    """This environment minus DEFEAH_* settings, pointed at ``dsn``, bcrypt at test cost,
    the test key ring (``env`` may replace any of them)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DEFEAH_")}
    environ.update(DATABASE_URL=dsn, DEFEAH_BCRYPT_ROUNDS="4", DEFEAH_TOKEN_KEYS=TEST_TOKEN_KEYS)
    environ.update(env)
    return environ


def run_cli(dsn: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=cli_env(dsn, **env),
        check=False,
    )
