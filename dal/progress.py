"""How long jobs (the bulk generator, re-encryption) report progress: to a sink they are
given, so that drawing a bar on a terminal stays with the command line (``cli/progress.py``)."""

from __future__ import annotations

from typing import Protocol


class ProgressSink(Protocol):
    """Told how many items are done after each batch; ``final`` once, at the end."""

    def update(self, done: int, *, final: bool = False) -> None: ...
