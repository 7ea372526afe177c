"""Token refresh benchmark: claim_tokens_due + record_token_refreshed throughput with 1 and 4
worker processes, and the cost of encryption per token next to a plain read.

On a scratch database of the target server: ``--users`` users (default 1,000,000), a quarter
connected, every connected token due (issued 50 days ago, expiring within 7 days).  Two
measurements, each with 1 and then 4 worker processes:

* **refresher** -- the worker of ``defeah-db refresh-tokens`` (``Refresher``, default
  concurrency) against a fake Graph API in this process that answers after ``--graph-ms``
  (default 50 ms; the real API is slower).  A refresh waits on the Graph API, not on the
  database, so workers should add up: target 4 workers >= 3x one worker.
* **database side only** -- claim ``--batch`` and record each as refreshed, no Graph call: the
  ceiling the database and the DAL put on refreshes, which on a 2-core machine the workers
  and PostgreSQL share (reported, no target).

Run: ``DATABASE_URL=... python -m bench.bench_tokens [--users 1000000] [--seconds 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import threading
import time
import timeit
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg
from aiohttp import web

from bench.scratch import create_scratch, drop_scratch
from dal import Database
from dal.db.embedded import target_dsn
from dal.db.settings import Settings
from dal.instagram.keyring import TokenCipher, parse_keys
from dal.instagram.reencrypt import MAX_BATCH, reencrypt
from dal.instagram.refresher import RefreshConfig, Refresher
from dal.instagram.repository import InstagramRepository

KEYS = "bench:" + "YmVuY2gtb25seS1rZXktbm90LWEtc2VjcmV0LTMyYnk="

FILL = """
INSERT INTO users (email, hashed_password, instagram_user_id, instagram_access_token,
                   token_expires_at, token_issued_at)
SELECT 'tok' || g || '@bench.example', 'x',
       CASE WHEN g % 4 = 0 THEN 'ig' || g END,
       CASE WHEN g % 4 = 0 THEN 'IGQWRbench' || g END,
       CASE WHEN g % 4 = 0 THEN now() + (g % 10000) * interval '1 minute' END,
       CASE WHEN g % 4 = 0 THEN now() - interval '50 days' END
