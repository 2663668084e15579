"""Jobs: creating, listing and cancelling jobs; claiming, running and finishing one in a worker;
the sweep that sends again the jobs of dead workers and removes old finished jobs.

The job row is the truth; the broker only carries "run job X". A run claims its job with one
conditional UPDATE that takes a lease (who, until when), so a second delivery of a job that a
live worker holds does nothing. Every chunk a runner commits renews the lease and records the
runner's checkpoint in the same transaction as the chunk's own writes, and only while the lease
is still this run's: a run that lost its job to another worker commits nothing more.
"""

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

from sqlalchemy import CursorResult, Result, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storeroom.core.config import Settings
from storeroom.core.db import commit, utcnow
from storeroom.core.pagination import PageParams
from storeroom.files import service as files_service
from storeroom.files.storage import Storage
from storeroom.jobs.context import JobContext
from storeroom.jobs.events import record_job_event
from storeroom.jobs.exceptions import (
    JobCancelled,
    JobFailed,
    JobFinished,
    JobNotFound,
    JobQueueUnavailable,
    LeaseLost,
)
from storeroom.jobs.models import FINISHED, UNFINISHED, Job, JobStatus, JobType
from storeroom.jobs.schemas import ExportItemsJob, ImportItemsJob
from storeroom.metrics import service as metrics_service
from storeroom.notifications import service as notifications_service
from storeroom.notifications.senders import EmailSender
from storeroom.users.models import User

logger = logging.getLogger("storeroom.jobs")

Runner = Callable[[JobContext], Awaitable[dict[str, Any]]]

# The retention sweep deletes at most this many rows per statement.
_DELETE_BATCH = 1000
# The recovery sweep looks at this many expired jobs per round.
_SWEEP_BATCH = 500


class JobQueue(Protocol):
    """Where "run job X" messages go (the Celery broker; see celery_app.py)."""

    async def send(self, job_id: uuid.UUID) -> None: ...

    async def send_notification(self, job_id: uuid.UUID) -> None: ...


# --- the API side --------------------------------------------------------------------------


async def create(
    session: AsyncSession,
    queue: JobQueue,
    owner_id: int,
    data: ImportItemsJob | ExportItemsJob,
    *,
    settings: Settings,
) -> Job:
    """Commit the job row, then send its task: a worker never receives a job that does not
    exist. If the send fails the job is marked failed (not left queued forever) and
    JobQueueUnavailable is raised."""
    if isinstance(data, ImportItemsJob):
        await files_service.get_owned(session, owner_id, data.file_id)  # 404 unless theirs
    now = utcnow()
    job = Job(
        owner_id=owner_id,
        type=data.type,
        status=JobStatus.queued,
        params=data.model_dump(mode="json", exclude={"type"}),
        checkpoint={},
        created_at=now,
        lease_expires_at=now + timedelta(seconds=settings.job_requeue_seconds),
    )
    session.add(job)
    await session.flush()
    await record_job_event(session, job)
    await commit(session)
    try:
        await queue.send(job.id)
    except Exception as exc:
        logger.exception("could not send job %s to the broker", job.id)
        job.status = JobStatus.failed
        job.error = "The job could not be queued: the broker was unreachable."
        job.finished_at = utcnow()
        job.lease_expires_at = None
        await session.flush()
        await record_job_event(session, job)
        await commit(session)
        _count_finished(job)
        raise JobQueueUnavailable() from exc
    return job


async def get_owned(session: AsyncSession, owner_id: int, job_id: uuid.UUID) -> Job:
    job = await session.scalar(select(Job).where(Job.id == job_id, Job.owner_id == owner_id))
    if job is None:
        raise JobNotFound()
    return job


async def list_owned(
    session: AsyncSession,
    owner_id: int,
    page: PageParams,
    *,
    status: JobStatus | None = None,
    job_type: JobType | None = None,
) -> tuple[Sequence[Job], int]:
    query = select(Job).where(Job.owner_id == owner_id)
    if status is not None:
        query = query.where(Job.status == status)
    if job_type is not None:
        query = query.where(Job.type == job_type)
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    rows = await session.scalars(
        query.order_by(Job.created_at.desc(), Job.id.desc()).offset(page.offset).limit(page.limit)
    )
    return rows.all(), total or 0


