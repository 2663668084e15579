"""Jobs: the one place every status or progress change of a job is published, as a live event
for its owner (see events/): recorded in the transaction that makes the change."""

from sqlalchemy.ext.asyncio import AsyncSession

from storeroom.events import service as events_service
from storeroom.events.service import EventType
from storeroom.jobs.models import Job, JobStatus
from storeroom.jobs.schemas import JobRead

_EVENT_OF_STATUS = {
    JobStatus.queued: EventType.job_queued,
    JobStatus.running: EventType.job_progress,
    JobStatus.succeeded: EventType.job_succeeded,
    JobStatus.failed: EventType.job_failed,
    JobStatus.cancelled: EventType.job_cancelled,
}


def event_type(job: Job) -> EventType:
    return _EVENT_OF_STATUS[JobStatus(job.status)]


async def record_job_event(session: AsyncSession, job: Job) -> None:
    """Call in the transaction that changes the job, with `job` as it will be once committed."""
    await events_service.record(session, job.owner_id, event_type(job), JobRead.model_validate(job))
