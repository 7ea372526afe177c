"""Configuration: documented defaults, one-line errors naming the variable, no leaked secrets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dal.config import VARIABLES, Settings, describe_dsn, redact_dsn
from dal.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.database_url is None and s.embedded
    assert (s.pool_min_size, s.pool_max_size) == (5, 50)
    assert s.acquire_timeout == 5.0
    assert s.bcrypt_rounds == 12
    assert (s.lockout_threshold, s.lockout_window) == (5, 900.0)
    assert (s.lockout_ip_threshold, s.lockout_account_threshold) == (20, 50)
    assert (s.host, s.port) == ("127.0.0.1", 8080)
    assert s.data_dir == Path(".defeah/pgdata").resolve()


def test_every_variable_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [v.env for v in VARIABLES if f"`{v.env}`" not in readme]
    assert missing == []


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DEFEAH_POOL_MAX_SIZE": "lots"}, "DEFEAH_POOL_MAX_SIZE: expected an integer, got 'lots'"),
        ({"DEFEAH_POOL_MIN_SIZE": "-1"}, "DEFEAH_POOL_MIN_SIZE: must be between 0 and 1000"),
        (
            {"DEFEAH_POOL_MIN_SIZE": "20", "DEFEAH_POOL_MAX_SIZE": "10"},
            "DEFEAH_POOL_MIN_SIZE (20) must not exceed DEFEAH_POOL_MAX_SIZE (10)",
        ),
        ({"DEFEAH_POOL_ACQUIRE_TIMEOUT": "soon"}, "DEFEAH_POOL_ACQUIRE_TIMEOUT: expected a number"),
        ({"DEFEAH_STATEMENT_TIMEOUT": "-5"}, "DEFEAH_STATEMENT_TIMEOUT: must be between"),
        ({"DEFEAH_BCRYPT_ROUNDS": "3"}, "DEFEAH_BCRYPT_ROUNDS: must be between 4 and 31"),
        ({"DEFEAH_PGBOUNCER": "maybe"}, "DEFEAH_PGBOUNCER: expected true/false"),
        ({"DEFEAH_ENV": "prod"}, "DEFEAH_ENV: expected one of development"),
        ({"DATABASE_URL": "mysql://u@h/db"}, "DATABASE_URL: expected a postgresql://"),
        ({"DATABASE_URL": "postgresql://u@h:99999/db"}, "DATABASE_URL: not a valid URL"),
        ({"DATABASE_URL": "postgresql://u@h:5432"}, "DATABASE_URL: the URL names no database"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_cli_reports_bad_config_in_one_line() -> None:
    env = {**os.environ, "DEFEAH_POOL_MAX_SIZE": "x"}
    out = subprocess.run(
        [sys.executable, "-m", "dal", "status"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1
    assert out.stderr == "defeah-db: error: DEFEAH_POOL_MAX_SIZE: expected an integer, got 'x'\n"
    assert out.stdout == ""


def test_dsn_password_is_redacted_everywhere() -> None:
    dsn = "postgresql://app:hunter2-secret@db.internal:6432/defeah?sslmode=require"
    s = Settings.from_env({"DATABASE_URL": dsn, "DEFEAH_HEALTH_TOKEN": "tok-secret"})
    for text in (repr(s), str(s), redact_dsn(dsn), describe_dsn(dsn)):
        assert "hunter2-secret" not in text
        assert "tok-secret" not in text
    assert redact_dsn(dsn) == "postgresql://app:***@db.internal:6432/defeah?sslmode=require"
    assert describe_dsn(dsn) == "db.internal:6432/defeah"
    assert describe_dsn("postgresql://postgres:@/defeah?host=/srv/pg") == "/srv/pg/defeah"


def test_cli_connection_error_is_one_line_without_password() -> None:
    env = {**os.environ, "DATABASE_URL": "postgresql://postgres:hunter2@127.0.0.1:1/nope"}
    out = subprocess.run(
        [sys.executable, "-m", "dal", "status"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1
    assert out.stderr.startswith("defeah-db: error: cannot connect to postgresql://postgres:***@")
    assert out.stderr.count("\n") == 1
    assert "hunter2" not in out.stderr + out.stdout
    assert "Traceback" not in out.stderr
