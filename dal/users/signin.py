"""Sign-in that holds under attack: attempt budgets claimed before bcrypt, and the event log.

Every attempt claims one unit on each of its budget keys (``network``, ``ip``, ``account`` or
``known``, ``streak``: table ``sign_in_budgets``, migrations 0005 and 0011); which keys, their
limits and windows are the policy of ``dal.users.budgets``, where each key is described.

Why claims, not counters read then written: the attempt takes one unit on every key in one
atomic upsert *before* bcrypt, and may check the password only if every key had a unit left.  A
wrong password keeps its units (they are the failure), a right one gives them back and resets
its own network key.  So however many attempts arrive at once, at most ``threshold`` checks run
per key per window, and an attempt arriving after that is refused without bcrypt even with the
right password.  An attempt whose check never ran because the bcrypt queue was full
(``Overloaded``) gives its units back: it guessed nothing.  An attempt that dies between claim
and outcome keeps its units (fails closed) until its window ends.

Budgets are keyed by email, not user id, so unknown emails are throttled and refused exactly
like known ones; an unknown email or a wrong password also costs the same bcrypt time
(``PasswordHasher.verify_padded``/``verify_dummy``).  Every attempt is counted in one
``auth_events`` row, written in the transaction (or statement) that moved its counters; a
refusal of a key the database already called spent is made in process and counted in that
key's summary row instead (``dal.users.signin_refusals``).
"""

from __future__ import annotations

import builtins
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final
from uuid import UUID

from dal.arguments import expect
from dal.db.connections import Acquirer, Connection
from dal.db.statements import run
from dal.errors import (
    AccountInactive,
    AccountLocked,
    DalError,
    DatabaseUnavailable,
    InvalidCredentials,
    InvalidUserData,
    Overloaded,
    TooManyAttempts,
)
from dal.queries import Query, load
from dal.rules import EMAIL_MAX_LENGTH, RULE_EMPTY, RULE_NUL, rule_max_length
from dal.telemetry import LOCKOUTS, SIGN_INS
from dal.users.budgets import LOCKING_SCOPES, UNKNOWN_NETWORK, BudgetPolicy
from dal.users.models import AuthEvent, User
from dal.users.passwords import PasswordHasher, encode_password
from dal.users.signin_refusals import refusals_for

if TYPE_CHECKING:
    from dal.db.settings import Settings

SIGNIN_SQL: Final = load("signin")
OPS_SQL: Final = load("ops")

# NAT64 (RFC 6052's well-known prefix): the IPv4 client is the last 32 bits of the address.
NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
USER_AGENT_MAX: Final = 256
MAX_EVENTS: Final = 1000
# Which spent key speaks first when several are (sign_in_state orders by the same list): the
# lasting refusal, the account locks, then the address, then the (email, network) pair.
PRIORITY: Final = ("streak", "account", "known", "ip", "network")
# The ``result`` label of each outcome (a fixed list: bounded cardinality).
RESULTS: Final[dict[type[DalError], str]] = {
    InvalidCredentials: "invalid_credentials",
    AccountLocked: "locked",
    TooManyAttempts: "throttled",
    AccountInactive: "inactive",
    Overloaded: "overloaded",
    InvalidUserData: "invalid_input",
    DatabaseUnavailable: "unavailable",
}
_LOCKOUTS: Final = LOCKOUTS.labels()
_COUNTERS: Final = {
    result: SIGN_INS.labels(result) for result in ("success", "error", *RESULTS.values())
}


def count_result(exc: DalError | None) -> None:
    """One sign-in outcome in ``defeah_sign_ins_total``."""
    result = "success" if exc is None else RESULTS.get(type(exc), "error")
    _COUNTERS[result].inc()


def normalize_email(email: str) -> str:
    """The budget and log key of an email: trimmed and lower case (as users_email_lower_key)."""
    normalized = email.strip().lower()
    if not normalized:
        raise InvalidUserData("email", RULE_EMPTY)
    if len(normalized) > EMAIL_MAX_LENGTH:
        raise InvalidUserData("email", rule_max_length(EMAIL_MAX_LENGTH))
    if "\x00" in normalized:
        raise InvalidUserData("email", RULE_NUL)
    return normalized


