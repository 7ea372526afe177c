"""Type checks of public DAL arguments, so a wrong type is an ``InvalidUserData`` naming it."""

from __future__ import annotations

from dal.errors import InvalidUserData


def expect(argument: str, value: object, kind: type, *, optional: bool = False) -> None:
    """``InvalidUserData`` naming ``argument`` unless ``value`` is a ``kind`` (or None when
    ``optional``).

    Called first by every public method: a wrong type would otherwise surface as whatever
    the first use of the value raises (``AttributeError`` from a password check, a
    ``TypeError`` from the cursor decoder, a driver error after a round trip).  ``bool`` is
    an ``int`` to Python but never a valid count, so it is refused where an int is expected.
    One ``isinstance`` per argument: cheap enough for the hot paths.
    """
    if value is None and optional:
        return
    if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return
    rule = f"must be of type {kind.__name__}" + (" or None" if optional else "")
    raise InvalidUserData(argument, rule)
