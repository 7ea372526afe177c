"""Signed requests built as Meta documents them, independently of the code under test.

Meta's own sample (PHP, "Parsing the Signed Request"): the payload is JSON, base64url-encoded
without padding; the signature is HMAC-SHA256 of that *encoded* text keyed with the app secret,
base64url-encoded too; the two are joined by a dot and posted as the form field
``signed_request`` (``application/x-www-form-urlencoded``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

SECRET = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"  # the shape of a Meta app secret: 32 hex digits
OLD_SECRET = "ffeeddccbbaa99887766554433221100"  # the one a rotation is retiring
PUBLIC_URL = "https://accounts.example.test"
IG_USER = "17841400000000001"


def b64url(raw: bytes, *, padded: bool = False) -> str:
    text = base64.urlsafe_b64encode(raw).decode("ascii")
    return text if padded else text.rstrip("=")


def payload(user_id: Any = IG_USER, **fields: Any) -> bytes:
    """The JSON Meta sends: algorithm, issued_at (now), user_id; ``fields`` add or replace
    (``None`` removes one)."""
    body: dict[str, Any] = {"algorithm": "HMAC-SHA256", "issued_at": int(time.time())}
    body["user_id"] = user_id
    body.update(fields)
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


def signed(raw: bytes, secret: str = SECRET, *, padded: bool = False) -> str:
    encoded = b64url(raw, padded=padded)
    mac = hmac.new(secret.encode(), encoded.encode(), hashlib.sha256).digest()
    return f"{b64url(mac, padded=padded)}.{encoded}"


def form(signed_request: str) -> dict[str, str]:
    return {"signed_request": signed_request}
