"""The installable wheel: built from the checkout, installed into a fresh virtualenv outside it,
it brings ``defeah-db`` with the migrations, seeds and queries it needs."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.commands import ROOT
from tests.pg import query


def _run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, ROOT, cwd=out)
    (built,) = out.glob("defeah_db-*.whl")
    return built


def test_the_wheel_carries_migrations_seeds_and_queries(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    migrations = {p.name for p in (ROOT / "sql").glob("*.sql")}
    assert {f"dal/shipped/sql/{m}" for m in migrations} <= names
    assert "dal/shipped/sql/schema.snapshot" in names
    assert {f"dal/shipped/seeds/{p.name}" for p in (ROOT / "seeds").glob("*.sql")} <= names
    assert {f"dal/queries/{p.name}" for p in (ROOT / "dal" / "queries").glob("*.sql")} <= names
    assert "dal/common-passwords.txt" in names  # NIST 800-63B 5.1.1.2 list (issue 20 item 8)
    assert not any(n.startswith(("tests/", "bench/", "sql/", "seeds/")) for n in names)


@pytest.mark.slow
def test_installed_outside_the_checkout_it_migrates_and_seeds(
    wheel: Path, empty_dsn: str, tmp_path: Path
) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    _run(python, "-m", "pip", "install", "-q", wheel, cwd=tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEFEAH_", "PYTHON"))}
    env.update(DATABASE_URL=empty_dsn, DEFEAH_BCRYPT_ROUNDS="4")
    work = tmp_path / "elsewhere"
    work.mkdir()
    out = _run(env_dir / "bin" / "defeah-db", "up", "--no-serve", cwd=work, env=env)
    assert "migrations:" in out and "0 pending" in out
    assert "seeds: 3 inserted" in out
    assert query(empty_dsn, "SELECT count(*) AS n FROM users") == [{"n": 3}]
    status = _run(env_dir / "bin" / "defeah-db", "status", cwd=work, env=env)
    assert "0 pending, 0 changed" in status
    # The common-password list is read from the installed package, not from the checkout.
    code = (
        "from dal.inputs import common_passwords, check_new_password\n"
        "assert len(common_passwords()) == 10_000\n"
        "try:\n    check_new_password('Password1')\nexcept ValueError as exc:\n    print(exc)\n"
    )
    refused = _run(python, "-c", code, cwd=work, env=env)
    assert "must not be a commonly used password" in refused
