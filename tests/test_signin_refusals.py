"""Issue 20 items 1, 2, 3 and 11: the attempt flow under overload and floods, real PostgreSQL
and real bcrypt.

* an attempt refused with ``Overloaded`` (its password never checked) gives its budget units
  back and is one ``auth_events`` row;
* once the database called a key spent, further attempts on it are refused in process (no
  round trip: they come back while another transaction holds every table they would read
  locked) and counted in one summary row per key per interval, every attempt counted;
* the dummy hash for unknown emails exists before the first sign-in: concurrent first
  sign-ins after a start run exactly one bcrypt check each, and no hash.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import bcrypt
import pytest
import pytest_asyncio

from dal import Database, NewUser, User
from dal.db.settings import Settings
from dal.errors import DalError, InvalidCredentials, Overloaded, TooManyAttempts
from dal.users import passwords
from dal.users.passwords import BCRYPT
from dal.users.repository import UsersRepository
from tests.pg import query

PASSWORD = "correct horse battery"
WRONG = "tr0ub4dor&3"
ATTACKER = "203.0.113.66"
EMAIL = "owner@x.io"


def dsn(settings: Settings) -> str:
    assert settings.database_url is not None
    return settings.database_url


async def outcome(
    db: Database, email: str, password: str, client_ip: str | None = ATTACKER
) -> type[BaseException] | User:
    try:
        return await UsersRepository(db).authenticate(email, password, client_ip=client_ip)
    except DalError as exc:
        return type(exc)


def events(target: str) -> list[dict[str, Any]]:
    return query(
        target,
        "SELECT result, decided_by, email, attempts, occurred_at, last_occurred_at"
        " FROM auth_events ORDER BY occurred_at, id",
    )


@pytest.fixture
def workers_busy() -> Iterator[threading.Event]:
    """Every bcrypt worker thread (the real pool) busy until the event is set, so a password
    check queues and, past the queue timeout, is refused with ``Overloaded``."""
    release = threading.Event()
    yield release
    release.set()


async def occupy_workers(release: threading.Event) -> list[asyncio.Task[Any]]:
    jobs = [
        asyncio.create_task(BCRYPT.run(100, 60, release.wait, 30)) for _ in range(BCRYPT.workers)
    ]
    await asyncio.sleep(0)
    for _ in range(1000):  # until every worker has started its job (at most 10 s)
        if not BCRYPT.queued:
            break
        await asyncio.sleep(0.01)
    return jobs


# -- item 1: Overloaded ------------------------------------------------------------------------


async def test_overloaded_attempts_give_their_units_back_and_are_logged(
    settings: Settings, workers_busy: threading.Event
) -> None:
    """Three right-password attempts refused with Overloaded on a key with a budget of three:
    the owner still signs in afterwards, and each of the three is an 'overloaded' event.
    Without the refund the three kept their units and the owner was refused for the window."""
    settings = settings.replace(lockout_threshold=3, bcrypt_queue_timeout=0.05)
    async with Database(settings) as db:
        user = await UsersRepository(db).create(NewUser(email=EMAIL, password=PASSWORD))  # type: ignore[arg-type]
        jobs = await occupy_workers(workers_busy)
        results = [await outcome(db, EMAIL, PASSWORD) for _ in range(3)]
        unknown = await outcome(db, "nobody@x.io", WRONG)
        budgets = query(dsn(settings), "SELECT scope, used FROM sign_in_budgets ORDER BY scope")
        workers_busy.set()
        await asyncio.gather(*jobs)
        signed_in = await outcome(db, EMAIL, PASSWORD)
    assert results == [Overloaded] * 3 and unknown is Overloaded
    assert {row["used"] for row in budgets} == {0}, budgets
    assert isinstance(signed_in, User) and signed_in.id == user.id
    rows = events(dsn(settings))
    assert [(r["result"], r["decided_by"]) for r in rows] == [
        ("overloaded", "bcrypt queue")
    ] * 4 + [("success", "password")]
    assert [r["email"] for r in rows[:4]] == [EMAIL] * 3 + ["nobody@x.io"]


async def test_a_guess_checked_before_the_padding_overloads_keeps_its_unit(
    settings: Settings, workers_busy: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong password on a cheaper stored hash is checked, then padded with dummy checks.
    If the queue fills during the padding, the guess was still made: it is an
    invalid_credentials with its unit kept, not a refunded Overloaded (free guesses)."""
    settings = settings.replace(lockout_threshold=3, bcrypt_queue_timeout=0.05, bcrypt_rounds=6)
    async with Database(settings) as db:
        await UsersRepository(db).create(NewUser(email=EMAIL, password=PASSWORD))  # type: ignore[arg-type]
        cheap = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
        query(dsn(settings), "UPDATE users SET hashed_password = %s", (cheap,))
        real_check = passwords.check_sync
        jobs: list[asyncio.Task[Any]] = []
        loop = asyncio.get_running_loop()

        def check_then_fill(secret: bytes, hashed: str) -> bool:
            matched = real_check(secret, hashed)
            if hashed == cheap:  # the real check is done: now every worker gets busy
                loop.call_soon_threadsafe(
                    lambda: jobs.extend(
                        loop.create_task(BCRYPT.run(100, 60, workers_busy.wait, 30))
                        for _ in range(BCRYPT.workers)
                    )
                )
                time.sleep(0.05)
            return matched

        monkeypatch.setattr(passwords, "check_sync", check_then_fill)
        result = await outcome(db, EMAIL, WRONG)
        workers_busy.set()
        await asyncio.gather(*jobs)
    assert result is InvalidCredentials
    used = query(dsn(settings), "SELECT scope, used FROM sign_in_budgets ORDER BY scope")
    assert {row["used"] for row in used} == {1}, used
    assert [r["result"] for r in events(dsn(settings))] == ["invalid_credentials"]


