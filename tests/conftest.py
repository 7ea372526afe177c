"""Shared fixtures: a real PostgreSQL (the configured one or the embedded one), migrated
databases cloned from a template, and ``Settings`` tuned for tests (bcrypt cost 4, small pool);
and the event loops the async tests run on (``pytest_asyncio_loop_factories``).
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import bcrypt
import pytest
import pytest_asyncio

from dal.db import event_loop
from dal.db.database import Database
from dal.db.dsn import maintenance_dsn
from dal.db.settings import Settings
from dal.migrations import runner as migrations
from tests.factories import make_settings
from tests.pg import PgServer, query

ROOT = Path(__file__).resolve().parent.parent
# Where the loop changes what runs: the pool and the driver's protocol, bcrypt's hand-off to its
# threads and back, the HTTP server's transports and timeouts.  These run on every loop of
# --event-loops; the rest on the production default (DEFEAH_EVENT_LOOP=auto) only.
LOOP_SENSITIVE = {
    "test_auth.py",
    "test_event_loop.py",
    "test_health_hardening.py",
    "test_http_edges.py",
    "test_pool.py",
    "test_queries.py",
    "test_refresh_tokens.py",
    "test_signin.py",
    "test_tokens.py",
    "test_users.py",
    "test_web_routes.py",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--event-loops",
        default="asyncio,uvloop",
        help="comma-separated loops the loop-sensitive async tests run on (asyncio, uvloop; "
        "uvloop is left out where it is not installed)",
    )


def _factories(names: list[str]) -> dict[str, event_loop.LoopFactory]:
    factories: dict[str, event_loop.LoopFactory] = {}
    for name in names:
        if name not in ("asyncio", "uvloop"):
            raise pytest.UsageError(f"--event-loops: unknown loop {name!r}")
        resolved, factory = event_loop.loop_factory("auto" if name == "uvloop" else "asyncio")
        if resolved == name:  # uvloop asked for but not installed: not run on it
            factories[name] = factory or asyncio.new_event_loop
    return factories


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, event_loop.LoopFactory]:
    """Both loops for the loop-sensitive modules, the default loop for the rest."""
    if item.path.name in LOOP_SENSITIVE:
        chosen = [n.strip() for n in str(config.getoption("--event-loops")).split(",")]
    else:
        chosen = [event_loop.resolved_name("auto")]
    return _factories(chosen) or _factories(["asyncio"])


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    """The server under test; the embedded one is started for the session when needed."""
    url = os.environ.get("DATABASE_URL")
    if url:
        server = PgServer(admin_dsn=maintenance_dsn(url))
        yield server
    else:
        from dal.db.embedded import EmbeddedServer

        data_dir = Path(os.environ.get("DEFEAH_DATA_DIR", ROOT / ".defeah" / "test-pgdata"))
        embedded = EmbeddedServer(data_dir.resolve(), "defeah_test")
        embedded.start()
        server = PgServer(admin_dsn=embedded.admin_dsn())
        try:
            yield server
        finally:
            _drop_all(server)
            embedded.stop()
        return
    _drop_all(server)


def _drop_all(server: PgServer) -> None:
    for name in list(server.created):
        server.drop_database(name)


@pytest.fixture(scope="session")
def template_db(pg: PgServer) -> str:
    """Name of a database migrated to head, used as a CREATE DATABASE template."""
    name = pg.create_database("defeah_tpl")
    migrations.apply(pg.dsn(name))
    return name


@pytest.fixture
def fresh_dsn(pg: PgServer, template_db: str) -> Iterator[str]:
    """DSN of a brand-new database at migration head, dropped after the test."""
    name = pg.create_database("defeah_t", template=template_db)
    yield pg.dsn(name)
    pg.drop_database(name)


@pytest.fixture
def empty_dsn(pg: PgServer) -> Iterator[str]:
    """DSN of a brand-new empty database (no migrations), dropped after the test."""
    name = pg.create_database("defeah_e")
    yield pg.dsn(name)
    pg.drop_database(name)


@pytest.fixture(scope="session")
def shared_dsn(pg: PgServer, template_db: str) -> str:
    """One migrated database shared by the DAL tests; ``clean_dsn`` empties it per test."""
    return pg.dsn(pg.create_database("defeah_shared", template=template_db))


@pytest.fixture
def clean_dsn(shared_dsn: str) -> str:
    # CASCADE: the tables that point at users (0010's callback records) are emptied with it
    query(
        shared_dsn,
        "TRUNCATE users, sign_in_budgets, auth_events, sign_in_known_addresses, erasure_receipts "
        "CASCADE",
    )
    return shared_dsn


@pytest.fixture
def settings(clean_dsn: str) -> Settings:
    return make_settings(clean_dsn)


@pytest_asyncio.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    async with Database(settings) as database:
        yield database


@pytest.fixture
def bcrypt_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Counts real bcrypt work (the library's hashpw/checkpw, still called through)."""
    calls: Counter[str] = Counter()
    real_check, real_hash = bcrypt.checkpw, bcrypt.hashpw

    def checkpw(password: bytes, hashed: bytes) -> bool:
        calls["checkpw"] += 1
        return real_check(password, hashed)

    def hashpw(password: bytes, salt: bytes) -> bytes:
        calls["hashpw"] += 1
        return real_hash(password, salt)

    monkeypatch.setattr(bcrypt, "checkpw", checkpw)
    monkeypatch.setattr(bcrypt, "hashpw", hashpw)
    yield calls
