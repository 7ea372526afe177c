"""``GET /metrics``: Prometheus text format, built with the official ``prometheus-client``.

What it exposes: per pool (``primary``, each replica) size, in use, idle, waiting acquirers and
the configured maximum; the DAL's acquire-wait histogram, acquire timeouts, per-query durations,
sign-ins by result, lockouts and the bcrypt queue (``dal.telemetry``); Meta's Instagram
callbacks handled and refused (``web.instagram_callbacks``); migrations pending and
Instagram tokens due for refresh (both cached); HTTP requests by route template, method and
status, with a duration histogram; and the process collectors (CPU, memory, descriptors, GC).

Bounded cardinality: the HTTP route label is the route's template (``/api/v1/health``), never
the raw path, and every unmatched path is ``unmatched``; unknown methods are ``other``.

Bounded cost: a scrape reads in-process counters; only two figures need the database, and they
are refreshed by one single-flight task at most every ``TOKENS_CACHE_SECONDS`` (migrations: the
health service's own cache), one query after the other.  So 1,000 concurrent scrapes use at
most one pool connection, at any one time.

Why ``/metrics`` has its own bearer token (``DEFEAH_METRICS_TOKEN``) instead of sharing
``DEFEAH_HEALTH_TOKEN``: the two go to different clients.  The metrics token sits in
Prometheus's scrape configuration (``authorization.credentials_file``), readable by whoever
administers monitoring; the health token lets an operator see the database's identity and raw
errors on ``/detailed``.  Separate secrets mean a leaked scrape config does not open
``/detailed``, each can be rotated without touching the other's clients, and ``/metrics`` can
stay open on a private network while ``/detailed`` stays closed.  Unset, the route is open,
except on production (``DEFEAH_ENV=production``), where it is then closed to everyone (401):
the figures (pool sizes, sign-in outcomes, route names) map the service for an attacker, so a
forgotten token must not leave them public.

Bounded rate: the rendered text is kept ``EXPOSITION_CACHE_SECONDS`` and rendered by one task
for all the scrapes that arrive meanwhile, so a flood of scrapes costs one render a second
(docs/benchmarks.md has the req/s before and after).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Final

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

import dal
from dal.db.database import Database
from dal.db.production_guard import PRODUCTION
from dal.db.setting_groups import MIN_PRODUCTION_TOKEN
from dal.db.settings import Settings
from dal.errors import DalError
from dal.instagram.repository import InstagramRepository
from web.bearer import authorized
from web.headers import SECURITY_HEADERS
from web.health import HEALTH, HealthService
from web.http_metrics import CONNECTIONS_CLOSED, HTTP_DURATION, HTTP_REQUESTS
from web.instagram_callbacks import CALLBACKS_HANDLED, CALLBACKS_REJECTED
from web.single_flight import SingleFlight

log = logging.getLogger(__name__)

TOKENS_CACHE_SECONDS: Final = 60.0
# Rendering costs about 1.5 ms of CPU (docs/benchmarks.md); Prometheus scrapes every 15 s or
# more, so a second-old text loses nothing and a flood of scrapes costs one render a second.
EXPOSITION_CACHE_SECONDS: Final = 1.0
TOKENS_DUE_WITHIN: Final = timedelta(days=7)  # a refresh job's horizon (tokens last 60 days)


class PoolCollector(Collector):
    """Occupancy of every pool of one ``Database``, read at scrape time."""

    FIGURES: Final = (
        ("size", "Open connections of the pool."),
        ("in_use", "Connections lent out."),
        ("idle", "Open connections waiting to be lent."),
        ("waiting", "Acquirers waiting for a connection."),
        ("max_size", "Configured upper bound of the pool."),
    )

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[Metric]:
        pools = self.db.pool_metrics()
        for figure, doc in self.FIGURES:
            family = GaugeMetricFamily(f"defeah_pool_{figure}", doc, labels=["pool"])
            for name, metrics in pools.items():
                family.add_metric([name], getattr(metrics, figure))
            yield family


class CachedFigures(Collector):
    """Migrations pending and Instagram tokens due: database figures refreshed at most every
    ``TOKENS_CACHE_SECONDS`` by one task shared by every concurrent scrape."""

    def __init__(self, db: Database, health: HealthService) -> None:
        self.instagram = InstagramRepository(db)  # counts only: no cipher, no hasher
        self.health = health
        self.pending: int | None = None
        self.tokens_due: int | None = None
        self._tokens_read = -TOKENS_CACHE_SECONDS
        self._flight = SingleFlight[None]()

    async def refresh(self) -> None:
        await self._flight.run(self._refresh)

    async def _refresh(self) -> None:
        """One query after the other, never side by side: one connection at a time."""
        check = await self.health.migrations()
        value = check.observed_value
        self.pending = len(value["pending"]) if isinstance(value, dict) else None
        if time.monotonic() - self._tokens_read < TOKENS_CACHE_SECONDS:
            return
        try:
            async with asyncio.timeout(self.health.settings.health_timeout):
                due = await self.instagram.count_expiring_tokens(TOKENS_DUE_WITHIN)
        except (DalError, TimeoutError) as exc:
            log.warning("cannot count Instagram tokens due for refresh: %s", exc or "timeout")
            return  # the last figure stays; the next scrape tries again
        self.tokens_due, self._tokens_read = due, time.monotonic()

    def collect(self) -> Iterator[Metric]:
        if self.pending is not None:
            yield GaugeMetricFamily(
                "defeah_migrations_pending",
                "Migrations in sql/ not applied to the database (cached a few seconds).",
                value=self.pending,
            )
        if self.tokens_due is not None:
            yield GaugeMetricFamily(
                "defeah_instagram_tokens_due",
                f"Instagram tokens expiring within {TOKENS_DUE_WITHIN.days} days (cached "
                f"{TOKENS_CACHE_SECONDS:g} s).",
                value=self.tokens_due,
            )


class Metrics:
    """One app's registry: the process-wide collectors plus this app's pools and figures."""

    def __init__(self, db: Database, health: HealthService) -> None:
        self.figures = CachedFigures(db, health)
        self.registry = CollectorRegistry(auto_describe=True)
        collectors: tuple[Collector, ...] = (
            *dal.COLLECTORS,
            HTTP_REQUESTS,
            HTTP_DURATION,
            CALLBACKS_HANDLED,
            CALLBACKS_REJECTED,
            CONNECTIONS_CLOSED,
            PoolCollector(db),
            self.figures,
        )
        for collector in collectors:
            self.registry.register(collector)
        ProcessCollector(registry=self.registry)
        self._body = b""
        self._fresh_until = -EXPOSITION_CACHE_SECONDS
        self._flight = SingleFlight[bytes]()
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    async def exposition(self) -> bytes:
        """The text of the last scrape while it is younger than ``EXPOSITION_CACHE_SECONDS``,
        else a new one, rendered once for every scrape arriving meanwhile."""
        if time.monotonic() < self._fresh_until:
            return self._body
        return await self._flight.run(self._render)

    async def _render(self) -> bytes:
        await self.figures.refresh()
        body = generate_latest(self.registry)
        self._body, self._fresh_until = body, time.monotonic() + EXPOSITION_CACHE_SECONDS
        return body


METRICS = web.AppKey("metrics", Metrics)
routes = web.RouteTableDef()


def closed_on_production(settings: Settings) -> bool:
    """On production ``/metrics`` needs its token: without one configured, nobody may read it."""
    return settings.environment == PRODUCTION and settings.metrics_token is None


async def warn_if_closed(app: web.Application) -> None:
    """Start-up hook: say once why a production scrape will get 401."""
    if closed_on_production(app[HEALTH].settings):
        log.warning(
            "/metrics answers 401 to everyone: DEFEAH_ENV=production requires "
            "DEFEAH_METRICS_TOKEN (at least %d characters)",
            MIN_PRODUCTION_TOKEN,
        )


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    settings = request.app[HEALTH].settings
    if closed_on_production(settings) or not authorized(request, settings.metrics_token):
        raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    body = await request.app[METRICS].exposition()
    # Text format 0.0.4, not the client's newest (1.0.0): our names are classic ones, so the
    # bytes are the same, and every Prometheus (Debian 12 ships 2.42) negotiates 0.0.4.
    headers = {**SECURITY_HEADERS, "Content-Type": CONTENT_TYPE_PLAIN_0_0_4}
    return web.Response(body=body, headers=headers)
