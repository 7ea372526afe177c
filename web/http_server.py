"""aiohttp's HTTP/1.1 server with the edges a public port needs: slow clients cut off, parser
errors answered briefly, and the same security headers on every response.

aiohttp 3.14 closes a connection only after ``keepalive_timeout`` of idleness, and that timer is
not pushed out by incoming bytes, so a client trickling one header byte at a time holds its
socket (and a file descriptor) for the whole keep-alive period; aiohttp has no separate
request-head timeout (``timeout_ceil_threshold`` only rounds timers; ``max_field_size`` and
``max_line_size`` bound sizes, not time).  ``HardenedRequestHandler`` adds one timer per
connection: from the moment a request head is due (the connection opened, or the first byte of
a new request arrived between requests) the complete head must arrive within ``header_timeout``
seconds, or the connection is closed.  Idle keep-alive connections are aiohttp's own timer.

aiohttp answers a request it cannot parse with a text/plain 400 that echoes up to 8 KB of what
was sent, logs it at ERROR with a traceback, and puts its and Python's versions in ``Server``.
``handle_error`` below answers with a short problem document instead and logs one rate-limited
WARNING line: a scanner must not be able to flood the log.

The security headers reach every response two ways: ``handle_error``'s replies carry them, and
``HttpRunner`` runs the application's edge layer (web/middleware.py) around the application's
whole handler, so also around what aiohttp answers before any middleware would run (an
unsupported ``Expect`` gets a 417 problem document there).

The hooks are a ``RequestHandler`` subclass (made by an ``aiohttp.web.Server`` subclass, which
``HttpRunner`` builds in the runner's ``_make_server`` step): no aiohttp global is patched.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.web import BaseRequest, StreamResponse

from web.headers import SECURITY_HEADERS
from web.middleware import edge_middleware
from web.problems import DETAILS, problem_response

log = logging.getLogger("web.http")

LOG_INTERVAL = 10.0  # seconds between two lines of the same rate-limited warning


class RateLimitedWarning:
    """At most one WARNING line per ``interval``; the next line says how many were held back."""

    def __init__(self, logger: logging.Logger, interval: float = LOG_INTERVAL) -> None:
        self._logger = logger
        self._interval = interval
        self._next = 0.0
        self.suppressed = 0  # events since the last line written

    def __call__(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now < self._next:
            self.suppressed += 1
            return
        self._next = now + self._interval
        if self.suppressed:
            message += f" (and {self.suppressed} more in the previous {self._interval:g}s)"
            self.suppressed = 0
        self._logger.warning(message, *args)


_base_data_received = web.RequestHandler.data_received


class HardenedRequestHandler(web.RequestHandler):
    """aiohttp's protocol with a request-head deadline and a brief, quiet parser-error reply.

    Uses three attributes of its aiohttp base class: ``_loop``, ``_request_count`` (requests
    parsed so far, malformed ones included) and ``_request_in_progress``.
    """

    def __init__(
        self,
        manager: web.Server,
        *,
        header_timeout: float,
        rejected: RateLimitedWarning,
        cut_off: RateLimitedWarning,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._rejected = rejected
        self._cut_off = cut_off
        self._head_timer: asyncio.TimerHandle | None = None
        self._heads_when_armed = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_head_timer()  # a connection that never sends anything is cut off too

    def data_received(self, data: bytes) -> None:
        # Every request passes here: the base method is called directly (not through super())
        # and the timer touched only when there is one, which took this wrapper from about
        # 5,400 instructions per request to 2,200 (callgrind, as bench/bench_web_cost.py counts).
        heads = self._request_count
        _base_data_received(self, data)
        if self._request_count != heads:
            if self._head_timer is not None:  # a complete head (or a malformed one) arrived
                self._head_timer.cancel()
                self._head_timer = None
        elif data and self._head_timer is None and not self._request_in_progress:
            self._arm_head_timer()  # first bytes of the next request on a kept-alive socket

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        self._heads_when_armed = self._request_count
        self._head_timer = self._loop.call_later(self._header_timeout, self._head_overdue)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_overdue(self) -> None:
        self._head_timer = None
        if self._request_count == self._heads_when_armed:
            peer = self.transport.get_extra_info("peername") if self.transport else None
            self._cut_off(
                "closed a connection from %s: no complete request head within %gs",
                peer[0] if peer else "?",
                self._header_timeout,
            )
            self.force_close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> StreamResponse:
        """A problem document that never quotes the request; ``message`` (aiohttp's echo of the
        offending bytes) is deliberately unused.  Client errors are logged rate-limited without
        the request text (it can carry credentials); server errors keep a full ERROR record."""
        reason = type(exc).__name__ if exc is not None else str(status)
        if status < 500:
            self._rejected("rejected a malformed request from %s (%s)", request.remote, reason)
        else:
            log.error("error handling request from %s", request.remote, exc_info=exc)
        if request.writer.output_size > 0:
            raise ConnectionError("the response has started; no error response can follow")
        phrase = HTTPStatus(status).phrase
        response = problem_response(status, phrase, DETAILS.get(status), SECURITY_HEADERS)
        response.force_close()
        return response


class HttpServer(web.Server):
    """aiohttp's low-level server making ``HardenedRequestHandler`` protocols."""

    def __init__(self, *args: Any, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout = header_timeout
        self._rejected = RateLimitedWarning(log)
        self._cut_off = RateLimitedWarning(log)

    def __call__(self) -> HardenedRequestHandler:
        return HardenedRequestHandler(
            self,
            loop=self._loop,
            header_timeout=self._header_timeout,
            rejected=self._rejected,
            cut_off=self._cut_off,
            **self._kwargs,
        )


class HttpRunner(web.AppRunner):
    """``AppRunner`` serving through ``HttpServer``, with the edge layer run by the server.

    ``_make_server`` is the hook aiohttp's runners override to choose their server; the base
    implementation runs the application's start-up and returns a plain ``Server``, whose handler
    and request factory are carried over (the runner's options, handler cancellation among
    them, are passed on as they came).

    When ``edge_middleware`` is the application's outermost middleware (as ``create_app`` makes
    it), the runner takes it out of the application before it freezes and calls it around the
    application's whole handler instead.  Why: aiohttp runs any middleware through its
    middleware machinery (a ``partial`` per layer plus a layer of its own that tracks the
    current sub-application), about 13,600 CPU instructions per request, a twentieth of the
    liveness route (bench/bench_web_cost.py).  Called by the server, the same function does the
    same work for every request, routes added after ``create_app`` and aiohttp's own 404, 405
    and 417 included; the application itself keeps the middleware wherever it is served by
    another runner (aiohttp's test server, an embedder's ``web.run_app``).
    """

    def __init__(self, app: web.Application, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout = header_timeout

    async def _make_server(self) -> web.Server:
        middlewares = self.app.middlewares
        edge = not middlewares.frozen and bool(middlewares) and middlewares[0] is edge_middleware
        if edge:
            del middlewares[0]
        plain = await super()._make_server()
        handler = plain.request_handler
        return HttpServer(
            partial(edge_middleware, handler=handler) if edge else handler,
            request_factory=plain.request_factory,
            header_timeout=self._header_timeout,
            **self._kwargs,
        )