async def cancel(session: AsyncSession, queue: JobQueue, job: Job) -> Job:
    """A queued job is cancelled at once and never starts; so is a running one whose worker
    died. A live running one is asked to stop: its runner stops at the next chunk boundary,
    keeping what it committed. A finished job is a JobFinished (409)."""
    if job.is_finished:
        raise JobFinished()
    now = utcnow()
    stopped = _rowcount(
        await session.execute(
            update(Job)
            .where(
                Job.id == job.id,
                Job.status.in_(UNFINISHED),
                or_(Job.status == JobStatus.queued, Job.lease_expires_at < now),
            )
            .values(
                status=JobStatus.cancelled,
                finished_at=now,
                lease_owner=None,
                lease_expires_at=None,
                result={"done": job.progress_done, "total": job.progress_total},
            )
            .execution_options(synchronize_session=False)
        )
    )
    flagged = 0
    if not stopped:
        flagged = _rowcount(
            await session.execute(
                update(Job)
                .where(Job.id == job.id, Job.status == JobStatus.running)
                .values(cancel_requested=True)
                .execution_options(synchronize_session=False)
            )
        )
    await session.refresh(job)
    if stopped or flagged:
        await record_job_event(session, job)
    # Committed here rather than by the request's session: the worker and the email task read
    # the row as soon as they are told.
    await commit(session)
    if not (stopped or flagged):
        if job.is_finished:  # it finished before the cancel arrived
            raise JobFinished()
        return await cancel(session, queue, job)  # it changed state meanwhile: look again
    if stopped:
        _count_finished(job)
        await _send_notification(queue, job.id)
    return job


def _count_finished(job: Job) -> None:
    """Count a job that has just ended, wherever it ended: its run, a cancel before it
    started, the sweep, or a broker that would not take it. Its duration runs from its first
    start, so a job that never started adds none."""
    labels = {"type": job.type, "status": str(job.status)}
    metrics_service.JOBS_FINISHED.labels(**labels).inc()
    if job.started_at is not None and job.finished_at is not None:
        metrics_service.JOB_DURATION.labels(**labels).observe(
            (job.finished_at - job.started_at).total_seconds()
        )


