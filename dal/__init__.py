"""defeah-db data access layer: an asyncpg pool, hand-written SQL and pydantic models.

Importing this package opens no connection and starts no server; ``Database.open()`` (or
``async with``) does.
"""

from dal.config import Settings
from dal.database import Database, HealthReport, PoolMetrics

__all__ = ["Database", "HealthReport", "PoolMetrics", "Settings"]
