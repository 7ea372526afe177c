"""The attempt-flow tests (tests/test_signin_refusals.py: Overloaded refunds, refusals held in
process, summary rows, the dummy hash) re-run through PgBouncer in transaction mode, where the
refund, the probe and each flush may run on a different server backend."""

from __future__ import annotations

import pytest

from dal.db.settings import Settings
from tests import test_signin_refusals
from tests.factories import make_settings

pytestmark = pytest.mark.scale

ADOPTED = [
    name
    for name, obj in vars(test_signin_refusals).items()
    if name.startswith("test_") or hasattr(obj, "_fixture_function_marker")
]
globals().update({name: getattr(test_signin_refusals, name) for name in ADOPTED})


@pytest.fixture
def settings(bouncer_dsn: str) -> Settings:
    return make_settings(bouncer_dsn, pgbouncer=True)


def test_the_attempt_flow_suite_was_adopted() -> None:
    assert len([name for name in ADOPTED if name.startswith("test_")]) >= 8, ADOPTED
