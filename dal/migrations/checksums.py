"""Content hashes of migration files, recorded when applied and compared on every run.

yoyo keys ``_yoyo_migration`` by a hash of the migration *id*, so a file edited after it was
applied goes unnoticed and the database silently differs from the reviewed SQL.  We record a
SHA-256 of each applied file and of its rollback in our own table, ``defeah_migration_checksum``
(yoyo upgrades its own tables itself and would not carry extra columns), and refuse to migrate
when they differ.  Line endings are normalised first, so a CRLF checkout is not a change; every
other byte, comments included, counts, because a DBA reviewed exactly that text.

The statements run on yoyo's psycopg2 connection (autocommit), inside yoyo's lock.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dal.queries import load

MIGRATIONS_SQL = load("migrations")


@dataclass(frozen=True)
class FileHashes:
    migration_id: str
    sha256: str
    rollback_sha256: str


@dataclass(frozen=True)
class Mismatch:
    """An applied migration whose file (or rollback file) no longer matches what was applied."""

    file: str
    recorded: str
    current: str

    def line(self) -> str:
        return (
            f"{self.file} changed after it was applied: recorded sha256 {self.recorded}, "
            f"file sha256 {self.current}"
        )


def content_hash(path: Path) -> str:
    """SHA-256 of ``path`` with CRLF/CR line endings as LF; ``""`` when the file is absent."""
    if not path.is_file():
        return ""
    data = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return hashlib.sha256(data).hexdigest()


def rollback_path(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(".sql") + ".rollback.sql")


def file_hashes(migration_id: str, path: Path) -> FileHashes:
    return FileHashes(migration_id, content_hash(path), content_hash(rollback_path(path)))


def ensure_table(connection: Any) -> None:
    with connection.cursor() as cur:
        cur.execute(MIGRATIONS_SQL["create_checksum_table"].pyformat)


def table_exists(connection: Any) -> bool:
    with connection.cursor() as cur:
        cur.execute(MIGRATIONS_SQL["checksum_table_exists"].pyformat)
        return bool(cur.fetchone()[0])


def recorded(connection: Any) -> dict[str, FileHashes]:
    """Recorded hashes by migration id (empty before the first checksummed migrate)."""
    with connection.cursor() as cur:
        cur.execute(MIGRATIONS_SQL["checksum_table_exists"].pyformat)
        if not cur.fetchone()[0]:
            return {}
        cur.execute(MIGRATIONS_SQL["recorded_checksums"].pyformat)
        return {row[0]: FileHashes(*row) for row in cur.fetchall()}


def record(connection: Any, hashes: FileHashes) -> None:
    with connection.cursor() as cur:
        cur.execute(MIGRATIONS_SQL["record_checksum"].pyformat, hashes.__dict__)


def forget(connection: Any, migration_id: str) -> None:
    with connection.cursor() as cur:
        cur.execute(MIGRATIONS_SQL["forget_checksum"].pyformat, {"migration_id": migration_id})


def mismatches(path: Path, was: FileHashes, now: FileHashes) -> list[Mismatch]:
    found = []
    if was.sha256 != now.sha256:
        found.append(Mismatch(path.name, was.sha256, now.sha256))
    if was.rollback_sha256 != now.rollback_sha256:
        found.append(Mismatch(rollback_path(path).name, was.rollback_sha256, now.rollback_sha256))
    return found
