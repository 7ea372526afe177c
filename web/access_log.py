"""One JSON object per request, one line each, queued for stderr without ever blocking.

JSON rather than the Apache-style format because log pipelines parse it without a grammar, and
``json.dumps`` escapes control characters, so a hostile path or user agent cannot forge a second
line.  Only the path is logged, never the query string or headers: that is where tokens travel.

Why not a ``logging`` record per request: on a route as cheap as liveness, building a LogRecord
and formatting it cost about 40% of the throughput (bench/bench_web.py).  Lines are built here
in the same ``<time> INFO web.access: {...}`` shape as the other log lines and handed to the
process's ``LineSink`` (web/log_sink.py), whose thread does the writing: a stalled stderr costs
dropped lines (counted in ``AccessLog.dropped``), never a frozen event loop.
"""

from __future__ import annotations

import json

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from web.log_sink import LineSink
from web.timestamps import log_time

USER_AGENT_LIMIT = 200


def quoted(text: str | None) -> str:
    """``text`` as a JSON string.  Paths and user agents are nearly always printable ASCII
    without quotes or backslashes, which JSON takes verbatim: three C-level checks instead of
    a ``json.dumps`` call each; anything else goes through ``json.dumps``."""
    if text is None or not (text.isascii() and text.isprintable()):
        return json.dumps(text)
    if '"' in text or "\\" in text:
        return json.dumps(text)
    return f'"{text}"'


class AccessLog:
    """Formats access lines into a sink; aiohttp makes one access-logger object per connection."""

    def __init__(self, sink: LineSink) -> None:
        self._sink = sink
        self.dropped = 0  # access lines the full sink refused

    def write(self, entry: str) -> None:
        """Queue one already-serialised JSON object (dropped and counted if the sink is full)."""
        if not self._sink.put(f"{log_time()} INFO web.access: {entry}\n"):
            self.dropped += 1

    def logger_class(self) -> type[AbstractAccessLogger]:
        """An aiohttp access-logger class writing through this object."""
        access = self

        class JsonAccessLogger(AbstractAccessLogger):
            def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
                # Strings through json.dumps (quotes, escapes, control characters), numbers as
                # they are; a whole-dict json.dumps per request was the costlier half of this.
                agent = request.headers.get("User-Agent", "")[:USER_AGENT_LIMIT]
                access.write(
                    f'{{"remote":{quoted(request.remote)},'
                    f'"method":{quoted(request.method)},'
                    f'"path":{quoted(request.path)},'
                    f'"status":{response.status},"bytes":{response.body_length},'
                    f'"ms":{round(time * 1000, 3)},"agent":{quoted(agent)}}}'
                )

        return JsonAccessLogger
