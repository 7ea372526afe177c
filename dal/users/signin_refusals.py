"""Refusals of spent sign-in keys without the database, and their events summarised.

Why (issue 20 items 2 and 3): once a budget key is spent, every further attempt on it is
refused anyway, but each refusal still cost a database round trip and an ``auth_events`` row.
A single address flooding a spent key at thousands of attempts a second then took the cores
from bcrypt (legitimate sign-ins timed out) and grew the log by gigabytes an hour.

So the database's "spent until T" answer is remembered here for at most
``DEFEAH_SIGNIN_REFUSAL_HOLD`` seconds (never past T).  During that hold an attempt on the key
is refused in process: no round trip, no row.  The database stays the source of truth: after
the hold the next attempt asks it again, and a success or an operator unlock is seen at the
latest one hold later (in this process at once).  Refusals made here are counted, and every
``DEFEAH_SIGNIN_EVENT_FLUSH`` seconds one ``auth_events`` row per refusing key stands for them
(``attempts``, ``occurred_at`` .. ``last_occurred_at``), so every attempt is still counted while
one client adds a row per key per interval, not per attempt.  A refusal made here answers
after ``DEFEAH_SIGNIN_REFUSAL_DELAY`` (see ``Refusals.wait``): free refusals answered at once
let a client that sends its next attempt on each answer spin the event loop at tens of
thousands a second, which took the CPU from bcrypt as surely as the database round trips did
(docs/benchmarks.md, bench/bench_signin_flood.py).

Times are the database's: each remembered answer carries the server's ``now()``, and a
refusal's time is that plus the monotonic time since, so a skewed or moved application clock
neither stretches a hold nor misdates a summary.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final
from uuid import UUID
from weakref import WeakKeyDictionary

from dal.db.statements import run
from dal.errors import DalError
from dal.queries import load
from dal.users.budgets import LOCKING_SCOPES

if TYPE_CHECKING:
    from dal.db.connections import Acquirer

SIGNIN_SQL: Final = load("signin")
log = logging.getLogger(__name__)

Key = tuple[str, str, str]  # (scope, email, network) as in sign_in_budgets
# Bounds on memory: remembered keys (the oldest is forgotten first: it is then asked again) and
# summaries waiting for their flush (reaching it flushes at once).
MAX_SPENT: Final = 100_000
MAX_PENDING: Final = 10_000


@dataclass(frozen=True)
class Spent:
    """The database's answer "this key is spent", as remembered."""

    scope: str
    decided_by: str
    until: datetime
    email: str  # the email of the attempt the database refused
    user_id: UUID | None
    db_now: datetime  # the server's clock when it answered ...
    seen_at: float  # ... and this process's monotonic clock then
    expires: float  # monotonic: the end of the hold
    ends: float  # monotonic: ``until``, past which no hold may last

    def db_time(self, at: float) -> datetime:
        return self.db_now + timedelta(seconds=at - self.seen_at)


@dataclass
class Summary:
    """The refusals of one key since the last flush."""

    email: str
    user_id: UUID | None
    result: str
    client_ip: str | None
    user_agent: str | None
    decided_by: str
    first: datetime
    last: datetime
    attempts: int = 1


