"""Issue 23 item 1: erasing a user removes every trace in one transaction and leaves a receipt
of HMACs only; a user that does not exist changes nothing; reapply-erasures erases again after
a restore, but never a newer account of the same email.  Real PostgreSQL, real CLI."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import uuid
from pathlib import Path

import pytest

from dal import Database, NewUser
from dal.db.settings import Settings
from dal.errors import NotFound, ProductionRefused
from dal.users import erasure
from dal.users.receipts import Pepper, dev_pepper_path, settings_pepper
from dal.users.repository import UsersRepository
from tests.commands import run_cli
from tests.factories import make_settings
from tests.pg import query
from tests.privacy_helpers import (
    INSTAGRAM_TOKEN,
    TEST_PEPPER,
    make_person,
    table_counts,
    traces,
)

NOTHING = {"users": 0, "events": 0, "default_partition": 0, "budgets": 0, "instagram": 0}


def digest(label: str, value: str) -> str:
    return hmac.new(TEST_PEPPER.encode(), f"{label}:{value}".encode(), hashlib.sha256).hexdigest()


async def test_erase_removes_every_trace_and_leaves_only_hmacs(
    clean_dsn: str, settings: Settings
) -> None:
    settings = settings.replace(erasure_pepper=TEST_PEPPER)
    async with Database(settings) as db:
        erin = await make_person(db, "Erase")
        other = await make_person(db, "Keep")
        before = traces(clean_dsn, erin)
        assert before["events"] >= 4 and before["default_partition"] == 1
        assert before["budgets"] >= 1 and before["instagram"] == 1
        kept = traces(clean_dsn, other)

        report = await UsersRepository(db).erase(erin.user_id)

    assert report.user_id == erin.user_id and report.events == before["events"]
    assert traces(clean_dsn, erin) == NOTHING
    assert traces(clean_dsn, other) == kept  # nobody else loses anything
    receipts = query(clean_dsn, "SELECT * FROM erasure_receipts")
    assert len(receipts) == 1
    row = receipts[0]
    assert row["user_hmac"] == digest("user", str(erin.user_id))
    assert row["email_hmac"] == digest("email", erin.normalized)
    text = repr(row).lower()
    assert str(erin.user_id) not in text and erin.normalized not in text


async def test_erase_by_email_in_any_case_through_the_cli(fresh_dsn: str) -> None:
    async with Database(make_settings(fresh_dsn, erasure_pepper=TEST_PEPPER)) as db:
        erin = await make_person(db, "Cli")
    done = run_cli(fresh_dsn, "erase-user", f"  {erin.email.swapcase()} ", **pepper_env())
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"erased user {erin.user_id}:")
    assert traces(fresh_dsn, erin) == NOTHING
    for secret in (TEST_PEPPER, INSTAGRAM_TOKEN):
        assert secret not in done.stdout + done.stderr


@pytest.mark.parametrize("who", ["nobody@example.com", str(uuid.uuid4())])
def test_erasing_nobody_says_so_in_one_line_exits_1_and_changes_nothing(
    fresh_dsn: str, who: str
) -> None:
    query(fresh_dsn, "INSERT INTO users (email, hashed_password) VALUES ('a@example.com', 'x')")
    query(
        fresh_dsn,
        "INSERT INTO auth_events (email, result, decided_by) "
        "VALUES ('nobody@example.com', 'invalid_credentials', 'password')",
    )
    before = table_counts(fresh_dsn)
    done = run_cli(fresh_dsn, "erase-user", who, **pepper_env())
    assert done.returncode == 1
    assert done.stdout == "" and len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith("defeah-db: error: no user")
    assert table_counts(fresh_dsn) == before


def test_a_second_erasure_of_the_same_user_is_refused(fresh_dsn: str) -> None:
    rows = query(
        fresh_dsn,
        "INSERT INTO users (email, hashed_password) VALUES ('twice@example.com', 'x') RETURNING id",
    )
    assert run_cli(fresh_dsn, "erase-user", str(rows[0]["id"]), **pepper_env()).returncode == 0
    before = table_counts(fresh_dsn)
    again = run_cli(fresh_dsn, "erase-user", str(rows[0]["id"]), **pepper_env())
    assert again.returncode == 1 and table_counts(fresh_dsn) == before


def test_bad_argument_is_one_line(fresh_dsn: str) -> None:
    done = run_cli(fresh_dsn, "erase-user", "not-an-id", **pepper_env())
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1
    assert "user id (UUID) or an email" in done.stderr


def test_production_needs_force_and_the_pepper(fresh_dsn: str) -> None:
    rows = query(
        fresh_dsn,
        "INSERT INTO users (email, hashed_password) VALUES ('prod@example.com', 'x') RETURNING id",
    )
    no_pepper = run_cli(fresh_dsn, "erase-user", "prod@example.com", DEFEAH_ENV="production")
    assert no_pepper.returncode == 1 and "DEFEAH_ERASURE_PEPPER" in no_pepper.stderr
    refused = run_cli(
        fresh_dsn, "erase-user", "prod@example.com", DEFEAH_ENV="production", **pepper_env()
    )
    assert refused.returncode == 2 and "--force" in refused.stderr
    assert query(fresh_dsn, "SELECT count(*) AS n FROM users")[0]["n"] == 1
    forced = run_cli(
        fresh_dsn,
        "erase-user",
        str(rows[0]["id"]),
        "--force",
        DEFEAH_ENV="production",
        **pepper_env(),
    )
    assert forced.returncode == 0, forced.stderr
    assert TEST_PEPPER not in forced.stdout + forced.stderr


async def test_the_dal_refuses_production_too(clean_dsn: str, settings: Settings) -> None:
    settings = settings.replace(erasure_pepper=TEST_PEPPER, environment="production")
    async with Database(settings) as db:
        user = await UsersRepository(db).create(
            NewUser(email="p@example.com", password="pw-12345678")
        )
        with pytest.raises(ProductionRefused):
            await UsersRepository(db).erase(user.id)
        assert (await UsersRepository(db).get(user.id)).id == user.id
        with pytest.raises(NotFound):
            await UsersRepository(db).erase(uuid.uuid4(), force=True)


async def test_erase_stays_correct_when_events_gain_columns(
    clean_dsn: str, settings: Settings
) -> None:
    """The erase goes by user id and email only: a column added to auth_events (as issue 20
    may) changes nothing."""
    query(clean_dsn, "ALTER TABLE auth_events ADD COLUMN refused_count INTEGER")
    try:
        async with Database(settings.replace(erasure_pepper=TEST_PEPPER)) as db:
            erin = await make_person(db, "Columns")
            await UsersRepository(db).erase(erin.user_id)
        assert traces(clean_dsn, erin) == NOTHING
    finally:
        query(clean_dsn, "ALTER TABLE auth_events DROP COLUMN refused_count")


async def test_reapply_erases_the_restored_user_but_not_a_newer_account(
    clean_dsn: str, settings: Settings
) -> None:
    """A restore brings back the erased user; reapply removes them, their events and budgets,
    but a new account opened with the same email after the erasure (and its attempts) stays."""
    settings = settings.replace(erasure_pepper=TEST_PEPPER)
    async with Database(settings) as db:
        erin = await make_person(db, "Restore")
        saved = query(clean_dsn, "SELECT * FROM users WHERE id = %s", (str(erin.user_id),))[0]
        events = query(
            clean_dsn,
            "SELECT occurred_at, email, user_id, result, decided_by FROM auth_events "
            "WHERE user_id = %s OR email = %s",
            (str(erin.user_id), erin.normalized),
        )
        report = await UsersRepository(db).erase(erin.user_id)
        # The "restore": the old row and events come back as the backup held them.
        columns = ", ".join(saved)
        query(
            clean_dsn,
            f"INSERT INTO users ({columns}) VALUES ({', '.join(['%s'] * len(saved))})",
            [str(v) if isinstance(v, uuid.UUID) else v for v in saved.values()],
        )
        for event in events:
            query(
                clean_dsn,
                "INSERT INTO auth_events (occurred_at, email, user_id, result, decided_by) "
                "VALUES (%(occurred_at)s, %(email)s, %(user_id)s, %(result)s, %(decided_by)s)",
                {**event, "user_id": str(event["user_id"]) if event["user_id"] else None},
            )
        assert traces(clean_dsn, erin)["users"] == 1
        pepper = settings_pepper(settings, "test")
        done = await erasure.reapply(db, pepper)
        assert (done.users, done.events) == (1, len(events))
        assert traces(clean_dsn, erin) == NOTHING
        # A newer account of the same email, after the erasure: left alone, also by a rerun.
        newer = await UsersRepository(db).create(NewUser(email=erin.email, password="pw-12345678"))
        query(
            clean_dsn,
            "INSERT INTO auth_events (occurred_at, email, user_id, result, decided_by) "
            "VALUES (%s + interval '1 second', %s, %s, 'success', 'password')",
            (report.erased_at, erin.normalized, str(newer.id)),
        )
        again = await erasure.reapply(db, pepper)
        assert (again.users, again.events) == (0, 0)
        assert (await UsersRepository(db).get(newer.id)).email == erin.email


def test_the_development_pepper_is_made_once_privately(tmp_path: Path) -> None:
    settings = make_settings("postgresql://nobody@127.0.0.1:1/none", data_dir=tmp_path / "pgdata")
    first = settings_pepper(settings, "test")
    path = dev_pepper_path(settings.data_dir)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert settings_pepper(settings, "test") == first
    assert repr(first) == "<Pepper>" and path.read_text().strip() not in repr(settings)


def test_a_short_pepper_is_refused() -> None:
    with pytest.raises(Exception, match="DEFEAH_ERASURE_PEPPER"):
        make_settings("postgresql://nobody@127.0.0.1:1/none", erasure_pepper="short")


def test_the_pepper_never_shows_in_settings() -> None:
    settings = make_settings("postgresql://nobody@127.0.0.1:1/none", erasure_pepper=TEST_PEPPER)
    assert TEST_PEPPER not in repr(settings) and TEST_PEPPER not in str(settings)
    assert settings.scrub(f"x {TEST_PEPPER} y") != f"x {TEST_PEPPER} y"
    assert Pepper(TEST_PEPPER.encode()).user(uuid.UUID(int=1)) == digest(
        "user", str(uuid.UUID(int=1))
    )


def pepper_env() -> dict[str, str]:
    return {"DEFEAH_ERASURE_PEPPER": TEST_PEPPER}


async def test_reapply_sweeps_an_event_written_after_the_erasure_by_an_earlier_attempt(
    clean_dsn: str,
    settings: Settings,
) -> None:
    """A sign-in already running when the user is erased writes its event afterwards, stamped
    with its (earlier) start; with no account left to match, reapply finds it by the email."""
    settings = settings.replace(erasure_pepper=TEST_PEPPER)
    async with Database(settings) as db:
        user = await UsersRepository(db).create(
            NewUser(email="late@example.com", password="pw-1234567")
        )
        report = await UsersRepository(db).erase(user.id)
        query(
            clean_dsn,
            "INSERT INTO auth_events (occurred_at, email, result, decided_by) VALUES "
            "(%s - interval '1 second', 'late@example.com', 'invalid_credentials', 'password')",
            (report.erased_at,),
        )
        done = await erasure.reapply(db, settings_pepper(settings, "test"))
    assert (done.users, done.events) == (0, 1)
    assert query(clean_dsn, "SELECT count(*) AS n FROM auth_events")[0]["n"] == 0
