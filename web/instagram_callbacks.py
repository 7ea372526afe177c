"""Meta's Instagram callbacks: ``POST /api/v1/instagram/deauthorize`` and
``POST /api/v1/instagram/data-deletion`` (the status page is ``web.deletion_status``).

Mounted only when ``DEFEAH_INSTAGRAM_APP_SECRET`` is set (``add_instagram_routes``): a service
that does not connect Instagram accounts exposes nothing here.

Each POST carries the form field ``signed_request``.  The body is read only up to
``MAX_BODY`` bytes (a larger declared length is refused before reading anything), parsed as
``application/x-www-form-urlencoded``, verified (``web.signed_request``), and only then handed
to the DAL (``dal.instagram.callbacks``), which records it and disconnects or erases in one
transaction.  Every refusal, whatever its cause, is the same 400 problem document; the cause
is counted in ``defeah_instagram_callbacks_rejected_total`` for the operator, and never logged
per request (a flood of forgeries must not flood the log either).  A verified callback is one
log line with its outcome, never the Instagram id (the database record has the rest).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar, get_args
from urllib.parse import parse_qsl

from aiohttp import web

from dal.db.database import Database
from dal.db.settings import Settings
from dal.errors import DalError, InvalidUserData
from dal.instagram.callbacks import InstagramCallbacks
from dal.telemetry import LoopCounter
from web.deletion_status import DELETIONS, status_url
from web.deletion_status import routes as status_routes
from web.headers import SECURITY_HEADERS
from web.problems import problem_response
from web.signed_request import Reason, Rejected, SignedRequest, verify

log = logging.getLogger(__name__)

Done = TypeVar("Done")

MAX_BODY: Final = 8 * 1024
FORM_TYPE: Final = "application/x-www-form-urlencoded"
DEAUTHORIZE_ROUTE: Final = "/api/v1/instagram/deauthorize"
DELETION_ROUTE: Final = "/api/v1/instagram/data-deletion"
REFUSED: Final = "The signed request was not accepted."
UNAVAILABLE: Final = "The request could not be carried out now; send it again later."

CALLBACKS_HANDLED: Final = LoopCounter(
    "defeah_instagram_callbacks",
    "Verified Instagram callbacks from Meta by callback and outcome (repeated: a signed "
    "request seen before, nothing done again).",
    ["callback", "outcome"],
)
CALLBACKS_REJECTED: Final = LoopCounter(
    "defeah_instagram_callbacks_rejected",
    "Instagram callback requests refused with 400, by callback and cause (too_large, "
    "malformed, signature, payload, algorithm, expired); the client is never told the cause.",
    ["callback", "reason"],
)
OUTCOMES: Final = {
    "deauthorize": ("disconnected", "not_connected", "repeated", "unavailable"),
    "data_deletion": ("completed", "nothing_held", "repeated", "unavailable"),
}
REASONS: Final = get_args(Reason)
# Every series exists from the start at 0, so a rate() or an alert sees the first refusal.
for _callback, _outcomes in OUTCOMES.items():
    for _outcome in _outcomes:
        CALLBACKS_HANDLED.labels(_callback, _outcome)
    for _reason in REASONS:
        CALLBACKS_REJECTED.labels(_callback, _reason)


class CallbackService:
    """What the handlers share: the DAL's callbacks, the secrets and the public URL."""

    def __init__(self, database: Database, settings: Settings) -> None:
        self.callbacks = InstagramCallbacks(database)
        self.secrets = settings.instagram_app_secrets
        self.max_age = settings.instagram_signed_request_max_age
        self.public_url = settings.public_url or ""


CALLBACKS = web.AppKey("instagram_callbacks", CallbackService)
routes = web.RouteTableDef()


def add_instagram_routes(app: web.Application, database: Database, settings: Settings) -> None:
    """Mount the callbacks and the status page when an app secret is configured."""
    if not settings.instagram_app_secrets:
        return
    app[CALLBACKS] = service = CallbackService(database, settings)
    app[DELETIONS] = service.callbacks
    app.add_routes(routes)
    app.add_routes(status_routes)


async def _form_field(request: web.Request) -> str:
    """The one ``signed_request`` field of a small urlencoded body, or ``Rejected``."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise Rejected("too_large")
    if request.content_type != FORM_TYPE:
        raise Rejected("malformed")
    body = bytearray()
    while chunk := await request.content.readany():
        body += chunk
        if len(body) > MAX_BODY:  # a chunked body (no declared length) past the limit
            raise Rejected("too_large")
    try:
        fields = parse_qsl(
            body.decode("ascii"), keep_blank_values=True, strict_parsing=True, max_num_fields=16
        )
    except ValueError:  # not ASCII, not a form, too many fields
        raise Rejected("malformed") from None
    values = [value for name, value in fields if name == "signed_request"]
    if len(values) != 1:
        raise Rejected("malformed")
    return values[0]


async def _verified(request: web.Request, service: CallbackService) -> SignedRequest:
    field = await _form_field(request)
    return verify(field, service.secrets, max_age=service.max_age, now=time.time())


def _refused(callback: str, reason: Reason) -> web.Response:
    CALLBACKS_REJECTED.labels(callback, reason).inc()
    return problem_response(400, "Bad Request", REFUSED)


def _json(body: str) -> web.Response:
    return web.Response(text=body, content_type="application/json", headers=SECURITY_HEADERS)


async def _carry_out(
    request: web.Request,
    callback: str,
    act: Callable[[InstagramCallbacks, SignedRequest], Awaitable[Done]],
) -> Done | web.Response:
    """What ``act`` did with the verified request, or the response refusing or deferring it:
    the two callbacks differ only in the DAL call and in the answer Meta expects."""
    service = request.app[CALLBACKS]
    try:
        signed = await _verified(request, service)
        return await act(service.callbacks, signed)
    except Rejected as exc:
        return _refused(callback, exc.reason)
    except InvalidUserData:  # an id the column cannot hold: no account has it
        return _refused(callback, "payload")
    except DalError:  # unreachable, a lock or statement timeout, a deadlock: Meta retries
        CALLBACKS_HANDLED.labels(callback, "unavailable").inc()
        return problem_response(503, "Service Unavailable", UNAVAILABLE, {"Retry-After": "5"})


def _handled(callback: str, outcome: str) -> None:
    CALLBACKS_HANDLED.labels(callback, outcome).inc()
    # No Instagram id: the database record has the rest.
    log.info("Instagram %s callback: %s", callback.replace("_", " "), outcome)


@routes.post(DEAUTHORIZE_ROUTE)
async def deauthorize(request: web.Request) -> web.Response:
    done = await _carry_out(
        request, "deauthorize", lambda dal, signed: dal.deauthorize(signed.user_id, signed.digest)
    )
    if isinstance(done, web.Response):
        return done
    _handled("deauthorize", "repeated" if done.repeated else done.outcome)
    return _json('{"status": "ok"}')


@routes.post(DELETION_ROUTE)
async def data_deletion(request: web.Request) -> web.Response:
    done = await _carry_out(
        request, "data_deletion", lambda dal, signed: dal.delete_data(signed.user_id, signed.digest)
    )
    if isinstance(done, web.Response):
        return done
    _handled("data_deletion", "repeated" if done.repeated else done.status)
    code = done.confirmation_code
    return web.json_response(
        {"url": status_url(request.app[CALLBACKS].public_url, code), "confirmation_code": code},
        headers=SECURITY_HEADERS,
    )
