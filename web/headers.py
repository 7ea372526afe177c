"""The headers every response carries, whoever builds it.

No version banner for scanners to match against (aiohttp's default ``Server`` names itself and
Python), no MIME sniffing of a problem document into something executable, and nothing here is
meant to be cached.  Our responses are built with them (``web.health``, ``web.problems``,
``web.metrics``); ``web.middleware`` adds them to any routed response that lacks them, and
``web.http_server`` to whatever aiohttp answers on its own: parser errors, and an unsupported
``Expect`` (417), which aiohttp answers before any middleware runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

SECURITY_HEADERS: Final[Mapping[str, str]] = {
    "Server": "defeah-db",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
