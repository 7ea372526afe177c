"""Verbs for Instagram tokens: re-encryption under the active key, and the refresher."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from datetime import timedelta

from cli.common import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, AddVerb, say
from cli.progress import Progress, positive_int
from dal.db import event_loop
from dal.db.database import Database
from dal.db.embedded import target_dsn
from dal.db.settings import Settings
from dal.instagram import reencrypt
from dal.instagram.keyring import settings_cipher
from dal.instagram.refresher import RefreshConfig, Refresher
from dal.instagram.repository import InstagramRepository

REENCRYPT_HELP = (
    "rewrite every stored Instagram token under the first key of DEFEAH_TOKEN_KEYS; batches, "
    "resumable, compare-and-swap (a token changed meanwhile is left alone). Legacy plaintext "
    "is refused unless --adopt-plaintext. Never needs --force, production included: it cannot "
    "lose data (it only re-seals values it can read, and leaves the others untouched)"
)
REFRESH_HELP = (
    "refresh Instagram tokens that are due (expiring within --within-days, at least 24 h old) "
    "through the Graph API at DEFEAH_INSTAGRAM_GRAPH_URL; any number of workers may run at "
    "once. One summary line per cycle; SIGINT/SIGTERM stop cleanly"
)


def cmd_reencrypt(args: argparse.Namespace, settings: Settings) -> int:
    settings_cipher(settings, "defeah-db reencrypt")

    async def job() -> tuple[reencrypt.ReencryptResult, int]:
        local = settings.replace(database_url=dsn, pool_min_size=1, pool_max_size=2)
        async with Database(local) as db:
            cipher = InstagramRepository(db).cipher
            total = await reencrypt.remaining(db, cipher)
            progress = Progress(total, sys.stderr)
            result = await reencrypt.reencrypt(
                db,
                cipher,
                batch=args.batch,
                adopt_plaintext=args.adopt_plaintext,
                progress=progress,
            )
            return result, await reencrypt.remaining(db, cipher)

    with target_dsn(settings) as dsn:
        result, left = event_loop.run(job(), settings.event_loop)
    say(result.summary())
    if left:
        # Written meanwhile by a process still on the old key ring, unreadable, or plaintext not
        # adopted: keep the old key until this says 0.
        adopt = "adopt legacy plaintext with --adopt-plaintext if it is yours, "
        adopt = adopt if result.plaintext else ""
        say(f"{left} token(s) still not under the active key: keep the old key, {adopt}run again")
        return EXIT_ERROR
    say("every token is under the active key: the old key can go")
    return EXIT_OK


def cmd_refresh_tokens(args: argparse.Namespace, settings: Settings) -> int:
    settings_cipher(settings, "defeah-db refresh-tokens")
    config = RefreshConfig(
        graph_url=settings.instagram_graph_url,
        concurrency=args.concurrency,
        batch=args.batch,
        within=timedelta(days=args.within_days),
        lease=timedelta(seconds=args.lease),
        request_timeout=args.timeout,
        retries=args.retries,
        interval=args.interval,
    )

    async def job() -> bool:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        pool = max(2, min(args.concurrency + 1, 50))
        local = settings.replace(database_url=dsn, pool_min_size=1, pool_max_size=pool)
        async with Database(local) as db:
            await Refresher(InstagramRepository(db), config, stop, say).run(once=args.once)
        return stop.is_set()

    with target_dsn(settings) as dsn:
        stopped = event_loop.run(job(), settings.event_loop)
    return EXIT_INTERRUPTED if stopped and not args.once else EXIT_OK


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {raw!r}") from None
    if not 0 < value <= 86_400:
        raise argparse.ArgumentTypeError(f"expected 0 < seconds <= 86400, got {raw!r}")
    return value


def register(verb: AddVerb) -> None:
    p = verb("reencrypt", cmd_reencrypt, REENCRYPT_HELP)
    p.add_argument(
        "--batch", type=positive_int, default=reencrypt.DEFAULT_BATCH, help="rows per transaction"
    )
    p.add_argument(
        "--adopt-plaintext",
        action="store_true",
        help="also seal legacy plaintext tokens (written before encryption, or by the psql "
        "seeds) as tokens; a one-off, logged with the count. Without it they are refused: a "
        "plaintext value may have been planted by whoever can write to the table",
    )

    p = verb("refresh-tokens", cmd_refresh_tokens, REFRESH_HELP)
    p.add_argument("--once", action="store_true", help="one cycle (drain what is due), then exit")
    p.add_argument(
        "--concurrency", type=positive_int, default=4, help="refreshes in flight (default 4)"
    )
    p.add_argument("--batch", type=positive_int, default=10, help="tokens per claim (default 10)")
    p.add_argument(
        "--within-days", type=positive_int, default=7, help="refresh tokens expiring this soon"
    )
    p.add_argument(
        "--lease",
        type=_seconds,
        default=600.0,
        help="seconds a claim holds its rows; keep it above --batch x the worst time of one "
        "token (timeout x (retries + 1) plus backoff); a dead worker's rows wait this long",
    )
    p.add_argument("--timeout", type=_seconds, default=10.0, help="seconds per Graph API request")
    p.add_argument("--retries", type=int, default=3, help="retries on 429/5xx/timeouts")
    p.add_argument("--interval", type=_seconds, default=60.0, help="seconds between cycles")
