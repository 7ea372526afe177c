"""Issue 23 item 5, the proof: after erase-user, a pg_dump of the whole database (data, every
partition, the default one included) names the person nowhere -- not the email in any case,
the user id, the Instagram user id or username.  Then the same for a dump taken *before* the
erasure, restored, and cleaned with reapply-erasures and the receipts kept outside it."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from pathlib import Path

from dal import Database
from dal.db.embedded import bundled_psql
from tests.commands import run_cli
from tests.factories import make_settings
from tests.pg import PgServer
from tests.privacy_helpers import TEST_PEPPER, Person, make_person

ENV = {"DEFEAH_ERASURE_PEPPER": TEST_PEPPER}


def tool(name: str) -> str:
    """The machine's client for the configured server; the embedded server's own (same major
    version: an older pg_dump refuses a newer server) without DATABASE_URL."""
    if os.environ.get("DATABASE_URL"):
        return name
    return str(bundled_psql().with_name(name))


def dump(dsn: str, path: Path) -> str:
    subprocess.run(
        [tool("pg_dump"), "--no-owner", "--file", str(path), dsn], check=True, timeout=120
    )
    return path.read_text(encoding="utf-8")


def hits(text: str, person: Person) -> list[str]:
    needles = (
        person.email,
        str(person.user_id),
        person.instagram_user_id,
        person.instagram_username,
    )
    return [n for n in needles if re.search(re.escape(n), text, re.IGNORECASE)]


async def people(dsn: str) -> tuple[Person, Person]:
    async with Database(make_settings(dsn, erasure_pepper=TEST_PEPPER)) as db:
        return await make_person(db, "Dump"), await make_person(db, "Stays")


def test_no_trace_in_a_dump_after_erasure_nor_in_a_restored_older_one(
    pg: PgServer, fresh_dsn: str, tmp_path: Path
) -> None:
    erin, other = asyncio.run(people(fresh_dsn))
    exported = run_cli(fresh_dsn, "export-user", erin.email, "-o", str(tmp_path / "x.json"), **ENV)
    assert exported.returncode == 0, exported.stderr

    before = dump(fresh_dsn, tmp_path / "before.sql")
    assert len(hits(before, erin)) == 4  # the grep finds each of them when they are there

    erased = run_cli(fresh_dsn, "erase-user", erin.email.upper(), **ENV)
    assert erased.returncode == 0, erased.stderr
    after = dump(fresh_dsn, tmp_path / "after.sql")
    assert hits(after, erin) == []
    assert len(hits(after, other)) == 4  # the dump is a real one, with the others' data

    # The backup taken before the erasure, restored, and the receipts kept outside it.
    receipts = tmp_path / "receipts.jsonl"
    kept = run_cli(fresh_dsn, "erasure-receipts", "-o", str(receipts), **ENV)
    assert kept.returncode == 0 and TEST_PEPPER not in receipts.read_text()
    assert hits(receipts.read_text(), erin) == []
    restored_name = pg.create_database("defeah_restored")
    restored = pg.dsn(restored_name)
    try:
        subprocess.run(
            [
                tool("psql"),
                "--quiet",
                "--set",
                "ON_ERROR_STOP=1",
                "--file",
                str(tmp_path / "before.sql"),
                restored,
            ],
            check=True,
            timeout=120,
            capture_output=True,
        )
        assert len(hits(dump(restored, tmp_path / "restored.sql"), erin)) == 4
        again = run_cli(restored, "reapply-erasures", "--receipts", str(receipts), **ENV)
        assert again.returncode == 0, again.stderr
        assert again.stdout.startswith("1 receipt(s): erased again 1 user(s)")
        cleaned = dump(restored, tmp_path / "cleaned.sql")
        assert hits(cleaned, erin) == []
        assert len(hits(cleaned, other)) == 4
        # The restored database keeps the receipt, so its own next restore is cleaned too.
        twice = run_cli(restored, "reapply-erasures", **ENV)
        assert twice.stdout.startswith("1 receipt(s): erased again 0 user(s)")
    finally:
        pg.drop_database(restored_name)
