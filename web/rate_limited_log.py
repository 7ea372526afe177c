"""A WARNING that a client can trigger at will, written at most once per interval.

Malformed requests, cut-off connections, refused connections and failed accepts are each
caused by whoever connects; one line per event would let a scanner fill the log (and the disk
behind it).  Each kind gets its own ``RateLimitedWarning``, whose next line says how many were
held back."""

from __future__ import annotations

import logging
import time

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
