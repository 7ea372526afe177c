"""The budget tests (tests/test_signin_budgets.py) re-run through PgBouncer in transaction mode.

Every test there builds its ``Database`` from the ``settings`` fixture (through ``db``);
overriding it here points them at PgBouncer (``DEFEAH_PGBOUNCER``), so the known-address
look-up, the claim and the remembered address may each run on another server backend.
"""

from __future__ import annotations

import pytest

from dal.db.settings import Settings
from tests import test_signin_budgets
from tests.factories import make_settings

pytestmark = pytest.mark.scale

ADOPTED = [
    name
    for name, obj in vars(test_signin_budgets).items()
    if name.startswith("test_") or hasattr(obj, "_fixture_function_marker")
]
globals().update({name: getattr(test_signin_budgets, name) for name in ADOPTED})


@pytest.fixture
def settings(bouncer_dsn: str) -> Settings:
    # signin_refusal_hold=0 as in the adopted module's own fixture: hours pass there by moving
    # the stored instants, so every attempt asks the database.
    return make_settings(bouncer_dsn, pgbouncer=True).replace(signin_refusal_hold=0)


def test_the_budget_suite_was_adopted() -> None:
    """Guard against silently re-running nothing if tests/test_signin_budgets.py changes."""
    assert len([name for name in ADOPTED if name.startswith("test_")]) >= 9, ADOPTED
