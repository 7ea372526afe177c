"""squawk, the migration linter, guards sql/: an unsafe lock in a new migration fails the tests.

``./dev test`` runs squawk on sql/ before pytest; these tests pin the configuration it uses, so a
change to .squawk.toml that silences the lock rules fails here too.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SQUAWK = Path(sys.executable).parent / "squawk"


def squawk(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(SQUAWK),
            "--config",
            str(ROOT / ".squawk.toml"),
            "--reporter",
            "gcc",
            *map(str, paths),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_shipped_migrations_pass_squawk() -> None:
    result = squawk(*sorted((ROOT / "sql").glob("*.sql")))
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_unsafe_new_migration_fails_squawk(tmp_path: Path) -> None:
    for f in (ROOT / "sql").glob("*.sql"):
        shutil.copy(f, tmp_path / f.name)
    unsafe = tmp_path / "9999_unsafe.sql"
    unsafe.write_text(
        "-- depends: 0006_users_token_expiry_index_concurrently\n"
        "CREATE INDEX users_full_name_idx ON users (full_name);\n"
        "ALTER TABLE users ALTER COLUMN full_name TYPE text;\n"
    )
    result = squawk(*sorted(tmp_path.glob("*.sql")))
    assert result.returncode != 0
    # gcc reporter lines are 0-based: line 1 is the CREATE INDEX, line 2 the ALTER
    assert "9999_unsafe.sql:1:0: warning: require-concurrent-index-creation" in result.stdout
    assert "9999_unsafe.sql:2:41: warning: changing-column-type" in result.stdout
    assert "0001_users.sql" not in result.stdout  # the shipped files' ignores still hold


def test_an_ignore_without_the_rule_name_does_not_silence_other_rules(tmp_path: Path) -> None:
    migration = tmp_path / "9999_ignored_wrong_rule.sql"
    migration.write_text(
        "-- squawk-ignore ban-drop-table\nCREATE INDEX users_full_name_idx ON users (full_name);\n"
    )
    assert squawk(migration).returncode != 0
