"""Prometheus metrics the data access layer records: pool acquires, named queries, sign-ins and
the bcrypt queue.

The objects are process-wide (the pools, queries and bcrypt workers they describe are) and
registered in no registry: ``dal`` records, it does not serve.  The web layer registers
``COLLECTORS`` in its own registry for ``GET /metrics`` (web/metrics.py), and a test or another
service may register them elsewhere.

Labels are bounded by construction: pool names come from the configuration (``primary``,
``replica1``...), query names from the ``.sql`` files, results from a fixed list.  Never a user
id, an email or an address: each distinct label value is a time series kept forever.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dal import passwords

# Waits for a pooled connection: sub-millisecond when the pool has one idle, up to the acquire
# timeout (5 s by default) when it is exhausted.
ACQUIRE_BUCKETS: Final = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0)
QUERY_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)

ACQUIRE_WAIT: Final = Histogram(
    "defeah_pool_acquire_wait_seconds",
    "Time spent waiting for a pooled connection, per pool (timeouts included).",
    ["pool"],
    buckets=ACQUIRE_BUCKETS,
    registry=None,
)
ACQUIRE_TIMEOUTS: Final = Counter(
    "defeah_pool_acquire_timeouts",
    "Acquires that found no free connection within their timeout, per pool.",
    ["pool"],
    registry=None,
)
QUERY_DURATION: Final = Histogram(
    "defeah_query_duration_seconds",
    "Duration of each named statement of dal/queries/*.sql, errors included.",
    ["query"],
    buckets=QUERY_BUCKETS,
    registry=None,
)
SIGN_INS: Final = Counter(
    "defeah_sign_ins",
    "Sign-in attempts by result (success, invalid_credentials, locked, throttled, inactive, "
    "overloaded).",
    ["result"],
    registry=None,
)
LOCKOUTS: Final = Counter(
    "defeah_lockouts",
    "Account-wide locks taken (an email's account budget spent by a failed sign-in).",
    registry=None,
)


class BcryptCollector(Collector):
    """The bcrypt workers' queue, read at scrape time (``passwords.BCRYPT``)."""

    def collect(self) -> Iterator[Metric]:
        workers = passwords.BCRYPT
        yield GaugeMetricFamily(
            "defeah_bcrypt_queue_depth",
            "Password checks waiting for a bcrypt worker.",
            value=workers.queued,
        )
        yield GaugeMetricFamily(
            "defeah_bcrypt_workers", "bcrypt worker threads (one per core).", value=workers.workers
        )
        yield CounterMetricFamily(
            "defeah_bcrypt_refused",
            "Password checks refused with Overloaded (queue full or waited too long).",
            value=workers.refused,
        )


COLLECTORS: Final[tuple[Collector, ...]] = (
    ACQUIRE_WAIT,
    ACQUIRE_TIMEOUTS,
    QUERY_DURATION,
    SIGN_INS,
    LOCKOUTS,
    BcryptCollector(),
)
