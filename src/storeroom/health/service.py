"""Health: what "ready" means."""

import asyncio
import logging
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from storeroom.auth.rate_limit import LoginLimiter
from storeroom.core.migrations import current_revisions, head_revisions
from storeroom.files.storage import Storage

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReadinessReport:
    database: str
    migrations: str
    # Where rate limits are counted: "database", "redis", or "database (redis unreachable)"
    # while a configured Redis does not answer (logins keep working: not a reason to be unready).
    rate_limits: str
    # "ok" or "unreachable": informational like rate_limits (a store that is down fails file
    # transfers with 503 on every host alike; the rest of the API works).
    storage: str = "ok"

    @property
    def ready(self) -> bool:
        return self.database == "ok" and self.migrations == "ok"


READINESS_TIMEOUT_SECONDS = 5.0


async def _storage_status(storage: Storage) -> str:
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_SECONDS):
            await storage.check()
    except Exception as exc:
        logger.warning("readiness: file storage unreachable: %s", exc)
        return "unreachable"
    return "ok"


async def readiness(
    engine: AsyncEngine, limiter: LoginLimiter, storage: Storage
) -> ReadinessReport:
    rate_limits = await limiter.status()
    storage_status = await _storage_status(storage)
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_SECONDS):
            current = await current_revisions(engine)
    except Exception as exc:
        logger.warning("readiness: database unreachable: %s", exc)
        return ReadinessReport("unreachable", "unknown", rate_limits, storage_status)
    migrations = "ok" if current == head_revisions() else "pending"
    return ReadinessReport("ok", migrations, rate_limits, storage_status)
