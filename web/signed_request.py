"""Meta's signed requests: ``<base64url signature>.<base64url JSON payload>``, verified.

What Meta documents, and what is checked here, in this order: the form field is split on the
*first* ``.``; the signature is HMAC-SHA256 of the *encoded* payload (the text after the dot,
as sent) keyed with the app secret, compared in constant time (``hmac.compare_digest``) with
the HMAC under each configured secret (a rotation keeps the old one for a while); only a
request whose signature holds is decoded at all, so nothing an attacker sends unsigned reaches
the JSON parser.  Then the payload must be a JSON object whose ``algorithm`` is exactly
``HMAC-SHA256``, whose ``issued_at`` is an integer within the configured age (and at most
``FUTURE_SKEW`` seconds ahead of our clock), and whose ``user_id`` is the app-scoped Instagram
user id.  base64url is accepted with or without its ``=`` padding, but only in its own
alphabet.

Every failure is one exception, ``Rejected``, whose ``reason`` goes to a metric and never to
the client: a forger learns nothing about which check failed.  This module knows nothing of
HTTP or the database.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Final, Literal

ALGORITHM: Final = "HMAC-SHA256"
# Clocks disagree a little; an issued_at further ahead than this was not issued by Meta now.
FUTURE_SKEW: Final = 300
SIGNATURE_BYTES: Final = 32  # SHA-256
INSTAGRAM_USER_ID_MAX: Final = 100  # the column's limit (users.instagram_user_id)
_BASE64URL: Final = re.compile(r"[A-Za-z0-9_-]+={0,2}")

Reason = Literal["too_large", "malformed", "signature", "payload", "algorithm", "expired"]


class Rejected(Exception):
    """The signed request is not acceptable; ``reason`` is for the operator's metric only."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(reason)
        self.reason: Reason = reason


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """A verified request: who it is about, when Meta issued it, and which delivery it is."""

    user_id: str
    issued_at: int
    # SHA-256 of the signature: identifies this signed request (a redelivery has the same one)
    # without keeping anything that names the person
    digest: bytes


def b64url_decode(text: str) -> bytes:
    """base64url with or without padding; anything outside the alphabet, a wrong amount of
    padding or an impossible length is refused."""
    if not _BASE64URL.fullmatch(text):
        raise Rejected("malformed")
    bare = text.rstrip("=")
    if len(bare) % 4 == 1 or (bare != text and len(text) % 4 != 0):
        raise Rejected("malformed")
    try:
        return base64.b64decode(bare + "=" * (-len(bare) % 4), altchars=b"-_", validate=True)
    except binascii.Error:
        raise Rejected("malformed") from None


def verify(
    signed_request: str, secrets: tuple[str, ...], *, max_age: float, now: float
) -> SignedRequest:
    """The verified request, or ``Rejected``; ``now`` is the current Unix time."""
    signature_part, dot, payload_part = signed_request.partition(".")
    if not dot or not signature_part or not payload_part or not secrets:
        raise Rejected("malformed")
    signature = b64url_decode(signature_part)
    if len(signature) != SIGNATURE_BYTES or not payload_part.isascii():
        raise Rejected("malformed")
    signed = payload_part.encode("ascii")
    valid = False
    for secret in secrets:  # every secret is tried: the time does not tell which one matched
        expected = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).digest()
        valid |= hmac.compare_digest(expected, signature)
    if not valid:
        raise Rejected("signature")
    payload = _payload(b64url_decode(payload_part))
    if payload.get("algorithm") != ALGORITHM:
        raise Rejected("algorithm")
    issued_at = payload.get("issued_at")
    if not isinstance(issued_at, int) or isinstance(issued_at, bool):
        raise Rejected("payload")
    if not now - max_age <= issued_at <= now + FUTURE_SKEW:
        raise Rejected("expired")
    return SignedRequest(
        user_id=_user_id(payload.get("user_id")),
        issued_at=issued_at,
        digest=hashlib.sha256(signature).digest(),
    )


def _reject_constant(name: str) -> object:
    raise ValueError(name)  # NaN, Infinity: not JSON


def _payload(raw: bytes) -> dict[str, object]:
    try:
        payload = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # not UTF-8, not JSON, a 5,000-digit number, nesting
        raise Rejected("payload") from None
    if not isinstance(payload, dict):
        raise Rejected("payload")
    return payload


def _user_id(value: object) -> str:
    """Meta sends the app-scoped id as a string of digits; an integer is taken as its digits."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        value = str(value)
    if not isinstance(value, str) or not 1 <= len(value) <= INSTAGRAM_USER_ID_MAX:
        raise Rejected("payload")
    if not value.isprintable() or value != value.strip():
        raise Rejected("payload")
    return value
