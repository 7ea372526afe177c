"""``GET /metrics`` (issue 14, items 4-5): valid exposition (promtool), bounded labels, its own
token, counters that move by exactly what happened, one connection for 1,000 scrapes, and a
real Prometheus server scraping us on loopback."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from dal import Database, NewUser, telemetry
from dal.db.settings import Settings
from dal.errors import AccountLocked, DatabaseUnavailable, InvalidCredentials
from dal.users.repository import UsersRepository
from tests.conftest import make_settings
from tests.test_web_routes import free_port
from web.app import DATABASE, create_app

TOKEN = "metrics-token-0123456789"


def dal_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    for collector in telemetry.COLLECTORS:
        registry.register(collector)
    return registry


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(create_app(settings))) as client:
        yield client


def require(program: str) -> str:
    """The program's path; CI (DEFEAH_REQUIRE_SCALE) fails without it, others skip."""
    path = shutil.which(program)
    if path is None:
        message = f"{program} is not installed (Debian package prometheus)"
        if os.environ.get("DEFEAH_REQUIRE_SCALE", "") not in ("", "0"):
            pytest.fail(message)
        pytest.skip(message)
    return path


async def test_promtool_accepts_the_exposition(settings: Settings, tmp_path: Path) -> None:
    promtool = require("promtool")
    async with serving(settings) as client:
        await client.get("/api/v1/health/database")
        await client.get("/no/such/page")
        response = await client.get("/metrics")
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await response.text()
    command = [promtool, "check", "metrics"]
    done = await asyncio.to_thread(
        subprocess.run, command, input=text, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for name in (
        "defeah_pool_size",
        "defeah_pool_in_use",
        "defeah_pool_idle",
        "defeah_pool_waiting",
        "defeah_pool_acquire_wait_seconds_bucket",
        "defeah_query_duration_seconds_count",
        "defeah_bcrypt_queue_depth",
        "defeah_bcrypt_share",
        "defeah_migrations_pending",
        "defeah_instagram_tokens_due",
        "defeah_http_requests_total",
        "defeah_http_request_duration_seconds_bucket",
    ):
        assert f"\n{name}" in text, name


async def test_http_labels_are_route_templates_never_raw_paths(settings: Settings) -> None:
    async with serving(settings) as client:
        for path in ("/api/v1/health", "/nope/123", "/nope/456?email=a@example.com"):
            await client.get(path)
        await client.request("PROPFIND", "/api/v1/health")  # a method outside METHODS
        text = await (await client.get("/metrics")).text()
    seen = samples(text)
    routes = {
        dict(labels)["route"] for name, labels in seen if name == "defeah_http_requests_total"
    }
    assert "/api/v1/health" in routes and "unmatched" in routes
    assert not any("nope" in route for route in routes)
    methods = {
        dict(labels)["method"] for name, labels in seen if name == "defeah_http_requests_total"
    }
    assert "PROPFIND" not in methods and "other" in methods
    assert "example.com" not in text


async def test_the_metrics_token_is_its_own(clean_dsn: str) -> None:
    settings = make_settings(clean_dsn, metrics_token=TOKEN, health_token="health-token-abcdefgh")
    async with serving(settings) as client:
        assert (await client.get("/metrics")).status == 401
        health = {"Authorization": "Bearer health-token-abcdefgh"}
        assert (await client.get("/metrics", headers=health)).status == 401
        ok = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status == 200
        detailed = await client.get("/api/v1/health/detailed", headers=health)
        assert detailed.status == 200


async def test_acquire_timeout_counter_moves_by_exactly_the_forced_timeouts(
    clean_dsn: str,
) -> None:
    registry = dal_registry()
    before = sample(registry, "defeah_pool_acquire_timeouts_total", pool="primary")
    waits = sample(registry, "defeah_pool_acquire_wait_seconds_count", pool="primary")
    async with Database(make_settings(clean_dsn, pool_min_size=1, pool_max_size=1)) as db:
        async with asyncio.timeout(10), db.acquire():
            for _ in range(3):
                with pytest.raises(DatabaseUnavailable):
                    async with db.acquire(timeout=0.05):
                        pass
        async with db.acquire():  # a successful acquire is a wait, not a timeout
            pass
    assert sample(registry, "defeah_pool_acquire_timeouts_total", pool="primary") == before + 3
    assert sample(registry, "defeah_pool_acquire_wait_seconds_count", pool="primary") == waits + 5


async def test_sign_ins_by_result_and_exactly_one_lockout(clean_dsn: str) -> None:
    registry = dal_registry()
    settings = make_settings(clean_dsn, lockout_account_threshold=3, lockout_threshold=100)
    before = {
        result: sample(registry, "defeah_sign_ins_total", result=result)
        for result in ("success", "invalid_credentials", "locked")
    }
    lockouts = sample(registry, "defeah_lockouts_total")
    async with Database(settings) as db:
        users = UsersRepository(db)
        await users.create(NewUser(email="m@example.com", password="right-pw"))  # type: ignore[arg-type]
        await users.authenticate("m@example.com", "right-pw")
        for _ in range(3):
            with pytest.raises(InvalidCredentials):
                await users.authenticate("m@example.com", "wrong-pw")
        with pytest.raises(AccountLocked):
            await users.authenticate("m@example.com", "right-pw")  # locked now
    after = {r: sample(registry, "defeah_sign_ins_total", result=r) - before[r] for r in before}
    assert after == {"success": 1, "invalid_credentials": 3, "locked": 1}
    assert sample(registry, "defeah_lockouts_total") == lockouts + 1


async def test_a_thousand_concurrent_scrapes_use_one_connection(clean_dsn: str) -> None:
    settings = make_settings(clean_dsn, pool_min_size=0, pool_max_size=10)
    async with serving(settings) as client:
        db = client.app[DATABASE]
        assert db.metrics().size == 0
        async with asyncio.timeout(120):
            responses = await asyncio.gather(*(client.get("/metrics") for _ in range(1000)))
            assert {r.status for r in responses} == {200}
        assert db.metrics().size == 1  # sequential queries on one connection, never side by side
        text = await responses[-1].text()
    seen = samples(text)
    assert seen[("defeah_migrations_pending", ())] == 0
    assert seen[("defeah_instagram_tokens_due", ())] == 0


@contextmanager
def prometheus_server(target: str, token: str, tmp_path: Path) -> Iterator[str]:
    """A real Prometheus scraping ``target`` every second; yields its base URL."""
    binary = require("prometheus")
    (tmp_path / "token").write_text(token)
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: defeah\n"
        f"    authorization:\n      credentials_file: {tmp_path / 'token'}\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("w"),
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def query(session: aiohttp.ClientSession, base: str, promql: str) -> list[dict[str, object]]:
    """The instant-vector result of ``promql``; empty while Prometheus is starting."""
    try:
        async with session.get(f"{base}/api/v1/query", params={"query": promql}) as response:
            if response.status != 200:
                return []
            body = await response.json()
    except aiohttp.ClientConnectionError:
        return []
    result: list[dict[str, object]] = body["data"]["result"]
    return result


async def test_a_real_prometheus_scrapes_us(clean_dsn: str, tmp_path: Path) -> None:
    settings = make_settings(clean_dsn, metrics_token=TOKEN, pool_max_size=7)
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        with prometheus_server(f"127.0.0.1:{port}", TOKEN, tmp_path) as base:
            async with aiohttp.ClientSession() as session, asyncio.timeout(60):
                up: list[dict[str, object]] = []
                while not up:
                    await asyncio.sleep(0.5)
                    up = await query(session, base, 'up{job="defeah"} == 1')
                pool: list[dict[str, object]] = []
                while not pool:
                    await asyncio.sleep(0.5)
                    pool = await query(session, base, 'defeah_pool_max_size{pool="primary"}')
    finally:
        await runner.cleanup()
    assert up[0]["value"][1] == "1"  # type: ignore[index]
    assert pool[0]["value"][1] == "7"  # type: ignore[index]


def test_loop_recorders_expose_what_prometheus_client_would() -> None:
    """``LoopHistogram``/``LoopCounter`` replace the library's recorders on the hot paths; for
    the same observations (bucket edges included: ``le`` is inclusive) the exposition must
    be the library's, sample for sample, ``_created`` aside."""
    from prometheus_client import Counter, Histogram, generate_latest

    buckets = (0.001, 0.01, 0.1, 1.0)
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    histogram = telemetry.LoopHistogram("t_seconds", "h", ["q"], buckets=buckets)
    counter = telemetry.LoopCounter("t_events", "c", ["r"])
    ours.register(histogram)
    ours.register(counter)
    reference = Histogram("t_seconds", "h", ["q"], buckets=buckets, registry=theirs)
    reference_counter = Counter("t_events", "c", ["r"], registry=theirs)
    for value in (0.0, 0.001, 0.0011, 0.01, 0.5, 1.0, 3.0, 1e9):
        histogram.labels("a").observe(value)
        reference.labels("a").observe(value)
    histogram.labels("b").observe(0.02)
    reference.labels("b").observe(0.02)
    for result, n in (("ok", 3), ("no", 1)):
        for _ in range(n):
            counter.labels(result).inc()
            reference_counter.labels(result).inc()
    expected = {
        key: value
        for key, value in samples(generate_latest(theirs).decode()).items()
        if not key[0].endswith("_created")
    }
    assert samples(generate_latest(ours).decode()) == expected
    with pytest.raises(ValueError, match="takes labels"):
        histogram.labels("a", "b")
    unlabelled = CollectorRegistry()
    unlabelled.register(telemetry.LoopCounter("t_never", "u"))  # exposed as 0 before any inc
    assert sample(unlabelled, "t_never_total") == 0.0
    assert "t_never_total 0.0" in generate_latest(unlabelled).decode()
