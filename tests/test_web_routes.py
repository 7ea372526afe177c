"""Health routes through aiohttp's test server: status codes, headers, document shape, errors.

Every app here talks to the real PostgreSQL of the test session (or, for the "database down"
cases, to an address where nothing answers or something answers too slowly).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from importlib.metadata import version as package_version
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import BaseTestServer, TestClient, TestServer
from aiohttp.web_runner import BaseRunner

from dal.db import event_loop
from dal.db.dsn import describe_dsn
from dal.db.settings import Settings
from dal.migrations import runner as migrations
from tests.factories import make_settings
from web.access_log import AccessLog
from web.app import DATABASE, create_app
from web.edge import edge_layer
from web.health import HEALTH
from web.http_server import HttpRunner
from web.log_sink import LineSink
from web.metrics import HTTP_REQUESTS
from web.single_flight import SingleFlight

HEALTH_TYPE = "application/health+json"
PROBLEM_TYPE = "application/problem+json"
CHECK_KEY = re.compile(r"^[A-Za-z][\w-]*(:[A-Za-z][\w-]*)?$")
ROUTES = (
    "/api/v1/health",
    "/api/v1/health/database",
    "/api/v1/health/detailed",
    "/livez",
    "/readyz",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class HttpTestServer(TestServer):
    """aiohttp's test server running the app through our ``HttpRunner``, as ``serve`` does:
    the edge layer then runs around the app's handler instead of as its middleware."""

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return HttpRunner(self.app, header_timeout=5.0, **kwargs)


# The two ways the app is served: as a plain aiohttp app (tests, embedders) and by our server.
SERVERS = {"aiohttp": TestServer, "ours": HttpTestServer}


@asynccontextmanager
async def serving(
    settings: Settings, app: web.Application | None = None, server: str = "aiohttp"
) -> AsyncIterator[TestClient]:
    test_server: BaseTestServer = SERVERS[server](app or create_app(settings))
    async with TestClient(test_server) as client:
        yield client


