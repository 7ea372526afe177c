"""Prometheus metrics the data access layer records: pool acquires, named queries and sign-ins
(the bcrypt queue's gauges are read by ``dal.users.passwords.BcryptCollector``).

The objects are process-wide (the pools, queries and bcrypt workers they describe are) and
registered in no registry: ``dal`` records, it does not serve.  The web layer registers
``dal.COLLECTORS`` (these and the bcrypt collector) in its own registry for ``GET /metrics``
(web/metrics.py), and a test or another service may register them elsewhere.

Labels are bounded by construction: pool names come from the configuration (``primary``,
``replica1``...), query names from the ``.sql`` files, results from a fixed list.  Never a user
id, an email or an address: each distinct label value is a time series kept forever.

Why ``LoopCounter``/``LoopHistogram`` rather than prometheus_client's ``Counter``/``Histogram``
for recording: those take a lock per observation and walk the buckets in Python, which was most
of what the liveness route spent beyond a bare aiohttp handler (figures in docs/benchmarks.md),
and the DAL records twice per statement, the web layer twice per request.  These two keep plain
numbers (an ``observe`` is one ``bisect`` and two additions) and hand them to
prometheus_client's metric families at scrape time; exposition, registries and the text format
stay the library's; they expose no ``_created`` series.  They
take no lock because every observation is made on the event loop's thread, and so is the scrape
of ``GET /metrics``.  A program that records from several threads at once could lose an
increment to a race, and a scrape from another thread may read a histogram's buckets and sum a
few observations apart.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import Final, Generic, TypeVar, cast

from prometheus_client.core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

# The bucket-bound spelling of the library's own Histogram ("0.005", "1.0", "+Inf").
go_float: Final = cast(Callable[[float], str], floatToGoString)


class CounterChild:
    """One label set of a ``LoopCounter``."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class HistogramChild:
    """One label set of a ``LoopHistogram``: a count per bucket (not cumulative) and a sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf's own
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        # bisect_left: the first bound >= amount, as Prometheus's "le" (less or equal) wants
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.sum += amount


Child = TypeVar("Child", CounterChild, HistogramChild)


class LoopFamily(Collector, Generic[Child]):
    """What both recorders share: name, help, label names and a child per label set."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], Child] = {}

    def new_child(self) -> Child:
        raise NotImplementedError

    def labels(self, *values: str) -> Child:
        """The child of these label values (created on first use; keep it, it is reused)."""
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.new_child()
        return child

    def children(self) -> list[tuple[tuple[str, ...], Child]]:
        """A copy, so a scrape never iterates while the loop adds a child (module docstring)."""
        return list(self._children.items())


class LoopCounter(LoopFamily[CounterChild]):
    """A counter family recorded without locks (see the module docstring)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, documentation, labelnames)
        if not self.labelnames:  # exposed as 0 from the start, like the library's counter
            self.labels()

    def new_child(self) -> CounterChild:
        return CounterChild()

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self.children():
            family.add_metric(list(values), child.value)
        yield family


class LoopHistogram(LoopFamily[HistogramChild]):
    """A histogram family recorded without locks (see the module docstring)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
    ) -> None:
        super().__init__(name, documentation, labelnames)
        # +Inf is always the last bucket, as in the library; a given inf bound would repeat it
        self.bounds = tuple(sorted(float(bound) for bound in buckets if bound != float("inf")))

    def new_child(self) -> HistogramChild:
        return HistogramChild(self.bounds)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        edges = [*(go_float(bound) for bound in self.bounds), "+Inf"]
        for values, child in self.children():
            total, buckets = 0, []
            for edge, count in zip(edges, child.counts, strict=True):
                total += count
                buckets.append((edge, total))
            family.add_metric(list(values), buckets, child.sum)
        yield family


# Waits for a pooled connection: sub-millisecond when the pool has one idle, up to the acquire
# timeout (5 s by default) when it is exhausted.
ACQUIRE_BUCKETS: Final = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0)
QUERY_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)

ACQUIRE_WAIT: Final = LoopHistogram(
    "defeah_pool_acquire_wait_seconds",
    "Time spent waiting for a pooled connection, per pool (timeouts included).",
    ["pool"],
    buckets=ACQUIRE_BUCKETS,
)
ACQUIRE_TIMEOUTS: Final = LoopCounter(
    "defeah_pool_acquire_timeouts",
    "Acquires that found no free connection within their timeout, per pool.",
    ["pool"],
)
QUERY_DURATION: Final = LoopHistogram(
    "defeah_query_duration_seconds",
    "Duration of each named statement of dal/queries/*.sql, errors included.",
    ["query"],
    buckets=QUERY_BUCKETS,
)
SIGN_INS: Final = LoopCounter(
    "defeah_sign_ins",
    "Sign-in attempts by result (success, invalid_credentials, locked, throttled, inactive, "
    "overloaded).",
    ["result"],
)
LOCKOUTS: Final = LoopCounter(
    "defeah_lockouts",
    "Account-wide locks taken (an email's account budget spent by a failed sign-in).",
)


COLLECTORS: Final[tuple[Collector, ...]] = (
    ACQUIRE_WAIT,
    ACQUIRE_TIMEOUTS,
    QUERY_DURATION,
    SIGN_INS,
    LOCKOUTS,
)
