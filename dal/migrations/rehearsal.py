"""Rehearsal at volume: the pending migrations on a filled scratch copy, under a light load.

``defeah-db rehearse --rows N`` answers the DBA's question before a deploy: which lock does each
pending statement take, for how long, and what does the application feel meanwhile?

1. a scratch database beside the target gets the migrations the target has applied (the
   current schema), then ``N`` generated users (``dal.devdata.bulk``, COPY);
2. the pending migrations run there, as ``migrate`` runs them, while a sampler thread reads
   ``pg_locks`` + ``pg_stat_activity`` of the migration sessions every ``SAMPLE_SECONDS``, and a
   light DAL load (``get`` and sign-in bookkeeping) records each operation's latency;
3. one block per statement: lock modes and how long each was seen held or awaited, the
   statement's duration, and the load's p99 and errors during it;
4. the scratch database is dropped, whatever happened.

Durations are as sampled (resolution ``SAMPLE_SECONDS``); the load's times and the server's are
compared on the wall clock, so run it from a host whose clock agrees with the server's.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dal.db import admin, event_loop
from dal.db.database import Database
from dal.db.dsn import maintenance_dsn, with_database
from dal.db.settings import Settings
from dal.db.statements import Statements, run
from dal.devdata import bulk
from dal.errors import DalError
from dal.migrations import runner, scratch
from dal.migrations.files import SQL_DIR
from dal.queries import load

REHEARSAL_SQL = load("rehearsal")
SAMPLE_SECONDS = 0.01
LOAD_SAMPLE = 200


@dataclass
class StatementTrace:
    query: str
    started: datetime
    last_seen: datetime
    locks: dict[tuple[str, str, bool], tuple[datetime, datetime]] = field(default_factory=dict)

    def seconds(self) -> float:
        return (self.last_seen - self.started).total_seconds()


@dataclass(frozen=True)
class LoadOp:
    at: datetime
    seconds: float
    ok: bool


class LockSampler:
    """Background thread: folds samples of ``migration_locks`` into one trace per statement."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lock-sampler", daemon=True)
        self.traces: dict[tuple[int, datetime], StatementTrace] = {}

    def __enter__(self) -> LockSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        with admin.connect(self._dsn) as conn, conn.cursor() as cur:
            while not self._stop.is_set():
                cur.execute(REHEARSAL_SQL["migration_locks"].pyformat)
                for row in cur.fetchall():
                    self._fold(*row)
                self._stop.wait(SAMPLE_SECONDS)

    def _fold(
        self,
        at: datetime,
        pid: int,
        query: str,
        started: datetime,
        state: str,
        mode: str,
        target: str,
        granted: bool,
    ) -> None:
        if state != "active" or started is None:
            return
        trace = self.traces.setdefault((pid, started), StatementTrace(query, started, at))
        trace.last_seen = max(trace.last_seen, at)
        key = (mode, target, granted)
        first, _ = trace.locks.get(key, (at, at))
        trace.locks[key] = (first, at)


async def _load(db: Database, ids: list[Any], stop: asyncio.Event, ops: list[LoadOp]) -> None:
    """Alternating reads and sign-in bookkeeping on random users until ``stop``.

    Statements on the spec's columns (rehearsal.sql), not the repository's: the repository is
    this release's code, which may select columns the pending migrations have yet to add.
    """
    loop = asyncio.get_running_loop()
    sql = Statements(db, "rehearsal")
    while not stop.is_set():
        user_id = random.choice(ids)
        started, at = loop.time(), datetime.now(UTC)
        try:
            await sql.row("load_sign_in" if len(ops) % 2 else "load_read", {"id": user_id})
            ok = True
        except DalError:
            ok = False
        ops.append(LoadOp(at, loop.time() - started, ok))
        await asyncio.sleep(0.002)


