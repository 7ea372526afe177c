"""The refresher against a hostile Graph API (issue 20, item 7): a real aiohttp server on
127.0.0.1 serving each bad answer a broken or malicious endpoint could give.  Each bad answer
fails its own token only (recorded, lease turned into a back-off, asked once), never the
worker; the body is read to a few KB at most; no redirect is followed."""

from __future__ import annotations

import asyncio
import gzip
import json
import sys
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import pytest_asyncio
from aiohttp import web

from dal import Database
from dal.instagram.graph_answer import MAX_BODY_BYTES
from dal.instagram.refresher import RefreshConfig, Refresher
from dal.instagram.repository import InstagramRepository
from tests.commands import ROOT, cli_env
from tests.factories import make_settings
from tests.test_refresh_tokens import fill, stored

GOOD = {"access_token": "fresh-token", "token_type": "bearer", "expires_in": 5_184_000}


def nested(depth: int) -> bytes:
    """A 200 answer whose valid fields sit next to ``depth`` nested arrays (a few KB)."""
    return (
        b'{"access_token": "x", "expires_in": 5184000, "n": ' + b"[" * depth + b"]" * depth + b"}"
    )


def fields(**changed: object) -> bytes:
    return json.dumps({**GOOD, **changed}).encode()


# kind -> (body served with status 200, the failure code the row must record)
BAD_BODIES: dict[str, tuple[bytes, str]] = {
    "deep": (nested(1500), "bad_response"),  # json.loads: RecursionError
    "deep-error": (b'{"error": ' + b"[" * 1500 + b"]" * 1500 + b"}", "bad_response"),
    "exp1e12": (fields(expires_in=10**12), "bad_response"),  # datetime: OverflowError
    "exp1e20": (fields(expires_in=10**20), "bad_response"),  # timedelta: OverflowError
    "exptrue": (fields(expires_in=True), "bad_response"),  # bool is an int subclass
    "expstr": (fields(expires_in="3600"), "bad_response"),
    "expneg": (fields(expires_in=-1), "bad_response"),
    "expzero": (fields(expires_in=0), "bad_response"),
    "expfloat": (fields(expires_in=3600.0), "bad_response"),
    "expnan": (b'{"access_token": "x", "expires_in": NaN}', "bad_response"),
    "expinf": (b'{"access_token": "x", "expires_in": 1e999}', "bad_response"),
    "exphuge": (b'{"access_token": "x", "expires_in": ' + b"9" * 5000 + b"}", "bad_response"),
    "tokempty": (fields(access_token=""), "bad_response"),
    "toknum": (fields(access_token=12345), "bad_response"),
    "toklong": (fields(access_token="a" * 3000), "bad_response"),
    "tokspace": (fields(access_token="two words"), "bad_response"),
    "tokctl": (fields(access_token="line\nbreak"), "bad_response"),
    "dupkey": (
        b'{"access_token": "a", "access_token": "b", "expires_in": 5184000}',
        "bad_response",
    ),
    "notjson": (b"<html>maintenance</html>", "bad_response"),
    "notutf8": (b'{"access_token": "\xff\xfe", "expires_in": 5184000}', "bad_response"),
    "list": (b"[1, 2, 3]", "bad_response"),
    "big": (fields(padding="p" * (2 * MAX_BODY_BYTES)), "body_too_large"),
}


