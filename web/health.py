"""Health routes and their documents (the IETF "Health Check Response Format for HTTP APIs").

Three questions, three routes:

* ``/api/v1/health`` (alias ``/livez``): is the process answering?  Never touches the database,
  so an orchestrator does not restart a healthy process because PostgreSQL is down.
* ``/api/v1/health/database`` (alias ``/readyz``): can we serve traffic?  One ``SELECT 1``
  through the pool, bounded by the health timeout even when the server hangs or the pool is
  exhausted.
* ``/api/v1/health/detailed``: everything an operator wants: the database round trip, pool
  occupancy, migration state, version, uptime.  Optionally restricted by a bearer token, which
  is checked before any of that work: an unauthorized caller costs no database query.

What a route reveals: the open routes (the first two; orchestrators carry no token) say up or
down and the latency, with a generic ``output`` on failure.  The driver's error text (host,
database, role, server message) and the migration ids appear only on ``detailed``.

Probe storms: concurrent requests share one in-flight check per kind (``SingleFlight``), so a
thousand probes cost one pool connection, not a thousand.  A caller that joins late gets the
result of the check already running, which is at most one health timeout old.  The migration
state (a plain ``SELECT`` on the pool, see ``dal.migrations.schema_state``) is also cached for
``MIGRATIONS_CACHE_SECONDS`` after a successful read; failures are not cached.  Every check runs
inside ``Database.bounded``: the health timeout bounds it on the client and on the server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any, Final, TypeVar

import asyncpg
from aiohttp import web
from multidict import CIMultiDict

from dal.db.database import Database
from dal.db.event_loop import running_loop_name
from dal.db.failures import describe_error
from dal.db.pools import PoolMetrics
from dal.db.replicas import ReplicaHealth
from dal.db.settings import Settings
from dal.errors import DalError
from dal.migrations import runner, schema_state
from web.bearer import authorized
from web.headers import SECURITY_HEADERS
from web.single_flight import SingleFlight
from web.timestamps import utc_iso

HEALTH_TYPE = "application/health+json"
PACKAGE = "defeah-db"
MIGRATIONS_CACHE_SECONDS = 5.0
STATUS_ORDER = {"pass": 0, "warn": 1, "fail": 2}
# The only failure text the open routes give: the real one names host, database and role.
GENERIC_SCHEMA = "schema not at the required migration head"
GENERIC_SCHEMA_WARN = "schema differs from this release; details on /api/v1/health/detailed"
GENERIC_FAILURE = "database unavailable"

log = logging.getLogger(__name__)

T = TypeVar("T")


def service_version() -> str:
    try:
        return package_version(PACKAGE)
    except PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class Check:
    """One entry of ``checks["component:measurement"]``."""

    status: str
    observed_value: Any
    observed_unit: str
    component_type: str
    time: str
    output: str | None = None
    component_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"componentType": self.component_type}
        if self.component_id is not None:
            entry["componentId"] = self.component_id
        entry.update(
            status=self.status,
            observedValue=self.observed_value,
            observedUnit=self.observed_unit,
            time=self.time,
        )
        if self.output is not None:
            entry["output"] = self.output
        return entry


def worst(statuses: list[str]) -> str:
    return max(statuses, key=STATUS_ORDER.__getitem__, default="pass")


class HealthService:
    """Builds the health documents for one app; holds the single-flight and cache state."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.version = service_version()
        self.started = time.monotonic()
        self._database = SingleFlight[Check]()
        self._migrations = SingleFlight[Check]()
        self._migrations_cached: tuple[float, Check] | None = None
        self._migration_files: tuple[str, ...] | None = None
        self._liveness_parts: tuple[str, str, str] | None = None
        self._liveness_stamp = ""  # the utc_iso() text the cached body was built at
        self._liveness_body = b""
        self._replicas = SingleFlight[dict[str, ReplicaHealth]]()
        self._schema = SingleFlight[Check]()
        self._schema_cached: tuple[float, Check] | None = None
        # Monthly event partitions kept past this are a schema finding (readiness warns).
        self.retention = timedelta(days=settings.auth_events_retention_days)

    # -- checks --------------------------------------------------------------------------------

    def uptime(self) -> Check:
        seconds = round(time.monotonic() - self.started, 3)
        return Check("pass", seconds, "s", "system", utc_iso())

    def event_loop(self) -> Check:
        """The loop serving this request (DEFEAH_EVENT_LOOP resolved), read from the loop."""
        return Check("pass", running_loop_name(), "implementation", "system", utc_iso())

    async def database(self, *, identify: bool = False) -> Check:
        check = await self._database.run(self._round_trip)
        if identify:
            check = Check(**{**check.__dict__, "component_id": self.db.describe})
        return check

    async def _round_trip(self) -> Check:
        report = await self.db.health(self.settings.health_timeout)
        status = "pass" if report.ok else "fail"
        return Check(status, report.latency_ms, "ms", "datastore", utc_iso(), report.error)

    def pool(self, metrics: PoolMetrics | None = None, name: str | None = None) -> Check:
        """Occupancy of one pool (default: the primary's); ``name`` becomes its componentId."""
        m = self.db.metrics() if metrics is None else metrics
        value = {
            "size": m.size,
            "idle": m.idle,
            "inUse": m.in_use,
            "min": m.min_size,
            "max": m.max_size,
            "waiting": m.waiting,
        }
        output = f"{m.waiting} request(s) waiting for a connection" if m.waiting else None
        status = "warn" if m.waiting else "pass"
        return Check(status, value, "connections", "component", utc_iso(), output, name)

    def pools(self) -> list[Check]:
        """One entry per pool (``primary``, then each replica), told apart by componentId."""
        return [self.pool(metrics, name) for name, metrics in self.db.pool_metrics().items()]

    async def replicas(self) -> list[Check]:
        """Each replica's probe.  A replica down is ``warn``, not ``fail``: reads fall back to
        the primary, so the service is degraded, not down."""
        if not self.settings.replica_urls:
            return []
        reports = await self._replicas.run(self.db.replica_health)
        checks = []
        for report in reports.values():
            status, output = "pass", None
            if not report.ok:
                status = "warn"
                output = f"{report.name} unavailable, reads use the primary: {report.error}"
            elif report.in_recovery is False:
                status, output = "warn", f"{report.name} is not a standby (not in recovery)"
            value = report.latency_ms if report.ok else None
            checks.append(Check(status, value, "ms", "datastore", utc_iso(), output, report.target))
        return checks

    async def migration_files(self) -> tuple[str, ...]:
        """Ids of the migrations in ``sql/``, read once (in a thread: it is file I/O)."""
        if self._migration_files is None:
            self._migration_files = await asyncio.to_thread(runner.migration_ids)
        return self._migration_files

    async def migrations(self) -> Check:
        cached = self._migrations_cached
        if cached is not None and time.monotonic() - cached[0] < MIGRATIONS_CACHE_SECONDS:
            return cached[1]
        return await self._migrations.run(self._read_migrations)

    async def _read_migrations(self) -> Check:
        try:
            known = await self.migration_files()
            state = await schema_state.read_status(self.db, known, self.settings.health_timeout)
        except DalError as exc:
            return _migrations_failed(str(exc))
        value = {"applied": len(state.applied), "head": state.head, "pending": list(state.pending)}
        if state.pending:
            output = f"{len(state.pending)} pending: {', '.join(state.pending)}"
            check = Check("warn", value, "migrations", "datastore", utc_iso(), output)
        else:
            check = Check("pass", value, "migrations", "datastore", utc_iso())
        self._migrations_cached = (time.monotonic(), check)
        return check

    async def schema(self) -> Check:
        """Head against ``REQUIRED_HEAD``, checksums and drift: ``fail`` when the database is
        behind the code, ``warn`` when ahead (rolling deploy), changed or drifted.  Cached like
        the migration state; a failed read is not cached."""
        cached = self._schema_cached
        if cached is not None and time.monotonic() - cached[0] < MIGRATIONS_CACHE_SECONDS:
            return cached[1]
        limit = self.settings.health_timeout
        try:
            async with asyncio.timeout(limit):
                return await self._schema.run(self._read_schema)
        except TimeoutError:
            return Check(
                "fail", None, "schema", "datastore", utc_iso(), f"no answer within {limit:g}s"
            )

    async def _read_schema(self) -> Check:
        try:
            async with self.db.bounded(self.settings.health_timeout) as conn:
                state = await schema_state.read(conn, self.retention)
        except DalError as exc:
            return Check("fail", None, "schema", "datastore", utc_iso(), str(exc))
        except asyncpg.exceptions.PostgresError as exc:  # e.g. the health lock_timeout
            reason = f"cannot read the schema state: {describe_error(exc)}"
            return Check("fail", None, "schema", "datastore", utc_iso(), reason)
        check = Check(
            state.status, state.to_json(), "schema", "datastore", utc_iso(), state.output()
        )
        self._schema_cached = (time.monotonic(), check)
        return check

    # -- documents -----------------------------------------------------------------------------

    def document(self, checks: dict[str, Check | list[Check]]) -> dict[str, Any]:
        """``checks`` maps a key to one observation or to several (one per component)."""
        entries = {k: v if isinstance(v, list) else [v] for k, v in checks.items() if v != []}
        return {
            "status": worst([c.status for cs in entries.values() for c in cs]),
            "version": self.version,
            "serviceId": self.settings.application_name,
            "description": "defeah-db user-account data layer",
            "checks": {key: [c.to_json() for c in cs] for key, cs in entries.items()},
        }

    def liveness(self) -> dict[str, Any]:
        return self.document({"uptime": self.uptime()})

    def liveness_body(self) -> bytes:
        """``liveness()`` serialised: the hot path of every orchestrator probe.

        Only the uptime and the time change between probes, so the rest of the document is
        serialised once, by ``document()`` itself around two markers: building and dumping the
        whole document per probe was a large share of the route's cost (bench/bench_web.py).  Both
        have millisecond resolution, so probes within the same millisecond share one body.
        """
        if self._liveness_parts is None:
            marked = Check("pass", "@UPTIME@", "s", "system", "@TIME@")
            template = json.dumps(self.document({"uptime": marked}), separators=(",", ":"))
            head, rest = template.split('"@UPTIME@"')
            middle, tail = rest.split("@TIME@")
            self._liveness_parts = (head, middle, tail)
        stamp = utc_iso()
        if stamp is not self._liveness_stamp:  # utc_iso returns one object per millisecond
            head, middle, tail = self._liveness_parts
            seconds = round(time.monotonic() - self.started, 3)
            self._liveness_stamp = stamp
            self._liveness_body = f"{head}{seconds}{middle}{stamp}{tail}".encode()
        return self._liveness_body

    async def readiness(self) -> dict[str, Any]:
        """503 when the database is down or *behind* the schema this code requires.

        One after the other, so a probe holds at most one pool connection (the schema check is
        cached and single-flight like the round trip).  This is an open route: failure texts
        are generic (see the module docstring); the details are on ``/detailed``."""
        database = await self.database()
        if database.status == "fail":
            database = dataclasses.replace(database, output=GENERIC_FAILURE)
            return self.document({"postgresql:responseTime": database})
        schema = await self.schema()
        # Only the verdict: no migration ids, counts or reasons on an open route.
        output = None
        if schema.status == "fail":
            output = GENERIC_SCHEMA
        elif schema.status == "warn":
            output = GENERIC_SCHEMA_WARN
        behind = isinstance(schema.observed_value, dict) and bool(schema.observed_value["behind"])
        schema = dataclasses.replace(schema, observed_value={"behind": behind}, output=output)
        return self.document({"postgresql:responseTime": database, "postgresql:schema": schema})

    async def detailed(self) -> dict[str, Any]:
        database, migrated, schema, replicas = await asyncio.gather(
            self.database(identify=True), self.migrations(), self.schema(), self.replicas()
        )
        document = self.document(
            {
                "postgresql:responseTime": database,
                "postgresql:connections": self.pools(),
                "postgresql-replica:responseTime": replicas,
                "postgresql:migrations": migrated,
                "postgresql:schema": schema,
                "uptime": self.uptime(),
                "eventLoop": self.event_loop(),
            }
        )
        # Driver texts can quote a DSN: whatever a check's output carries, no secret leaves.
        for entries in document["checks"].values():
            for entry in entries:
                if "output" in entry:
                    entry["output"] = self.settings.scrub(entry["output"])
        return document


