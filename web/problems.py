"""Errors as ``application/problem+json`` (RFC 9457) instead of aiohttp's HTML pages.

Probes and API clients parse JSON; an HTML 404 page or a traceback in a 500 body would be noise
for them and, for the traceback, a leak.  The edge layer (web.edge) turns every HTTP error
the router or a handler raises into a small problem document, and any unexpected exception into a
bare 500 whose details stay in the server log.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from aiohttp import web

from web.headers import SECURITY_HEADERS

PROBLEM_TYPE = "application/problem+json"

DETAILS = {
    400: "The request could not be parsed as HTTP/1.1.",
    404: "No resource at this path; the health routes live under /api/v1/health.",
    405: "This resource does not support that method; see the Allow header.",
    500: "The server failed to answer this request; the cause is in the server log.",
}


def problem_response(
    status: int, title: str, detail: str | None = None, headers: Mapping[str, str] | None = None
) -> web.Response:
    body: dict[str, object] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    response = web.Response(
        status=status,
        body=json.dumps(body).encode(),
        content_type=PROBLEM_TYPE,
        headers=SECURITY_HEADERS,
    )
    for name, value in (headers or {}).items():
        if name.lower() not in ("content-type", "content-length"):
            response.headers[name] = value
    return response
