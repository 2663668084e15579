"""Jobs: the one place every status or progress change of a job goes through."""

import logging

from storeroom.jobs.models import Job

logger = logging.getLogger("storeroom.jobs.events")


def publish_job_event(job: Job) -> None:
    """Called after each change of a job's status or progress is committed. The live-events
    issue connects this to Server-Sent Events; for now it is a debug log line."""
    logger.debug(
        "job %s (%s, owner %s): %s %s/%s",
        job.id,
        job.type,
        job.owner_id,
        job.status,
        job.progress_done,
        "?" if job.progress_total is None else job.progress_total,
    )
