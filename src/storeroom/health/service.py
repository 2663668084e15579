"""Health: what "ready" means."""

import asyncio
import logging
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from storeroom.core.migrations import current_revisions, head_revisions

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReadinessReport:
    database: str
    migrations: str

    @property
    def ready(self) -> bool:
        return self.database == "ok" and self.migrations == "ok"


async def readiness(engine: AsyncEngine, timeout: float = 5.0) -> ReadinessReport:
    try:
        async with asyncio.timeout(timeout):
            current = await current_revisions(engine)
    except Exception as exc:
        logger.warning("readiness: database unreachable: %s", exc)
        return ReadinessReport(database="unreachable", migrations="unknown")
    if current != head_revisions():
        return ReadinessReport(database="ok", migrations="pending")
    return ReadinessReport(database="ok", migrations="ok")
