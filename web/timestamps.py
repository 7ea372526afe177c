"""Millisecond timestamps for the per-request paths, formatted once per second.

Liveness documents carry the current UTC time and every access line a local one.  Formatting a
``datetime`` (or calling ``strftime``) per request cost about as much as building the response
(docs/benchmarks.md); the seconds part changes once a second, so it is formatted then, and the
text as a whole once per millisecond (under load many requests share one).
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Stamper:
    """``strftime(fmt)`` of the current second, then ``sep`` and milliseconds, then ``suffix``.

    The whole text is kept for the current millisecond too: under load, many requests share it.
    """

    __slots__ = ("_convert", "_fmt", "_ms", "_prefix", "_second", "_sep", "_suffix", "_text")

    def __init__(
        self,
        fmt: str,
        convert: Callable[[float], time.struct_time],
        sep: str,
        suffix: str = "",
    ) -> None:
        self._fmt, self._convert, self._sep, self._suffix = fmt, convert, sep, suffix
        self._second = self._ms = -1
        self._prefix = self._text = ""

    def __call__(self) -> str:
        ms = int(time.time() * 1000)
        if ms != self._ms:
            second = ms // 1000
            if second != self._second:
                self._second = second
                self._prefix = time.strftime(self._fmt, self._convert(second)) + self._sep
            self._ms = ms
            self._text = f"{self._prefix}{ms % 1000:03d}{self._suffix}"
        return self._text


# RFC 3339 in UTC, as the health documents' "time": 2026-11-27T01:25:02.615Z
utc_iso = Stamper("%Y-%m-%dT%H:%M:%S", time.gmtime, ".", "Z")
# The logging module's default asctime, local time: 2026-11-27 01:25:02,615
log_time = Stamper("%Y-%m-%d %H:%M:%S", time.localtime, ",")