@dataclass
class Refusals:
    """Spent keys and pending summaries of one database (``refusals_for``)."""

    db: Acquirer
    hold: float
    flush_every: float
    delay: float = 0.0  # seconds a refusal made here waits before it answers (see ``wait``)
    spent: dict[Key, Spent] = field(default_factory=dict)
    pending: dict[tuple[str, str], Summary] = field(default_factory=dict)
    _timer: asyncio.TimerHandle | None = None
    _flushing: set[asyncio.Task[int]] = field(default_factory=set)

    def remember(
        self,
        key: Key,
        decided_by: str,
        until: datetime,
        db_now: datetime,
        email: str,
        user_id: UUID | None,
    ) -> None:
        """The database refused an attempt on ``key`` until ``until`` (its clock ``db_now``)."""
        if self.hold <= 0:
            return
        remaining = (until - db_now).total_seconds()
        if remaining <= 0:
            return
        now = time.monotonic()
        self.spent.pop(key, None)
        while len(self.spent) >= MAX_SPENT:
            del self.spent[next(iter(self.spent))]
        ends = now + remaining
        self.spent[key] = Spent(
            key[0], decided_by, until, email, user_id, db_now, now, min(now + self.hold, ends), ends
        )

    def refusal(self, keys: tuple[Key, ...], priority: tuple[str, ...]) -> Spent | None:
        """The remembered spent key of an attempt that speaks first, if any is still held.

        When a hold ends, the first attempt on the key asks the database (the probe) while
        the hold is renewed for the others: a flood sends one attempt per hold to the
        database, not one per concurrent task.  The probe's answer replaces the hold (still
        spent) or ends it (``forget``, nothing spent)."""
        now = time.monotonic()
        found = None
        for key in keys:
            spent = self.spent.get(key)
            if spent is None:
                continue
            if spent.expires <= now:
                if spent.ends <= now:
                    del self.spent[key]
                else:
                    self.spent[key] = replace(spent, expires=min(now + self.hold, spent.ends))
            elif found is None or priority.index(spent.scope) < priority.index(found.scope):
                found = spent
        return found

    async def wait(self) -> None:
        """Slow the answer, not the CPU: a client that sends its next attempt when the last
        one is answered (most floods) gets at most one refusal per ``delay`` per connection,
        so its refusals cannot take the event loop from the sign-ins whose passwords bcrypt
        checks.  A waiting refusal holds no connection and no lock, only a timer."""
        if self.delay > 0:
            await asyncio.sleep(self.delay)

    def forget(self, keys: tuple[Key, ...]) -> None:
        """A success or unlock in this process: ask the database about these keys again."""
        for key in keys:
            self.spent.pop(key, None)

    def forget_email(self, email: str) -> None:
        for key in [key for key in self.spent if key[1] == email]:
            del self.spent[key]

    def count(
        self, spent: Spent, email: str, client_ip: str | None, user_agent: str | None
    ) -> None:
        """Count one in-process refusal in its key's summary; schedule the flush."""
        at = spent.db_time(time.monotonic())
        slot = summary_slot(spent.decided_by, email)
        summary = self.pending.get(slot)
        if summary is not None:
            summary.attempts += 1
            summary.last = max(summary.last, at)
            return
        result = "locked" if spent.scope in LOCKING_SCOPES else "throttled"  # as the database
        user_id = spent.user_id if email == spent.email else None
        self.pending[slot] = Summary(
            email, user_id, result, client_ip, user_agent, spent.decided_by, at, at
        )
        self._schedule(0 if len(self.pending) >= MAX_PENDING else self.flush_every)

    def _schedule(self, delay: float) -> None:
        if self._timer is not None and delay > 0:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(delay, self._start_flush)

    def _start_flush(self) -> None:
        self._timer = None
        task = asyncio.get_running_loop().create_task(self.flush())
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def flush(self) -> int:
        """Write the pending summaries now (one statement); returns the attempts written.

        On a database error the counts are kept (merged with newer ones) and retried one
        interval later, so an outage delays the log but loses no attempt while the process
        lives."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self.pending = list(self.pending.values()), {}
        if not batch:
            return 0
        try:
            async with self.db.acquire() as conn:
                await run(conn, SIGNIN_SQL["record_refusal_summaries"], columns(batch))
        except DalError as exc:
            log.warning(
                "sign-in refusal summaries not written (%d attempts kept): %s",
                sum(s.attempts for s in batch),
                exc,
            )
            self._merge_back(batch)
            self._schedule(self.flush_every)
            return 0
        return sum(summary.attempts for summary in batch)

    def _merge_back(self, batch: list[Summary]) -> None:
        for old in batch:
            slot = summary_slot(old.decided_by, old.email)
            newer = self.pending.get(slot)
            if newer is not None:
                old.attempts += newer.attempts
                old.last = max(old.last, newer.last)
            self.pending[slot] = old

    async def close(self) -> None:
        """Before the pool closes: write what is pending, wait for flushes under way."""
        await self.flush()
        if self._flushing:
            await asyncio.gather(*self._flushing)


def summary_slot(decided_by: str, email: str) -> tuple[str, str]:
    """The summary an attempt counts in: its refusing key's.  An address's key is one key
    across emails, so its summary carries the first email of the interval."""
    return decided_by, "" if decided_by.startswith("ip ") else email


def columns(batch: list[Summary]) -> dict[str, object]:
    """The summaries as the parallel arrays of ``record_refusal_summaries``."""
    return {
        "firsts": [s.first for s in batch],
        "lasts": [s.last for s in batch],
        "attempts": [s.attempts for s in batch],
        "emails": [s.email for s in batch],
        "user_ids": [s.user_id for s in batch],
        "results": [s.result for s in batch],
        "client_ips": [s.client_ip for s in batch],
        "user_agents": [s.user_agent for s in batch],
        "decided_bys": [s.decided_by for s in batch],
    }


_REFUSALS: WeakKeyDictionary[Acquirer, Refusals] = WeakKeyDictionary()


def refusals_for(db: Acquirer) -> Refusals:
    """The process's ``Refusals`` of ``db``: shared by every repository on it, because
    repositories are cheap and often made per request while a flood spans them all."""
    refusals = _REFUSALS.get(db)
    if refusals is None:
        settings = db.settings
        refusals = Refusals(
            db,
            settings.signin_refusal_hold,
            settings.signin_event_flush,
            settings.signin_refusal_delay,
        )
        _REFUSALS[db] = refusals
        register = getattr(db, "before_close", None)
        if register is not None:
            register(refusals.close)
    return refusals
