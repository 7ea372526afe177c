"""The sign-in tests (tests/test_signin.py) re-run through PgBouncer in transaction mode.

Every test there builds its ``Database`` from the ``settings`` fixture; overriding it here
points them at PgBouncer (``DEFEAH_PGBOUNCER``: no statement cache).  The DAL pool (10) is
more than twice PgBouncer's server pool (4), so the 200-attempt tests queue inside PgBouncer and
a claim, its release and its event may each run on a different server backend: nothing in the
sign-in path may rely on session state, advisory locks or prepared statements.
"""

from __future__ import annotations

import pytest

from dal.db.settings import Settings
from tests import test_signin
from tests.factories import make_settings

pytestmark = pytest.mark.scale

ADOPTED = [
    name
    for name, obj in vars(test_signin).items()
    if name.startswith("test_") or hasattr(obj, "_fixture_function_marker")
]
globals().update({name: getattr(test_signin, name) for name in ADOPTED})


@pytest.fixture
def settings(bouncer_dsn: str) -> Settings:
    return make_settings(bouncer_dsn, pgbouncer=True)


def test_the_sign_in_suite_was_adopted() -> None:
    """Guard against silently re-running nothing if tests/test_signin.py is reorganised."""
    assert len([name for name in ADOPTED if name.startswith("test_")]) >= 10, ADOPTED
