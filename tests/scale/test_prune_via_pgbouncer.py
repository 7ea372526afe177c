"""``prune-events`` behind an analyst's open transaction, through PgBouncer in transaction mode:
its 50 ms tries (``SET LOCAL`` inside each transaction, no session state) still never queue a
sign-in for long (tests/test_signin_ops.py runs the same on PostgreSQL directly)."""

from __future__ import annotations

import pytest

from tests.scale.conftest import via_bouncer
from tests.scale.servers import PgBouncer
from tests.test_signin_ops import prune_behind_an_analyst

pytestmark = pytest.mark.scale


async def test_prune_behind_an_open_transaction_never_queues_sign_ins(
    pgbouncer: PgBouncer, fresh_dsn: str
) -> None:
    waits = await prune_behind_an_analyst(
        fresh_dsn, via_bouncer(pgbouncer, fresh_dsn), pgbouncer=True
    )
    assert len(waits) >= 5
    assert max(waits) < 1.0, sorted(waits)[-5:]
