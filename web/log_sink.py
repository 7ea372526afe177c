"""Every log line of the server leaves through one bounded queue and one writer thread.

Why: a ``write()`` to stderr blocks when nobody drains the pipe (a stalled log shipper, a
``docker logs`` consumer gone away).  Done on the event loop, that froze the whole service after
about 500 requests, probes included.  Here the loop only appends to a bounded queue; a daemon
thread does the blocking write.  When the queue is full the line is dropped and counted: losing
log lines is better than losing the service.  Once the writer gets through again it reports how
many lines were lost, so the gap is visible in the log itself.

Why a ``deque`` polled every ``DRAIN_INTERVAL`` rather than a ``queue.Queue``: ``Queue.put``
takes a lock and wakes the writer on every line, and each wake-up made the writer thread fight
the event loop for the GIL once per request, a large share of the liveness route's throughput
(bench/bench_web.py, docs/benchmarks.md).  ``deque.append`` is atomic and wakes nobody; the
writer takes whatever has accumulated, ``DRAIN_INTERVAL`` apart, in one ``write``.  A line
reaches stderr at most that late; ``flush`` wakes the writer at once.

The thread writes with ``os.write`` on the file descriptor, not through ``sys.stderr``: a thread
stuck inside ``sys.stderr``'s buffer holds its lock, and the interpreter aborts at exit when it
cannot take that lock to flush.  A raw descriptor write holds no Python lock, so a stalled
stderr delays exit by at most the bounded ``flush`` that ``logging.shutdown`` runs at exit.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque

CAPACITY = 10_000  # lines; ~2 MB of access lines, several seconds of peak traffic
BATCH_LINES = 512  # lines joined into one write
FLUSH_TIMEOUT = 2.0  # seconds ``flush`` waits for the lines queued before it
DRAIN_INTERVAL = 0.05  # seconds between the writer's rounds (250 lines at 5,000 requests/s)


class LineSink:
    """Bounded, non-blocking line output to a file descriptor (stderr by default)."""

    def __init__(self, fd: int = 2, capacity: int = CAPACITY) -> None:
        self._fd = fd
        self._capacity = capacity
        # lines, and the markers ``flush`` waits on; append/popleft are atomic, no lock needed
        self._items: deque[str | threading.Event] = deque()
        self._wake = threading.Event()
        self.dropped = 0  # lines lost because the queue was full
        self._reported = 0  # of those, how many the writer has already reported
        self.write_errors = 0  # batches lost to a failed write (say, the reader went away)
        self._thread = threading.Thread(target=self._drain, name="log-sink", daemon=True)
        self._thread.start()

    def put(self, line: str) -> bool:
        """Queue one newline-terminated line; ``False`` (and counted) when the queue is full."""
        if len(self._items) >= self._capacity:
            self.dropped += 1
            return False
        self._items.append(line)
        return True

    def flush(self, timeout: float = FLUSH_TIMEOUT) -> bool:
        """Wait (at most ``timeout`` seconds) until the lines queued so far are written.

        ``False`` when stderr is stuck: the caller goes on (say, exits) instead of hanging.
        """
        written = threading.Event()
        self._items.append(written)
        self._wake.set()
        return written.wait(timeout)

    def _drain(self) -> None:
        while True:
            self._wake.wait(DRAIN_INTERVAL)
            self._wake.clear()
            self._write_queued()
            self._report_drops()

    def _write_queued(self) -> None:
        """Everything queued now, ``BATCH_LINES`` per write; markers are set once the lines
        queued before them are written."""
        items = self._items
        while items:
            # popleft is atomic; taking a batch in one comprehension keeps the GIL time per
            # line small (this thread shares the interpreter with the event loop)
            batch = [items.popleft() for _ in range(min(len(items), BATCH_LINES))]
            lines = [item for item in batch if isinstance(item, str)]
            if lines:
                self._write("".join(lines))
            self._report_drops()
            if len(lines) != len(batch):
                for item in batch:
                    if isinstance(item, threading.Event):
                        item.set()

    def _report_drops(self) -> None:
        lost = self.dropped - self._reported
        if lost:
            self._reported += lost
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            self._write(
                f"{stamp} WARNING web.log: {lost} log lines dropped (stderr did not keep up)\n"
            )

    def _write(self, text: str) -> None:
        data = memoryview(text.encode("utf-8", "backslashreplace"))
        try:
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError:  # nowhere left to say so; count it and keep draining
            self.write_errors += 1


class SinkHandler(logging.Handler):
    """A ``logging`` handler that formats on the caller's thread and queues into a sink."""

    def __init__(self, sink: LineSink) -> None:
        super().__init__()
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sink.put(self.format(record) + "\n")
        except Exception:  # noqa: BLE001 - logging's contract: a bad record goes to handleError
            self.handleError(record)

    def flush(self) -> None:
        """Bounded: ``logging.shutdown`` calls this at exit, also when stderr is stalled."""
        self.sink.flush()
