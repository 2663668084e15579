"""Jobs: the queue jobs are sent to, and the caller's job named in the path."""

import uuid
from typing import Annotated

from fastapi import Depends, Path, Request

from storeroom.auth.dependencies import CurrentUser
from storeroom.core.db import DbSession
from storeroom.jobs import service as jobs_service
from storeroom.jobs.models import Job


async def get_job_queue(request: Request) -> jobs_service.JobQueue:
    queue: jobs_service.JobQueue = request.app.state.job_queue
    return queue


AppJobQueue = Annotated[jobs_service.JobQueue, Depends(get_job_queue)]


async def owned_job(
    job_id: Annotated[uuid.UUID, Path(description="The job's id.")],
    owner: CurrentUser,
    session: DbSession,
) -> Job:
    """The job in the path if the caller owns it; another user's job is reported exactly like
    a missing one."""
    return await jobs_service.get_owned(session, owner.id, job_id)


OwnedJob = Annotated[Job, Depends(owned_job)]
