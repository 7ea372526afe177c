"""The HTTP request counters the edge layer records (``observe``), exposed by ``/metrics``.

Bounded cardinality: the route label is the route's template (``/api/v1/health``), never the
raw path, and every unmatched path is ``unmatched``; unknown methods are ``other``.  Kept apart
from the ``/metrics`` route so that the edge layer depends on nothing above it.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from dal.telemetry import CounterChild, HistogramChild, LoopCounter, LoopHistogram

METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED: Final = "unmatched"

HTTP_REQUESTS: Final = LoopCounter(
    "defeah_http_requests",
    "HTTP requests by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_DURATION: Final = LoopHistogram(
    "defeah_http_request_duration_seconds",
    "Time to route each HTTP request and build its response, by route template.",
    ["route", "method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
CONNECTIONS_CLOSED: Final = LoopCounter(
    "defeah_http_connections_closed",
    "Client connections closed at a connection cap: idle_address or idle_total (an idle one "
    "closed for a new one), refused (none idle).",
    ["reason"],
)
# The two children of each (route, method, status): one dict lookup per request.  Bounded like
# the labels: routes are templates, methods a fixed set, statuses three digits.
_CHILDREN: dict[tuple[str, str, int], tuple[CounterChild, HistogramChild]] = {}


def route_label(request: web.Request) -> str:
    """The matched route's template, or ``unmatched``: never the raw path."""
    # the attribute, not the match_info property: that asserts, and routing itself may have
    # failed (a resolver raising) before a request reaches the edge layer around the app
    match_info = request._match_info
    if match_info is None:
        return UNMATCHED
    resource = match_info.route.resource
    return UNMATCHED if resource is None else resource.canonical


def observe(request: web.Request, status: int, seconds: float) -> None:
    method = request.method
    if method not in METHODS:
        method = "other"
    key = (route_label(request), method, status)
    children = _CHILDREN.get(key)
    if children is None:
        route = key[0]
        children = _CHILDREN[key] = (
            HTTP_REQUESTS.labels(route, method, str(status)),
            HTTP_DURATION.labels(route, method),
        )
    children[0].value += 1
    children[1].observe(seconds)
