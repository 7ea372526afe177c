"""Typed errors raised by the data access layer.

Callers (the web layer, the CLI, other services) catch these instead of driver exceptions, so
swapping or upgrading asyncpg never changes what they must handle.  Messages are written for an
operator: they name the field or the resource, never a password, a hash, a token or a DSN
password.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID


class DalError(Exception):
    """Base class of every error the DAL raises on purpose."""


class ConfigError(DalError):
    """A setting from the environment is missing or malformed; the message names the variable."""


class MigrationError(DalError):
    """A migration could not be applied or rolled back; nothing of it was committed."""


class PartitionLayoutInvalid(DalError):
    """A partitioned table breaks the partition rule (a misnamed child, bounds that do not match
    the name, a missing default partition): partition upkeep refuses and changes nothing."""


class ProductionRefused(DalError):
    """The target is marked as production and a destructive job was not forced."""


class SeedError(DalError):
    """A seed file could not be applied; its transaction was rolled back."""


class DatabaseUnavailable(DalError):
    """The database cannot be reached in time (down, restarting, or the pool is exhausted)."""


class LockBusy(DalError):
    """A maintenance statement gave up waiting for a lock (lock_timeout, SQLSTATE 55P03)."""


class NotFound(DalError):
    """The requested row does not exist."""


class DuplicateEmail(DalError):
    """Another user already has this email address (compared case-insensitively)."""


class DuplicateInstagramAccount(DalError):
    """The Instagram account is already connected to another user."""


class InvalidUserData(DalError, ValueError):
    """Input breaks a rule of the users table; ``field`` and ``rule`` say which."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"invalid {field}: {rule}")
        self.field = field
        self.rule = rule


class InvalidCredentials(DalError):
    """Unknown email or wrong password; deliberately does not say which."""

    def __init__(self) -> None:
        super().__init__("invalid email or password")


class AccountLocked(DalError):
    """The account-wide ceiling was reached: locked for everyone until ``locked_until`` (UTC).

    Deliberately distinct from ``InvalidCredentials``, so it reveals that state: a locked
    email answers ``AccountLocked`` whether or not it has an account (the budget is keyed by
    email), so it still says nothing about which emails have accounts.
    """

    def __init__(self, locked_until: datetime) -> None:
        super().__init__(f"account locked until {locked_until.isoformat()}")
        self.locked_until = locked_until


class AccountInactive(DalError):
    """The account has been deactivated and may not sign in."""

    def __init__(self) -> None:
        super().__init__("account is inactive")


class TooManyAttempts(DalError):
    """One client address spent its sign-in budget across all emails; retry after ``retry_at``.

    Raised before any password check, for every email alike, so it reveals nothing about
    accounts -- only that this address has been refused.
    """

    def __init__(self, retry_at: datetime) -> None:
        super().__init__("too many sign-in attempts from this address; try again later")
        self.retry_at = retry_at


class TokenUnreadable(DalError):
    """A stored Instagram token does not decrypt (unknown key id, damaged, or sealed for
    another user).  Carries the user id and the reason, never the stored value or a key."""

    def __init__(self, user_id: UUID, reason: str) -> None:
        super().__init__(f"instagram token of user {user_id} is unreadable: {reason}")
        self.user_id = user_id
        self.reason = reason


class Overloaded(DalError):
    """Too much work is already waiting (say, bcrypt checks in a sign-in storm): refused now,
    within a bounded wait, instead of answered late.  Retry later; nothing was changed."""
