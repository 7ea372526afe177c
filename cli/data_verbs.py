"""Verbs for data: seeds, bulk users, sign-in budgets and events (docs/operations.md)."""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys
from collections.abc import Awaitable
from datetime import timedelta
from typing import TextIO

from cli.common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    FORCE_HELP,
    AddVerb,
    say,
    with_database,
)
from cli.progress import Progress, positive_int
from dal.db import event_loop
from dal.db.database import Database
from dal.db.embedded import target_dsn
from dal.db.settings import Settings
from dal.devdata import bulk, seeds
from dal.instagram import reencrypt
from dal.instagram.keyring import TokenCipher, settings_cipher
from dal.users import signin_jobs


async def seed_and_seal(db: Database, cipher: TokenCipher, *, force: bool) -> list[str]:
    """Load the seed files, then seal the plaintext tokens of the seed users they just inserted
    (rows already present are left exactly as they are), so a database seeded by ``seed`` or
    ``up`` reads its demo tokens; the report's lines."""
    report = await seeds.apply_seeds(db, force=force)
    inserted = [email for file in report.files for email in file.inserted]
    sealed = await reencrypt.seal_seed_tokens(db, cipher, inserted) if inserted else 0
    return report.lines() + ([f"sealed {sealed} seed token(s) under the active key"] * bool(sealed))


def cmd_seed(args: argparse.Namespace, settings: Settings) -> int:
    cipher = settings_cipher(settings, "defeah-db seed")

    async def job(db: Database) -> list[str]:
        lines = []
        if args.clear:
            cleared = await seeds.clear_seeds(db, force=args.force)
            lines.append(f"removed {cleared.seed_users} seed user(s)")
        return lines + await seed_and_seal(db, cipher, force=args.force)

    with target_dsn(settings) as dsn:
        for line in with_database(settings, dsn, job):
            say(line)
    return EXIT_OK


def cmd_clear(args: argparse.Namespace, settings: Settings) -> int:
    async def job(db: Database) -> seeds.ClearReport:
        return await seeds.clear_seeds(db, force=args.force, generated=args.generated)

    with target_dsn(settings) as dsn:
        cleared = with_database(settings, dsn, job)
    say(f"removed {cleared.seed_users} seed user(s)")
    if args.generated:
        say(f"removed {cleared.generated_users} generated user(s) (@{seeds.BULK_EMAIL_DOMAIN})")
    return EXIT_OK


def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    with target_dsn(settings) as dsn:
        local = settings.replace(database_url=dsn, pool_min_size=1, pool_max_size=2)
        job = _generate(local, args.count, args.batch_size, args.force, sys.stderr)
        result = event_loop.run(job, settings.event_loop)
    say(result.summary())
    return EXIT_INTERRUPTED if result.interrupted else EXIT_OK


