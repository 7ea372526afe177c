"""The one place that chooses the event loop (``DEFEAH_EVENT_LOOP``): every process that runs
the DAL (the HTTP server, ``refresh-tokens``, the CLI's database verbs) starts its loop through
``run``, so the choice and its failure modes live here rather than at each ``asyncio.run``.

``auto`` takes uvloop where it is installed (it is a dependency on the platforms that have it)
and the standard loop elsewhere; ``uvloop`` insists, and a missing uvloop is a configuration
error at start-up, not an ``ImportError`` deep in a verb.  docs/benchmarks.md has the figures
that make uvloop the default.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

EventLoopChoice = Literal["auto", "uvloop", "asyncio"]
CHOICES: tuple[EventLoopChoice, ...] = ("auto", "uvloop", "asyncio")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]
T = TypeVar("T")

MISSING_UVLOOP = (
    "uvloop is not installed (it has no build for this platform or Python); "
    "install it or set DEFEAH_EVENT_LOOP=auto or asyncio"
)


def _uvloop_factory() -> LoopFactory | None:
    """uvloop's loop constructor, or ``None`` when uvloop cannot be imported."""
    try:
        module = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: LoopFactory = module.new_event_loop
    return factory


def parse_choice(value: object) -> object:
    """The settings validator: one of ``CHOICES``, and ``uvloop`` only where it imports."""
    if not isinstance(value, str):
        return value
    choice = value.strip().lower()
    if choice not in CHOICES:
        raise ValueError(f"expected one of {', '.join(CHOICES)}, got {value!r}")
    if choice == "uvloop" and _uvloop_factory() is None:
        raise ValueError(MISSING_UVLOOP)
    return choice


def loop_factory(choice: EventLoopChoice) -> tuple[str, LoopFactory | None]:
    """The loop's name and the factory ``asyncio.Runner`` takes (``None``: the standard loop)."""
    if choice == "asyncio":
        return "asyncio", None
    factory = _uvloop_factory()
    if factory is None:
        if choice == "uvloop":
            # validated settings never get here; a caller passing the choice directly does
            from dal.errors import ConfigError

            raise ConfigError(f"DEFEAH_EVENT_LOOP: {MISSING_UVLOOP}")
        return "asyncio", None
    return "uvloop", factory


def resolved_name(choice: EventLoopChoice) -> str:
    """``uvloop`` or ``asyncio``: what ``choice`` runs on this installation."""
    return loop_factory(choice)[0]


def running_loop_name() -> str:
    """The loop this coroutine runs on, read from the loop itself (``/detailed`` shows it)."""
    loop = asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def run(main: Coroutine[Any, Any, T], choice: EventLoopChoice) -> T:
    """``asyncio.run(main)`` on the chosen loop (signals, shutdown of async generators and the
    default executor as ``asyncio.run`` does them)."""
    try:
        _, factory = loop_factory(choice)
    except BaseException:
        main.close()  # never started: no "coroutine was never awaited" warning on top
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
