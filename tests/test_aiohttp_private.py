"""The private aiohttp attributes our server relies on, one test each, on the minor version
``pyproject.toml`` pins (aiohttp 3.14).  An aiohttp upgrade that renames or changes one fails
here by name, not somewhere inside the HTTP edge tests.

Used by web/http_server.py: ``AppRunner._make_server`` (the hook a runner overrides to choose
its server) and the ``Server`` it returns (``request_handler``, ``request_factory``,
``handler_cancellation``, ``_kwargs``, ``_loop``); ``RequestHandler._request_count``,
``_request_in_progress``, ``_loop`` and ``_messages`` (queued (message, payload) pairs, a
request without a body carrying ``aiohttp.streams.EMPTY_PAYLOAD``).  Used by
web/http_metrics.py: ``Request._match_info``.
"""

from __future__ import annotations

import asyncio
import inspect

import aiohttp
from aiohttp import web
from aiohttp.streams import EMPTY_PAYLOAD


def test_the_pinned_minor_version() -> None:
    assert aiohttp.__version__.startswith("3.14."), aiohttp.__version__


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="hi")


async def test_app_runner_make_server_returns_a_server_with_what_we_carry_over() -> None:
    assert inspect.iscoroutinefunction(web.AppRunner._make_server)
    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, max_field_size=4321)
    server = await runner._make_server()
    try:
        assert isinstance(server, web.Server)
        assert callable(server.request_handler) and callable(server.request_factory)
        assert isinstance(server.handler_cancellation, bool)
        assert server._kwargs["max_field_size"] == 4321
        assert server._loop is asyncio.get_running_loop()
    finally:
        await app.shutdown()
        await app.cleanup()


async def test_request_handler_counts_heads_and_knows_a_request_in_progress() -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    seen: list[tuple[int, bool]] = []

    async def slow(request: web.BaseRequest) -> web.Response:
        protocol = request.protocol
        assert isinstance(protocol, web.RequestHandler)
        seen.append((protocol._request_count, protocol._request_in_progress))
        started.set()
        await release.wait()
        return web.Response(text="ok")

    server = web.Server(slow)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(server, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.wait_for(started.wait(), 5)
        [protocol] = server.connections
        assert protocol._loop is loop
        assert seen == [(1, True)]
        release.set()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        await asyncio.sleep(0.05)
        assert protocol._request_count == 1 and not protocol._request_in_progress
        writer.close()
    finally:
        listener.close()
        await server.shutdown(1)


async def test_match_info_is_unset_before_routing_and_set_after() -> None:
    """What ``route_label`` reads when the edge layer runs around the app's whole handler."""
    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    plain = await runner._make_server()
    seen: list[object] = []

    async def around(request: web.Request) -> web.StreamResponse:
        seen.append(request._match_info)
        response = await plain.request_handler(request)
        seen.append(request._match_info.route.resource.canonical)  # type: ignore[union-attr]
        return response

    server = web.Server(around, request_factory=plain.request_factory)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(server, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 200")
        writer.close()
        assert seen == [None, "/"]
    finally:
        listener.close()
        await server.shutdown(1)
        await app.shutdown()
        await app.cleanup()


async def test_request_handler_queues_parsed_requests_with_their_payloads() -> None:
    """What ``data_received``, ``_partial_head_follows`` and ``is_idle`` read: a parsed
    request waits in ``_messages`` with its payload (``EMPTY_PAYLOAD`` when it has no body,
    else a reader that reaches EOF when the body is complete) until the handler takes it."""
    release = asyncio.Event()
    handling = asyncio.Event()
    current: list[object] = []
    queued: list[object] = []

    async def slow(request: web.BaseRequest) -> web.Response:
        protocol = request.protocol
        assert isinstance(protocol, web.RequestHandler)
        current.append(request)
        queued.extend(payload for _, payload in protocol._messages)
        handling.set()
        await release.wait()
        return web.Response(text="ok")

    server = web.Server(slow)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(server, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nab"
        )
        await asyncio.wait_for(handling.wait(), 5)
        [protocol] = server.connections
        [request] = current
        assert isinstance(request, web.BaseRequest) and request.content is EMPTY_PAYLOAD
        [body] = queued  # the pipelined POST, parsed and waiting, its body not complete
        assert body is not EMPTY_PAYLOAD and not body.is_eof()  # type: ignore[attr-defined]
        writer.write(b"c")
        await asyncio.sleep(0.05)
        assert body.is_eof()  # type: ignore[attr-defined]
        release.set()
        await asyncio.wait_for(reader.readuntil(b"ok"), 5)
        await asyncio.wait_for(reader.readuntil(b"ok"), 5)
        await asyncio.sleep(0.05)
        assert not protocol._messages
        writer.close()
    finally:
        listener.close()
        await server.shutdown(1)
