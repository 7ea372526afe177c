"""One JSON object per request, one line each, queued for stderr without ever blocking.

JSON rather than the Apache-style format because log pipelines parse it without a grammar, and
``json.dumps`` escapes control characters, so a hostile path or user agent cannot forge a second
line.  Only the path is logged, never the query string or headers: that is where tokens travel.

Why not a ``logging`` record per request: on a route as cheap as liveness, building a LogRecord
and formatting it was a large share of the route's cost (bench/bench_web.py).  Lines are built here
in the same ``<time> INFO web.access: {...}`` shape as the other log lines and handed to the
process's ``LineSink`` (web/log_sink.py), whose thread does the writing: a stalled stderr costs
dropped lines (counted in ``AccessLog.dropped``), never a frozen event loop.
"""

from __future__ import annotations

import json

from aiohttp import hdrs
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from web.log_sink import LineSink
from web.timestamps import log_time

USER_AGENT_LIMIT = 200
# JSON strings of recently seen texts (methods, the probes' paths, addresses and user agents): a
# dict look-up per field instead of an escaping check.  Only texts JSON takes verbatim are kept
# (at most QUOTED_LONGEST characters, so the cache holds a few MB at worst), and it is emptied
# when full: a client sending endless distinct paths makes it start over, never grow.
QUOTED_LIMIT = 4096
QUOTED_LONGEST = 256


def quoted(text: str | None) -> str:
    """``text`` as a JSON string.  Paths and user agents are nearly always printable ASCII
    without quotes or backslashes, which JSON takes verbatim: three C-level checks instead of
    a ``json.dumps`` call each; anything else goes through ``json.dumps``."""
    if text is None or not (text.isascii() and text.isprintable()):
        return json.dumps(text)
    if '"' in text or "\\" in text:
        return json.dumps(text)
    return f'"{text}"'


_QUOTED: dict[str | None, str] = {None: "null"}


def quoted_seen(text: str | None) -> str:
    """``quoted(text)``, remembered when JSON took it verbatim and it is short."""
    value = quoted(text)
    if text is not None and len(text) <= QUOTED_LONGEST and len(value) == len(text) + 2:
        if len(_QUOTED) >= QUOTED_LIMIT:
            _QUOTED.clear()
            _QUOTED[None] = "null"
        _QUOTED[text] = value
    return value


class AccessLog:
    """Formats access lines into a sink; aiohttp makes one access-logger object per connection."""

    def __init__(self, sink: LineSink) -> None:
        self._sink = sink
        self.dropped = 0  # access lines the full sink refused

    def logger_class(self) -> type[AbstractAccessLogger]:
        """An aiohttp access-logger class writing through this object."""
        access, sink = self, self._sink

        class JsonAccessLogger(AbstractAccessLogger):
            def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
                # One f-string for the whole line, strings through quoted() (quotes, escapes,
                # control characters) or its cache, numbers as they are: a whole-dict
                # json.dumps and a LogRecord per request cost far more (module docstring).
                # hdrs.USER_AGENT is an istr: multidict skips case-folding the key
                agent = request.headers.get(hdrs.USER_AGENT, "")[:USER_AGENT_LIMIT]
                remote, method, path = request.remote, request.method, request.path
                line = (
                    f"{log_time()} INFO web.access: "
                    f'{{"remote":{_QUOTED.get(remote) or quoted_seen(remote)},'
                    f'"method":{_QUOTED.get(method) or quoted_seen(method)},'
                    f'"path":{_QUOTED.get(path) or quoted_seen(path)},'
                    f'"status":{response.status},"bytes":{response.body_length},'
                    f'"ms":{time * 1000:.3f},"agent":{_QUOTED.get(agent) or quoted_seen(agent)}}}\n'
                )
                if not sink.put(line):
                    access.dropped += 1

        return JsonAccessLogger
