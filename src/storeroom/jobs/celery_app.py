"""Jobs: the Celery app, built from Settings in this one place, and the queue the API sends to.

Building the app connects to nothing: Celery opens broker connections on first use. For the
`celery` command, `celery -A storeroom.jobs.celery_app inspect ping` builds it from the
environment (the module's `app`, made on first access).
"""

import asyncio
import logging
import os
import threading
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any

import anyio.to_thread
from celery import Celery, bootsteps

from storeroom.core.config import Settings, get_settings
from storeroom.core.paths import private_dir

logger = logging.getLogger("storeroom.jobs")

RUN_JOB_TASK = "storeroom.jobs.run"
# kombu's filesystem transport with messages written whole (see broker.py).
EMBEDDED_TRANSPORT = "storeroom.jobs.broker:Transport"
NOTIFY_TASK = "storeroom.jobs.notify"

# A processed message of the filesystem broker is moved aside (an atomic rename, so two workers
# never both take it) and removed after this long.
PROCESSED_MESSAGE_MAX_AGE_SECONDS = 3600
# What the worker's hard time limit adds to the jobs' own (asyncio) time limit: only a job
# stuck without yielding to its event loop ever meets it.
_HARD_LIMIT_GRACE_SECONDS = 60


class StoreroomCelery(Celery):  # type: ignore[misc]  # Celery ships no type hints
    """A Celery app that knows the Settings it was built from (tasks read them)."""

    settings: Settings


def broker_folders(settings: Settings) -> dict[str, Path]:
    """The filesystem broker's folders: one queue folder that senders write and workers read
    (one host), where taken messages go, and where exchanges are kept (the control folder
    makes `celery inspect`/`control` work)."""
    root = settings.broker_dir
    return {
        "data_folder_in": root / "queue",
        "data_folder_out": root / "queue",
        "processed_folder": root / "processed",
        "control_folder": root / "control",
    }


def _transport_options(settings: Settings) -> dict[str, Any]:
    scheme = settings.broker_url.partition("://")[0]
    if settings.has_embedded_broker:
        folders = broker_folders(settings)
        for folder in folders.values():
            private_dir(folder)
        return {
            **{name: str(folder) for name, folder in folders.items()},
            # Moved aside on the same filesystem (an atomic rename) rather than into /tmp,
            # which may be another filesystem where the move is a copy two workers could race.
            "store_processed": True,
            "polling_interval": settings.broker_polling_interval_seconds,
        }
    if scheme in ("redis", "rediss"):
        return {
            "global_keyprefix": settings.redis_key_prefix,
            # A message not acknowledged within this is delivered again. Longer than any job,
            # so a running job is not delivered twice (a second delivery would do nothing
            # anyway: the job's lease says a live worker has it).
            "visibility_timeout": settings.job_soft_time_limit_seconds
            + 2 * _HARD_LIMIT_GRACE_SECONDS,
        }
    return {}


