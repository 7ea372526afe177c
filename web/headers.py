"""The headers every response carries, whoever builds it.

No version banner for scanners to match against (aiohttp's default ``Server`` names itself and
Python), no MIME sniffing of a problem document into something executable, and nothing here is
meant to be cached.  Our responses are built with them (``web.health``, ``web.problems``,
``web.metrics``); ``web.edge``'s edge layer adds them to any response that lacks them
(our server runs it around the whole application, so aiohttp's 404, 405 and 417 included), and
``web.http_server`` to parser errors and, when the edge layer stays an application middleware,
to the 417 aiohttp answers for an unsupported ``Expect`` before any middleware runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

SECURITY_HEADERS: Final[Mapping[str, str]] = {
    "Server": "defeah-db",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