FROM generate_series(1, $1) AS g
"""


def settings_for(dsn: str) -> Settings:
    return Settings(
        database_url=dsn, pool_min_size=1, pool_max_size=2, token_keys=KEYS, bcrypt_rounds=4
    )


async def _work(dsn: str, seconds: float, batch: int) -> float:
    """Claims+records per second of one worker, timed after its pool is up."""
    done = 0
    async with Database(settings_for(dsn)) as db:
        started = time.perf_counter()
        instagram = InstagramRepository(db)
        expires = datetime.now(UTC) + timedelta(days=60)
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            claimed = await instagram.claim_due(timedelta(days=7), limit=batch)
            if not claimed:
                break
            for due in claimed:
                await instagram.record_refreshed(due.user_id, "IGQWRrefreshed", expires)
                done += 1
        return done / (time.perf_counter() - started)


async def _refresh(dsn: str, seconds: float, graph_url: str) -> float:
    """Tokens refreshed per second by one ``Refresher`` (as ``refresh-tokens`` runs it)."""
    async with Database(settings_for(dsn)) as db:
        stop = asyncio.Event()
        refresher = Refresher(
            InstagramRepository(db), RefreshConfig(graph_url), stop, lambda _: None
        )
        asyncio.get_running_loop().call_later(seconds, stop.set)
        summary = await refresher.cycle()
        return summary.refreshed / summary.seconds


def worker(job: tuple[str, float, int]) -> float:
    return asyncio.run(_work(*job))


def refresher(job: tuple[str, float, str]) -> float:
    return asyncio.run(_refresh(*job))


def throughput(dsn: str, workers: int, seconds: float, batch: int) -> float:
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return sum(pool.map(worker, [(dsn, seconds, batch)] * workers))


def refresh_throughput(dsn: str, workers: int, seconds: float, graph_url: str) -> float:
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return sum(pool.map(refresher, [(dsn, seconds, graph_url)] * workers))


def fake_graph(delay: float) -> str:
    """A Graph API stand-in on 127.0.0.1, in a thread of this process: every refresh succeeds
    after ``delay`` seconds.  Returns its base URL."""
    started = threading.Event()
    url: list[str] = []

    async def refresh(request: web.Request) -> web.Response:
        await asyncio.sleep(delay)
        token = request.query["access_token"]
        return web.json_response({"access_token": f"{token}+", "expires_in": 5_184_000})

    async def serve() -> None:
        app = web.Application()
        app.router.add_get("/refresh_access_token", refresh)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        url.append(f"http://127.0.0.1:{port}")
        started.set()
        await asyncio.Event().wait()  # serves until the process ends (daemon thread)

    threading.Thread(target=lambda: asyncio.run(serve()), daemon=True).start()
    started.wait(10)
    return url[0]


def crypto_cost() -> dict[str, float]:
    """Microseconds per token: encrypt, decrypt, and a plain read of the same string."""
    cipher = TokenCipher(parse_keys(KEYS))
    user = UUID(int=1)
    token = "IGQWR" + "x" * 200
    sealed = cipher.encrypt(user, token)
    n = 20_000
    return {
        "encrypt": timeit.timeit(lambda: cipher.encrypt(user, token), number=n) / n * 1e6,
        "decrypt": timeit.timeit(lambda: cipher.decrypt(user, sealed), number=n) / n * 1e6,
        "plain read (legacy passthrough)": timeit.timeit(
            lambda: cipher.decrypt(user, token), number=n
        )
        / n
        * 1e6,
    }


async def prepare(server_dsn: str, users: int) -> str:
    dsn = await create_scratch(server_dsn, "bench_tokens")
    conn = await asyncpg.connect(dsn)  # no pool: the fill outlasts the command timeout
    try:
        await conn.execute(FILL, users)
    finally:
        await conn.close()
    # FILL writes plaintext, which the DAL refuses as a token: adopt it once, as an operator
    # would (`defeah-db reencrypt --adopt-plaintext`).
    async with Database(settings_for(dsn)) as db:
        await reencrypt(db, InstagramRepository(db).cipher, batch=MAX_BATCH, adopt_plaintext=True)
        async with db.acquire() as pooled:
            await pooled.execute("ANALYZE users")
    return dsn


def build_parser() -> argparse.ArgumentParser:
    """The command line (docs/benchmarks.md shows it; tests/test_docs_commands.py parses it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--graph-ms", type=float, default=50.0, help="fake Graph API latency")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    for name, micros in crypto_cost().items():
        print(f"{name:>32}: {micros:6.2f} us/token")
    graph_url = fake_graph(args.graph_ms / 1000)
    with target_dsn(Settings(token_keys=KEYS)) as server:
        asyncio.run(drop_scratch(server, "bench_tokens"))
        dsn = asyncio.run(prepare(server, args.users))
        try:
            full = {w: refresh_throughput(dsn, w, args.seconds, graph_url) for w in (1, 4)}
            bare = {w: throughput(dsn, w, args.seconds, args.batch) for w in (1, 4)}
        finally:
            asyncio.run(drop_scratch(server, "bench_tokens"))
    print(f"users: {args.users:,} ({args.users // 4:,} due)")
    concurrency = RefreshConfig(graph_url).concurrency
    print(f"refresher (concurrency {concurrency}, Graph API {args.graph_ms:g} ms):")
    for workers, rate in full.items():
        print(f"  {workers} worker(s): {rate:,.0f} refreshes/s")
    print(f"  4 workers / 1 worker: {full[4] / full[1]:.2f}x (target >= 3x)")
    print(f"database side only (claim {args.batch}, record each, no Graph call):")
    for workers, rate in bare.items():
        print(f"  {workers} worker(s): {rate:,.0f} claim+record/s")
    print(f"  4 workers / 1 worker: {bare[4] / bare[1]:.2f}x (no target: shared 2 cores)")


if __name__ == "__main__":
    main()