async def _generate(
    settings: Settings, count: int, batch_size: int, force: bool, stream: TextIO
) -> bulk.BulkResult:
    """``bulk.generate`` with a progress bar, and Ctrl-C: the first stops between batches, the
    second abandons the batch in flight (the server rolls it back)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    stop = asyncio.Event()
    result = bulk.BulkResult(requested=count)

    def on_sigint() -> None:
        if stop.is_set() and task is not None:
            task.cancel()  # second Ctrl-C: abandon the batch in flight
            return
        stop.set()
        stream.write("\nstopping after the current batch (Ctrl-C again to abandon it)\n")
        stream.flush()

    loop.add_signal_handler(signal.SIGINT, on_sigint)
    try:
        async with Database(settings) as db:
            await bulk.generate(
                db,
                count,
                batch_size=batch_size,
                force=force,
                stop=stop,
                progress=Progress(count, stream),
                result=result,
            )
    except asyncio.CancelledError:
        # Only our own second-Ctrl-C handler cancels this task; the server has rolled the
        # unfinished COPY back, and ``result`` counts the committed batches only.
        result.interrupted = True
        result.abandoned_batch = True
    finally:
        loop.remove_signal_handler(signal.SIGINT)
    return result


_AGE = re.compile(r"(\d+)([dhms])")
_AGE_SECONDS = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}


def age(raw: str) -> timedelta:
    """``90d``, ``12h``, ``30m`` or ``45s``: how old an event must be to be pruned.

    Bounded by ``signin_jobs.MAX_PRUNE_AGE`` before any ``timedelta`` is built: a huge count
    (``999999999d``) would otherwise overflow the date arithmetic as a traceback."""
    match = _AGE.fullmatch(raw.strip())
    if match is None or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"expected a positive age such as 90d or 12h, got {raw!r}")
    seconds = int(match.group(1)) * _AGE_SECONDS[match.group(2)]
    if seconds > signin_jobs.MAX_PRUNE_AGE.total_seconds():
        raise argparse.ArgumentTypeError(
            f"expected an age of at most {signin_jobs.MAX_PRUNE_AGE.days}d, got {raw!r}"
        )
    return timedelta(seconds=seconds)


def cmd_unlock(args: argparse.Namespace, settings: Settings) -> int:
    with target_dsn(settings) as dsn:
        report = with_database(
            settings, dsn, lambda db: signin_jobs.unlock(db, args.email, force=args.force)
        )
    account = "its account lock lifted" if report.user_id else "no account has this email"
    say(f"unlocked {report.email}: {report.budgets_cleared} budget(s) cleared, {account}")
    return EXIT_OK


def cmd_prune_events(args: argparse.Namespace, settings: Settings) -> int:
    def job(db: Database) -> Awaitable[signin_jobs.PruneReport]:
        return signin_jobs.prune_events(
            db, args.older_than, force=args.force, batch=args.batch_size
        )

    with target_dsn(settings) as dsn:
        report = with_database(settings, dsn, job)
    dropped = ", ".join(report.dropped_partitions) or "none"
    say(f"dropped partitions: {dropped}; deleted {report.deleted_rows} older row(s) in batches")
    return EXIT_OK


def cmd_maintain_events(args: argparse.Namespace, settings: Settings) -> int:
    retention = timedelta(days=settings.auth_events_retention_days)
    with target_dsn(settings) as dsn:
        report = with_database(
            settings,
            dsn,
            lambda db: signin_jobs.maintain_events(
                db, months_ahead=args.months_ahead, retention=retention
            ),
        )
    created = ", ".join(report.created_partitions) or "none (all present)"
    say(f"created partitions: {created}; removed {report.expired_budgets} expired budget row(s)")
    kept = report.retention
    if kept is not None and kept.deferred:
        print(
            "defeah-db: error: auth_events stayed busy: partitions past the retention of "
            f"{retention.days} day(s) not dropped; run maintain-events again",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_ERROR
    if kept is not None:
        dropped = ", ".join(kept.dropped_partitions) or "none"
        say(f"dropped partitions past {retention.days} day(s) of retention: {dropped}")
    return EXIT_OK


def register(verb: AddVerb) -> None:
    sd = verb("seed", cmd_seed, "insert the development users of seeds/*.sql (idempotent)")
    sd.add_argument("--clear", action="store_true", help="remove the seed users first, then seed")
    sd.add_argument("--force", action="store_true", help=FORCE_HELP)
    cl = verb("clear", cmd_clear, "remove the seed users (never any other user)")
    cl.add_argument(
        "--generated",
        action="store_true",
        help=f"also remove the bulk generator's users (@{seeds.BULK_EMAIL_DOMAIN})",
    )
    cl.add_argument("--force", action="store_true", help=FORCE_HELP)
    gen = verb("generate", cmd_generate, "insert N synthetic users with COPY (for benchmarks)")
    gen.add_argument("count", type=positive_int, metavar="N", help="number of users")
    gen.add_argument(
        "--batch-size",
        type=positive_int,
        default=bulk.DEFAULT_BATCH_SIZE,
        metavar="B",
        help=f"rows per COPY, each batch its own transaction (default {bulk.DEFAULT_BATCH_SIZE})",
    )
    gen.add_argument("--force", action="store_true", help=FORCE_HELP)
    register_sign_in(verb)


def register_sign_in(verb: AddVerb) -> None:
    """``unlock``, ``prune-events`` (destructive, guarded) and ``maintain-events`` (safe, run it
    from cron; kept apart so routine partition creation never needs --force)."""
    ul = verb("unlock", cmd_unlock, "clear every sign-in budget and the account lock of EMAIL")
    ul.add_argument("email", metavar="EMAIL")
    ul.add_argument("--force", action="store_true", help=FORCE_HELP)
    pr = verb("prune-events", cmd_prune_events, "delete sign-in events older than an age")
    pr.add_argument(
        "--older-than", type=age, required=True, metavar="AGE", help="e.g. 90d, 12h, 30m"
    )
    pr.add_argument(
        "--batch-size",
        type=positive_int,
        default=signin_jobs.PRUNE_BATCH,
        metavar="B",
        help=f"rows per DELETE outside dropped partitions (default {signin_jobs.PRUNE_BATCH})",
    )
    pr.add_argument("--force", action="store_true", help=FORCE_HELP)
    mt = verb(
        "maintain-events",
        cmd_maintain_events,
        "create the sign-in event partitions ahead and drop expired budget rows",
    )
    mt.add_argument(
        "--months-ahead",
        type=positive_int,
        default=signin_jobs.MONTHS_AHEAD,
        metavar="N",
        help=f"months of partitions to keep ready (default {signin_jobs.MONTHS_AHEAD})",
    )