def p99(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def report(traces: list[StatementTrace], ops: list[LoadOp]) -> list[str]:
    lines = []
    for trace in sorted(traces, key=lambda t: t.started):
        query = " ".join(trace.query.split())[:100]
        lines.append(f"statement: {query}")
        lines.append(f"  duration ~{trace.seconds():.3f}s")
        for (mode, target, granted), (first, last) in sorted(trace.locks.items()):
            verb = "held" if granted else "WAITED for"
            lines.append(f"  {verb} {mode} on {target} ~{(last - first).total_seconds():.3f}s")
        during = [op for op in ops if trace.started <= op.at <= trace.last_seen]
        worst = p99([op.seconds for op in during])
        errors = sum(not op.ok for op in during)
        shown = f"{worst * 1000:.1f} ms" if worst is not None else "n/a"
        lines.append(f"  load: {len(during)} ops, p99 {shown}, {errors} error(s)")
    if not traces:
        lines.append("no statement held a lock on our tables long enough to be sampled")
    return lines


def rehearse(settings: Settings, dsn: str, rows: int, sources: Path = SQL_DIR) -> list[str]:
    """Run the rehearsal against a scratch copy beside ``dsn``; return the report lines.

    The copy is owned, marked, dropped on SIGTERM (``Terminated``), and swept by the next run
    if its owner died (``dal.migrations.scratch``)."""
    applied = runner.status(dsn, sources).applied
    name = f"{scratch.SCRATCH_PREFIX}{uuid.uuid4().hex[:8]}"
    server = maintenance_dsn(dsn)
    scratch_dsn = with_database(dsn, name)
    sigterm = scratch.Sigterm(server, name)
    with admin.connect(server) as owner, sigterm.deferred():
        scratch.own(owner, name)
        swept = scratch.sweep(owner, server)
        admin.create_database(server, name)
        try:
            scratch.mark(server, name)
            with tempfile.TemporaryDirectory() as tmp:
                current = _subset(sources, applied, Path(tmp))
                runner.apply(scratch_dsn, sources=current)
            sigterm.check()
            config = settings.replace(database_url=scratch_dsn, pool_min_size=1, pool_max_size=4)
            try:
                lines = event_loop.run(
                    _rehearse(config, scratch_dsn, rows, sources, sigterm), config.event_loop
                )
            except DalError:
                sigterm.check()  # the pending migration whose session SIGTERM ended
                raise
            sigterm.check()
            return swept.lines() + lines
        finally:
            admin.drop_database(server, name)


def _subset(sources: Path, ids: tuple[str, ...], dest: Path) -> Path:
    for mid in ids:
        for name in (f"{mid}.sql", f"{mid}.rollback.sql"):
            if (sources / name).is_file():
                shutil.copy(sources / name, dest / name)
    return dest


async def _rehearse(
    settings: Settings, dsn: str, rows: int, sources: Path, sigterm: scratch.Sigterm
) -> list[str]:
    policy = runner.RunPolicy.from_settings(settings)
    stop, ops = asyncio.Event(), list[LoadOp]()
    with sigterm.in_loop(stop):
        return await _filled_run(settings, dsn, rows, sources, policy, stop, ops)


async def _filled_run(
    settings: Settings,
    dsn: str,
    rows: int,
    sources: Path,
    policy: runner.RunPolicy,
    stop: asyncio.Event,
    ops: list[LoadOp],
) -> list[str]:
    async with Database(settings) as db:
        filled = await bulk.generate(db, rows, force=True, stop=stop)
        if stop.is_set():
            return []  # SIGTERM: the caller raises Terminated
        async with db.acquire() as conn:
            query = REHEARSAL_SQL["sample_user_ids"]
            ids = [r["id"] for r in await run(conn, query, {"limit": LOAD_SAMPLE})]
        load_task = asyncio.create_task(_load(db, ids, stop, ops)) if ids else None
        try:
            with LockSampler(dsn) as sampler:
                applied = await asyncio.to_thread(runner.apply, dsn, sources, policy)
        finally:
            stop.set()
            if load_task is not None:
                await load_task
    head = [f"rehearsal on {filled.committed:,} users: applied {', '.join(applied) or 'nothing'}"]
    return head + report(list(sampler.traces.values()), ops)
