"""The bulk generator: exact counts, rows the DAL's own rules accept, whole batches only."""

from __future__ import annotations

import asyncio
import io
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import bcrypt
import pytest

from cli.progress import Progress
from dal.db.database import Database
from dal.devdata import bulk
from dal.devdata.seeds import BULK_EMAIL_DOMAIN
from dal.instagram.models import InstagramConnection
from dal.users.models import NewUser
from tests.commands import ROOT, cli_env, run_cli
from tests.factories import make_settings
from tests.pg import query


def count(dsn: str) -> int:
    return int(query(dsn, "SELECT count(*) AS n FROM users")[0]["n"])


async def test_small_n_inserts_exactly_n_valid_rows(fresh_dsn: str) -> None:
    settings = make_settings(fresh_dsn)
    async with Database(settings) as db:
        result = await bulk.generate(db, 2_345, batch_size=1_000)
    assert (result.committed, result.batches, result.interrupted) == (2_345, 3, False)
    assert result.rate > 0 and "generated 2,345 users in 3 batch(es)" in result.summary()

    rows = query(fresh_dsn, "SELECT * FROM users ORDER BY created_at")
    assert len(rows) == 2_345
    now = datetime.now(UTC)
    threshold = settings.lockout_threshold
    for r in rows:
        # The DAL's input models encode the same rules as the CHECKs (and IANA zones).
        NewUser.model_validate(
            {
                "email": r["email"],
                "password": bulk.BULK_PASSWORD,
                "full_name": r["full_name"],
                "is_active": r["is_active"],
                "is_verified": r["is_verified"],
                "timezone": r["timezone"],
                "language": r["language"],
            }
        )
        ZoneInfo(r["timezone"])
        assert r["email"].endswith(f"@{BULK_EMAIL_DOMAIN}")
        assert r["created_at"] <= r["updated_at"] <= now
        if r["last_login_at"] is None:
            assert r["login_count"] == 0
        else:
            assert r["login_count"] > 0
            assert r["created_at"] <= r["last_login_at"] <= r["updated_at"]
        if r["locked_until"] is not None:
            assert r["failed_login_attempts"] >= threshold and r["locked_until"] > now
        else:
            assert 0 <= r["failed_login_attempts"] < threshold
        ig = (r["instagram_user_id"], r["instagram_access_token"], r["instagram_username"])
        assert all(v is None for v in ig) or all(v is not None for v in ig)
        if r["instagram_user_id"] is not None:
            InstagramConnection.model_validate(
                {
                    "instagram_user_id": r["instagram_user_id"],
                    "access_token": r["instagram_access_token"],
                    "instagram_username": r["instagram_username"],
                    "token_expires_at": r["token_expires_at"],
                }
            )

    def share(predicate: Callable[[dict[str, Any]], bool]) -> float:
        return sum(1 for r in rows if predicate(r)) / len(rows)

    assert len({r["created_at"] for r in rows}) == len(rows)  # distinct instants
    days = (rows[-1]["created_at"] - rows[0]["created_at"]).days
    assert days > 2 * 365  # spread over the history, not bunched at now()
    assert 0.2 < share(lambda r: r["instagram_user_id"] is not None) < 0.4
    assert 0 < share(lambda r: r["locked_until"] is not None) < 0.06
    assert 0 < share(lambda r: not r["is_active"]) < 0.1
    assert share(lambda r: (r["token_expires_at"] or now) < now) > 0  # some tokens expired
    assert share(lambda r: (r["token_expires_at"] or now) > now) > 0
    assert len({r["timezone"] for r in rows}) > 10 and len({r["language"] for r in rows}) > 5

    hashes = {r["hashed_password"] for r in rows}
    assert len(hashes) == bulk.HASH_VARIANTS
    for stored in hashes:
        assert stored.startswith("$2b$04$")  # the configured cost (tests use 4)
        assert bcrypt.checkpw(bulk.BULK_PASSWORD.encode(), stored.encode())


async def test_two_runs_never_collide(fresh_dsn: str) -> None:
    async with Database(make_settings(fresh_dsn)) as db:
        await bulk.generate(db, 300, batch_size=128)
        await bulk.generate(db, 300, batch_size=128)
    assert count(fresh_dsn) == 600


class StopAfter(Progress):
    """Progress hook that asks the generator to stop once ``limit`` rows are committed."""

    def __init__(self, total: int, stop: asyncio.Event, limit: int) -> None:
        super().__init__(total, io.StringIO(), enabled=False)
        self.stop, self.limit = stop, limit

    def update(self, done: int, *, final: bool = False) -> None:
        if done >= self.limit:
            self.stop.set()


async def test_stop_request_ends_between_batches(fresh_dsn: str) -> None:
    stop = asyncio.Event()
    async with Database(make_settings(fresh_dsn)) as db:
        result = await bulk.generate(
            db, 10_000, batch_size=300, stop=stop, progress=StopAfter(10_000, stop, 600)
        )
    assert (result.committed, result.batches, result.interrupted) == (600, 2, True)
    assert count(fresh_dsn) == 600
    assert "interrupted: 600 of 10,000 users committed" in result.summary()
    assert "stopped between batches" in result.summary()


