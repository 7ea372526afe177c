"""Baseline for bench_web.py: the least an aiohttp + asyncpg health endpoint can do.

``/health`` returns ``{"status":"pass"}``; ``/database`` runs ``SELECT 1`` on a pool built with
the same options as the project's ``Database`` (so the comparison isolates our handler code).
No middleware, no access log.  Usage: ``python bench/minimal_app.py PORT`` with DATABASE_URL set
(and DEFEAH_EVENT_LOOP, read as the service reads it).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from dal.db import event_loop
from dal.db.database import Database
from dal.db.settings import Settings

POOL = web.AppKey("pool", asyncpg.Pool)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "pass"})


async def database(request: web.Request) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        await conn.fetchval("SELECT 1")
    return web.json_response({"status": "pass"})


async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
    options = Database(Settings.from_env()).pool_options()
    async with asyncpg.create_pool(os.environ["DATABASE_URL"], **options) as pool:
        app[POOL] = pool
        yield


def main() -> None:
    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/database", database)
    app.cleanup_ctx.append(pool_ctx)
    # DEFEAH_EVENT_LOOP as the service reads it, so bench_loops --app minimal compares loops
    _, factory = event_loop.loop_factory(Settings.from_env().event_loop)
    loop = factory() if factory else asyncio.new_event_loop()
    web.run_app(
        app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None, loop=loop
    )


if __name__ == "__main__":
    main()
