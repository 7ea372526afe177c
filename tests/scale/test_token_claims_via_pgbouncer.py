"""The token-refresh claim through PgBouncer in transaction mode (issue 12).

``claim_tokens_due`` leases rows with ``FOR UPDATE SKIP LOCKED`` in one statement, so it must
need no session state: the claim and the record of one token may run on different server
backends.  The claim tests of tests/test_tokens.py (and the planted-value test of
tests/test_token_planting.py) re-run here with the ``settings`` fixture pointed at PgBouncer,
and four workers (each its own pool, more connections than PgBouncer's
server pool) drain the due tokens concurrently: every token is claimed exactly once.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from dal import Database
from dal.db.settings import Settings
from dal.instagram.repository import InstagramRepository
from tests import test_token_planting, test_tokens
from tests.factories import make_settings
from tests.test_refresh_tokens import fill

pytestmark = pytest.mark.scale

ADOPTED = (
    "test_claim_rules_and_bookkeeping",
    "test_an_unreadable_due_token_is_flagged_not_a_crash",
    "test_a_lapsed_lease_fences_out_its_worker",
    "test_a_claim_never_waits_on_another_claimers_rows",
)
globals().update({name: getattr(test_tokens, name) for name in ADOPTED})
# Planted values are refused by the read, the claim and reencrypt alike through PgBouncer.
test_a_planted_value_is_refused_everywhere = (
    test_token_planting.test_a_planted_value_is_refused_everywhere
)

DUE = 400
WORKERS = 4


@pytest.fixture
def settings(bouncer_dsn: str) -> Settings:
    return make_settings(bouncer_dsn, pgbouncer=True)


async def drain(settings: Settings, claims: Counter[UUID]) -> int:
    """One worker: claim 10 at a time and record each as refreshed until nothing is due."""
    recorded = 0
    expires = datetime.now(UTC) + timedelta(days=60)
    async with Database(settings) as db:
        instagram = InstagramRepository(db)
        while claimed := await instagram.claim_due(timedelta(days=7), limit=10):
            for due in claimed:
                claims[due.user_id] += 1
                recorded += await instagram.record_refreshed(
                    due.user_id, "fresh", expires, lease_until=due.lease_until
                )
    return recorded


async def test_concurrent_workers_claim_every_due_token_exactly_once(
    clean_dsn: str, settings: Settings
) -> None:
    tokens = await fill(clean_dsn, ["ok"] * DUE)
    claims: Counter[UUID] = Counter()
    recorded = await asyncio.wait_for(
        asyncio.gather(*(drain(settings, claims) for _ in range(WORKERS))), timeout=120
    )
    assert set(claims) == set(tokens)
    assert max(claims.values()) == 1  # disjoint: no token leased to two workers
    assert sum(recorded) == DUE
    async with Database(settings) as db:
        instagram = InstagramRepository(db)
        assert await instagram.claim_due(timedelta(days=7)) == []  # all refreshed
        token = await instagram.token(next(iter(tokens)))
        assert token is not None and token.get_secret_value() == "fresh"
