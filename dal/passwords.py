"""bcrypt hashing that never runs on the event loop.

One bcrypt operation at the default cost 12 takes about a quarter of a second of CPU; on the
event loop that would freeze every other request for as long.  bcrypt releases the GIL, so
``asyncio.to_thread`` gives real parallelism and keeps the loop responsive.

The password rules (non-empty, at most 72 UTF-8 bytes) are checked here too, so a password that
bcrypt would truncate or refuse is reported as ``InvalidUserData('password', ...)`` instead of a
bare ``ValueError`` from the library.
"""

from __future__ import annotations

import asyncio
import logging
import re

import bcrypt
from pydantic_core import PydanticCustomError

from dal.errors import InvalidUserData
from dal.models import check_password

log = logging.getLogger(__name__)

# $2a$ / $2b$ / $2y$, two-digit cost, 53 characters of salt and digest.
_HASH_SHAPE = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")


def validate_password(password: str) -> None:
    """``InvalidUserData('password', rule)`` for a password no account can have."""
    try:
        check_password(password)
    except PydanticCustomError as exc:
        raise InvalidUserData("password", exc.message()) from None


def _encoded(password: str) -> bytes:
    validate_password(password)
    return password.encode("utf-8")


def hash_cost(hashed: str) -> int | None:
    """The cost factor written in a bcrypt hash, or None when it is not a bcrypt hash."""
    match = _HASH_SHAPE.fullmatch(hashed)
    return int(match.group(1)) if match else None


def hash_sync(password: bytes, rounds: int) -> str:
    """Blocking bcrypt hash; only ever called in a worker thread."""
    return bcrypt.hashpw(password, bcrypt.gensalt(rounds)).decode("ascii")


def check_sync(password: bytes, hashed: str) -> bool:
    """Blocking bcrypt check; only ever called in a worker thread."""
    if hash_cost(hashed) is None:
        # A corrupt or foreign hash can match nothing; say so without printing it.
        log.warning("stored password hash is not a bcrypt hash; refusing the sign-in")
        return False
    return bcrypt.checkpw(password, hashed.encode("ascii"))


# Dummy hashes by cost, for checks that must take as long as a real one (see ``_dummy``).
DUMMY_HASHES: dict[int, str] = {}


class PasswordHasher:
    """bcrypt at a configured cost; ``hash``/``verify`` run in a worker thread."""

    def __init__(self, rounds: int) -> None:
        if not 4 <= rounds <= 31:
            raise ValueError(f"bcrypt cost must be between 4 and 31, got {rounds}")
        self.rounds = rounds

    def __repr__(self) -> str:
        return f"PasswordHasher(rounds={self.rounds})"

    async def hash(self, password: str) -> str:
        encoded = _encoded(password)
        return await asyncio.to_thread(hash_sync, encoded, self.rounds)

    async def verify(self, password: str, hashed: str) -> bool:
        encoded = _encoded(password)
        return await asyncio.to_thread(check_sync, encoded, hashed)

    def needs_rehash(self, hashed: str) -> bool:
        """True when the hash was made with another cost than the configured one."""
        return hash_cost(hashed) != self.rounds

    async def _dummy(self, cost: int) -> str:
        """A hash of a fixed phrase at ``cost``, made once per process and cost.

        Process-wide, not per hasher: a repository made per request must not pay (and show in
        its timing) an extra hash the first time it meets an unknown email.
        """
        if cost not in DUMMY_HASHES:
            DUMMY_HASHES[cost] = await asyncio.to_thread(hash_sync, b"timing-equaliser", cost)
        return DUMMY_HASHES[cost]

    async def verify_dummy(self, password: str) -> None:
        """Spend the time of one real check, for sign-ins with an unknown email.

        Without it, "no such user" would answer in a millisecond and "wrong password" in a
        quarter second, telling an attacker which emails have accounts.  The dummy has the
        configured cost, the cost every stored hash converges to (hashes are upgraded at
        login).
        """
        await self.verify(password, await self._dummy(self.rounds))

    async def verify_padded(self, password: str, hashed: str) -> bool:
        """``verify``, and when it fails on a hash cheaper than the configured cost, pad the
        work up to one configured-cost check.

        bcrypt work doubles per cost step, so 2**c - 2**s = 2**s + ... + 2**(c-1): one dummy
        check at each cost from s to c-1 makes a wrong password on an old cost-s hash take as
        long as the unknown-email dummy at cost c.  A hash that is not bcrypt at all pads a
        whole check.  A stored cost *above* the configured one cannot be shortened; it stays
        a known residual until that user's next sign-in rehashes it.
        """
        if await self.verify(password, hashed):
            return True
        stored = hash_cost(hashed)
        pad = [self.rounds] if stored is None else list(range(stored, self.rounds))
        for cost in pad:
            await self.verify(password, await self._dummy(cost))
        return False
