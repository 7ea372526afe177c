"""How many client connections the server holds, in total and per client address, and what
happens at the limits: the file-descriptor limit raised at start, the oldest idle connection
closed to make room, accept errors logged at a bounded rate.

Why: every open socket is a file descriptor.  Without a cap, 1,100 idle keep-alive sockets
from one client used up a 1,024 file limit (systemd's default); from then on every
``accept()`` failed with ``EMFILE``, new clients were never answered, and asyncio logged
``socket.accept() out of system resource`` about a hundred times per listening event (136,825
lines in 40 s).  Here:

* ``raise_file_limit`` lifts the soft ``RLIMIT_NOFILE`` to the hard one before serving, so the
  process can use what the operator allowed (systemd's ``LimitNOFILE=1024:524288`` is the usual
  soft:hard pair);
* ``ConnectionLimits`` admits a connection only while the server is under both caps.  At a cap
  it closes the oldest idle connection in the way (of the same address when that address is at
  its cap, of anyone when the total is) and admits the new one; with no idle one to close the
  new one is refused (closed at once).  The total cap is also kept below the file limit, minus
  what the process needs besides client sockets (``reserved_descriptors``), so ``accept()``
  itself does not run out;
* ``AcceptErrorLog`` replaces asyncio's per-failure ERROR record of an accept that ran out of
  descriptors with one rate-limited WARNING line.

Idle means no request being handled and none queued: waiting for the first request head or for
the next one on a kept-alive socket.  "Oldest" is by the time the connection was opened, the
order the registry keeps, so finding the victim is a walk from the front that stops at the
first idle connection.  An address is the IPv4 address, or the /64 of an IPv6 one (one
customer's usual allocation, the sign-in budgets' rule too); an IPv4-mapped IPv6 address counts
as its IPv4 address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import resource
from typing import Any, Final, Protocol

from web.http_metrics import CONNECTIONS_CLOSED
from web.rate_limited_log import RateLimitedWarning

log = logging.getLogger("web.http")

ACCEPT_FAILED: Final = "socket.accept() out of system resource"
# Descriptors the process needs besides client sockets, on top of the database pools: stdio,
# the log pipe, epoll, the listening sockets, files read by the process collector, the embedded
# server's pipes; plus one accept burst: asyncio accepts up to the listen backlog per wake-up
# before any of those connections reaches ``admit``.
BASE_RESERVE: Final = 64
ACCEPT_BURST: Final = 128  # aiohttp's TCPSite backlog


class Connection(Protocol):
    """What the registry needs of a connection (``HardenedRequestHandler``)."""

    def is_idle(self) -> bool: ...

    def force_close(self) -> None: ...


def raise_file_limit() -> tuple[int, int]:
    """Lift the soft ``RLIMIT_NOFILE`` to the hard limit; returns (soft, hard) afterwards.

    A hard limit of ``RLIM_INFINITY`` is not a valid soft value for descriptors on Linux (the
    kernel caps them at ``fs.nr_open``), so the soft limit is then left as it is."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and hard != resource.RLIM_INFINITY:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the file limit from %d to %d: %s", soft, hard, exc)
        else:
            soft = hard
    return soft, hard


def reserved_descriptors(pool_connections: int) -> int:
    return BASE_RESERVE + ACCEPT_BURST + pool_connections


def address_key(peer: Any) -> str:
    """The client address a connection counts against (see the module docstring)."""
    if not isinstance(peer, tuple) or not peer:
        return "?"  # a UNIX socket or an unknown peer: one shared bucket
    try:
        ip = ipaddress.ip_address(peer[0])
    except ValueError:
        return str(peer[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class ConnectionLimits:
    """The registry of open client connections of one server, by address, oldest first."""

    def __init__(self, total: int, per_address: int) -> None:
        self.total = total
        self.per_address = min(per_address, total)
        self._open: dict[Connection, str] = {}  # insertion order: oldest first
        self._by_address: dict[str, dict[Connection, None]] = {}
        self._refused = RateLimitedWarning(log)

    @property
    def open(self) -> int:
        return len(self._open)

    def admit(self, connection: Connection, peer: Any) -> bool:
        """Register ``connection``, closing an idle one to make room; False: refuse it."""
        key = address_key(peer)
        mine = self._by_address.get(key)
        full = mine is not None and len(mine) >= self.per_address
        if full and not self._close_oldest_idle(mine or {}, "address"):
            return self._refuse(key, f"its address has {self.per_address} connections open")
        full = len(self._open) >= self.total
        if full and not self._close_oldest_idle(self._open, "total"):
            return self._refuse(key, f"{self.total} connections are open")
        self._open[connection] = key
        self._by_address.setdefault(key, {})[connection] = None
        return True

    def release(self, connection: Connection) -> None:
        key = self._open.pop(connection, None)
        if key is None:
            return
        mine = self._by_address[key]
        del mine[connection]
        if not mine:
            del self._by_address[key]

    def _close_oldest_idle(self, connections: dict[Connection, Any], scope: str) -> bool:
        for victim in connections:
            if victim.is_idle():
                self.release(victim)  # before closing: the loop must not see it again
                victim.force_close()
                CONNECTIONS_CLOSED.labels(f"idle_{scope}").value += 1
                return True
        return False

    def _refuse(self, key: str, why: str) -> bool:
        CONNECTIONS_CLOSED.labels("refused").value += 1
        self._refused(
            "refused a connection from %s: %s and none is idle (limits: %d in total, %d per "
            "address)",
            key,
            why,
            self.total,
            self.per_address,
        )
        return False


class AcceptErrorLog:
    """A loop exception handler: accept failures (out of descriptors) as one rate-limited
    WARNING line, everything else to the handler that was there before."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._previous = loop.get_exception_handler()
        self._warn = RateLimitedWarning(log)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == ACCEPT_FAILED:
            exc = context.get("exception")
            reason = getattr(exc, "strerror", None) or exc or "out of resources"
            self._warn("cannot accept a connection: %s (retrying every second)", reason)
        elif self._previous is not None:
            self._previous(loop, context)
        else:
            loop.default_exception_handler(context)

    def install(self) -> None:
        self._loop.set_exception_handler(self)

    def uninstall(self) -> None:
        self._loop.set_exception_handler(self._previous)