class WatchFromOutside(Progress):
    """Progress hook that, after each committed batch, counts the rows another connection
    sees, then asks the generator to stop after the first batch."""

    def __init__(self, dsn: str, total: int, stop: asyncio.Event) -> None:
        super().__init__(total, io.StringIO(), enabled=False)
        self.dsn, self.stop = dsn, stop
        self.seen: list[tuple[int, int]] = []  # (rows the generator reported, rows visible)

    def update(self, done: int, *, final: bool = False) -> None:
        if not final:
            # A blocking query from the loop is fine here: the generator is between batches.
            self.seen.append((done, count(self.dsn)))
            self.stop.set()


async def test_each_batch_commits_on_its_own(fresh_dsn: str) -> None:
    """Batches in one big transaction would show 0 rows to another connection until the end;
    each COPY committing alone shows exactly the first batch while the generator still runs."""
    stop = asyncio.Event()
    watch = WatchFromOutside(fresh_dsn, 10_000, stop)
    async with Database(make_settings(fresh_dsn)) as db:
        async with asyncio.timeout(60):
            result = await bulk.generate(db, 10_000, batch_size=250, stop=stop, progress=watch)
    assert watch.seen == [(250, 250)]
    assert (result.committed, result.batches, result.interrupted) == (250, 1, True)
    assert count(fresh_dsn) == 250


def test_progress_bar_draws_only_when_enabled() -> None:
    drawn = io.StringIO()
    bar = Progress(1_000, drawn, enabled=True)
    bar.update(1_000, final=True)
    assert "[" + "#" * Progress.WIDTH + "]" in drawn.getvalue()
    assert "100%" in drawn.getvalue() and "rows/s" in drawn.getvalue()

    quiet = io.StringIO()  # not a TTY: nothing at all
    Progress(1_000, quiet).update(1_000, final=True)
    assert quiet.getvalue() == ""


def test_cli_generate_draws_a_bar_on_a_terminal_only(fresh_dsn: str) -> None:
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "generate", "3000", "--batch-size", "1000"],
            stdout=subprocess.PIPE,
            stderr=slave,
            cwd=ROOT,
            env=cli_env(fresh_dsn),
        )
        os.close(slave)
        out, _ = proc.communicate(timeout=60)
        terminal = b""
        while select.select([master], [], [], 0.5)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            terminal += chunk
    finally:
        os.close(master)
    assert proc.returncode == 0
    assert b"100%" in terminal and b"rows/s" in terminal and b"\r[" in terminal
    assert "generated 3,000 users in 3 batch(es)" in out.decode()

    piped = run_cli(fresh_dsn, "generate", "500")
    assert piped.returncode == 0, piped.stderr
    assert piped.stderr == ""  # quiet when not a TTY
    assert piped.stdout.startswith("generated 500 users") and "rows/s" in piped.stdout
    assert count(fresh_dsn) == 3_500


def start_generator(dsn: str, batch_size: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "generate", "50000000", "--batch-size", str(batch_size)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=cli_env(dsn),
    )


def wait_for_rows(dsn: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while count(dsn) == 0:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "generator committed nothing in 60 s"
        time.sleep(0.05)


@pytest.mark.parametrize("presses", [1, 2])
def test_sigint_keeps_whole_batches_only(fresh_dsn: str, presses: int) -> None:
    batch = 500 if presses == 1 else 50_000
    proc = start_generator(fresh_dsn, batch)
    try:
        wait_for_rows(fresh_dsn, proc)
        proc.send_signal(signal.SIGINT)
        if presses == 2:
            time.sleep(0.1)  # let the first press be handled, mid-batch
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    committed = count(fresh_dsn)
    assert proc.returncode == 130, err
    assert committed > 0 and committed % batch == 0
    assert f"interrupted: {committed:,} of 50,000,000 users committed" in out
    assert "stopping after the current batch" in err
    assert "Traceback" not in err
    if presses == 1:
        assert "stopped between batches" in out
    else:
        # 50,000 rows take far longer than 0.1 s here, so the second press lands mid-batch.
        assert "the batch in flight was rolled back" in out


def test_a_failing_batch_is_rolled_back_whole(fresh_dsn: str) -> None:
    # Row 1500 (hex 5dc, after the last dot of its email's local part) breaks an extra CHECK: the
    # second batch of 1,000 fails, the first stays, nothing of the second remains.
    query(
        fresh_dsn,
        "ALTER TABLE users ADD CONSTRAINT no_row_1500 "
        f"CHECK (email NOT LIKE '%.5dc@{BULK_EMAIL_DOMAIN}')",
    )
    done = run_cli(fresh_dsn, "generate", "3000", "--batch-size", "1000")
    assert done.returncode == 1
    assert "no_row_1500" in done.stderr and "1,000 users committed in 1 whole batch" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert count(fresh_dsn) == 1_000


def test_generate_on_an_unmigrated_database_says_to_migrate(empty_dsn: str) -> None:
    done = run_cli(empty_dsn, "generate", "10")
    assert done.returncode == 1
    assert "run `defeah-db migrate` first" in done.stderr and "Traceback" not in done.stderr
