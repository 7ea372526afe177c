"""The one edge layer every request passes: problem documents, security headers and the HTTP
metrics, in a single function.

Why one layer and not one per concern: each aiohttp middleware, and the on-response-prepare
signal that used to add the headers, costs a measurable share of what the liveness route costs
in CPU instructions; those layers, with prometheus_client's locking recorders, were most of the
gap to a minimal aiohttp app (bench/bench_web_cost.py counts them, docs/benchmarks.md has the
figures).

Where it runs: ``create_app`` installs it as the application's middleware, so any runner gets
it; our own server (``web.http_server.HttpRunner``) takes it out of the application and calls
it around the application's whole handler, which skips aiohttp's middleware machinery.  Hence
a plain ``(request, handler)`` function, no per-application state.

Order inside the layer: the handler's HTTP errors and unexpected exceptions become problem
documents first (web.problems), so the metrics see the status the client gets.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from web.headers import SECURITY_HEADERS
from web.http_metrics import observe
from web.problems import DETAILS, problem_response

log = logging.getLogger("web.problems")


@web.middleware
async def edge_layer(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:  # redirects and other non-errors keep aiohttp's handling
            exc.headers.update(SECURITY_HEADERS)
            observe(request, exc.status, time.perf_counter() - started)
            raise
        headers = dict(exc.headers)
        response = problem_response(exc.status, exc.reason, DETAILS.get(exc.status), headers)
    except Exception:
        log.error("unhandled error on %s %s", request.method, request.path, exc_info=True)
        response = problem_response(500, "Internal Server Error", DETAILS[500])
    else:
        if "Server" not in response.headers:  # a response built without them
            response.headers.update(SECURITY_HEADERS)
    observe(request, response.status, time.perf_counter() - started)
    return response
