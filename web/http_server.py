"""aiohttp's HTTP/1.1 server with the edges a public port needs: slow clients cut off, parser
errors answered briefly, and the same security headers on every response.

aiohttp 3.14 closes a connection only after ``keepalive_timeout`` of idleness, and that timer is
not pushed out by incoming bytes, so a client trickling one header byte at a time holds its
socket (and a file descriptor) for the whole keep-alive period; aiohttp has no separate
request-head timeout (``timeout_ceil_threshold`` only rounds timers; ``max_field_size`` and
``max_line_size`` bound sizes, not time).  ``HardenedRequestHandler`` adds one timer per
connection: from the moment a request head is due (the connection opened, or the first byte of
a new request arrived, also in the packet that completed the request before it) the complete
head must arrive within ``header_timeout`` seconds, or the connection is closed.  Idle
keep-alive connections are aiohttp's own timer.  Connection caps: web/connection_limits.py.

aiohttp answers a request it cannot parse with a text/plain 400 that echoes up to 8 KB of what
was sent, logs it at ERROR with a traceback, and puts its and Python's versions in ``Server``.
``handle_error`` below answers with a short problem document instead and logs one rate-limited
WARNING line: a scanner must not be able to flood the log.

The security headers reach every response: ``handle_error``'s replies carry them, and
``HttpRunner`` runs the application's edge layer (web/edge.py) around the application's
whole handler, so also around what aiohttp answers before any middleware would run (an
unsupported ``Expect`` gets a 417 problem document there); where it cannot,
``HeaderGuardRequestHandler`` adds the headers to that 417.

The hooks are a ``RequestHandler`` subclass (made by an ``aiohttp.web.Server`` subclass, which
``HttpRunner`` builds in the runner's ``_make_server`` step): no aiohttp global is patched.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from functools import partial
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web import BaseRequest, StreamResponse

from web.connection_limits import ConnectionLimits
from web.edge import edge_layer
from web.headers import SECURITY_HEADERS
from web.problems import DETAILS, problem_response
from web.rate_limited_log import RateLimitedWarning

log = logging.getLogger("web.http")

_base_data_received = web.RequestHandler.data_received
_base_finish_response = web.RequestHandler.finish_response


class HardenedRequestHandler(web.RequestHandler):
    """aiohttp's protocol with a request-head deadline and a brief, quiet parser-error reply.

    Uses four attributes of its aiohttp base class: ``_loop``, ``_request_count`` (requests
    parsed so far, malformed ones included), ``_request_in_progress`` and ``_messages``
    (parsed requests waiting for the handler: (message, payload) pairs).
    """

    def __init__(
        self,
        manager: web.Server,
        *,
        header_timeout: float,
        rejected: RateLimitedWarning,
        cut_off: RateLimitedWarning,
        limits: ConnectionLimits | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._rejected = rejected
        self._cut_off = cut_off
        self._limits = limits
        self._head_timer: asyncio.TimerHandle | None = None
        self._heads_when_armed = 0
        self._open_body: StreamReader | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        limits = self._limits
        if limits is not None and not limits.admit(self, transport.get_extra_info("peername")):
            transport.close()  # refused before aiohttp starts serving it: no task, no timers
            return
        super().connection_made(transport)
        self._arm_head_timer()  # a connection that never sends anything is cut off too

    def data_received(self, data: bytes) -> None:
        # Every request passes here: the base method is called directly (not through super())
        # and the timer touched only when there is one, which more than halved this wrapper's
        # instructions per request (bench/bench_web_cost.py counts them).  Per request head
        # this adds a look at the newest payload and, for a chunk ending in the head's blank
        # line (the usual request), one comparison.
        heads = self._request_count
        _base_data_received(self, data)
        if self._request_count != heads:
            if self._head_timer is not None:  # a complete head (or a malformed one) arrived
                self._head_timer.cancel()
                self._head_timer = None
            newest = self._messages[-1][1] if self._messages else EMPTY_PAYLOAD
            # the newest request's body while it is still to come: bytes that complete no
            # head are its bytes until it is complete
            self._open_body = None if newest is EMPTY_PAYLOAD or newest.is_eof() else newest
            if data[-4:] != b"\r\n\r\n" and self._partial_head_follows(data):
                self._arm_head_timer()  # the same chunk began the next head
        elif data and self._head_timer is None:
            body = self._open_body
            if body is None:
                self._arm_head_timer()  # first bytes of the next request head
            elif body.is_eof():
                self._open_body = None  # these bytes ended the body

    def _partial_head_follows(self, data: bytes) -> bool:
        """Whether ``data``, which completed a head, goes on with the start of another.

        Decided for a newest request without a body: its head ends at the chunk's last blank
        line (or, split across chunks, the chunk starts with the rest of that line), and any
        byte after it, empty lines aside, begins the next head.  After a body the boundary is
        the parser's secret; those bytes (and bytes after the end of a body that arrived in
        pieces) are left to the keep-alive timeout."""
        if not self._messages or self._messages[-1][1] is not EMPTY_PAYLOAD:
            return False
        end = data.rfind(b"\r\n\r\n")
        rest = data[end + 4 :] if end >= 0 else data
        return bool(rest.lstrip(b"\r\n"))

    def is_idle(self) -> bool:
        """No request being handled and none queued (``ConnectionLimits`` may close it)."""
        return not self._request_in_progress and not self._messages

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_head_timer()
        if self._limits is not None:
            self._limits.release(self)
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
            if self._request_in_progress:
                self.close()  # the response under way is finished first, then the socket
            else:
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


class HeaderGuardRequestHandler(HardenedRequestHandler):
    """``HardenedRequestHandler`` for an application whose edge layer stays its middleware.

    aiohttp answers an unsupported ``Expect`` (417) before any middleware runs, so that reply
    would leave without the security headers; they are added here.  ``HttpRunner`` uses this
    protocol only when it cannot run the edge layer itself (see there): the check is one more
    header look-up per response.
    """

    def finish_response(
        self, request: BaseRequest, resp: StreamResponse, start_time: float | None
    ) -> Coroutine[Any, Any, tuple[StreamResponse, bool]]:
        # a plain method handing back the base coroutine: no extra coroutine per request
        if "Server" not in resp.headers:
            resp.headers.update(SECURITY_HEADERS)
        return _base_finish_response(self, request, resp, start_time)


class HttpServer(web.Server):
    """aiohttp's low-level server making ``HardenedRequestHandler`` protocols (or ``protocol``)."""

    def __init__(
        self,
        handler: Any,  # called with what request_factory makes: web.Request for an application
        *,
        header_timeout: float,
        protocol: type[HardenedRequestHandler] = HardenedRequestHandler,
        limits: ConnectionLimits | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self._header_timeout = header_timeout
        self._protocol = protocol
        self._limits = limits
        self._rejected = RateLimitedWarning(log)
        self._cut_off = RateLimitedWarning(log)

    def __call__(self) -> HardenedRequestHandler:
        return self._protocol(
            self,
            loop=self._loop,
            header_timeout=self._header_timeout,
            rejected=self._rejected,
            cut_off=self._cut_off,
            limits=self._limits,
            **self._kwargs,
        )


class HttpRunner(web.AppRunner):
    """``AppRunner`` serving through ``HttpServer``, with the edge layer run by the server.

    ``_make_server`` is the hook aiohttp's runners override to choose their server; the base
    implementation runs the application's start-up and returns a plain ``Server``.  Its
    handler, request factory, cancellation flag and protocol options (the runner's and the
    application's ``handler_args``, read from the ``_kwargs`` attribute aiohttp keeps them in)
    are carried over.

    When ``edge_layer`` is the application's outermost middleware (as ``create_app`` makes
    it) and the application is not frozen yet, the runner takes it out of the application
    before start-up and calls it around the application's whole handler instead.  Why: aiohttp
    runs any middleware through its middleware machinery (a ``partial`` per layer plus a layer
    of its own that tracks the current sub-application), a few percent of the liveness route's
    instructions (bench/bench_web_cost.py, docs/benchmarks.md).  Called by the server, the
    same function does the same work for every request, routes added after ``create_app`` and
    aiohttp's own 404, 405 and 417 included.  The runner remembers that it did so (a second
    ``setup`` after ``cleanup`` finds the application frozen without it) and gives the
    middleware back if start-up fails.  An application that was frozen first (or ours mounted
    inside another) keeps its middleware and is served by ``HeaderGuardRequestHandler``.
    """

    def __init__(
        self,
        app: web.Application,
        *,
        header_timeout: float,
        limits: ConnectionLimits | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout = header_timeout
        self.limits = limits  # None: no cap (tests that build a runner of their own)
        self._edge_outside = False  # edge_layer taken out of the app, run by the server

    async def _make_server(self) -> web.Server:
        middlewares = self.app.middlewares
        if not middlewares.frozen and middlewares and middlewares[0] is edge_layer:
            del middlewares[0]
            self._edge_outside = True
            try:
                plain = await super()._make_server()
            except BaseException:
                if not middlewares.frozen:  # start-up failed: the app gets its edge back
                    middlewares.insert(0, edge_layer)
                    self._edge_outside = False
                raise
        else:
            plain = await super()._make_server()
        handler = plain.request_handler
        if self._edge_outside:
            handler = partial(edge_layer, handler=handler)
        return HttpServer(
            handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            header_timeout=self._header_timeout,
            protocol=HardenedRequestHandler if self._edge_outside else HeaderGuardRequestHandler,
            limits=self.limits,
            **plain._kwargs,
        )
