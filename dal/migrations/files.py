"""The migration files on disk: where they are and what their ids may look like.

An id ends up in the comments of a dry run's plan (``psql -f`` reads it), so an id outside
``NNNN_lowercase_words`` -- a newline would turn the comment into a psql meta-command -- is
refused before anything reads the folder's contents.
"""

from __future__ import annotations

import re
from pathlib import Path

from dal.db.paths import data_folder
from dal.errors import MigrationError

SQL_DIR = data_folder("sql")
MIGRATION_ID = re.compile(r"[0-9]{4}_[a-z0-9_]+")


def file_ids(sources: Path = SQL_DIR) -> tuple[str, ...]:
    """Ids of the migration files in ``sources`` in name order, without importing yoyo; an id
    outside ``NNNN_lowercase_words`` is refused (it ends up in SQL comments of dry runs)."""
    if not sources.is_dir():
        raise MigrationError(f"migrations folder not found: {sources}")
    ids = sorted(p.name.removesuffix(".sql") for p in sources.glob("*.sql"))
    ids = [i for i in ids if not i.endswith(".rollback")]
    for migration_id in ids:
        if MIGRATION_ID.fullmatch(migration_id) is None:
            raise MigrationError(
                f"refusing migration file {migration_id!r}.sql in {sources}: migration ids are "
                "NNNN_lowercase_words (digits, a-z and _ only)"
            )
    return tuple(ids)