class HostileGraph:
    """Answers by the token's suffix (``tok<n>-<kind>``): a bad body from ``BAD_BODIES``,
    ``-stream`` an endless body, ``-redirect`` a 302 to ``elsewhere``, ``-ok`` a good answer,
    ``-code`` an error whose code is ``true``, ``-gzip`` a compressed body."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()
        self.streamed = 0
        self.elsewhere = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        token = request.query["access_token"]
        self.seen[token] += 1
        kind = token.split("-", 1)[1]
        if kind in BAD_BODIES:
            return web.Response(body=BAD_BODIES[kind][0], content_type="application/json")
        if kind == "redirect":
            raise web.HTTPFound(f"{self.elsewhere}/refresh_access_token?{request.query_string}")
        if kind == "gzip":  # asked for identity; a compressed body could inflate past any cap
            body = gzip.compress(json.dumps({**GOOD, "pad": "0" * 10**6}).encode())
            headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
            return web.Response(body=body, headers=headers)
        if kind == "code":
            return web.json_response({"error": {"code": True}}, status=400)
        if kind == "stream":
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)
            chunk = b'{"access_token": "' + b"A" * 65_536
            while True:  # until the client hangs up (ConnectionResetError ends the handler)
                await response.write(chunk)
                self.streamed += len(chunk)
        return web.json_response({**GOOD, "access_token": f"new:{token}"})


class Elsewhere:
    """The host a redirect points to: it would hand out its own token."""

    def __init__(self) -> None:
        self.hits = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.json_response({**GOOD, "access_token": "planted-by-another-host"})


async def serve(handler: object, host: str) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_get("/refresh_access_token", handler)  # type: ignore[arg-type]
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://{host}:{port}"


@pytest_asyncio.fixture
async def graph() -> AsyncIterator[tuple[HostileGraph, Elsewhere, str]]:
    hostile, elsewhere = HostileGraph(), Elsewhere()
    other, other_url = await serve(elsewhere.handle, "127.0.0.2")  # another host
    hostile.elsewhere = other_url
    runner, url = await serve(hostile.handle, "127.0.0.1")
    try:
        yield hostile, elsewhere, url
    finally:
        await runner.cleanup()
        await other.cleanup()


async def test_every_hostile_answer_fails_its_own_token_and_the_worker_goes_on(
    clean_dsn: str, graph: tuple[HostileGraph, Elsewhere, str]
) -> None:
    hostile, elsewhere, url = graph
    kinds = ["ok", *BAD_BODIES, "stream", "redirect", "code", "gzip", "ok"]
    tokens = await fill(clean_dsn, kinds)
    config = RefreshConfig(graph_url=url, concurrency=3, batch=4, request_timeout=5, retries=2)
    lines: list[str] = []
    async with Database(make_settings(clean_dsn)) as db:
        refresher = Refresher(InstagramRepository(db), config, report=lines.append)
        async with asyncio.timeout(60):
            summary = await refresher.cycle()
        async with db.acquire() as conn:
            rows = {
                row["id"]: row
                for row in await conn.fetch(
                    "SELECT id, token_refresh_failures, needs_reauth,"
                    " refresh_claimed_until > now() + interval '4 minutes' AS backing_off"
                    " FROM users"
                )
            }
    expected = {kind: code for kind, (_, code) in BAD_BODIES.items()}
    expected.update(
        stream="body_too_large", redirect="http_302", code="http_400", gzip="bad_response"
    )
    # Each token was claimed and asked exactly once: no crash, no retry, no second claim.
    assert summary.claimed == len(kinds) and summary.refreshed == 2
    assert set(hostile.seen.values()) == {1} and len(hostile.seen) == len(kinds)
    assert summary.failures == Counter(expected.values())
    assert elsewhere.hits == 0  # the redirect was not followed
    after = await stored(clean_dsn)
    for user_id, token in tokens.items():
        kind = token.split("-", 1)[1]
        if kind == "ok":
            assert after[user_id]["token"] == f"new:{token}"
            continue
        assert after[user_id]["token"] == token, kind  # the old token is kept
        assert after[user_id]["token_refresh_error"] == expected[kind], kind
        row = rows[user_id]
        assert row["token_refresh_failures"] == 1 and not row["needs_reauth"], kind
        assert row["backing_off"], kind  # lease replaced by a back-off: not claimed again now
    assert not any(t in line for line in lines for t in [*tokens.values(), "planted"])


def rss_peak_kib(pid: int) -> int:
    """The process's peak RSS so far; 0 once it has exited (a zombie has no VmHWM)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            lines = status.readlines()
    except FileNotFoundError:
        return 0
    peaks = [int(line.split()[1]) for line in lines if line.startswith("VmHWM:")]
    return peaks[0] if peaks else 0


async def run_worker(dsn: str, url: str, seconds: float) -> tuple[int, int, str]:
    """``refresh-tokens --once`` as a process; its exit code, peak RSS (KiB) and output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "cli", "refresh-tokens", "--once", "--retries", "0"),
        *("--timeout", str(seconds)),
        cwd=ROOT,
        env=cli_env(dsn, DEFEAH_INSTAGRAM_GRAPH_URL=url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    peak = 0
    reading = asyncio.ensure_future(proc.communicate())
    while not reading.done():
        peak = max(peak, rss_peak_kib(proc.pid))  # VmHWM only grows: the last look holds it
        await asyncio.sleep(0.02)
    out, _ = await reading
    assert proc.returncode is not None
    return proc.returncode, peak, out.decode()


async def test_an_endless_body_is_cut_after_a_few_kb_with_rss_bounded(
    clean_dsn: str, graph: tuple[HostileGraph, Elsewhere, str]
) -> None:
    hostile, _, url = graph
    await fill(clean_dsn, ["ok"])
    code, baseline, _ = await run_worker(clean_dsn, url, 5)  # the same worker, a sane answer
    assert code == 0
    async with Database(make_settings(clean_dsn)) as db, db.acquire() as conn:
        await conn.execute("TRUNCATE users CASCADE")  # 0010 points at users
    tokens = await fill(clean_dsn, ["stream"])
    async with asyncio.timeout(60):
        code, peak, out = await run_worker(clean_dsn, url, 5)
    assert code == 0, out
    assert "failed body_too_large=1" in out
    # The worker stopped reading after MAX_BODY_BYTES: what the server managed to write is what
    # the socket buffers hold, not the 5 s of streaming an unbounded read would take.
    assert hostile.streamed < 32 * 2**20, hostile.streamed
    assert peak - baseline < 32 * 1024, (peak, baseline)  # KiB
    assert not any(token in out for token in tokens.values())


@pytest.mark.parametrize("kind", ["exp1e20", "deep", "redirect"])
async def test_a_hostile_answer_through_the_cli_exits_0_and_says_why(
    clean_dsn: str, graph: tuple[HostileGraph, Elsewhere, str], kind: str
) -> None:
    _, elsewhere, url = graph
    await fill(clean_dsn, [kind, "ok"])
    async with asyncio.timeout(60):
        code, _, out = await run_worker(clean_dsn, url, 5)
    assert code == 0, out
    assert "refreshed 1," in out and "Traceback" not in out and "Error" not in out
    assert elsewhere.hits == 0
    async with Database(make_settings(clean_dsn)) as db:
        instagram = InstagramRepository(db)
        assert await instagram.claim_due(timedelta(days=7)) == []  # backing off, not looping
    rows = await stored(clean_dsn)
    assert sorted(str(r["token_refresh_error"]) for r in rows.values()) == sorted(
        ["None", "http_302" if kind == "redirect" else "bad_response"]
    )
