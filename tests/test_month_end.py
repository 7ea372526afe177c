"""A sign-in budget window that spans midnight and the end of a month counts every attempt.

CI runs this file first in a pass whose clock starts at 2028-02-29 23:59:40 UTC (the last
seconds of a leap day, ``DEFEAH_TEST_CLOCK``), with ``DEFEAH_EXPECT_MONTH_END=1``: the attempts
then really straddle the month end, and the test fails if they did not.  On any other date the
month end is out of reach; the test then makes the same attempts within the month and checks
the same counts (it never waits for a month end more than ``REACH`` away).
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from datetime import timedelta

import pytest

from dal import Database, NewUser
from dal.errors import InvalidCredentials
from dal.users.repository import UsersRepository
from tests.factories import make_settings
from tests.pg import query

PASSWORD = "correct horse battery"
WRONG = "tr0ub4dor&3"
CLIENT = "192.0.2.10"
THRESHOLD = 4
REACH = timedelta(seconds=90)


async def test_a_budget_window_across_the_month_end_counts_every_attempt(
    fresh_dsn: str, bcrypt_calls: Counter[str]
) -> None:
    settings = make_settings(fresh_dsn, lockout_threshold=THRESHOLD, lockout_window=900.0)
    edge_row = query(
        fresh_dsn,
        "SELECT (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month') "
        "AT TIME ZONE 'UTC' - now() AS left",
    )[0]
    left: timedelta = edge_row["left"]
    crossing = left <= REACH
    if os.environ.get("DEFEAH_EXPECT_MONTH_END") == "1" and not crossing:
        pytest.fail(f"this pass should start near a month end, but it is {left} away")
    async with Database(settings) as db:
        users = UsersRepository(db)
        user = await users.create(NewUser(email="ada@example.com", password=PASSWORD))  # type: ignore[arg-type]
        for n in range(THRESHOLD):
            if crossing and n == THRESHOLD // 2:  # half before the edge, half after it
                await asyncio.sleep(left.total_seconds() + 0.5)
            with pytest.raises(InvalidCredentials):
                await users.authenticate(user.email, WRONG, client_ip=CLIENT)
        checks = bcrypt_calls["checkpw"]
        with pytest.raises(InvalidCredentials):  # the budget is spent: even the right password
            await users.authenticate(user.email, PASSWORD, client_ip=CLIENT)
        assert bcrypt_calls["checkpw"] == checks  # refused without a password check

    budget = query(
        fresh_dsn,
        "SELECT used, window_ends_at - now() > interval '0' AS open FROM sign_in_budgets "
        "WHERE scope = 'network'",
    )
    assert budget == [{"used": THRESHOLD, "open": True}]
    parts = query(
        fresh_dsn,
        "SELECT tableoid::regclass::text AS part, count(*) AS n FROM auth_events "
        "GROUP BY 1 ORDER BY 1",
    )
    events = sum(int(p["n"]) for p in parts)
    assert events == THRESHOLD + 1  # every attempt is one event, the refusal included
    if crossing:  # the events sit in both months' partitions, none in the default one
        assert len(parts) == 2 and not any(p["part"].endswith("_default") for p in parts)
        assert [p["n"] for p in parts] == [THRESHOLD // 2, THRESHOLD - THRESHOLD // 2 + 1]