def _migrations_failed(output: str) -> Check:
    return Check("fail", None, "migrations", "datastore", utc_iso(), output)


def health_response(document: dict[str, Any]) -> web.Response:
    """200 for pass/warn, 503 for fail, as the draft asks (2xx-3xx healthy, 4xx-5xx not)."""
    body = json.dumps(document, separators=(",", ":")).encode()
    return health_body_response(body, 503 if document["status"] == "fail" else 200)


# Built once: the response copies it, which costs a third of building it from a dict per probe.
HEALTH_HEADERS: Final = CIMultiDict({**SECURITY_HEADERS, "Content-Type": HEALTH_TYPE})


def health_body_response(body: bytes, status: int) -> web.Response:
    return web.Response(status=status, body=body, headers=HEALTH_HEADERS)


HEALTH = web.AppKey("health", HealthService)
routes = web.RouteTableDef()


@routes.get("/api/v1/health")
@routes.get("/livez")
async def liveness(request: web.Request) -> web.Response:
    return health_body_response(request.app[HEALTH].liveness_body(), 200)


@routes.get("/api/v1/health/database")
@routes.get("/readyz")
async def readiness(request: web.Request) -> web.Response:
    return health_response(await request.app[HEALTH].readiness())


@routes.get("/api/v1/health/detailed")
async def detailed(request: web.Request) -> web.Response:
    service = request.app[HEALTH]
    if not authorized(request, service.settings.health_token):
        raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Bearer realm="health"'})
    return health_response(await service.detailed())


async def read_migration_files(app: web.Application) -> None:
    """Start-up hook: read ``sql/`` now, not during the first probe.  A missing folder is not
    fatal: the migrations check reports it (and retries) while the rest keeps serving."""
    try:
        await app[HEALTH].migration_files()
    except DalError as exc:
        log.warning("cannot read the migration files: %s", exc)
