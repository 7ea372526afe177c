"""The users repository's own test suite (tests/test_users.py, tests/test_auth.py), re-run with
the ``settings`` fixture pointing at PgBouncer in transaction mode.

Every test there that works on the ``db`` fixture (or fixtures built on it) is collected again
here; overriding ``settings`` in this module re-targets ``db`` at PgBouncer with
``DEFEAH_PGBOUNCER``.  The DAL pool (10) is more than twice PgBouncer's server pool (4), and the
64-task tests then queue inside PgBouncer.  Tests that build their own ``Database`` from
``clean_dsn`` are not re-targeted; their PgBouncer versions are in test_users_via_pgbouncer.py.
"""

from __future__ import annotations

import inspect
from types import ModuleType

import pytest

from dal.db.database import Database
from dal.db.settings import Settings
from tests import test_auth, test_users
from tests.factories import make_settings
from tests.scale.servers import PgBouncer

pytestmark = pytest.mark.scale

# Fixtures that lead to the ``settings`` fixture (and so to PgBouncer here).
RETARGETED = {"db", "ada"}


def _adopt(module: ModuleType) -> list[str]:
    """Copy ``module``'s fixtures and its ``db``-based tests into this module's namespace."""
    adopted = []
    for name, obj in vars(module).items():
        if name.startswith("test_"):
            if not callable(obj) or not RETARGETED & set(inspect.signature(obj).parameters):
                continue
        elif not hasattr(obj, "_fixture_function_marker"):  # a pytest fixture
            continue
        globals()[name] = obj
        adopted.append(name)
    return adopted


ADOPTED = _adopt(test_users) + _adopt(test_auth)


@pytest.fixture
def settings(bouncer_dsn: str) -> Settings:
    return make_settings(bouncer_dsn, pgbouncer=True)


def test_the_suite_was_adopted() -> None:
    """Guard against silently re-running nothing if the repository tests are reorganised."""
    tests = [name for name in ADOPTED if name.startswith("test_")]
    assert len(tests) >= 20, tests


async def test_db_fixture_goes_through_pgbouncer(db: Database, pgbouncer: PgBouncer) -> None:
    assert db.settings.pgbouncer
    assert db.dsn.startswith(f"postgresql://postgres@127.0.0.1:{pgbouncer.port}/")
    async with db.acquire() as conn:
        assert await conn.fetchval("SELECT 1") == 1
