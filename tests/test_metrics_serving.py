"""``/metrics`` served by a real server process (issue 20, item 18): the exposition is cached
for a second, and on production the route needs its bearer token.  The route reads two figures
from the database, so tests/scale/test_metrics_via_pgbouncer.py runs these again through
PgBouncer (the ``served_database`` fixture)."""

from __future__ import annotations

import base64
import secrets
import time
from pathlib import Path

import pytest

from tests.test_metrics import samples
from tests.test_web_process import base_env, web_process
from web.metrics import EXPOSITION_CACHE_SECONDS

TOKEN = "metrics-token-0123456789"
LIVEZ = ("defeah_http_requests_total", (("method", "GET"), ("route", "/livez"), ("status", "200")))


@pytest.fixture
def served_database(clean_dsn: str) -> dict[str, str]:
    """The environment that points a server at the test database."""
    return {"DATABASE_URL": clean_dsn}


def production_env(
    database: dict[str, str], environment: str = "production", **extra: str
) -> dict[str, str]:
    key = base64.b64encode(secrets.token_bytes(32)).decode()  # serving there needs the key ring
    return base_env(**database, DEFEAH_ENV=environment, DEFEAH_TOKEN_KEYS=f"k1:{key}", **extra)


def test_the_exposition_is_cached_briefly(tmp_path: Path, served_database: dict[str, str]) -> None:
    with web_process(tmp_path, base_env(**served_database)) as server:
        server.request("/livez")
        first = server.request("/metrics")
        assert first.status == 200
        before = samples(first.body.decode())[LIVEZ]
        for _ in range(3):
            assert server.request("/livez").status == 200
        again = server.request("/metrics")  # well within the second: the same text
        assert again.body == first.body
        time.sleep(EXPOSITION_CACHE_SECONDS + 0.1)
        fresh = samples(server.request("/metrics").body.decode())
        assert fresh[LIVEZ] == before + 3
        assert fresh[("defeah_migrations_pending", ())] == 0  # the database figures are there


def test_on_production_metrics_needs_its_token(
    tmp_path: Path, served_database: dict[str, str]
) -> None:
    with web_process(tmp_path, production_env(served_database)) as server:
        for headers in ({}, {"Authorization": "Bearer anything-at-all-long"}):
            reply = server.request("/metrics", headers=headers)
            assert reply.status == 401
            assert reply.headers["WWW-Authenticate"] == 'Bearer realm="metrics"'
            assert reply.headers["Content-Type"].startswith("application/problem+json")
            assert b"defeah_" not in reply.body
        assert server.request("/readyz").status == 200  # the rest serves as before
    assert "/metrics answers 401 to everyone: DEFEAH_ENV=production requires" in server.output()
    env = production_env(served_database, DEFEAH_METRICS_TOKEN=TOKEN)
    with web_process(tmp_path, env) as server:
        assert server.request("/metrics").status == 401
        reply = server.request("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert reply.status == 200
        assert samples(reply.body.decode())[("defeah_migrations_pending", ())] == 0
    assert "/metrics answers 401" not in server.output()
    assert TOKEN not in server.output()


def test_off_production_an_unset_token_leaves_metrics_open(
    tmp_path: Path, served_database: dict[str, str]
) -> None:
    with web_process(tmp_path, production_env(served_database, "staging")) as server:
        assert server.request("/metrics").status == 200
