"""What long verbs show and take: a progress bar on stderr, and the argparse type of counts."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TextIO


def positive_int(raw: str) -> int:
    """argparse type: an integer >= 1 (underscores allowed: 1_000_000)."""
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {raw!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


class Progress:
    """A one-line progress bar on a terminal; silent when ``stream`` is not a TTY (logs, CI)."""

    WIDTH = 30
    INTERVAL = 0.2

    def __init__(
        self, total: int, stream: TextIO = sys.stderr, enabled: bool | None = None
    ) -> None:
        self.total = total
        self.stream = stream
        self.enabled = stream.isatty() if enabled is None else enabled
        self.started = time.perf_counter()
        self._drawn = 0.0

    def update(self, done: int, *, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not final and now - self._drawn < self.INTERVAL:
            return
        self._drawn = now
        elapsed = max(now - self.started, 1e-9)
        rate = done / elapsed
        share = done / self.total if self.total else 1.0
        filled = int(share * self.WIDTH)
        eta = (self.total - done) / rate if rate > 0 else 0.0
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        self.stream.write(
            f"\r[{bar}] {share:4.0%} {done:,}/{self.total:,}  {rate:,.0f} rows/s  "
            f"ETA {int(eta) // 60}:{int(eta) % 60:02d} "
        )
        if final:
            self.stream.write("\n")
        self.stream.flush()
