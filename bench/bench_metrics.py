"""The cost of one ``/metrics`` scrape: collection and rendering, in process, caches warm.

Builds the app (``web.app.create_app``) on a scratch database, signs in and serves a few
requests so that every family has series, then times ``Metrics.exposition()`` -- what the route
does per scrape besides the HTTP framing -- and reports microseconds per scrape, the body size
and the number of samples.  A cold scrape (the cached database figures expired) is timed once.

    DATABASE_URL=... .venv/bin/python -m bench.bench_metrics [--scrapes 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from uuid import uuid4

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from bench.scratch import create_scratch, drop_scratch
from dal import NewUser
from dal.db.embedded import target_dsn
from dal.db.settings import Settings
from dal.users.repository import UsersRepository
from web.app import DATABASE, create_app
from web.health import MIGRATIONS_CACHE_SECONDS
from web.metrics import METRICS, TOKENS_CACHE_SECONDS


async def bench(args: argparse.Namespace, server_dsn: str) -> None:
    name = f"bench_metrics_{uuid4().hex[:8]}"
    dsn = await create_scratch(server_dsn, name)
    try:
        app = create_app(Settings(database_url=dsn, bcrypt_rounds=4))
        async with TestClient(TestServer(app)) as client:
            users = UsersRepository(app[DATABASE])
            await users.create(NewUser(email="m@example.com", password="metrics-pw"))  # type: ignore[arg-type]
            await users.authenticate("m@example.com", "metrics-pw")
            for path in ("/api/v1/health", "/api/v1/health/database", "/nope"):
                await client.get(path)
            metrics = app[METRICS]
            cold_started = time.perf_counter()
            body = await metrics.exposition()
            cold = time.perf_counter() - cold_started
            started = time.perf_counter()
            for _ in range(args.scrapes):
                body = await metrics.exposition()
            warm = (time.perf_counter() - started) / args.scrapes
        samples = sum(len(f.samples) for f in text_string_to_metric_families(body.decode()))
    finally:
        await drop_scratch(server_dsn, name)
    print(
        f"/metrics collection: {warm * 1e6:,.0f} us per scrape (caches warm, {args.scrapes} "
        f"scrapes), {len(body):,} bytes, {samples} samples; first scrape with both database "
        f"figures read: {cold * 1e3:.1f} ms (then cached: migrations "
        f"{MIGRATIONS_CACHE_SECONDS:g} s, tokens {TOKENS_CACHE_SECONDS:g} s)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line (docs/benchmarks.md shows it; tests/test_docs_commands.py parses it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scrapes", type=int, default=2000)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    with target_dsn(Settings.from_env()) as dsn:
        asyncio.run(bench(args, dsn))


if __name__ == "__main__":
    main()
