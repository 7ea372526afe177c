"""The ``/metrics`` serving tests (tests/test_metrics_serving.py) re-run with the server behind
PgBouncer in transaction mode (``DEFEAH_PGBOUNCER``): the cached database figures and the
production check must not depend on session state."""

from __future__ import annotations

import pytest

from tests import test_metrics_serving

pytestmark = pytest.mark.scale

ADOPTED = [name for name in vars(test_metrics_serving) if name.startswith("test_")]
globals().update({name: getattr(test_metrics_serving, name) for name in ADOPTED})


@pytest.fixture
def served_database(bouncer_dsn: str) -> dict[str, str]:
    return {"DATABASE_URL": bouncer_dsn, "DEFEAH_PGBOUNCER": "true"}


def test_the_metrics_serving_suite_was_adopted() -> None:
    assert len(ADOPTED) >= 3, ADOPTED
