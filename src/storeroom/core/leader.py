"""Work that must run in one process of several: `storeroom serve --workers N` starts N app
processes on one data directory, and housekeeping (sweeps, the embedded job worker) belongs to
whichever of them holds its lock file there. When that process exits, however it exits, the
kernel releases its lock and another takes the work over within `LOCK_RETRY_SECONDS`."""

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from storeroom.core.paths import private_dir

logger = logging.getLogger("storeroom")

# How often a process that does not hold a lock checks whether it can take it.
LOCK_RETRY_SECONDS = 5.0


class ProcessLock:
    """An exclusive lock (flock) on `path`, taken without waiting; held until `release` or
    until the process exits."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        private_dir(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    async def acquire(self, retry_seconds: float = LOCK_RETRY_SECONDS) -> None:
        while not self.try_acquire():  # noqa: ASYNC110  # a file lock has no event to wait on
            await asyncio.sleep(retry_seconds)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None


@contextlib.asynccontextmanager
async def periodically(
    work: Callable[[], Awaitable[None]],
    interval_seconds: float,
    *,
    what: str,
    lock_path: Path | None,
    at_start: bool = True,
) -> AsyncIterator[None]:
    """Run `work` every `interval_seconds` until the block exits, in the one process holding
    `lock_path` (every process that enters the block, without one); with `at_start`, also at
    once. When this process takes the lock at once, that first run is over before the block is
    entered, so a startup sweep is done before the app serves. A failed run is logged; the
    next one comes."""
    lock = ProcessLock(lock_path) if lock_path is not None else None

    async def run() -> None:
        try:
            await work()
        except Exception:
            logger.exception("%s failed", what)

    async def lead(ran_at_start: bool) -> None:
        if not ran_at_start:
            assert lock is not None
            await lock.acquire()
            logger.info("%s: done by this process (pid %s) from now on", what, os.getpid())
            if at_start:
                await run()
        while True:
            await asyncio.sleep(interval_seconds)
            await run()

    leading = lock is None or lock.try_acquire()
    if lock is not None and leading:
        logger.info("%s: done by this process (pid %s)", what, os.getpid())
    if leading and at_start:
        await run()
    task = asyncio.create_task(lead(leading))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if lock is not None:
            lock.release()
