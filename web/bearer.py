"""Bearer-token checks of the routes that a token may close (``/detailed``, ``/metrics``)."""

from __future__ import annotations

import hmac

from aiohttp import web


def authorized(request: web.Request, token: str | None) -> bool:
    """True when no token is configured or the caller sent ``Authorization: Bearer <token>``.

    aiohttp keeps header bytes that are not UTF-8 as surrogates; ``surrogateescape`` turns them
    back into the bytes sent, so such a header compares unequal instead of failing to encode.
    """
    if token is None:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), token.encode())
