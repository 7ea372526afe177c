"""What the driver (asyncpg) can throw at us, sorted by what it means, and how to say it.

Shared by everything that touches a connection -- the pool owner, the replica pools, the
repositories' error translation, the health probes -- so that "the database cannot serve us
right now" means the same exception types everywhere.
"""

from __future__ import annotations

import asyncio

import asyncpg

# Errors that mean "the database cannot serve us right now", as opposed to "this statement is
# wrong".  Repositories translate the second kind into domain errors (dal.db.translate).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.QueryCanceledError,
)
CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    *CONNECTION_ERRORS,
    asyncpg.exceptions.PostgresError,  # e.g. the database does not exist, auth failed
)
CLOSE_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, *CONNECTION_ERRORS)
# Everything a statement can raise that a repository must translate before it leaves the DAL.
DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.PostgresError,
    asyncpg.exceptions.InterfaceError,
    *CONNECTION_ERRORS,
)
# How a caller's block ends when it was cut off mid-statement: its deadline cancelled the task,
# or asyncpg's command_timeout expired.  The connection then still waits for the server.
CUT_OFF: tuple[type[BaseException], ...] = (asyncio.CancelledError, TimeoutError)


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its type name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def describe_error(exc: BaseException) -> str:
    """One line naming the failure (driver messages name users and hosts, never passwords)."""
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text.splitlines()[0]}" if text else name


def row_count(status: str) -> int:
    """Row count of a command tag such as ``DELETE 3`` or ``COPY 20000``."""
    return int(status.rsplit(" ", 1)[-1])
