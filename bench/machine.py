"""What the machine did to a benchmark run: load average, CPU steal, run-queue length, and how
long the sampling thread (the event loop's, in the benchmarks) waited for a CPU.

On a shared VM, a round that ran while the hypervisor gave the CPUs to other guests (steal)
or while other processes queued for them (run queue) says nothing about the code: every
benchmark prints this per round, so a noisy figure can be told from a slow one.  The thread's
own wait (``/proc/self/task/TID/schedstat``: nanoseconds runnable but not running) is the most
direct of these: a loop that waited 30 ms for a core cannot answer a probe in less.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from dal.users.loop_pressure import thread_schedstat


def _cpu_ticks() -> tuple[int, int]:
    """(total, steal) jiffies over all CPUs since boot (``/proc/stat``'s ``cpu`` line)."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    return sum(fields[:8]), fields[7]  # user nice system idle iowait irq softirq steal


def run_queue() -> int:
    """Runnable tasks right now (``procs_running`` of ``/proc/stat``, this one included)."""
    with open("/proc/stat") as stat:
        for line in stat:
            if line.startswith("procs_running"):
                return int(line.split()[1])
    return 0


def _schedstat() -> tuple[int, int]:
    """(ns on a CPU, ns runnable but waiting for one) of the calling thread; zeros: unknown."""
    return thread_schedstat() or (0, 0)


def thread_wait_ns() -> int:
    """Nanoseconds the calling thread has spent runnable but waiting for a CPU (0: unknown)."""
    return _schedstat()[1]


def thread_run_ns() -> int:
    """Nanoseconds the calling thread has spent on a CPU (0: unknown).  Per request served, the
    loop's cost: it grows when the same work runs slower (a busy sibling core, a cold cache)."""
    return _schedstat()[0]


def preemptions() -> int:
    """Times the calling thread was taken off its CPU while it still wanted it (``status``'s
    ``nonvoluntary_ctxt_switches``; 0: unknown)."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/status") as status:
            for line in status:
                if line.startswith("nonvoluntary_ctxt_switches:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return 0
    return 0


def load_average() -> str:
    with open("/proc/loadavg") as loadavg:
        return " ".join(loadavg.read().split()[:3])


@dataclass
class Machine:
    """A start point; ``since()`` describes the interval from it to now."""

    total: int
    steal: int
    started: float
    queue: list[int]
    waited: int  # thread_wait_ns() at the start
    ran: int  # thread_run_ns() at the start
    preempted: int  # preemptions() at the start

    @classmethod
    def sample(cls) -> Machine:
        total, steal = _cpu_ticks()
        ran, waited = _schedstat()
        return cls(total, steal, time.monotonic(), [run_queue()], waited, ran, preemptions())

    def waited_ms(self) -> float:
        """Milliseconds this thread waited for a CPU since the start point."""
        return (thread_wait_ns() - self.waited) / 1e6

    def ran_ms(self) -> float:
        """Milliseconds this thread ran on a CPU since the start point."""
        return (thread_run_ns() - self.ran) / 1e6

    def preempted_count(self) -> int:
        """Times this thread was preempted since the start point."""
        return preemptions() - self.preempted

    def note_queue(self) -> None:
        """Sample the run queue once more (call it during the run for a better picture)."""
        self.queue.append(run_queue())

    def steal_share(self) -> float:
        total, steal = _cpu_ticks()
        return (steal - self.steal) / (total - self.total) if total > self.total else 0.0

    def since(self) -> str:
        self.note_queue()
        seconds = max(time.monotonic() - self.started, 1e-9)
        return (
            f"load {load_average()}, steal {self.steal_share():.1%}, "
            f"run queue {max(self.queue)} (max of {len(self.queue)} samples), "
            f"this thread waited for a CPU {self.waited_ms() / seconds:.0f} ms/s"
        )
