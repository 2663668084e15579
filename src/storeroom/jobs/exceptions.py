"""Jobs: the errors a job's service and its runners raise."""

from typing import Any

from storeroom.core.errors import Conflict, DomainError, NotFound


class JobNotFound(NotFound):
    code = "job_not_found"
    detail = "Job not found"


class JobFinished(Conflict):
    code = "job_finished"
    detail = "The job has already finished"


class JobQueueUnavailable(DomainError):
    status_code = 503
    code = "job_queue_unavailable"
    detail = "The job could not be queued (the broker is unreachable); it was marked failed"


class JobCancelled(Exception):
    """A cancel was requested: the runner stops at this chunk boundary. What it committed
    stays; `result` (when given) says what that was."""

    def __init__(self, result: dict[str, Any] | None = None):
        self.result = result
        super().__init__("job cancelled")


class JobFailed(Exception):
    """A runner's clean failure: `message` becomes the job's `error`, `result` its result
    (e.g. the rows that failed validation)."""

    def __init__(self, message: str, *, result: dict[str, Any] | None = None):
        self.message = message
        self.result = result
        super().__init__(message)


class LeaseLost(Exception):
    """Another worker holds this job now (this one's lease expired): whatever this run has not
    committed is rolled back, and it stops without touching the job again."""