def create_celery(settings: Settings) -> StoreroomCelery:
    from storeroom.jobs import tasks

    app = StoreroomCelery("storeroom", set_as_current=False)
    app.settings = settings
    app.conf.update(
        # kombu warns on every connection to a filesystem:// that names no host.
        broker_url="filesystem://localhost/"
        if settings.has_embedded_broker
        else settings.broker_url,
        broker_transport=EMBEDDED_TRANSPORT if settings.has_embedded_broker else None,
        broker_transport_options=_transport_options(settings),
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        # Give up sending after about a second: the API answers 503 rather than hang.
        task_publish_retry_policy={
            "max_retries": 3,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        task_default_queue=settings.job_queue,
        # Deployments sharing a broker keep their workers' remote control apart too.
        control_exchange=settings.job_queue,
        task_serializer="json",
        accept_content=["json"],
        # The job rows are the results: no result backend.
        task_ignore_result=True,
        result_backend=None,
        # A message is acknowledged after its task ran, and given back if the process
        # running it died; the job's lease makes a second delivery harmless.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=settings.job_soft_time_limit_seconds + _HARD_LIMIT_GRACE_SECONDS / 2,
        task_time_limit=settings.job_soft_time_limit_seconds + _HARD_LIMIT_GRACE_SECONDS,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        timezone="UTC",
        enable_utc=True,
    )
    app.task(name=RUN_JOB_TASK, bind=True)(tasks.run_job)
    app.task(name=NOTIFY_TASK, bind=True, max_retries=tasks.NOTIFY_MAX_RETRIES)(
        tasks.notify_job_finished
    )
    app.steps["worker"].add(JobSweeper)
    return app


class CeleryJobQueue:
    """The jobs service's JobQueue on a Celery app. Sending blocks (a file write, or a round
    trip to the broker), so it runs on a worker thread."""

    def __init__(self, celery: StoreroomCelery) -> None:
        self.celery = celery

    async def send(self, job_id: uuid.UUID) -> None:
        await anyio.to_thread.run_sync(partial(self._send, RUN_JOB_TASK, job_id))

    async def send_notification(self, job_id: uuid.UUID) -> None:
        await anyio.to_thread.run_sync(partial(self._send, NOTIFY_TASK, job_id))

    def _send(self, task_name: str, job_id: uuid.UUID) -> None:
        self.celery.send_task(task_name, args=[str(job_id)], retry=True)

    def close(self) -> None:
        self.celery.close()


# Held for the whole of each sweep, and taken by every fork of the worker's main process (the
# pool forks a new child when one dies): a child is never forked while the sweep thread holds
# some lock (a database driver's, the resolver's) that the child would inherit taken forever.
_SWEEPING = threading.Lock()
os.register_at_fork(
    before=_SWEEPING.acquire,
    after_in_parent=_SWEEPING.release,
    after_in_child=_SWEEPING.release,
)


class JobSweeper(bootsteps.StartStopStep):  # type: ignore[misc]
    """A worker step: at start and every `job_sweep_interval_seconds`, send again the jobs of
    dead workers and remove old finished jobs (see jobs.service.sweep); on the filesystem
    broker, also remove processed messages. A thread of the worker's main process, so no beat
    process is needed; every worker sweeps, and the sweep's conditional updates make that
    safe."""

    label = "storeroom job sweeper"
    requires = ("celery.worker.components:Pool",)  # start after the pool has forked

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        super().__init__(worker, **kwargs)

    def start(self, worker: Any) -> None:
        self.thread = threading.Thread(
            target=self._loop, args=(worker.app,), name="storeroom-job-sweeper", daemon=True
        )
        self.thread.start()

    def stop(self, worker: Any) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=10)

    def _loop(self, app: StoreroomCelery) -> None:
        from storeroom.jobs import tasks

        settings = app.settings
        while True:
            with _SWEEPING:
                try:
                    report = asyncio.run(tasks.sweep(app))
                    if report.requeued or report.cancelled or report.failed or report.deleted:
                        logger.info("job sweep: %s", report)
                except Exception:
                    logger.exception("the job sweep failed")
            if settings.has_embedded_broker:
                remove_processed_messages(settings)
            if self.stopping.wait(settings.job_sweep_interval_seconds):
                return


def remove_processed_messages(
    settings: Settings, max_age_seconds: float = PROCESSED_MESSAGE_MAX_AGE_SECONDS
) -> int:
    folder = broker_folders(settings)["processed_folder"]
    cutoff = time.time() - max_age_seconds
    removed = 0
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            if entry.stat().st_mtime < cutoff:
                entry.unlink()
                removed += 1
        except FileNotFoundError:
            pass  # another worker removed it
    return removed


_app_from_environment: StoreroomCelery | None = None


def __getattr__(name: str) -> StoreroomCelery:
    """`celery -A storeroom.jobs.celery_app ...`: the app from the environment's settings,
    built on first access rather than on import."""
    global _app_from_environment
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _app_from_environment is None:
        _app_from_environment = create_celery(get_settings())
    return _app_from_environment
