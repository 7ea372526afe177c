"""``defeah-db refresh-tokens`` against a fake Instagram Graph API: a real aiohttp server on
127.0.0.1 inside the test (never the real API), with 429, 500, slow and code-190 answers."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from typing import Any
from uuid import UUID

from aiohttp import web

from dal import Database, InstagramConnection
from dal.instagram.repository import InstagramRepository
from tests.commands import ROOT, cli_env
from tests.factories import make_settings

DUE = 1000


class FakeGraph:
    """Answers by the token's suffix: ``-429``/``-500`` fail once then succeed, ``-slow``
    answers after 0.3 s, ``-190`` is an invalid token, ``-hang`` never answers in time."""

    def __init__(self) -> None:
        self.refreshed: Counter[str] = Counter()
        self.seen: Counter[str] = Counter()
        self.hang = True
        self.first_request = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        token = request.query["access_token"]
        assert request.query["grant_type"] == "ig_refresh_token"
        self.seen[token] += 1
        self.first_request.set()
        if token.endswith("-190"):
            error = {"message": "Invalid OAuth access token.", "type": "OAuthException"}
            return web.json_response({"error": {**error, "code": 190}}, status=400)
        if token.endswith(("-429", "-500")) and self.seen[token] == 1:
            return web.json_response({"error": {"code": 4}}, status=int(token[-3:]))
        if token.endswith("-slow"):
            await asyncio.sleep(0.3)
        if token.endswith("-hang") and self.hang:
            await asyncio.sleep(60)
        self.refreshed[token] += 1
        return web.json_response(
            {"access_token": f"new:{token}", "token_type": "bearer", "expires_in": 5_184_000}
        )


async def start(fake: FakeGraph) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_get("/refresh_access_token", fake.handle)
    runner = web.AppRunner(app, shutdown_timeout=1.0)  # a "hang" handler is not waited for
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


async def fill(dsn: str, kinds: list[str]) -> dict[UUID, str]:
    """One due token per kind (encrypted by the DAL), returned by user id."""
    async with Database(make_settings(dsn)) as db:
        instagram = InstagramRepository(db)
        async with db.acquire() as conn:
            ids = await conn.fetch(
                "INSERT INTO users (email, hashed_password)"
                " SELECT 'r' || g || '@example.com', 'x' FROM generate_series(1, $1) g"
                " RETURNING id",
                len(kinds),
            )
        tokens: dict[UUID, str] = {}
        for n, (row, kind) in enumerate(zip(ids, kinds, strict=True)):
            token = f"tok{n}-{kind}"
            tokens[row["id"]] = token
            link = InstagramConnection(instagram_user_id=f"ig{n}", access_token=token)  # type: ignore[arg-type]
            await instagram.connect(row["id"], link)
        async with db.acquire() as conn:
            await conn.execute(
                "UPDATE users SET token_issued_at = now() - interval '50 days',"
                " token_expires_at = now() + interval '3 days'"
            )
    return tokens


async def worker(dsn: str, url: str, *extra: str) -> asyncio.subprocess.Process:
    env = cli_env(dsn, DEFEAH_INSTAGRAM_GRAPH_URL=url)
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli",
        "refresh-tokens",
        "--timeout",
        "2",
        "--retries",
        "3",
        *extra,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def stored(dsn: str) -> dict[UUID, dict[str, Any]]:
    async with Database(make_settings(dsn)) as db:
        instagram = InstagramRepository(db)
        async with db.acquire() as conn:
            rows = await conn.fetch("SELECT id, needs_reauth, token_refresh_error FROM users")
        result = {}
        for row in rows:
            token = await instagram.token(row["id"])
            assert token is not None
            result[row["id"]] = {**dict(row), "token": token.get_secret_value()}
        return result


async def test_four_workers_refresh_each_due_token_exactly_once(clean_dsn: str) -> None:
    kinds = ["ok", "429", "500", "slow", "190"] * (DUE // 5)
    tokens = await fill(clean_dsn, kinds)
    fake = FakeGraph()
    runner, url = await start(fake)
    try:
        async with asyncio.timeout(240):
            procs = [await worker(clean_dsn, url, "--once", "--concurrency", "4") for _ in range(4)]
            outputs = [await p.communicate() for p in procs]
    finally:
        await runner.cleanup()
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
        assert "refresh cycle: claimed" in out.decode()
        assert not any(t in out.decode() + err.decode() for t in tokens.values())  # never logged
    healthy = {t for t in tokens.values() if not t.endswith("-190")}
    assert set(fake.refreshed) == healthy and set(fake.refreshed.values()) == {1}
    rows = await stored(clean_dsn)
    for user_id, token in tokens.items():
        if token.endswith("-190"):
            assert rows[user_id]["needs_reauth"] and rows[user_id]["token_refresh_error"] == "190"
            assert rows[user_id]["token"] == token
        else:
            assert rows[user_id]["token"] == f"new:{token}" and not rows[user_id]["needs_reauth"]
    claimed = sum(int(out.decode().split("claimed ")[1].split(",")[0]) for out, _ in outputs)
    assert claimed == DUE  # disjoint claims: no token was handed to two workers


async def test_a_killed_workers_rows_are_refreshed_by_another_after_the_lease(
    clean_dsn: str,
) -> None:
    tokens = await fill(clean_dsn, ["hang"] * 3)
    fake = FakeGraph()
    runner, url = await start(fake)
    try:
        async with asyncio.timeout(120):
            first = await worker(
                clean_dsn, url, "--once", "--lease", "3", "--timeout", "30", "--batch", "3"
            )
            await fake.first_request.wait()
            os.kill(first.pid, signal.SIGKILL)
            await first.wait()
            async with Database(make_settings(clean_dsn)) as db, db.acquire() as conn:
                leased = await conn.fetchval(
                    "SELECT count(*) FROM users WHERE refresh_claimed_until > now()"
                )
            assert leased == 3
            fake.hang = False
            await asyncio.sleep(3.2)
            second = await worker(clean_dsn, url, "--once")
            _, err = await second.communicate()
            assert second.returncode == 0, err.decode()
    finally:
        await runner.cleanup()
    rows = await stored(clean_dsn)
    assert {rows[u]["token"] for u in tokens} == {f"new:{t}" for t in tokens.values()}


async def test_sigterm_stops_cleanly_and_gives_back_unstarted_claims(clean_dsn: str) -> None:
    await fill(clean_dsn, ["slow"] * 40)
    fake = FakeGraph()
    runner, url = await start(fake)
    try:
        async with asyncio.timeout(60):
            proc = await worker(clean_dsn, url, "--concurrency", "1", "--batch", "40")
            await fake.first_request.wait()
            proc.send_signal(signal.SIGTERM)
            out, err = await proc.communicate()
    finally:
        await runner.cleanup()
    assert proc.returncode == 130, err.decode()
    assert "released" in out.decode()
    async with Database(make_settings(clean_dsn)) as db, db.acquire() as conn:
        leased = await conn.fetchval(
            "SELECT count(*) FROM users WHERE refresh_claimed_until IS NOT NULL"
        )
        fresh = await conn.fetchval(
            "SELECT count(*) FROM users WHERE token_expires_at > now() + interval '50 days'"
        )
    assert leased == 0 and fresh == sum(fake.refreshed.values()) >= 1
