"""Jobs: the worker `storeroom serve` runs as its child on the embedded broker, so that one
command gives a working service. With a real broker, workers run on their own (`storeroom
worker`) and serve starts none."""

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from enum import Enum

from pydantic import SecretStr

from storeroom.core.config import Settings
from storeroom.core.leader import LOCK_RETRY_SECONDS, ProcessLock

logger = logging.getLogger("storeroom.jobs")

# How long a stopping worker may finish its running job (Celery's warm shutdown) before it is
# killed; the job's lease then runs out and the next worker resumes it from its checkpoint.
STOP_GRACE_SECONDS = 10.0
_RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)
# A worker that ran this long before dying restarts after the shortest delay again.
_HEALTHY_AFTER_SECONDS = 60.0
EMBEDDED_WORKER_CONCURRENCY = 2


def settings_environment(settings: Settings) -> dict[str, str]:
    """The STOREROOM_* variables that give a child process exactly these settings, whether
    they came from the environment, a .env file or code (tests)."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, list):
            value = ",".join(value)
        elif isinstance(value, Enum):
            value = value.value
        elif isinstance(value, bool):
            value = "true" if value else "false"
        env[f"STOREROOM_{name.upper()}"] = str(value)
    return env


class EmbeddedWorker:
    """Keeps one `storeroom worker` child running while the app serves: starts it, restarts it
    (with backoff) when it dies, and stops it on shutdown. Of several app processes
    (`serve --workers N`), only the one holding `<data dir>/broker/worker.lock` supervises; if
    that process exits, another takes over."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.lock = ProcessLock(settings.broker_dir / "worker.lock")
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0

    async def run(self) -> None:
        await self.lock.acquire(LOCK_RETRY_SECONDS)
        failures = 0
        while True:
            started = time.monotonic()
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "storeroom.cli",
                "worker",
                f"--concurrency={EMBEDDED_WORKER_CONCURRENCY}",
                f"--parent-pid={os.getpid()}",
                env={**os.environ, **settings_environment(self.settings)},
                # Its own process group: Ctrl+C in the terminal reaches serve only, which then
                # stops the worker in order.
                start_new_session=True,
            )
            self.starts += 1
            logger.info("started the embedded job worker (pid %s)", self.process.pid)
            code = await self.process.wait()
            failures = 0 if time.monotonic() - started > _HEALTHY_AFTER_SECONDS else failures + 1
            delay = _RESTART_DELAYS[min(failures, len(_RESTART_DELAYS) - 1)]
            logger.warning(
                "the embedded job worker (pid %s) exited with %s; restarting in %g s",
                self.process.pid,
                code,
                delay,
            )
            await asyncio.sleep(delay)

    async def stop(self) -> None:
        process = self.process
        try:
            if process is None or process.returncode is not None:
                return
            logger.info("stopping the embedded job worker (pid %s)", process.pid)
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), STOP_GRACE_SECONDS)
            except TimeoutError:
                logger.warning(
                    "the embedded job worker did not stop within %g s; killing it",
                    STOP_GRACE_SECONDS,
                )
                with contextlib.suppress(ProcessLookupError):
                    # the whole group: the pool's children too
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        finally:
            self.lock.release()


@contextlib.asynccontextmanager
async def embedded_worker(settings: Settings) -> AsyncIterator[EmbeddedWorker | None]:
    """Run the embedded worker for the duration of the block, when the broker is the embedded
    one and STOREROOM_EMBEDDED_WORKER is on."""
    if not (settings.has_embedded_broker and settings.embedded_worker):
        yield None
        return
    supervisor = EmbeddedWorker(settings)
    task = asyncio.create_task(supervisor.run())
    try:
        yield supervisor
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await supervisor.stop()