# -- items 2 and 3: refusals in process, summarised ---------------------------------------------


@pytest_asyncio.fixture
async def spent(settings: Settings) -> AsyncIterator[Database]:
    """A database on which EMAIL's key from ATTACKER's network is spent (3 wrong passwords)
    and the database has refused one more attempt (so this process holds the refusal)."""
    settings = settings.replace(
        lockout_threshold=3, signin_refusal_hold=1.0, signin_refusal_delay=0
    )
    async with Database(settings) as db:
        await UsersRepository(db).create(NewUser(email=EMAIL, password=PASSWORD))  # type: ignore[arg-type]
        for _ in range(3):
            assert await outcome(db, EMAIL, WRONG) is InvalidCredentials
        assert await outcome(db, EMAIL, WRONG) is InvalidCredentials  # the database's refusal
        yield db


async def test_refusals_of_a_spent_key_make_no_database_round_trip(
    spent: Database, bcrypt_calls: Counter[str]
) -> None:
    """With every table a refusal could read or write locked by another transaction, 2,000
    further attempts (the right password among them), first one after the other and then all
    at once, are still refused: none of them asked the database.  Without the in-process hold,
    the first one waits on the lock.  Each waits DEFEAH_SIGNIN_REFUSAL_DELAY before answering
    (a timer: 1,000 at once take one delay, not 1,000)."""
    db = spent
    delay = 0.2
    UsersRepository(db).sign_in.refusals.delay = delay
    async with db.acquire() as holder, holder.transaction():
        await holder.execute(
            "LOCK TABLE users, sign_in_budgets, auth_events IN ACCESS EXCLUSIVE MODE"
        )
        try:
            async with asyncio.timeout(5):
                started = time.perf_counter()
                one = await outcome(db, EMAIL, PASSWORD)
                single = time.perf_counter() - started
                started = time.perf_counter()
                results = await asyncio.gather(
                    *(outcome(db, EMAIL, PASSWORD if n % 100 == 0 else WRONG) for n in range(1999))
                )
                together = time.perf_counter() - started
        except TimeoutError:
            pytest.fail("a refusal of a held spent key waited for the database (> 5 s)")
    assert one is InvalidCredentials
    assert Counter(results) == Counter({InvalidCredentials: 1999})
    assert bcrypt_calls.total() == 0
    assert delay <= single < 2 * delay, single
    assert delay <= together < 4 * delay, together


async def test_every_attempt_is_counted_in_one_row_per_key_per_interval(
    spent: Database,
) -> None:
    """5,000 refusals in process: one summary row (attempts 5,000, first and last time on the
    database's clock), next to the rows of one attempt each.  The sum of attempts over the log
    is exactly the number of attempts made."""
    db = spent
    target = dsn(db.settings)
    before = query(target, "SELECT now() AS now")[0]["now"]
    for _ in range(5000):
        assert await outcome(db, EMAIL, WRONG) is InvalidCredentials
    written = await UsersRepository(db).sign_in.refusals.flush()
    after = query(target, "SELECT now() AS now")[0]["now"]
    assert written == 5000
    rows = events(target)
    assert sum(r["attempts"] for r in rows) == 3 + 1 + 5000
    summary = [r for r in rows if r["attempts"] > 1]
    assert len(summary) == 1 and len(rows) == 5
    (row,) = summary
    assert (row["result"], row["decided_by"], row["email"]) == (
        "throttled",
        "network 203.0.113.0/24",
        EMAIL,
    )
    assert row["attempts"] == 5000
    # The server's clock, give or take one round trip (the answer's travel time).
    slack = timedelta(seconds=0.1)
    assert before - slack <= row["occurred_at"] <= row["last_occurred_at"] <= after + slack
    # The readers return the summary too.
    latest = (await UsersRepository(db).sign_in.recent_auth_events_for_ip(ATTACKER, limit=1))[0]
    assert latest.attempts == 5000 and latest.last_occurred_at is not None


async def test_pending_counts_are_written_when_the_database_closes(settings: Settings) -> None:
    settings = settings.replace(
        lockout_threshold=1, signin_event_flush=3600, signin_refusal_delay=0
    )
    async with Database(settings) as db:
        for _ in range(1 + 1 + 250):  # one failure, the database's refusal, 250 held ones
            await outcome(db, EMAIL, WRONG)
    rows = events(dsn(settings))
    assert sum(r["attempts"] for r in rows) == 252 and len(rows) == 3


