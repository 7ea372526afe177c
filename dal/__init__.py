"""defeah-db data access layer: an asyncpg pool, hand-written SQL and pydantic models.

Importing this package opens no connection and starts no server; ``Database.open()`` (or
``async with``) does.
"""

from dal.config import Settings
from dal.database import Database, HealthReport
from dal.models import InstagramConnection, LoginFailure, NewUser, User, UserPage, UserUpdate
from dal.pools import PoolMetrics
from dal.users import UsersRepository

__all__ = [
    "Database",
    "HealthReport",
    "InstagramConnection",
    "LoginFailure",
    "NewUser",
    "PoolMetrics",
    "Settings",
    "User",
    "UserPage",
    "UserUpdate",
    "UsersRepository",
]
