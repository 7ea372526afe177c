"""One JSON object per request, one line each, written in small batches to stderr.

JSON rather than the Apache-style format because log pipelines parse it without a grammar, and
``json.dumps`` escapes control characters, so a hostile path or user agent cannot forge a second
line.  Only the path is logged, never the query string or headers: that is where tokens travel.

Why not a ``logging`` record per request: on a route as cheap as liveness, building a LogRecord,
formatting it and flushing stderr cost about 40% of the throughput (bench/bench_web.py).  Lines
are instead collected and written at most ``FLUSH_INTERVAL`` seconds later (or every
``BUFFER_LINES`` lines), in the same ``<time> INFO web.access: {...}`` shape as the other log
lines; ``AccessLog.flush`` runs again at shutdown so no line is lost on a clean stop.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import TextIO

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

USER_AGENT_LIMIT = 200
FLUSH_INTERVAL = 0.1
BUFFER_LINES = 512


class AccessLog:
    """The shared line buffer; aiohttp makes one access-logger object per connection."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._lines: list[str] = []
        self._flush_scheduled = False
        self._second = -1
        self._stamp = ""

    def _timestamp(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:  # strftime once per second, not once per request
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return f"{self._stamp},{int((now - second) * 1000):03d}"

    def write(self, entry: str) -> None:
        """Queue one already-serialised JSON object."""
        self._lines.append(f"{self._timestamp()} INFO web.access: {entry}\n")
        if len(self._lines) >= BUFFER_LINES:
            self.flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(FLUSH_INTERVAL, self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        if not self._lines:
            return
        stream = self._stream or sys.stderr
        stream.write("".join(self._lines))
        stream.flush()
        self._lines.clear()

    def logger_class(self) -> type[AbstractAccessLogger]:
        """An aiohttp access-logger class writing into this buffer."""
        buffer = self

        class JsonAccessLogger(AbstractAccessLogger):
            def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
                # Strings through json.dumps (quotes, escapes, control characters), numbers as
                # they are; a whole-dict json.dumps per request was the costlier half of this.
                agent = request.headers.get("User-Agent", "")[:USER_AGENT_LIMIT]
                buffer.write(
                    f'{{"remote":{json.dumps(request.remote)},'
                    f'"method":{json.dumps(request.method)},'
                    f'"path":{json.dumps(request.path)},'
                    f'"status":{response.status},"bytes":{response.body_length},'
                    f'"ms":{round(time * 1000, 3)},"agent":{json.dumps(agent)}}}'
                )

        return JsonAccessLogger
