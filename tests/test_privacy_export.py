"""Issue 23 item 2: export-user writes one versioned JSON document (schema in docs/security.md)
with the profile but no hash, the Instagram connection but no token, every kept event of the
id or email and the email's erasure receipts; it streams, so 100,000 events take bounded
memory."""

from __future__ import annotations

import io
import json
import os
import stat
import tracemalloc
from pathlib import Path

from dal import Database, NewUser
from dal.db.settings import Settings
from dal.users.repository import UsersRepository
from tests.commands import run_cli
from tests.factories import stored_column, stored_hash
from tests.pg import query
from tests.privacy_helpers import INSTAGRAM_TOKEN, TEST_PEPPER, make_person

TOP_LEVEL = [
    "version",
    "exported_at",
    "profile",
    "instagram",
    "erasure_receipts",
    "instagram_deletion_requests",
    "instagram_deauthorizations",
    "known_addresses",
    "sign_in_events",
]
EVENT_KEYS = {
    "id",
    "occurred_at",
    "email",
    "user_id",
    "result",
    "client_ip",
    "user_agent",
    "decided_by",
    "attempts",
    "last_occurred_at",
}


async def test_the_document_holds_everything_but_secrets(
    clean_dsn: str, settings: Settings
) -> None:
    settings = settings.replace(erasure_pepper=TEST_PEPPER)
    async with Database(settings) as db:
        users = UsersRepository(db)
        # An earlier account of the same email, erased: its receipt belongs in the export.
        gone = await users.create(NewUser(email="erin.export@example.com", password="pw-1234567"))
        await users.erase(gone.id)
        erin = await make_person(db, "Export")
        hashed = await stored_hash(db, erin.user_id)
        sealed = await stored_column(db, erin.user_id, "instagram_access_token")
        out = io.StringIO()
        written = await users.export(erin.user_id, out)

    text = out.getvalue()
    document = json.loads(text)
    assert list(document) == TOP_LEVEL and document["version"] == 1
    profile = document["profile"]
    assert profile["id"] == str(erin.user_id) and profile["email"] == erin.email
    assert "hashed_password" not in profile and profile["full_name"] == "Erin Tester"
    assert document["instagram"]["instagram_user_id"] == erin.instagram_user_id
    assert document["instagram"]["instagram_username"] == erin.instagram_username
    assert document["instagram"]["has_token"] is True
    for secret in (hashed, sealed, INSTAGRAM_TOKEN, TEST_PEPPER):
        assert secret not in text
    events = document["sign_in_events"]
    held = query(
        clean_dsn,
        "SELECT count(*) AS n FROM auth_events WHERE user_id = %s OR email = %s",
        (str(erin.user_id), erin.normalized),
    )[0]["n"]
    assert len(events) == written == held >= 4
    assert {e["result"] for e in events} >= {"success", "invalid_credentials"}
    assert any(e["user_id"] is None for e in events)  # the attempt before the account existed
    assert any(e["occurred_at"].startswith("2019-03-01") for e in events)  # default partition
    assert all(set(e) == EVENT_KEYS for e in events)
    assert [e["occurred_at"] for e in events] == sorted(e["occurred_at"] for e in events)
    assert [r["matched"] for r in document["erasure_receipts"]] == ["email"]


def test_cli_writes_a_private_file_and_refuses_nobody(fresh_dsn: str, tmp_path: Path) -> None:
    query(fresh_dsn, "INSERT INTO users (email, hashed_password) VALUES ('Ex@Example.com', 'h')")
    target = tmp_path / "export.json"
    env = {"DEFEAH_ERASURE_PEPPER": TEST_PEPPER}
    done = run_cli(fresh_dsn, "export-user", "ex@example.COM", "-o", str(target), **env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"exported 0 sign-in event(s) to {target}"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert json.loads(target.read_text())["profile"]["email"] == "Ex@Example.com"
    to_stdout = run_cli(fresh_dsn, "export-user", "ex@example.com", **env)
    assert json.loads(to_stdout.stdout)["version"] == 1
    missing = tmp_path / "nobody.json"
    nobody = run_cli(fresh_dsn, "export-user", "nobody@example.com", "-o", str(missing), **env)
    assert nobody.returncode == 1 and len(nobody.stderr.splitlines()) == 1
    assert not missing.exists() and list(tmp_path.iterdir()) == [target]


EVENTS = 100_000
PEAK_LIMIT = 8 * 1024 * 1024  # bytes of Python allocations while exporting


async def test_100000_events_export_in_bounded_memory(
    clean_dsn: str, settings: Settings, tmp_path: Path
) -> None:
    """The export is far larger than the memory it takes: a reader that fetched every row (or
    a writer that built the document first) would hold all of it at once."""
    settings = settings.replace(erasure_pepper=TEST_PEPPER)
    async with Database(settings) as db:
        user = await UsersRepository(db).create(
            NewUser(email="many@example.com", password="pw-1234567")
        )
        query(
            clean_dsn,
            "INSERT INTO auth_events (occurred_at, email, user_id, result, client_ip, "
            "user_agent, decided_by) SELECT now() - make_interval(secs => g), "
            "'many@example.com', %s, 'invalid_credentials', '198.51.100.7', "
            "repeat('agent ', 20), 'password' FROM generate_series(1, %s) AS g",
            (str(user.id), EVENTS),
        )
        target = tmp_path / "many.json"
        with target.open("w", encoding="utf-8") as out:
            tracemalloc.start()
            try:
                written = await UsersRepository(db).export(user.id, out)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
    size = target.stat().st_size
    assert written == EVENTS
    assert len(json.loads(target.read_text())["sign_in_events"]) == EVENTS
    assert size > 3 * PEAK_LIMIT  # the document could not have fitted under the limit
    assert peak < PEAK_LIMIT, f"peak {peak} bytes for a {size}-byte export"


async def test_deletion_requests_and_known_addresses_are_sections(
    clean_dsn: str, settings: Settings
) -> None:
    """Meta's deletion requests (0010) and the addresses the account signed in from (0011)
    are personal data held about the account, so the export lists them."""
    async with Database(settings.replace(erasure_pepper=TEST_PEPPER)) as db:
        users = UsersRepository(db)
        user = await users.create(NewUser(email="meta@example.com", password="pw-1234567"))
        query(
            clean_dsn,
            "INSERT INTO instagram_deletion_requests "
            "(confirmation_code, request_digest, status, user_id) "
            "VALUES ('code-0123456789abcdef', sha256('x'), 'completed', %s)",
            (str(user.id),),
        )
        query(
            clean_dsn,
            "INSERT INTO sign_in_known_addresses (user_id, address) VALUES (%s, '192.0.2.7/32')",
            (str(user.id),),
        )
        out = io.StringIO()
        await users.export(user.id, out)
    document = json.loads(out.getvalue())
    assert list(document)[-4:] == [
        "instagram_deletion_requests",
        "instagram_deauthorizations",
        "known_addresses",
        "sign_in_events",
    ]
    [request] = document["instagram_deletion_requests"]
    assert request["confirmation_code"] == "code-0123456789abcdef"
    assert request["status"] == "completed"
    [address] = document["known_addresses"]
    assert address["address"] == "192.0.2.7/32"