async def get_json(
    client: TestClient, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], Any]:
    async with client.get(path, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.json(content_type=None)


def assert_health_document(body: dict[str, Any]) -> None:
    """The draft's shape: top-level status/version/serviceId, checks keyed component:measurement,
    each an array of observations with status, observedValue, observedUnit, time (RFC 3339)."""
    assert body["status"] in ("pass", "warn", "fail")
    assert body["version"] == package_version("defeah-db")
    assert body["serviceId"] == "defeah-db"
    assert body["checks"], "a health document without checks"
    for key, observations in body["checks"].items():
        assert CHECK_KEY.match(key), key
        assert isinstance(observations, list) and observations
        for obs in observations:
            assert obs["status"] in ("pass", "warn", "fail")
            assert "observedValue" in obs and isinstance(obs["observedUnit"], str)
            assert datetime.fromisoformat(obs["time"]).tzinfo is not None
            assert obs["componentType"] in ("component", "datastore", "system")
            assert ("output" in obs) == (obs["status"] != "pass"), obs
    worst = max(
        (o["status"] for obs in body["checks"].values() for o in obs),
        key=["pass", "warn", "fail"].index,
    )
    assert body["status"] == worst


@pytest.fixture
def web_settings(fresh_dsn: str) -> Settings:
    return make_settings(fresh_dsn, pool_min_size=1, pool_max_size=4, health_timeout=1.0)


async def test_every_route_answers_health_json(web_settings: Settings) -> None:
    async with serving(web_settings) as client:
        for path in ROUTES:
            status, headers, body = await get_json(client, path)
            assert status == 200, (path, body)
            assert headers["Content-Type"] == HEALTH_TYPE
            assert headers["Cache-Control"] == "no-store"
            assert_health_document(body)
            assert body["status"] == "pass"


async def test_liveness_reports_uptime_only(web_settings: Settings) -> None:
    async with serving(web_settings) as client:
        _, _, body = await get_json(client, "/api/v1/health")
    assert list(body["checks"]) == ["uptime"]
    uptime = body["checks"]["uptime"][0]
    assert uptime["observedUnit"] == "s" and uptime["observedValue"] >= 0


async def test_database_route_measures_a_round_trip(web_settings: Settings) -> None:
    async with serving(web_settings) as client:
        _, _, body = await get_json(client, "/api/v1/health/database")
    (check,) = body["checks"]["postgresql:responseTime"]
    assert check["componentType"] == "datastore"
    assert check["observedUnit"] == "ms" and check["observedValue"] > 0


async def test_detailed_reports_pool_migrations_uptime(web_settings: Settings) -> None:
    state = migrations.status(web_settings.database_url or "")
    async with serving(web_settings) as client:
        _, _, body = await get_json(client, "/api/v1/health/detailed")
    checks = body["checks"]
    assert set(checks) == {
        "postgresql:responseTime",
        "postgresql:connections",
        "postgresql:migrations",
        "postgresql:schema",
        "uptime",
        "eventLoop",
    }
    assert checks["eventLoop"][0]["observedValue"] == event_loop.running_loop_name()
    dsn = web_settings.database_url or ""
    assert checks["postgresql:responseTime"][0]["componentId"] == describe_dsn(dsn)
    pool = checks["postgresql:connections"][0]["observedValue"]
    assert set(pool) == {"size", "idle", "inUse", "min", "max", "waiting"}
    assert pool["max"] == 4 and pool["min"] == 1
    assert pool["size"] == pool["idle"] + pool["inUse"] and pool["size"] >= 1
    schema = checks["postgresql:migrations"][0]
    assert schema["status"] == "pass"
    assert schema["observedValue"] == {
        "applied": len(state.applied),
        "head": state.head,
        "pending": [],
    }


@pytest.mark.parametrize("server", SERVERS)
async def test_head_requests_have_headers_and_no_body(web_settings: Settings, server: str) -> None:
    async with serving(web_settings, server=server) as client:
        for path in ROUTES:
            async with client.head(path) as resp:
                assert resp.status == 200, path
                assert resp.headers["Content-Type"] == HEALTH_TYPE
                assert resp.headers["Cache-Control"] == "no-store"
                assert await resp.read() == b""


@pytest.mark.parametrize("server", SERVERS)
async def test_unknown_path_is_problem_json(web_settings: Settings, server: str) -> None:
    async with serving(web_settings, server=server) as client:
        status, headers, body = await get_json(client, "/api/v1/nope")
        async with client.head("/nope") as resp:
            assert resp.status == 404
            assert resp.headers["Content-Type"] == PROBLEM_TYPE
    assert status == 404
    assert headers["Content-Type"] == PROBLEM_TYPE
    assert body["status"] == 404 and body["title"] == "Not Found" and body["type"] == "about:blank"
    assert "<html" not in str(body).lower()


@pytest.mark.parametrize("server", SERVERS)
async def test_wrong_method_is_problem_json_with_allow(web_settings: Settings, server: str) -> None:
    async with serving(web_settings, server=server) as client:
        for path in ROUTES:
            async with client.post(path, data=b"{}") as resp:
                assert resp.status == 405, path
                assert resp.headers["Content-Type"] == PROBLEM_TYPE
                assert set(resp.headers["Allow"].split(",")) == {"GET", "HEAD"}
                body = await resp.json(content_type=None)
                assert body["status"] == 405 and body["title"] == "Method Not Allowed"


async def broken(request: web.Request) -> web.Response:
    raise RuntimeError("internal detail s3cret-in-exception")


@pytest.mark.parametrize("server", SERVERS)
async def test_unexpected_error_is_a_bare_500_problem(web_settings: Settings, server: str) -> None:
    app = create_app(web_settings)
    app.router.add_get("/broken", broken)  # added after create_app, as an embedder would
    async with serving(web_settings, app, server) as client, client.get("/broken") as resp:
        text = await resp.text()
        assert resp.status == 500
        assert resp.headers["Content-Type"] == PROBLEM_TYPE
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert "s3cret" not in text and "Traceback" not in text and "RuntimeError" not in text


def requests_counted(route: str, method: str, status: int) -> float:
    return HTTP_REQUESTS.labels(route, method, str(status)).value


@pytest.mark.parametrize("server", SERVERS)
async def test_the_edge_layer_runs_exactly_once_per_request(
    web_settings: Settings, server: str
) -> None:
    """Our runner moves the edge middleware out of the app and calls it around the app's
    handler; a request must then pass it once (counted once), not twice and not never."""
    app = create_app(web_settings)
    app.router.add_get("/broken", broken)
    cases = [
        ("GET", "/api/v1/health", {}, "/api/v1/health", 200),
        ("GET", "/nope", {}, "unmatched", 404),
        ("POST", "/livez", {}, "unmatched", 405),
        ("GET", "/broken", {}, "/broken", 500),
    ]
    if server == "ours":  # aiohttp answers an unknown Expect before any middleware runs
        cases.append(("GET", "/livez", {"Expect": "nonsense"}, "/livez", 417))
    before = [requests_counted(route, method, status) for method, _, _, route, status in cases]
    async with serving(web_settings, app, server) as client:
        for _ in range(3):
            for method, path, headers, _, status in cases:
                async with client.request(method, path, headers=headers) as resp:
                    assert resp.status == status, path
                    assert resp.headers["Server"] == "defeah-db", path
                    assert resp.headers["Cache-Control"] == "no-store", path
                    if status >= 400:
                        assert resp.headers["Content-Type"] == PROBLEM_TYPE, path
        assert (edge_layer in app.middlewares) == (server == "aiohttp")
    after = [requests_counted(route, method, status) for method, _, _, route, status in cases]
    assert [b - a for a, b in zip(before, after, strict=True)] == [3.0] * len(cases)


class BrokenResolver(web.PlainResource):
    """A resource whose routing itself fails: the request has no match info yet."""

    async def resolve(self, request: web.Request) -> Any:
        raise RuntimeError("resolver failed")


async def test_a_failing_router_is_one_counted_500_problem(
    web_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(web_settings)
    app.router.register_resource(BrokenResolver("/any"))
    before = requests_counted("unmatched", "GET", 500)
    async with serving(web_settings, app, "ours") as client, client.get("/any") as resp:
        assert resp.status == 500
        assert resp.headers["Content-Type"] == PROBLEM_TYPE
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert requests_counted("unmatched", "GET", 500) == before + 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].name == "web.problems", errors


async def serve_once(runner: HttpRunner, requests: list[tuple[str, dict[str, str]]]) -> list[Any]:
    """Set the runner up on a free port, send each (path, headers), clean up; the replies."""
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        replies = []
        async with aiohttp.ClientSession() as session:
            for path, headers in requests:
                async with session.get(f"http://127.0.0.1:{port}{path}", headers=headers) as r:
                    replies.append((r.status, r.headers.copy(), await r.read()))
        return replies
    finally:
        await runner.cleanup()


async def test_our_runner_keeps_the_edge_across_setups_and_a_failed_start(
    web_settings: Settings,
) -> None:
    app = create_app(web_settings)
    runner = HttpRunner(app, header_timeout=5.0)
    for _ in range(2):  # a second setup finds the app frozen, the edge already outside it
        [(status, headers, _)] = await serve_once(runner, [("/nope", {})])
        assert status == 404 and headers["Content-Type"] == PROBLEM_TYPE
        assert headers["Server"] == "defeah-db"

    async def failing_start(app: web.Application) -> None:
        raise RuntimeError("start-up failed")

    app = create_app(web_settings)
    app.on_startup.append(failing_start)
    with pytest.raises(RuntimeError, match="start-up failed"):
        await HttpRunner(app, header_timeout=5.0).setup()
    assert list(app.middlewares) == [edge_layer]  # given back for whoever serves it next


async def test_an_app_frozen_before_our_runner_keeps_headers_on_every_reply(
    web_settings: Settings,
) -> None:
    """Frozen first (as when mounted in another app), the edge stays a middleware; aiohttp's
    417 for an unknown Expect, made before any middleware, still gets the headers."""
    app = create_app(web_settings)
    app.freeze()
    replies = await serve_once(
        HttpRunner(app, header_timeout=5.0), [("/nope", {}), ("/livez", {"Expect": "x"})]
    )
    assert [status for status, _, _ in replies] == [404, 417]
    for _, headers, _ in replies:
        assert headers["Server"] == "defeah-db" and headers["Cache-Control"] == "no-store"
    assert edge_layer in app.middlewares


async def test_the_apps_handler_args_reach_our_server(web_settings: Settings) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(middlewares=[edge_layer], handler_args={"max_field_size": 100})
    app.router.add_get("/", ok)
    replies = await serve_once(
        HttpRunner(app, header_timeout=5.0),
        [("/", {"X-Long": "y" * 50}), ("/", {"X-Long": "y" * 200})],
    )
    assert [status for status, _, _ in replies] == [200, 400]


async def test_health_token_restricts_detailed_to_bearer(web_settings: Settings) -> None:
    token = "tok-" + "x" * 24
    settings = web_settings.replace(health_token=token)
    async with serving(settings) as client:
        for headers in (
            None,
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Basic {token}"},
            {"Authorization": token},
            {"Authorization": f"Bearer {token}x"},
        ):
            status, response_headers, body = await get_json(
                client, "/api/v1/health/detailed", headers
            )
            assert status == 401, headers
            assert response_headers["Content-Type"] == PROBLEM_TYPE
            assert response_headers["WWW-Authenticate"].startswith("Bearer")
            assert body["status"] == 401 and "checks" not in body
        for scheme in ("Bearer", "bearer"):
            auth = {"Authorization": f"{scheme} {token}"}
            status, _, body = await get_json(client, "/api/v1/health/detailed", auth)
            assert status == 200
            assert_health_document(body)
            assert token not in str(body)
        # liveness and readiness stay open: orchestrators do not carry tokens
        assert (await get_json(client, "/api/v1/health/database"))[0] == 200


async def test_pending_migration_is_named_and_behind_the_code_fails(fresh_dsn: str) -> None:
    undone = migrations.rollback(fresh_dsn)
    assert len(undone) == 1
    settings = make_settings(fresh_dsn, pool_min_size=1, pool_max_size=2)
    async with serving(settings) as client:
        status, _, body = await get_json(client, "/api/v1/health/detailed")
    # The code requires the newest migration (issue 13): behind it is not healthy.
    assert status == 503
    assert body["checks"]["postgresql:schema"][0]["status"] == "fail"
    schema = body["checks"]["postgresql:migrations"][0]
    assert schema["status"] == "warn"
    assert schema["observedValue"]["pending"] == undone
    assert undone[0] in schema["output"]


@pytest.mark.timeout(30)  # its own deadline: a regression fails here, never hangs
async def test_pool_exhausted_fails_database_within_timeout(web_settings: Settings) -> None:
    settings = web_settings.replace(pool_min_size=1, pool_max_size=2, health_timeout=0.5)
    app = create_app(settings)
    async with serving(settings, app) as client:
        db = app[DATABASE]
        async with db.acquire() as held_1, db.acquire() as held_2:
            assert held_1 is not held_2
            started = time.perf_counter()
            status, _, body = await get_json(client, "/api/v1/health/database")
            elapsed = time.perf_counter() - started
            assert status == 503
            assert body["status"] == "fail"
            check = body["checks"]["postgresql:responseTime"][0]
            assert check["output"] == "database unavailable"  # open route: no details
            assert elapsed < settings.health_timeout + 0.5, elapsed  # bounded, not hanging
            assert (await get_json(client, "/api/v1/health"))[0] == 200
            status, _, body = await get_json(client, "/api/v1/health/detailed")
            assert status == 503
            check = body["checks"]["postgresql:responseTime"][0]
            assert "within 0.5s" in check["output"]  # pool wait or overall deadline, same bound
        assert (await get_json(client, "/api/v1/health/database"))[0] == 200


async def test_probe_storm_shares_one_database_check(web_settings: Settings) -> None:
    settings = web_settings.replace(pool_min_size=1, pool_max_size=10)
    app = create_app(settings)
    async with serving(settings, app) as client:
        assert app[DATABASE].metrics().size == 1

        async def probe() -> int:
            async with client.get("/api/v1/health/database") as resp:
                await resp.read()
                return resp.status

        statuses = await asyncio.gather(*(probe() for _ in range(60)))
        assert statuses == [200] * 60
        # Without single-flight, 60 concurrent checks would have grown the pool towards 10.
        # One connection per kind of check: readiness runs the round trip, then the schema
        # check, and on uvloop a late probe's round trip overlaps an early one's schema read.
        assert app[DATABASE].metrics().size <= 2


async def test_single_flight_runs_once_for_concurrent_callers() -> None:
    flight = SingleFlight[int]()
    started = 0
    release = asyncio.Event()

    async def check() -> int:
        nonlocal started
        started += 1
        await release.wait()
        return started

    waiters = [asyncio.ensure_future(flight.run(check)) for _ in range(25)]
    await asyncio.sleep(0)
    waiters[0].cancel()  # one caller giving up does not cancel the shared check
    release.set()
    results = await asyncio.gather(*waiters[1:])
    assert results == [1] * 24
    assert await flight.run(check) == 2  # a finished check is not reused


async def test_app_starts_when_database_is_down(fresh_dsn: str) -> None:
    dead = f"postgresql://postgres:s3cret-down@127.0.0.1:{free_port()}/nowhere"
    settings = make_settings(dead, connect_timeout=1.0, health_timeout=1.0)
    async with serving(settings) as client:
        assert (await get_json(client, "/api/v1/health"))[0] == 200
        for path in ("/api/v1/health/database", "/readyz", "/api/v1/health/detailed"):
            status, headers, body = await get_json(client, path)
            assert status == 503, path
            assert headers["Content-Type"] == HEALTH_TYPE
            assert body["status"] == "fail"
            assert "s3cret-down" not in str(body)
        _, _, body = await get_json(client, "/api/v1/health/detailed")
        assert body["checks"]["postgresql:migrations"][0]["status"] == "fail"


@pytest.mark.timeout(30)  # its own deadline: a regression fails here, never hangs
async def test_hanging_database_fails_within_health_timeout() -> None:
    """A server that accepts connections and never answers (a hung PostgreSQL looks like this)."""
    accepted: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    hung = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = hung.sockets[0].getsockname()[1]
    dsn = f"postgresql://postgres:s3cret-hung@127.0.0.1:{port}/hung"
    settings = make_settings(dsn, connect_timeout=1.0, health_timeout=0.5)
    try:
        async with serving(settings) as client:
            for path in ("/api/v1/health/database", "/api/v1/health/detailed"):
                started = time.perf_counter()
                status, _, body = await get_json(client, path)
                elapsed = time.perf_counter() - started
                assert status == 503, path
                assert elapsed < settings.health_timeout + 1.5, (path, elapsed)
                assert "s3cret-hung" not in str(body)
            assert (await get_json(client, "/api/v1/health"))[0] == 200
        assert accepted, "the app never tried to connect"
    finally:
        for writer in accepted:
            writer.close()
        hung.close()
        await hung.wait_closed()


async def test_health_service_is_stored_under_typed_keys(web_settings: Settings) -> None:
    app = create_app(web_settings)
    assert app[HEALTH].db is app[DATABASE]
    # constructing the app connects nowhere: the pool is created at start-up
    assert app[DATABASE].metrics().size == 0


async def test_access_log_is_one_json_line_per_request_without_query(
    web_settings: Settings,
) -> None:
    read_end, write_end = os.pipe()
    sink = LineSink(write_end)
    access = AccessLog(sink)
    server = TestServer(create_app(web_settings))
    # TestServer forwards runner options only through start_server()
    await server.start_server(
        access_log_class=access.logger_class(), access_log=logging.getLogger("web.access")
    )
    async with TestClient(server) as client:
        for path in ("/api/v1/health?token=s3cret-query", "/evil%0Afake%20line", "/livez"):
            async with client.get(path) as resp:
                await resp.read()
    assert sink.flush(timeout=5)
    written = os.read(read_end, 65536).decode()
    os.close(read_end)
    os.close(write_end)
    lines = written.splitlines()
    assert len(lines) == 3
    entries = [json.loads(line.split(" INFO web.access: ", 1)[1]) for line in lines]
    assert [e["path"] for e in entries] == ["/api/v1/health", "/evil\nfake line", "/livez"]
    assert [e["status"] for e in entries] == [200, 404, 200]
    assert all(e["method"] == "GET" and e["ms"] >= 0 for e in entries)
    assert "s3cret-query" not in written


def test_timestamps_match_the_formats_they_replace(monkeypatch: pytest.MonkeyPatch) -> None:
    """``web.timestamps`` formats the second once and the text once a millisecond: across a
    second boundary it must still be what ``datetime.isoformat`` (health "time", UTC) gives,
    and live it must match logging's asctime (access lines)."""
    from datetime import UTC, datetime

    from web import timestamps
    from web.timestamps import log_time, utc_iso

    stamper = timestamps.Stamper("%Y-%m-%dT%H:%M:%S", time.gmtime, ".", "Z")
    for now in (1999.9991, 1999.9995, 2000.0, 2000.0012):
        monkeypatch.setattr(timestamps.time, "time", lambda now=now: now)
        expected = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
        assert stamper() == expected.replace("+00:00", "Z"), now
    monkeypatch.undo()

    for _ in range(3):
        stamp = utc_iso()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp), stamp
        parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        assert abs((datetime.now(UTC) - parsed).total_seconds()) < 1
        local = log_time()
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}", local), local
        parsed_local = datetime.strptime(local, "%Y-%m-%d %H:%M:%S,%f")
        assert abs((datetime.now() - parsed_local).total_seconds()) < 1
        time.sleep(0.6)  # the next call may cross into a new second
