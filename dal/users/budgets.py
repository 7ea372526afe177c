"""The sign-in budget policy: which keys an attempt spends, their limits and their windows.

Every attempt involves four budget keys, three without a client address (table
``sign_in_budgets``, migrations 0005 and 0011):

* ``network`` -- (normalized email, client network: IPv4 /24, IPv6 /64, or ``unknown`` when no
  address is given), ``DEFEAH_LOCKOUT_THRESHOLD`` per window.  Spent, it refuses with the same
  ``InvalidCredentials`` as a wrong password, and only from that network: a stranger cannot
  lock the owner out from elsewhere.
* ``ip`` -- one client address (IPv4 /32; IPv6 /64, which one host usually owns) across all
  emails, ``DEFEAH_LOCKOUT_IP_THRESHOLD``; spent, ``TooManyAttempts``.  Not used without an
  address: callers that pass none are one shared "unknown" network, as before this budget.
* ``account`` -- all strangers' attempts on one email (from addresses where it never signed
  in), ``DEFEAH_LOCKOUT_ACCOUNT_THRESHOLD`` per ``DEFEAH_LOCKOUT_ACCOUNT_WINDOW``; spent, the
  account locks for strangers (``users.locked_until``) and ``AccountLocked`` says so.
* ``known`` -- instead of ``account``, for an attempt from an address where this account signed
  in successfully before (``sign_in_known_addresses``, migration 0011): a budget of its own,
  ``DEFEAH_LOCKOUT_KNOWN_THRESHOLD``, that strangers cannot spend, and the account lock does not
  apply.  Such an attempt's ``network`` key is its own address, not its /24, so a stranger in
  the owner's /24 spends a key the owner does not use.
* ``streak`` -- failures since the email's last success (NIST 800-63B 5.2.2's consecutive
  failures), remembered for a year after the last one.  Strangers stop at
  ``DEFEAH_LOCKOUT_CONSECUTIVE_LIMIT`` minus the known threshold, known addresses at the limit
  (100): a lasting refusal, lifted by a success from a known address or ``defeah-db unlock``.

The account and known budgets together allow at most (40 + 10) failures per 3600 s window, so
at most 100 in any hour, window edges included (``SignInSettings.failures_per_hour``).

How this meets ASVS 4.0 V2.2.1 and NIST SP 800-63B 5.2.2, requirement by requirement, is in
docs/security.md.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from dal.db.settings import Settings

UNKNOWN_NETWORK: Final = "unknown"
# How long the streak key remembers failures after the last one: a lasting action, not a
# window an attacker can wait out between bursts (at most 90 failures a year from strangers).
STREAK_MEMORY: Final = timedelta(days=365)
# Spent, these keys answer AccountLocked (event result "locked"); the others "throttled".
LOCKING_SCOPES: Final = frozenset({"account", "known", "streak"})

Key = tuple[str, str, str]


class BudgetPolicy:
    """The limits and windows of the settings, and the keys of one attempt."""

    def __init__(self, settings: Settings) -> None:
        window = timedelta(seconds=settings.lockout_window)
        account_window = timedelta(seconds=settings.lockout_account_window)
        self.limits: dict[str, int] = {
            "network": settings.lockout_threshold,
            "ip": settings.lockout_ip_threshold,
            "account": settings.lockout_account_threshold,
            "known": settings.lockout_known_threshold,
        }
        self.windows: dict[str, timedelta] = {
            "network": window,
            "ip": window,
            "account": account_window,
            "known": account_window,
            "streak": STREAK_MEMORY,
        }
        # A stranger's failures stop the known budget's worth short of the consecutive limit,
        # so the owner's known addresses keep that many checks, and never more in all.
        limit = settings.lockout_consecutive_limit
        self.streak_limits = {False: limit - settings.lockout_known_threshold, True: limit}

    def keys(
        self, email: str, network: str, ip_key: str | None, *, known: bool
    ) -> tuple[tuple[Key, ...], tuple[int, ...], tuple[timedelta, ...]]:
        """(keys, limits, windows) of an attempt on the normalized ``email`` from ``network``
        (and the address ``ip_key``); ``known``: the account signed in from that address."""
        keys: list[Key] = [
            ("known" if known else "account", email, ""),
            ("network", email, ip_key if known and ip_key else network),
            ("streak", email, ""),
        ]
        if ip_key is not None:
            keys.append(("ip", "", ip_key))
        limits = tuple(
            self.streak_limits[known] if scope == "streak" else self.limits[scope]
            for scope, _, _ in keys
        )
        return tuple(keys), limits, tuple(self.windows[scope] for scope, _, _ in keys)
