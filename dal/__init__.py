"""defeah-db data access layer: an asyncpg pool, hand-written SQL and pydantic models.

Importing this package opens no connection and starts no server; ``Database.open()`` (or
``async with``) does.  The sub-packages, and which way their imports go, are mapped at the top
of docs/dal.md: ``db`` (connections), ``users``, ``instagram``, ``migrations``, ``devdata``.
"""

from typing import Final

from prometheus_client.registry import Collector

from dal import telemetry
from dal.db.database import Database, HealthReport
from dal.db.pools import PoolMetrics
from dal.db.settings import Settings
from dal.instagram.models import InstagramConnection
from dal.instagram.repository import InstagramRepository
from dal.users.models import LoginFailure, NewUser, User, UserPage, UserUpdate
from dal.users.passwords import BCRYPT_COLLECTOR
from dal.users.repository import UsersRepository

# Every Prometheus collector the DAL records into, for a registry of the caller's own.
COLLECTORS: Final[tuple[Collector, ...]] = (*telemetry.COLLECTORS, BCRYPT_COLLECTOR)

__all__ = [
    "COLLECTORS",
    "Database",
    "HealthReport",
    "InstagramConnection",
    "InstagramRepository",
    "LoginFailure",
    "NewUser",
    "PoolMetrics",
    "Settings",
    "User",
    "UserPage",
    "UserUpdate",
    "UsersRepository",
]
