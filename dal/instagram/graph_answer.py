"""What the refresher accepts from the Graph API: a bounded body, then strictly typed fields.

The endpoint is trusted with tokens, not with the worker's memory or its life: a broken proxy,
a compromised DNS entry or a hostile test server can answer anything.  So an answer is

* at most ``MAX_BODY_BYTES`` (a real one is a few hundred bytes): ``Content-Length`` above it
  is refused unread, and a body without one is read to one byte past the cap, then dropped --
  an endless body costs a few KB, not gigabytes;
* uncompressed UTF-8 JSON, nested at most ``MAX_DEPTH`` deep (checked by a scan before
  ``json.loads``, whose recursion would raise ``RecursionError`` on a few KB of brackets), with
  no duplicate keys (which of two ``access_token`` values would count?) and no ``NaN`` or
  ``Infinity``;
* on 200: ``access_token`` a non-empty string of visible ASCII within the table's bound
  (``AccessToken``, the rules of a connected token) and ``expires_in`` an integer -- not a
  bool, a float or a string -- from ``EXPIRES_IN_MIN`` to ``EXPIRES_IN_MAX``, so the expiry
  computed from it can never overflow a ``datetime``;
* otherwise ``error.code`` an integer in a sane range, else only the HTTP status is kept.

Each answer becomes an outcome code; nothing here raises, and no code contains answer text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Final

import aiohttp
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, ValidationError

from dal.inputs import AccessToken

MAX_BODY_BYTES: Final = 8 * 1024
MAX_DEPTH: Final = 8  # a real answer is 2 deep ({"error": {"code": 190, ...}})
# Instagram answers 60 days.  Less than an hour is no refresh (the token would lapse before the
# next one could run); more than a year is no long-lived token Instagram issues.
EXPIRES_IN_MIN: Final = 3600
EXPIRES_IN_MAX: Final = 366 * 86_400
ERROR_CODE_MAX: Final = 10**9

BAD_RESPONSE: Final = "bad_response"
TOO_LARGE: Final = "body_too_large"

_VISIBLE_ASCII: Final = re.compile(r"[\x21-\x7e]+")
_OPEN, _CLOSE, _QUOTE, _BACKSLASH = frozenset(b"[{"), frozenset(b"]}"), ord('"'), ord("\\")


@dataclass(frozen=True)
class Refreshed:
    token: str = field(repr=False)
    expires_at: datetime


@dataclass(frozen=True)
class Failed:
    code: str


Outcome = Refreshed | Failed


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")


def _visible_ascii(token: SecretStr) -> SecretStr:
    if _VISIBLE_ASCII.fullmatch(token.get_secret_value()) is None:
        raise ValueError("not visible ASCII")  # the value itself never enters the message
    return token


class RefreshAnswer(_Strict):
    # Visible ASCII only: a token goes back into a URL on the next refresh, and Instagram's are
    # opaque alphanumeric strings; whitespace or control characters mean a broken answer.
    access_token: Annotated[AccessToken, Field(repr=False), AfterValidator(_visible_ascii)]
    expires_in: Annotated[int, Field(ge=EXPIRES_IN_MIN, le=EXPIRES_IN_MAX)]


class GraphErrorDetail(_Strict):
    code: Annotated[int, Field(ge=0, le=ERROR_CODE_MAX)]


class GraphError(_Strict):
    error: GraphErrorDetail


class _Refused(ValueError):
    """A body that is not acceptable JSON; carries no text of it."""


def _within_depth(body: bytes) -> bool:
    """Whether no array or object in ``body`` nests deeper than ``MAX_DEPTH`` (brackets inside
    strings do not count).  Linear and iterative: safe on any bytes."""
    depth = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == _BACKSLASH:
                escaped = True
            elif byte == _QUOTE:
                in_string = False
        elif byte == _QUOTE:
            in_string = True
        elif byte in _OPEN:
            depth += 1
            if depth > MAX_DEPTH:
                return False
        elif byte in _CLOSE:
            depth -= 1
    return True


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    keys = {key for key, _ in pairs}
    if len(keys) != len(pairs):
        raise _Refused("duplicate key")
    return dict(pairs)


def _no_constant(name: str) -> object:
    raise _Refused("NaN or Infinity")


def parse_body(body: bytes) -> object:
    """The JSON value of ``body``; ``_Refused`` (a ``ValueError``) when it is not one we read."""
    if not _within_depth(body):
        raise _Refused("nested too deep")
    # UnicodeDecodeError and json.JSONDecodeError are ValueErrors; so is an integer literal of
    # more than 4300 digits.
    return json.loads(
        body.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant
    )


def outcome_of(status: int, body: bytes, now: datetime | None = None) -> Outcome:
    """The outcome of an answer with ``status`` and (already capped) ``body``."""
    try:
        value = parse_body(body)
    except ValueError:
        return Failed(BAD_RESPONSE if status == 200 else f"http_{status}")
    if status == 200:
        try:
            answer = RefreshAnswer.model_validate(value)
        except ValidationError:
            return Failed(BAD_RESPONSE)
        expires_at = (now or datetime.now(UTC)) + timedelta(seconds=answer.expires_in)
        return Refreshed(answer.access_token.get_secret_value(), expires_at)
    try:
        return Failed(str(GraphError.model_validate(value).error.code))
    except ValidationError:
        return Failed(f"http_{status}")


async def read_capped(response: aiohttp.ClientResponse) -> bytes | Failed:
    """The body of ``response`` if it is at most ``MAX_BODY_BYTES``, else why not.  Reads no
    further than one byte past the cap: leaving the response then closes the connection, so the
    rest is never received."""
    declared = response.content_length
    if declared is not None and declared > MAX_BODY_BYTES:
        return Failed(TOO_LARGE)
    if response.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
        return Failed(BAD_RESPONSE)  # we ask for identity: compressed, a body could inflate
    body = bytearray()
    while len(body) <= MAX_BODY_BYTES:
        chunk = await response.content.read(MAX_BODY_BYTES + 1 - len(body))
        if not chunk:
            return bytes(body)
        body += chunk
    return Failed(TOO_LARGE)
