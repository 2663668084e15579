"""Jobs: the Celery tasks, thin: each opens its own engine and event loop for one delivery and
calls the jobs service, where the logic lives (see celery_app.py for how they are registered)."""

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from celery.exceptions import SoftTimeLimitExceeded

from storeroom.core.db import create_engine, create_sessionmaker
from storeroom.events.log import create_event_log, session_info
from storeroom.files.storage import create_storage
from storeroom.jobs import service as jobs_service
from storeroom.notifications.senders import create_sender

if TYPE_CHECKING:
    from storeroom.jobs.celery_app import StoreroomCelery

logger = logging.getLogger("storeroom.jobs")

T = TypeVar("T")

NOTIFY_MAX_RETRIES = 8
NOTIFY_MAX_DELAY_SECONDS = 600


@asynccontextmanager
async def _worker_env(app: "StoreroomCelery") -> AsyncIterator[jobs_service.WorkerEnv]:
    """Connections for one delivery's event loop, none kept past it (a pool would hold
    connections bound to a loop that is gone)."""
    from storeroom.jobs.celery_app import CeleryJobQueue

    settings = app.settings
    engine = create_engine(settings, pooled=False)
    event_log = create_event_log(settings)  # appends only: the API processes read it
    storage = create_storage(settings)
    try:
        yield jobs_service.WorkerEnv(
            settings=settings,
            sessionmaker=create_sessionmaker(engine, info=session_info(event_log)),
            storage=storage,
            queue=CeleryJobQueue(app),
        )
    finally:
        try:
            await event_log.close()
            await storage.close()
        finally:
            await engine.dispose()


def _in_worker_env(
    app: "StoreroomCelery", call: Callable[[jobs_service.WorkerEnv], Awaitable[T]]
) -> T:
    async def main() -> T:
        async with _worker_env(app) as env:
            return await call(env)

    return asyncio.run(main())


def run_job(task: Any, job_id: str) -> None:
    """Run one job (see jobs.service.run)."""
    try:
        parsed = uuid.UUID(job_id)
    except ValueError:
        logger.error("dropped a message naming no job: %r", job_id)
        return
    lease_owner = jobs_service.new_lease_owner()
    try:
        _in_worker_env(task.app, lambda env: jobs_service.run(env, parsed, lease_owner))
    except SoftTimeLimitExceeded:
        # Only a job stuck without yielding to its event loop gets here (the service's own
        # time limit stops the others first).
        limit = task.app.settings.job_soft_time_limit_seconds
        _in_worker_env(
            task.app,
            lambda env: jobs_service.fail(
                env, parsed, lease_owner, f"The job took longer than {limit:g} s."
            ),
        )


def notify_job_finished(task: Any, job_id: str) -> None:
    """Email the job's owner how it ended; a failed send is retried later, with backoff."""
    app = task.app
    settings = app.settings
    sender = create_sender(settings)

    async def send(env: jobs_service.WorkerEnv) -> None:
        await jobs_service.notify_finished(env.sessionmaker, sender, settings, uuid.UUID(job_id))

    try:
        _in_worker_env(app, send)
    except Exception as exc:
        retries = task.request.retries
        delay = min(2**retries, NOTIFY_MAX_DELAY_SECONDS)
        logger.warning(
            "could not send the email about job %s (attempt %d); retrying in %d s",
            job_id,
            retries + 1,
            delay,
            exc_info=True,
        )
        raise task.retry(exc=exc, countdown=delay) from exc


async def sweep(app: "StoreroomCelery") -> jobs_service.SweepReport:
    async with _worker_env(app) as env:
        return await jobs_service.sweep(env)
