"""Opaque keyset-pagination cursors: "the rows after this one" for ``UsersRepository.list``."""

from __future__ import annotations

import base64
import binascii
import struct
from datetime import UTC, datetime, timedelta
from uuid import UUID

from dal.errors import InvalidUserData

_CURSOR = struct.Struct(">q16s")  # microseconds since the epoch, UUID bytes
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def encode_cursor(created_at: datetime, user_id: UUID) -> str:
    """An opaque token for the position after this row (clients must not parse it)."""
    micros = (created_at - _EPOCH) // timedelta(microseconds=1)
    raw = _CURSOR.pack(micros, user_id.bytes)
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        micros, uuid_bytes = _CURSOR.unpack(raw)
        return _EPOCH + timedelta(microseconds=micros), UUID(bytes=uuid_bytes)
    except (binascii.Error, struct.error, ValueError, OverflowError):
        raise InvalidUserData("cursor", "is not a cursor returned by list()") from None
