"""Jobs: what a runner gets to do its work (the contract between the dispatcher and runners)."""

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storeroom.core.config import Settings
from storeroom.files.storage import Storage

# (session, checkpoint, done, total) -> None; supplied by jobs/service.py
ChunkCommitter = Callable[[AsyncSession, dict[str, Any], int, int | None], Awaitable[None]]


@dataclass
class JobContext:
    """One run of one job. A runner (`run_import`, `run_export`) does its work through it and
    returns the job's `result`; it raises `JobFailed` for a clean failure."""

    job_id: uuid.UUID
    owner_id: int
    params: dict[str, Any]
    # What the last committed chunk saved ({} on the first run): a redelivered job resumes
    # after it.
    checkpoint: dict[str, Any]
    sessionmaker: async_sessionmaker[AsyncSession]
    storage: Storage
    settings: Settings
    _commit_chunk: ChunkCommitter = field(repr=False)

    async def commit_chunk(
        self,
        session: AsyncSession,
        *,
        checkpoint: dict[str, Any],
        done: int,
        total: int | None,
    ) -> None:
        """Write progress and checkpoint (and renew the lease) on the job row in `session`,
        then commit it: the chunk's own writes and its checkpoint land in one transaction.
        Then publish the progress event. Raises `JobCancelled` (after committing) when a
        cancel was requested, so the runner stops at this chunk boundary; raises `LeaseLost`
        (rolling back) if another worker took the job over meanwhile."""
        self.checkpoint = checkpoint
        await self._commit_chunk(session, checkpoint, done, total)
