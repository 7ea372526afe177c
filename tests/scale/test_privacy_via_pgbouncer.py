"""The DAL tests of erase, reapply and export (tests/test_privacy_erase.py,
tests/test_privacy_export.py) re-run through PgBouncer in transaction mode: the erasure's
transaction, the cursors of reapply and export, and the receipts must not rely on session
state or prepared statements.  Only the tests built on the ``settings`` fixture are adopted
(the CLI ones talk to the server directly)."""

from __future__ import annotations

import inspect

import pytest

from dal.db.settings import Settings
from tests import test_privacy_erase, test_privacy_export
from tests.factories import make_settings

pytestmark = pytest.mark.scale

ADOPTED = {
    name: obj
    for module in (test_privacy_erase, test_privacy_export)
    for name, obj in vars(module).items()
    if name.startswith("test_") and "settings" in inspect.signature(obj).parameters
}
globals().update(ADOPTED)


@pytest.fixture
def settings(bouncer_dsn: str) -> Settings:
    return make_settings(bouncer_dsn, pgbouncer=True)


def test_the_privacy_suites_were_adopted() -> None:
    assert len(ADOPTED) >= 6, sorted(ADOPTED)
