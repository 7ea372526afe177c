"""The token refresher behind ``defeah-db refresh-tokens``: claim -> Graph API -> record.

Any number of these may run at once (processes, hosts): ``claim_tokens_due`` leases disjoint
rows in one ``FOR UPDATE SKIP LOCKED`` statement, so each due token is refreshed by one worker.
A worker that dies leaves leases that run out (``lease``), after which another worker takes
the rows.  On SIGINT/SIGTERM the worker stops claiming, lets the refreshes in flight finish
and releases the leases of the tokens it claimed but did not start.

The Graph API call is ``GET {base}/refresh_access_token?grant_type=ig_refresh_token&
access_token=...`` with a per-request timeout.  429, 5xx, timeouts and connection errors are
retried a bounded number of times with exponential backoff and full jitter; an answer with
OAuth code 190 (invalid token) is final and flags the row ``needs_reauth``.  No redirect is
followed (it would carry the token to another host), and every answer goes through
``graph_answer``: a body capped at a few KB, strictly typed fields, so one bad answer fails
its own token (recorded, back-off) and never the worker.  The token is part
of the request URL, so nothing here ever logs a URL, a request or an aiohttp exception text:
outcomes are reduced to codes (``190``, ``http_429``, ``timeout``...) before they leave.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final

import aiohttp
from pydantic import SecretStr

from dal.errors import InvalidUserData
from dal.instagram.graph_answer import Failed, Outcome, Refreshed, outcome_of, read_capped
from dal.instagram.models import DueToken
from dal.instagram.repository import INVALID_TOKEN_CODE, InstagramRepository

log = logging.getLogger(__name__)

RETRYABLE_STATUS: Final = frozenset({429, 500, 502, 503, 504})
# An uncompressed body: its size on the wire is its size in memory (graph_answer caps it).
IDENTITY: Final = {"Accept-Encoding": "identity"}


@dataclass(frozen=True)
class RefreshConfig:
    """How one worker runs; every bound is explicit so a stuck call cannot hold a lease."""

    graph_url: str
    concurrency: int = 4
    batch: int = 10
    within: timedelta = timedelta(days=7)
    lease: timedelta = timedelta(minutes=10)
    request_timeout: float = 10.0
    retries: int = 3
    backoff: float = 0.5  # seconds before the first retry; doubles, with full jitter
    backoff_max: float = 8.0
    interval: float = 60.0  # seconds between cycles when not --once


@dataclass
class CycleSummary:
    claimed: int = 0
    refreshed: int = 0
    needs_reauth: int = 0
    lost_lease: int = 0
    released: int = 0
    retries: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def line(self) -> str:
        failed = ", ".join(f"{code}={n}" for code, n in sorted(self.failures.items())) or "none"
        return (
            f"refresh cycle: claimed {self.claimed}, refreshed {self.refreshed}, "
            f"needs_reauth {self.needs_reauth}, failed {failed}, retries {self.retries}, "
            f"lost lease {self.lost_lease}, released {self.released}, {self.seconds:.1f} s"
        )


def _retry_delay(config: RefreshConfig, attempt: int) -> float:
    """Full jitter (uniform in [0, cap]): workers that failed together do not retry together."""
    cap = min(config.backoff_max, config.backoff * 2**attempt)
    return random.uniform(0, cap)


async def _answer(response: aiohttp.ClientResponse) -> Outcome | None:
    """The outcome of one HTTP answer; None when it should be retried.  A redirect is an
    answer like any other status: following it would send the token to wherever it points."""
    if response.status in RETRYABLE_STATUS:
        return None
    if 300 <= response.status < 400:
        return Failed(f"http_{response.status}")
    body = await read_capped(response)
    if isinstance(body, Failed):
        return body
    return outcome_of(response.status, body)


async def refresh_once(
    session: aiohttp.ClientSession, config: RefreshConfig, token: SecretStr, summary: CycleSummary
) -> Outcome:
    """One token through the Graph API, with bounded retries."""
    url = f"{config.graph_url.rstrip('/')}/refresh_access_token"
    params = {"grant_type": "ig_refresh_token", "access_token": token.get_secret_value()}
    timeout = aiohttp.ClientTimeout(total=config.request_timeout)
    last = "network"
    for attempt in range(config.retries + 1):
        if attempt:
            summary.retries += 1
            await asyncio.sleep(_retry_delay(config, attempt - 1))
        try:
            async with session.get(
                url, params=params, timeout=timeout, allow_redirects=False, headers=IDENTITY
            ) as response:
                outcome = await _answer(response)
                last = f"http_{response.status}"
        except TimeoutError:
            outcome, last = None, "timeout"
        except aiohttp.ClientError:  # its text contains the URL, hence the token: not kept
            outcome, last = None, "network"
        if outcome is not None:
            return outcome
    return Failed(last)


class Refresher:
    """One worker: ``cycle()`` drains what is due now; ``run()`` repeats until stopped."""

    def __init__(
        self,
        instagram: InstagramRepository,
        config: RefreshConfig,
        stop: asyncio.Event | None = None,
        report: Callable[[str], None] | None = None,
    ) -> None:
        self.instagram = instagram
        self.config = config
        self.stop = stop or asyncio.Event()
        self.report = report or (lambda line: log.info("%s", line))

    async def _record(self, due: DueToken, outcome: Outcome, summary: CycleSummary) -> None:
        if isinstance(outcome, Refreshed):
            try:
                kept = await self.instagram.record_refreshed(
                    due.user_id, outcome.token, outcome.expires_at, lease_until=due.lease_until
                )
            except InvalidUserData:  # a token or expiry we cannot store: count, do not crash
                outcome = Failed("bad_response")
            else:
                summary.refreshed += kept
                summary.lost_lease += not kept
                return
        failure = await self.instagram.record_refresh_failed(
            due.user_id, outcome.code, lease_until=due.lease_until
        )
        summary.failures[outcome.code] += 1
        if failure is None:
            summary.lost_lease += 1
        elif outcome.code == INVALID_TOKEN_CODE:
            summary.needs_reauth += 1

    async def _slot(self, session: aiohttp.ClientSession, summary: CycleSummary) -> None:
        while not self.stop.is_set():
            claimed = await self.instagram.claim_due(
                self.config.within, limit=self.config.batch, lease=self.config.lease
            )
            if not claimed:
                return
            summary.claimed += len(claimed)
            pending = list(claimed)
            try:
                while pending and not self.stop.is_set():
                    outcome = await refresh_once(session, self.config, pending[0].token, summary)
                    await self._record(pending[0], outcome, summary)
                    pending.pop(0)
            finally:
                # Stopping -- or anything unforeseen escaping -- gives back what was not
                # recorded, so no row stays leased to a worker that is gone.
                if pending:
                    summary.released += await self.instagram.release_claims(
                        [d.user_id for d in pending], leases=[d.lease_until for d in pending]
                    )

    async def cycle(self) -> CycleSummary:
        """Claim and refresh until nothing is due (or stop is set); one summary line."""
        summary = CycleSummary()
        started = time.perf_counter()
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            slots = [self._slot(session, summary) for _ in range(self.config.concurrency)]
            await asyncio.gather(*slots)
        summary.seconds = time.perf_counter() - started
        self.report(summary.line())
        return summary

    async def run(self, *, once: bool = False) -> list[CycleSummary]:
        summaries: list[CycleSummary] = []
        while not self.stop.is_set():
            summaries.append(await self.cycle())
            if once:
                break
            try:
                await asyncio.wait_for(self.stop.wait(), self.config.interval)
            except TimeoutError:
                continue
        return summaries
