"""Meta's Instagram callbacks through PgBouncer in transaction mode (issue 23).

Each callback is one explicit transaction (record the request, clear the account, note the
outcome), so it needs no session state; the concurrent-copies test is the one that matters
here: twelve identical requests on more client connections than PgBouncer's server pool still
give one code and one erasure.  The tests of tests/test_instagram_callbacks.py re-run with the
``cb_settings`` fixture pointed at PgBouncer.
"""

from __future__ import annotations

import pytest

from dal.db.settings import Settings
from tests import test_instagram_callbacks
from tests.factories import make_settings
from tests.meta_requests import OLD_SECRET, PUBLIC_URL, SECRET
from tests.scale.conftest import via_bouncer
from tests.scale.servers import PgBouncer

pytestmark = pytest.mark.scale

ADOPTED = (
    "client",
    "test_deauthorize_disconnects_the_instagram_user_and_keeps_the_account",
    "test_data_deletion_erases_the_instagram_data_and_answers_url_and_code",
    "test_the_status_page_says_what_happened_and_nothing_about_the_person",
    "test_the_same_deletion_request_twice_gives_one_code_and_erases_once",
    "test_a_replayed_deauthorize_does_not_disconnect_a_reconnected_account",
    "test_concurrent_identical_requests_are_carried_out_once",
)
globals().update({name: getattr(test_instagram_callbacks, name) for name in ADOPTED})


@pytest.fixture
def cb_settings(pgbouncer: PgBouncer, fresh_dsn: str) -> Settings:
    return make_settings(
        via_bouncer(pgbouncer, fresh_dsn),
        pgbouncer=True,
        instagram_app_secret=f"{SECRET},{OLD_SECRET}",
        public_url=PUBLIC_URL,
    )
