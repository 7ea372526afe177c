"""Fixtures for the scale tests: a real PgBouncer and a real primary + streaming standby.

They skip, naming what is missing, when pgbouncer or the PostgreSQL server programs are not
installed.  CI sets ``DEFEAH_REQUIRE_SCALE=1`` so that a missing program fails the run instead of
silently skipping it (``.ci/run`` installs pgbouncer).  ``pytest -m 'not scale'`` leaves them out.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from dal.db.admin import ensure_database
from dal.migrations import runner as migrations
from tests.pg import PgServer
from tests.scale.servers import MissingProgram, PgBouncer, StreamingPair

# PgBouncer's server pool for the tests: small, so that "2x more concurrent tasks than the
# pool" stays cheap while still making clients queue inside PgBouncer.
BOUNCER_POOL_SIZE = 4
SCALE_DATABASE = "defeah_scale"


def _unavailable(exc: MissingProgram) -> None:
    if os.environ.get("DEFEAH_REQUIRE_SCALE", "") not in ("", "0"):
        pytest.fail(f"DEFEAH_REQUIRE_SCALE is set but: {exc}")
    pytest.skip(str(exc))


@pytest.fixture(scope="session")
def pgbouncer(pg: PgServer) -> Iterator[PgBouncer]:
    """PgBouncer (transaction pooling) in front of the server the rest of the suite uses."""
    bouncer = PgBouncer(pg.admin_dsn, pool_size=BOUNCER_POOL_SIZE)
    try:
        bouncer.start()
    except MissingProgram as exc:
        _unavailable(exc)
    try:
        yield bouncer
    finally:
        bouncer.stop()


def via_bouncer(bouncer: PgBouncer, direct_dsn: str) -> str:
    """The same database as ``direct_dsn``, reached through PgBouncer."""
    return bouncer.dsn(urlsplit(direct_dsn).path.lstrip("/"))


@pytest.fixture
def bouncer_dsn(pgbouncer: PgBouncer, clean_dsn: str) -> str:
    """The shared test database (users emptied), through PgBouncer."""
    return via_bouncer(pgbouncer, clean_dsn)


@pytest.fixture(scope="session")
def streaming_pair() -> Iterator[StreamingPair]:
    """Our own primary (migrated ``defeah_scale`` database) and a hot standby streaming it."""
    try:
        pair = StreamingPair.create()
    except MissingProgram as exc:
        _unavailable(exc)
    try:
        pair.start_primary()
        ensure_database(pair.primary.dsn(SCALE_DATABASE))
        migrations.apply(pair.primary.dsn(SCALE_DATABASE))
        pair.start_standby()
        yield pair
    finally:
        pair.stop()
