"""Health: what "ready" means."""

import asyncio
import logging
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from storeroom.auth.rate_limit import LoginLimiter
from storeroom.core.migrations import current_revisions, head_revisions

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReadinessReport:
    database: str
    migrations: str
    # Where rate limits are counted: "database", "redis", or "database (redis unreachable)"
    # while a configured Redis does not answer (logins keep working: not a reason to be unready).
    rate_limits: str

    @property
    def ready(self) -> bool:
        return self.database == "ok" and self.migrations == "ok"


READINESS_TIMEOUT_SECONDS = 5.0


async def readiness(engine: AsyncEngine, limiter: LoginLimiter) -> ReadinessReport:
    rate_limits = await limiter.status()
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_SECONDS):
            current = await current_revisions(engine)
    except Exception as exc:
        logger.warning("readiness: database unreachable: %s", exc)
        return ReadinessReport(
            database="unreachable", migrations="unknown", rate_limits=rate_limits
        )
    if current != head_revisions():
        return ReadinessReport(database="ok", migrations="pending", rate_limits=rate_limits)
    return ReadinessReport(database="ok", migrations="ok", rate_limits=rate_limits)