async def test_an_address_flood_over_many_emails_is_one_row(settings: Settings) -> None:
    """A spent address (the ip key) refusing 400 different emails: one summary row for the
    address, not one per email."""
    settings = settings.replace(
        lockout_ip_threshold=2, signin_event_flush=3600, signin_refusal_delay=0
    )
    async with Database(settings) as db:
        results = [await outcome(db, f"guess{n}@x.io", WRONG) for n in range(2 + 1 + 400)]
        await UsersRepository(db).sign_in.refusals.flush()
    assert Counter(results) == Counter({InvalidCredentials: 2, TooManyAttempts: 401})
    rows = events(dsn(settings))
    assert len(rows) == 4 and sum(r["attempts"] for r in rows) == 403
    assert rows[-1]["attempts"] == 400 and rows[-1]["decided_by"] == f"ip {ATTACKER}/32"


async def test_the_database_decides_again_after_the_hold(spent: Database) -> None:
    """The hold is short and the database the truth: an unlock made elsewhere (another
    process: straight in the database here) lets the owner in once the hold has passed."""
    db = spent
    query(dsn(db.settings), "DELETE FROM sign_in_budgets")
    assert await outcome(db, EMAIL, PASSWORD) is InvalidCredentials  # still held here
    await asyncio.sleep(db.settings.signin_refusal_hold + 0.1)
    assert isinstance(await outcome(db, EMAIL, PASSWORD), User)


async def test_one_attempt_asks_the_database_when_a_hold_ends(spent: Database) -> None:
    """200 attempts at once just after the hold ended: one of them asks the database (which
    still says spent), the other 199 stay refused in process.  Without the probe every
    attempt under way would find the hold gone and go to the database, a row each."""
    db = spent
    await asyncio.sleep(db.settings.signin_refusal_hold + 0.05)
    results = await asyncio.gather(*(outcome(db, EMAIL, WRONG) for _ in range(200)))
    await UsersRepository(db).sign_in.refusals.flush()
    assert Counter(results) == Counter({InvalidCredentials: 200})
    throttled = [r for r in events(dsn(db.settings)) if r["result"] == "throttled"]
    assert sorted(r["attempts"] for r in throttled) == [1, 1, 199]


# -- item 11: the dummy hash ---------------------------------------------------------------------


async def test_first_unknown_emails_after_a_start_hash_nothing(
    settings: Settings, bcrypt_calls: Counter[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh process (no dummy hash yet): 50 concurrent first sign-ins with unknown emails
    run 50 checks and no hash, none is Overloaded, and the first unknown email costs one check
    like every later one.  Before, each of the first ones hashed its own dummy (18 redundant
    hashes measured, 36 Overloaded) and the first unknown email took two checks' time."""
    monkeypatch.setattr(passwords, "DUMMY_HASHES", {})
    settings = settings.replace(
        bcrypt_rounds=6,
        lockout_threshold=1000,
        lockout_ip_threshold=1000,
        lockout_account_threshold=1000,
        acquire_timeout=60.0,
    )
    async with Database(settings) as db:
        # The first unknown email's work is one check, as every later one's: no timing tell.
        # (Counted rather than timed: on a shared 2-core machine single timings vary 2x.)
        bcrypt_calls.clear()
        assert await outcome(db, "first@x.io", WRONG, "198.51.100.1") is InvalidCredentials
        assert bcrypt_calls == Counter(checkpw=1)
    monkeypatch.setattr(passwords, "DUMMY_HASHES", {})  # a fresh start again
    async with Database(settings) as db:
        bcrypt_calls.clear()
        results = await asyncio.gather(
            *(outcome(db, f"nobody{n}@x.io", WRONG, f"10.0.{n}.1") for n in range(50))
        )
    assert Counter(results) == Counter({InvalidCredentials: 50})
    assert bcrypt_calls == Counter(checkpw=50)


async def test_held_refusals_of_a_locking_key_are_summarised_as_locked(settings: Settings) -> None:
    """The streak key (like the account and known keys) locks: its refusals in process are
    summarised with the result the database gives its own refusal, ``locked``, never
    ``throttled``.  Each attempt from a fresh /24, so only the streak can refuse (strangers
    stop at the consecutive limit less the known budget: 5 - 2 = 3 failures)."""
    settings = settings.replace(
        lockout_consecutive_limit=5,
        lockout_known_threshold=2,
        lockout_account_threshold=1000,
        signin_event_flush=3600,
        signin_refusal_delay=0,
    )
    async with Database(settings) as db:
        await UsersRepository(db).create(NewUser(email=EMAIL, password=PASSWORD))
        for n in range(3 + 1 + 20):  # three failures, the database's refusal, 20 held ones
            await outcome(db, EMAIL, WRONG, client_ip=f"10.9.{n}.1")
        await UsersRepository(db).sign_in.refusals.flush()
    rows = events(dsn(settings))
    assert sum(r["attempts"] for r in rows) == 24
    refused = [(r["result"], r["decided_by"]) for r in rows if r["decided_by"] != "password"]
    assert refused and set(refused) == {("locked", "streak")}, refused