def client_address(client_ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address in ``client_ip``; an IPv4-mapped IPv6 address counts as its IPv4 address
    (the same client seen through a dual-stack socket), so does a NAT64 address (the IPv4
    client behind a NAT64 gateway: otherwise all of them would share one /64 key), and an
    IPv6 zone is dropped."""
    try:
        address = ipaddress.ip_address(client_ip.split("%", 1)[0])
    except ValueError:
        raise InvalidUserData("client_ip", "must be an IPv4 or IPv6 address") from None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    return address


@lru_cache(maxsize=4096)
def budget_networks(client_ip: str | None) -> tuple[str | None, str, str | None]:
    """(address, network key, ip key) of a client: IPv4 /24 and /32; IPv6 /64 for both.

    Cached: parsing an address costs more than a refused attempt's whole round trip, and a
    flood comes from few addresses."""
    if client_ip is None:
        return None, UNKNOWN_NETWORK, None
    address = client_address(client_ip)
    if isinstance(address, ipaddress.IPv4Address):
        network = ipaddress.ip_network(f"{address}/24", strict=False)
        return str(address), str(network), f"{address}/32"
    network = ipaddress.ip_network(f"{address}/64", strict=False)
    return str(address), str(network), str(network)


def user_agent_value(user_agent: str | None) -> str | None:
    """The user agent as logged: at most 256 characters, NULs removed (text cannot hold them)."""
    if user_agent is None:
        return None
    return user_agent.replace("\x00", "")[:USER_AGENT_MAX]


@dataclass(frozen=True)
class Attempt:
    """Everything the statements of one sign-in need, computed once."""

    email: str
    client_ip: str | None
    user_agent: str | None
    keys: tuple[tuple[str, str, str], ...]
    limits: tuple[int, ...] = ()
    windows: tuple[timedelta, ...] = ()
    ip_key: str | None = None
    known: bool = False
    user_id: UUID | None = None
    stored_hash: str | None = None
    is_active: bool = False

    def values(self, **extra: object) -> dict[str, object]:
        scopes, emails, networks = (list(column) for column in zip(*self.keys, strict=True))
        return {
            "email": self.email,
            "user_id": self.user_id,
            "client_ip": self.client_ip,
            "user_agent": self.user_agent,
            "scopes": scopes,
            "emails": emails,
            "networks": networks,
            "limits": list(self.limits),
            "windows": list(self.windows),
            "known": self.known,
            **extra,
        }

    def limit(self, scope: str) -> int:
        """This attempt's limit on its key of ``scope``."""
        return self.limits[[key[0] for key in self.keys].index(scope)]


def decided_by(scope: str, network: str) -> str:
    return f"{scope} {network}" if network else scope


def refusal(scope: str, until: datetime) -> DalError:
    """The error of a spent key: only the account lock and the address ceiling say so; a spent
    (email, network) budget reads exactly like a wrong password."""
    if scope in LOCKING_SCOPES:
        return AccountLocked(until)
    if scope == "ip":
        return TooManyAttempts(until)
    return InvalidCredentials()


class SignIn:
    """``authenticate`` and the event readers; ``UsersRepository`` owns one (``users.sign_in``)."""

    def __init__(self, db: Acquirer, passwords: PasswordHasher) -> None:
        self._db = db
        self.passwords = passwords
        self.refusals = refusals_for(db)
        settings: Settings = db.settings
        self.window = timedelta(seconds=settings.lockout_window)
        self.policy = BudgetPolicy(settings)
        self.limits = self.policy.limits

    def __repr__(self) -> str:
        return f"<SignIn on {self._db!r}>"

    def attempt(
        self, email: str, client_ip: str | None, user_agent: str | None, *, known: bool = False
    ) -> Attempt:
        """Validate the inputs and name the budget keys, before any database work.  ``known``:
        the address is one where this email's account signed in before (``known_address``)."""
        normalized = normalize_email(email)
        address, network, ip_key = budget_networks(client_ip)
        known = known and ip_key is not None
        keys, limits, windows = self.policy.keys(normalized, network, ip_key, known=known)
        agent = user_agent_value(user_agent)
        return Attempt(normalized, address, agent, keys, limits, windows, ip_key, known)

    async def known_address(self, conn: Connection, attempt: Attempt) -> Attempt:
        """The attempt with the known budget when its address is one of the account's known
        addresses; as it is otherwise (and always without an address).  The same statement
        runs for unknown emails, so it tells nothing about which have accounts."""
        if attempt.ip_key is None:
            return attempt
        values = {"email": attempt.email, "address": attempt.ip_key}
        if not (await run(conn, SIGNIN_SQL["known_address"], values))[0]["known"]:
            return attempt
        return self.attempt(attempt.email, attempt.client_ip, attempt.user_agent, known=True)

    async def authenticate(
        self,
        email: str,
        password: str,
        *,
        client_ip: str | None = None,
        user_agent: str | None = None,
    ) -> User:
        """See ``UsersRepository.authenticate``.  No pool connection is held during bcrypt."""
        try:
            user = await self._authenticate(email, password, client_ip, user_agent)
        except DalError as exc:
            count_result(exc)
            raise
        count_result(None)
        return user

    async def _authenticate(
        self, email: str, password: str, client_ip: str | None, user_agent: str | None
    ) -> User:
        secret = encode_password(password)  # the password rules, once per attempt
        attempt = self.attempt(email, client_ip, user_agent)
        held = self.refusals.refusal(attempt.keys, PRIORITY)
        if held is not None:  # spent a moment ago: refused here, counted in its summary
            self.refusals.count(held, attempt.email, attempt.client_ip, attempt.user_agent)
            await self.refusals.wait()
            raise refusal(held.scope, held.until)
        async with self._db.acquire() as conn:
            attempt = await self.known_address(conn, attempt)
            state = (await run(conn, SIGNIN_SQL["sign_in_state"], attempt.values()))[0]
            if state["scope"] is not None:
                self._remember(attempt, state["scope"], dict(state), state["id"])
                raise refusal(state["scope"], state["until"])
            self.refusals.forget(attempt.keys)  # a probe the database let through
            if state["id"] is not None:
                attempt = replace(
                    attempt,
                    user_id=state["id"],
                    stored_hash=state["hashed_password"],
                    is_active=state["is_active"],
                )
            claimed = await self._claim(conn, attempt)
        account = claimed.get("account")  # a known address spends no account unit
        last_unit = account is not None and account["used"] >= self.limits["account"]
        try:
            right = await self._check(secret, attempt)
        except Overloaded:
            await self._refund(attempt, claimed)
            raise
        async with self._db.acquire() as conn:
            return await self._settle(conn, attempt, secret, right, last_unit)

    def _remember(
        self, attempt: Attempt, scope: str, answer: Mapping[str, Any], user_id: UUID | None
    ) -> None:
        """Hold the database's "spent" for the attempt's key of ``scope`` (see
        ``dal.users.signin_refusals``); ``answer`` has ``decided_by``, ``until``, ``db_now``."""
        key = next(key for key in attempt.keys if key[0] == scope)
        self.refusals.remember(
            key, answer["decided_by"], answer["until"], answer["db_now"], attempt.email, user_id
        )

    async def _refund(self, attempt: Attempt, claimed: Mapping[str, Mapping[str, Any]]) -> None:
        """Overloaded: no password was checked, so the claimed units go back (in the windows
        they were claimed in) and the attempt is logged as ``overloaded``."""
        windows = [claimed[scope]["window_ends_at"] for scope, _, _ in attempt.keys]
        async with self._db.acquire() as conn:
            await run(
                conn, SIGNIN_SQL["refund_overloaded"], attempt.values(claimed_windows=windows)
            )

    async def _claim(self, conn: Connection, attempt: Attempt) -> dict[str, Mapping[str, Any]]:
        """Take one unit on every key, or -- when one is spent -- none, with the refusal logged
        in the same transaction, which still holds the rows' locks.  Returns the claimed rows
        by scope: ``used`` (this unit included: at the account key's limit, a failure of this
        attempt locks) and ``window_ends_at`` (the window a refund gives the unit back to)."""
        async with conn.transaction():
            rows = await run(conn, SIGNIN_SQL["claim_attempt"], attempt.values())
            over = [row for row in rows if row["used"] > attempt.limit(row["scope"])]
            if not over:
                return {row["scope"]: dict(row) for row in rows}
            decider = min(over, key=lambda row: PRIORITY.index(row["scope"]))
            await run(conn, SIGNIN_SQL["release_claims"], attempt.values())
            result = "locked" if decider["scope"] in LOCKING_SCOPES else "throttled"
            by = decided_by(decider["scope"], decider["network"])
            await run(
                conn, SIGNIN_SQL["record_event"], attempt.values(result=result, decided_by=by)
            )
        spent = {"decided_by": by, "until": decider["window_ends_at"], "db_now": decider["db_now"]}
        self._remember(attempt, decider["scope"], spent, attempt.user_id)
        raise refusal(decider["scope"], decider["window_ends_at"])

    async def _check(self, secret: bytes, attempt: Attempt) -> bool:
        """The bcrypt check; an unknown email costs the same as a wrong password."""
        if attempt.stored_hash is None:
            await self.passwords.verify_dummy(secret)
            return False
        return await self.passwords.verify_padded(secret, attempt.stored_hash)

    async def _settle(
        self, conn: Connection, attempt: Attempt, secret: bytes, right: bool, last_unit: bool
    ) -> User:
        """Record the outcome; ``last_unit``: this attempt took the account key's last unit, so
        its failure is the one that locks the account (counted in ``defeah_lockouts_total``)."""
        if not right:
            limit = self.limits["account"]
            await run(conn, SIGNIN_SQL["record_failure"], attempt.values(account_limit=limit))
            if last_unit:
                _LOCKOUTS.inc()
            raise InvalidCredentials()
        if not attempt.is_active:
            await run(conn, SIGNIN_SQL["settle_right_password"], attempt.values())
            raise AccountInactive()
        assert attempt.stored_hash is not None  # right implies a stored hash
        upgraded = None
        if self.passwords.needs_rehash(attempt.stored_hash):
            upgraded = await self._upgrade(secret)
        rows = await run(
            conn,
            SIGNIN_SQL["record_success"],
            attempt.values(verified=attempt.stored_hash, upgraded=upgraded),
        )
        if not rows:  # the account was deleted while its password was being checked
            raise InvalidCredentials()
        if attempt.ip_key is not None:
            values = {"user_id": attempt.user_id, "address": attempt.ip_key}
            await run(conn, SIGNIN_SQL["remember_address"], values)
        self.refusals.forget(attempt.keys)
        return User.from_record(rows[0])

    async def _upgrade(self, secret: bytes) -> str | None:
        """The password hashed at the configured cost, or None when the bcrypt queue is full:
        the password was checked and is right, so the sign-in succeeds and the upgrade waits
        for the next one."""
        try:
            return await self.passwords.hash_encoded(secret)
        except Overloaded:
            return None

    # -- readers -------------------------------------------------------------------------------

    async def recent_auth_events_for_user(
        self, user_id: UUID, limit: int = 50
    ) -> builtins.list[AuthEvent]:
        """The user's newest sign-in events first (at most ``MAX_EVENTS``)."""
        expect("user_id", user_id, UUID)
        expect("limit", limit, int)
        return await self._events(SIGNIN_SQL["recent_events_for_user"], {"user_id": user_id}, limit)

    async def recent_auth_events_for_ip(self, ip: str, limit: int = 50) -> builtins.list[AuthEvent]:
        """The newest sign-in events from one client address first (at most ``MAX_EVENTS``)."""
        expect("ip", ip, str)
        expect("limit", limit, int)
        address = str(client_address(ip))
        return await self._events(SIGNIN_SQL["recent_events_for_ip"], {"client_ip": address}, limit)

    async def _events(
        self, query: Query, values: dict[str, object], limit: int
    ) -> builtins.list[AuthEvent]:
        if limit < 1:
            raise InvalidUserData("limit", "must be at least 1")
        async with self._db.acquire(readonly=True) as conn:
            rows = await run(conn, query, {**values, "limit": min(limit, MAX_EVENTS)})
        return [AuthEvent.model_validate(dict(row)) for row in rows]