def _rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE or DELETE matched (MariaDB included: SQLAlchemy asks for found rows)."""
    return cast(CursorResult[Any], result).rowcount


async def _send_notification(queue: JobQueue, job_id: uuid.UUID) -> None:
    try:
        await queue.send_notification(job_id)
    except Exception:
        logger.exception("could not queue the email about job %s", job_id)


# --- the worker side -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerEnv:
    """What a worker process runs jobs with."""

    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    storage: Storage
    queue: JobQueue


def new_lease_owner() -> str:
    """Names one run of one job: the host and process (for people reading the row) and a
    random part (so two runs in one process never pass for each other)."""
    return f"{socket.gethostname()[:30]}/{os.getpid()}/{uuid.uuid4().hex[:16]}"


def _runner(job_type: str) -> Runner:
    if job_type == JobType.import_items:
        from storeroom.jobs.imports import run_import

        return run_import
    if job_type == JobType.export_items:
        from storeroom.jobs.exports import run_export

        return run_export
    raise JobFailed(f"Unknown job type {job_type!r}")


async def claim(
    session: AsyncSession, job_id: uuid.UUID, lease_owner: str, *, lease: timedelta
) -> bool:
    """Take the job for this run if it is queued, or running under a lease that ran out (its
    worker died). One conditional UPDATE: of two runs racing, exactly one gets it."""
    now = utcnow()
    result = await session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            or_(
                Job.status == JobStatus.queued,
                (Job.status == JobStatus.running) & (Job.lease_expires_at < now),
            ),
        )
        .values(
            status=JobStatus.running,
            lease_owner=lease_owner,
            lease_expires_at=now + lease,
            attempts=Job.attempts + 1,
            started_at=func.coalesce(Job.started_at, now),
        )
        .execution_options(synchronize_session=False)
    )
    return bool(_rowcount(result))


async def run(env: WorkerEnv, job_id: uuid.UUID, lease_owner: str) -> None:
    """One delivery of "run job X": claim it, run its runner, record how it ended and send
    the email. A delivery that cannot claim the job (finished, cancelled, or held by a live
    worker) does nothing."""
    lease = timedelta(seconds=env.settings.job_lease_seconds)
    async with env.sessionmaker() as session:
        claimed = await claim(session, job_id, lease_owner, lease=lease)
        job = await session.get(Job, job_id)
        if claimed and job is not None:
            await record_job_event(session, job)
        await commit(session)
    if claimed and job is not None and job.attempts == 1 and job.started_at is not None:
        metrics_service.JOB_QUEUE_WAIT.labels(type=job.type).observe(
            (job.started_at - job.created_at).total_seconds()
        )
    if job is None:
        logger.info("job %s no longer exists; nothing to run", job_id)
        return
    if not claimed:
        logger.info(
            "job %s is %s (lease %s until %s); this delivery does nothing",
            job_id,
            job.status,
            job.lease_owner,
            job.lease_expires_at,
        )
        return
    claimed_run = _Run(env, job, lease_owner, lease)
    status, result, error = await claimed_run.execute()
    if status is None:
        return  # another worker holds the job now
    if await claimed_run.finish(status, result, error):
        await _send_notification(env.queue, job.id)


async def fail(env: WorkerEnv, job_id: uuid.UUID, lease_owner: str, error: str) -> None:
    """Fail a job this run holds, from outside its runner (the worker's time limit)."""
    async with env.sessionmaker() as session:
        job = await session.get(Job, job_id)
    if job is None:
        return
    if await _Run(env, job, lease_owner, timedelta(0)).finish(JobStatus.failed, None, error):
        await _send_notification(env.queue, job.id)


class _Run:
    """One claimed run of one job: its runner, the chunk commits, the lease kept alive."""

    def __init__(self, env: WorkerEnv, job: Job, lease_owner: str, lease: timedelta) -> None:
        self.env = env
        self.job = job  # detached from its session: a snapshot for events
        self.lease_owner = lease_owner
        self.lease = lease
        self.lease_lost = False

    def _owned(self) -> Any:
        return (
            (Job.id == self.job.id)
            & (Job.lease_owner == self.lease_owner)
            & (Job.status == JobStatus.running)
        )

    async def execute(
        self,
    ) -> tuple[JobStatus | None, dict[str, Any] | None, str | None]:
        """Run the runner; (status, result, error) of how it ended, status None if the lease
        was lost."""
        job = self.job
        if job.cancel_requested:
            return JobStatus.cancelled, _progress_result(job), None
        context = JobContext(
            job_id=job.id,
            owner_id=job.owner_id,
            params=dict(job.params),
            checkpoint=dict(job.checkpoint or {}),
            sessionmaker=self.env.sessionmaker,
            storage=self.env.storage,
            settings=self.env.settings,
            _commit_chunk=self._commit_chunk,
        )
        work = asyncio.ensure_future(self._run_runner(context))
        keeper = asyncio.ensure_future(self._keep_lease(work))
        try:
            return await work
        except asyncio.CancelledError:
            if self.lease_lost:
                logger.warning("job %s: lease lost, another worker runs it now", job.id)
                return None, None, None
            raise
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def _run_runner(
        self, context: JobContext
    ) -> tuple[JobStatus | None, dict[str, Any] | None, str | None]:
        job = self.job
        limit = self.env.settings.job_soft_time_limit_seconds
        try:
            async with asyncio.timeout(limit):
                result = await _runner(job.type)(context)
        except JobCancelled as exc:
            logger.info("job %s cancelled after %s done", job.id, job.progress_done)
            return JobStatus.cancelled, exc.result or _progress_result(job), None
        except JobFailed as exc:
            logger.info("job %s failed: %s", job.id, exc.message)
            return JobStatus.failed, exc.result, exc.message
        except LeaseLost:
            logger.warning("job %s: lease lost, another worker runs it now", job.id)
            return None, None, None
        except TimeoutError:
            logger.warning("job %s ran out of time (%s s)", job.id, limit)
            return JobStatus.failed, _progress_result(job), f"The job took longer than {limit:g} s."
        except Exception:
            logger.exception("job %s failed unexpectedly", job.id)
            return JobStatus.failed, _progress_result(job), "The job failed (internal error)."
        return JobStatus.succeeded, result, None

    async def _commit_chunk(
        self, session: AsyncSession, checkpoint: dict[str, Any], done: int, total: int | None
    ) -> None:
        if self.lease_lost:
            await session.rollback()
            raise LeaseLost()
        result = await session.execute(
            update(Job)
            .where(self._owned())
            .values(
                checkpoint=checkpoint,
                progress_done=done,
                progress_total=total,
                lease_expires_at=utcnow() + self.lease,
            )
            .execution_options(synchronize_session=False)
        )
        if not _rowcount(result):
            await session.rollback()
            self.lease_lost = True
            raise LeaseLost()
        cancel_requested = await session.scalar(
            select(Job.cancel_requested).where(Job.id == self.job.id)
        )
        self.job.progress_done = done
        self.job.progress_total = total
        self.job.checkpoint = checkpoint
        self.job.cancel_requested = bool(cancel_requested)
        await record_job_event(session, self.job)
        await commit(session)
        if cancel_requested:
            raise JobCancelled()

    async def _keep_lease(self, work: "asyncio.Future[Any]") -> None:
        """Renew the lease a third of the way through it, between chunk commits too (a long
        step without one, like counting a file's rows, must not look like a dead worker).
        When the job turns out to be someone else's, stop the runner."""
        interval = self.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            try:
                async with self.env.sessionmaker() as session:
                    result = await session.execute(
                        update(Job)
                        .where(self._owned())
                        .values(lease_expires_at=utcnow() + self.lease)
                        .execution_options(synchronize_session=False)
                    )
                    await session.commit()
            except Exception:  # a busy or unreachable database: the chunk commit decides
                logger.warning("job %s: could not renew its lease", self.job.id, exc_info=True)
                continue
            if not _rowcount(result):
                self.lease_lost = True
                work.cancel()
                return

    async def finish(
        self, status: JobStatus, result: dict[str, Any] | None, error: str | None
    ) -> bool:
        """Record how the run ended, if the job is still this run's."""
        now = utcnow()
        async with self.env.sessionmaker() as session:
            outcome = await session.execute(
                update(Job)
                .where(self._owned())
                .values(
                    status=status,
                    result=result,
                    error=error,
                    finished_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                )
                .execution_options(synchronize_session=False)
            )
            if _rowcount(outcome):
                job = self.job
                job.status, job.result, job.error, job.finished_at = status, result, error, now
                await record_job_event(session, job)
            await commit(session)
        if not _rowcount(outcome):
            logger.warning("job %s: lease lost before it could be marked %s", self.job.id, status)
            return False
        _count_finished(self.job)
        return True


def _progress_result(job: Job) -> dict[str, Any]:
    return {"done": job.progress_done, "total": job.progress_total}


# --- the sweep -----------------------------------------------------------------------------


@dataclass(slots=True)
class SweepReport:
    requeued: int = 0
    cancelled: int = 0
    failed: int = 0
    deleted: int = 0


async def sweep(env: WorkerEnv) -> SweepReport:
    """Send again every unfinished job whose lease ran out (its worker died, or its message
    was lost), cancel those whose cancel was requested, fail those whose workers died too often;
    delete finished jobs past their retention. Every change is conditional on the lease still
    having run out, so workers sweeping together act on each job once."""
    settings = env.settings
    report = SweepReport()
    now = utcnow()
    async with env.sessionmaker() as session:
        expired = (
            await session.execute(
                select(
                    Job.id,
                    Job.status,
                    Job.attempts,
                    Job.cancel_requested,
                    Job.progress_done,
                    Job.progress_total,
                )
                .where(Job.status.in_(UNFINISHED), Job.lease_expires_at < now)
                .order_by(Job.lease_expires_at)
                .limit(_SWEEP_BATCH)
            )
        ).all()
    for job_id, status, attempts, cancel_requested, done, total in expired:
        still_expired = (Job.id == job_id) & (Job.status == status) & (Job.lease_expires_at < now)
        values: dict[str, Any]
        if cancel_requested:
            values = {
                "status": JobStatus.cancelled,
                "finished_at": now,
                "result": {"done": done, "total": total},
            }
        elif status == JobStatus.running and attempts >= settings.job_max_attempts:
            values = {
                "status": JobStatus.failed,
                "finished_at": now,
                "error": f"The worker running this job stopped {attempts} times; gave up.",
            }
        else:
            values = {
                "status": JobStatus.queued,
                "lease_expires_at": now + timedelta(seconds=settings.job_requeue_seconds),
            }
        values.setdefault("lease_expires_at", None)
        async with env.sessionmaker() as session:
            changed = await session.execute(
                update(Job)
                .where(still_expired)
                .values(lease_owner=None, **values)
                .execution_options(synchronize_session=False)
            )
            if not _rowcount(changed):
                await commit(session)
                continue
            job = await session.get(Job, job_id)
            if job is not None:
                await record_job_event(session, job)
            await commit(session)
        if job is None:
            continue
        if job.status == JobStatus.queued:
            report.requeued += 1
            logger.info("job %s: lease ran out (%s), sent again", job_id, status)
            try:
                await env.queue.send(job_id)
            except Exception:  # the next sweep after job_requeue_seconds tries again
                logger.exception("could not send job %s again", job_id)
        else:
            if job.status == JobStatus.cancelled:
                report.cancelled += 1
            else:
                report.failed += 1
            _count_finished(job)
            await _send_notification(env.queue, job_id)
    report.deleted = await delete_expired(
        env.sessionmaker, now - timedelta(days=settings.job_retention_days)
    )
    return report


async def delete_expired(
    sessionmaker: async_sessionmaker[AsyncSession], finished_before: datetime
) -> int:
    deleted = 0
    while True:
        async with sessionmaker() as session:
            ids = (
                await session.scalars(
                    select(Job.id).where(Job.finished_at < finished_before).limit(_DELETE_BATCH)
                )
            ).all()
            if not ids:
                return deleted
            await session.execute(delete(Job).where(Job.id.in_(ids)))
            await session.commit()
        deleted += len(ids)


# --- the email -----------------------------------------------------------------------------


async def notify_finished(
    sessionmaker: async_sessionmaker[AsyncSession],
    sender: EmailSender,
    settings: Settings,
    job_id: uuid.UUID,
) -> None:
    """Email the owner how their job ended. Raises when the email cannot be sent (the task
    retries it); the job itself is never changed."""
    async with sessionmaker() as session:
        row = (
            await session.execute(
                select(Job, User.email).join(User, User.id == Job.owner_id).where(Job.id == job_id)
            )
        ).one_or_none()
    if row is None:
        logger.info("job %s is gone; no email", job_id)
        return
    job, email = row
    if job.status not in FINISHED:
        logger.warning("job %s is %s, not finished; no email", job_id, job.status)
        return
    message = await asyncio.to_thread(
        notifications_service.job_finished_email, settings, email, **_email_facts(job)
    )
    await sender.send(message)
    logger.info("sent the job %s email (%s) to %s", job.id, job.status, email)


_WHAT = {JobType.import_items: "import", JobType.export_items: "export"}
_OUTCOME = {
    JobStatus.succeeded: "succeeded",
    JobStatus.failed: "failed",
    JobStatus.cancelled: "was cancelled",
}


# How the runners' result counts read in an email; any other count shows under its own key.
_COUNT_LABELS = {
    "imported": "Items imported",
    "error_count": "Invalid rows",
    "rows": "Items exported",
    "size": "File size (bytes)",
}


def _email_facts(job: Job) -> dict[str, Any]:
    result = job.result or {}
    counts = [
        (_COUNT_LABELS.get(key, key.replace("_", " ").capitalize()), value)
        for key, value in result.items()
        if isinstance(value, int) and not isinstance(value, bool) and key not in ("done", "total")
    ]
    file_id = result.get("file_id")
    return {
        "what": _WHAT.get(JobType(job.type), job.type),
        "outcome": _OUTCOME[JobStatus(job.status)],
        "job_id": str(job.id),
        "done": job.progress_done,
        "total": job.progress_total,
        "counts": counts,
        "error": job.error,
        "file_id": str(file_id) if file_id else None,
    }
