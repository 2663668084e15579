"""Jobs: HTTP endpoints to start, follow and cancel the caller's background jobs."""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response, status

from storeroom.auth.dependencies import CurrentUser, require_scope
from storeroom.core.db import DbSession
from storeroom.core.dependencies import AppSettings
from storeroom.core.errors import error_responses
from storeroom.core.pagination import Page, Pagination, paginate
from storeroom.idempotency.dependencies import IdempotentRoute, idempotent
from storeroom.jobs import service as jobs_service
from storeroom.jobs.dependencies import AppJobQueue, OwnedJob
from storeroom.jobs.models import Job, JobStatus, JobType
from storeroom.jobs.schemas import JobCreate, JobRead

router = APIRouter(
    prefix="/jobs",
    tags=["jobs"],
    responses=error_responses(401, 422),
    route_class=IdempotentRoute,
)

_CREATE_EXAMPLES: dict[str, Any] = {
    "import": {
        "summary": "Import items from an uploaded CSV or NDJSON file",
        "value": {
            "type": "import_items",
            "file_id": "0b6c8f2e-6a4e-4f4e-9d3c-2f1d8e7a9b10",
            "options": {"strict": False},
        },
    },
    "export": {
        "summary": "Export the items tagged kitchen to a CSV file",
        "value": {"type": "export_items", "format": "csv", "tag": ["kitchen"]},
    },
}

_LOCATION_HEADER = {
    "Location": {"description": "The job: /api/v1/jobs/{id}.", "schema": {"type": "string"}}
}


@router.post(
    "",
    dependencies=[require_scope("write"), idempotent()],
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobRead,
    responses={202: {"headers": _LOCATION_HEADER}, **error_responses(403, 404, 409, 503)},
    summary="Start a background job: import items from a file, or export them to one",
)
async def create_job(
    data: Annotated[JobCreate, Body(openapi_examples=_CREATE_EXAMPLES)],
    user: CurrentUser,
    session: DbSession,
    queue: AppJobQueue,
    settings: AppSettings,
    response: Response,
) -> Job:
    job = await jobs_service.create(session, queue, user.id, data, settings=settings)
    response.headers["Location"] = f"/api/v1/jobs/{job.id}"
    return job


@router.get(
    "",
    response_model=Page[JobRead],
    summary="The caller's jobs, newest first",
)
async def list_jobs(
    user: CurrentUser,
    session: DbSession,
    page: Pagination,
    job_status: Annotated[JobStatus | None, Query(alias="status")] = None,
    job_type: Annotated[JobType | None, Query(alias="type")] = None,
) -> Page[JobRead]:
    jobs, total = await jobs_service.list_owned(
        session, user.id, page, status=job_status, job_type=job_type
    )
    return paginate(JobRead, jobs, total, page)


@router.get(
    "/{job_id}",
    response_model=JobRead,
    responses=error_responses(404),
    summary="One job: its status, progress and result",
)
async def read_job(job: OwnedJob) -> Job:
    return job


@router.post(
    "/{job_id}/cancel",
    dependencies=[require_scope("write")],
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobRead,
    responses=error_responses(403, 404, 409),
    summary="Cancel a job: a queued one never starts, a running one stops at its next chunk",
)
async def cancel_job(job: OwnedJob, session: DbSession, queue: AppJobQueue) -> Job:
    return await jobs_service.cancel(session, queue, job)
