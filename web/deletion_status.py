"""``GET /api/v1/instagram/data-deletion/{code}``: the status of a data deletion request, for
the person who asked Meta to delete their data (the URL Meta shows them) and for programs.

Content negotiation: ``Accept`` preferring ``text/html`` (a browser) gets a short HTML page in
plain words; anything else gets JSON.  Both say only what happened and when: no account, no
email, no Instagram id or username.  An unknown code is a 404 problem document, like any
unknown path, and the page is never cached (``Cache-Control: no-store``).
"""

from __future__ import annotations

import html
import json
from typing import Final

from aiohttp import web

from dal.errors import DalError
from dal.instagram.callbacks import InstagramCallbacks
from dal.instagram.models import DeletionRequest
from web.headers import SECURITY_HEADERS
from web.problems import DETAILS, problem_response

STATUS_ROUTE: Final = "/api/v1/instagram/data-deletion/{code}"
MESSAGES: Final = {
    "completed": "We deleted the data we held about your Instagram account: its id, its "
    "username and the access token this service used. Nothing of it is left. An account you "
    "made with us yourself, with your email, is not part of this request.",
    "nothing_held": "We held no data about your Instagram account, so there was nothing to delete.",
}
# The page loads nothing and runs nothing: a style attribute at most.
PAGE_HEADERS: Final = {
    **SECURITY_HEADERS,
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "Vary": "Accept",
}
PAGE: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Data deletion request</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 2em auto; padding: 0 1em">
<h1>Data deletion request</h1>
<p>We received your request on {received}.</p>
<p>{message}</p>
<p>Confirmation code: <code>{code}</code></p>
</body></html>
"""

DELETIONS = web.AppKey("deletion_requests", InstagramCallbacks)
routes = web.RouteTableDef()


def status_url(public_url: str, code: str) -> str:
    """The status page of ``code`` under the service's public base URL."""
    return public_url + STATUS_ROUTE.replace("{code}", code)


def wants_html(accept: str) -> bool:
    """True when ``Accept`` ranks ``text/html`` above ``application/json`` (browsers do)."""
    ranks = {"text/html": 0.0, "application/json": 0.0}
    wildcard = 0.0
    for item in accept.split(","):
        kind, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        kind = kind.lower()
        if kind in ranks:
            ranks[kind] = max(ranks[kind], quality)
        elif kind in ("*/*", "text/*"):
            wildcard = max(wildcard, quality if kind == "*/*" else 0.0)
    json_rank = ranks["application/json"] or wildcard
    return ranks["text/html"] > json_rank


def document(request: DeletionRequest) -> dict[str, str]:
    return {
        "confirmation_code": request.confirmation_code,
        "status": request.status,
        "received_at": request.received_at.isoformat(),
        "message": MESSAGES[request.status],
    }


@routes.get(STATUS_ROUTE)
async def deletion_status(request: web.Request) -> web.Response:
    try:
        found = await request.app[DELETIONS].deletion_request(request.match_info["code"])
    except DalError:  # unreachable, or a timeout: nothing about the request is known yet
        detail = "The status cannot be read now; try again later."
        return problem_response(503, "Service Unavailable", detail, {"Retry-After": "5"})
    if found is None:
        return problem_response(404, "Not Found", DETAILS[404])
    if wants_html(request.headers.get("Accept", "")):
        page = PAGE.format(
            received=html.escape(found.received_at.strftime("%d %B %Y, %H:%M UTC")),
            message=html.escape(MESSAGES[found.status]),
            code=html.escape(found.confirmation_code),
        )
        return web.Response(text=page, content_type="text/html", headers=PAGE_HEADERS)
    body = json.dumps(document(found))
    return web.Response(text=body, content_type="application/json", headers=PAGE_HEADERS)
