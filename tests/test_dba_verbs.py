"""Least privilege: on production the DBA's verbs run with database credentials alone; the
verbs that read or write Instagram tokens refuse to start without the key ring, naming the
verb and the variable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.commands import ROOT, cli_env

SECRETS = ("DEFEAH_TOKEN_KEYS", "DEFEAH_HEALTH_TOKEN", "DEFEAH_METRICS_TOKEN")


def run_bare(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``defeah-db ARGS`` on production with no application secret in the environment."""
    env = {k: v for k, v in cli_env(dsn, DEFEAH_ENV="production").items() if k not in SECRETS}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
        check=False,
    )


# verb -> the exit code a healthy, migrated production database gives it (2: the production
# guard refused a destructive verb, which is the point of the guard, not a missing secret).
DBA_VERBS = {
    ("migrate",): 0,
    ("migrate", "--dry-run"): 0,
    ("status",): 0,
    ("drift",): 0,
    ("rollback", "--dry-run"): 0,
    ("rollback",): 2,
    ("accept-checksum", "0001_users"): 2,
    ("createdb",): 0,
    ("rehearse", "--rows", "1000"): 0,
    ("dsn",): 0,
    ("psql", "-c", "SELECT 1"): 0,
    ("maintain-events",): 0,
    ("prune-events", "--older-than", "90d"): 2,
    ("unlock", "ada@example.com"): 2,
}


@pytest.mark.parametrize("verb", sorted(DBA_VERBS), ids=" ".join)
def test_a_dba_verb_needs_no_application_secret(fresh_dsn: str, verb: tuple[str, ...]) -> None:
    done = run_bare(fresh_dsn, *verb)
    assert done.returncode == DBA_VERBS[verb], done.stderr
    assert "DEFEAH_TOKEN_KEYS" not in done.stderr


@pytest.mark.parametrize(
    "verb", [("up", "--no-serve"), ("serve",), ("refresh-tokens", "--once"), ("reencrypt",)]
)
def test_a_verb_that_uses_tokens_refuses_without_the_key_ring(
    fresh_dsn: str, verb: tuple[str, ...]
) -> None:
    done = run_bare(fresh_dsn, *verb)
    assert done.returncode == 1
    assert done.stderr == (
        f"defeah-db: error: defeah-db {verb[0]} needs DEFEAH_TOKEN_KEYS on DEFEAH_ENV=production "
        "(id:base64key,..., 32-byte AES keys; the first encrypts)\n"
    )


def test_python_m_web_refuses_without_the_key_ring(fresh_dsn: str) -> None:
    env = {k: v for k, v in cli_env(fresh_dsn, DEFEAH_ENV="production").items()}
    env.pop("DEFEAH_TOKEN_KEYS")
    done = subprocess.run(
        [sys.executable, "-m", "web"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert done.returncode == 1
    assert "web: error: python -m web needs DEFEAH_TOKEN_KEYS on DEFEAH_ENV=production" in (
        done.stderr
    )
