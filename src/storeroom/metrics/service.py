"""Metrics: the Prometheus series every process records, and how a scrape reads them.

A process that `storeroom serve` or `storeroom worker` started with metrics on has
PROMETHEUS_MULTIPROC_DIR set before prometheus_client is first imported: each process then
writes its values to its own files in that directory and a scrape of any one process sums them
all (`exposition`). Elsewhere (tests, a bare uvicorn) values live in the process's memory.
Recording costs a microsecond or a few (an mmap write under a lock, in multiprocess mode)
whether or not anything scrapes, so domains record unconditionally: logins, uploads and jobs
cost far more. STOREROOM_METRICS_ENABLED decides whether the per-request series (HTTP, the
pools) are recorded and whether /metrics answers.
"""

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry, QueuePool

from storeroom.metrics.processes import MULTIPROC_ENV

# Seconds; an authenticated read takes a few milliseconds, an upload or export many seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
JOB_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

HTTP_REQUESTS = Counter(
    "storeroom_http_requests",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
HTTP_REQUEST_DURATION = Histogram(
    "storeroom_http_request_duration_seconds",
    "Time from a request's arrival to the end of its response (an event stream: its whole "
    "life), by method, route template and status.",
    ["method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)

DB_POOL_SIZE = Gauge(
    "storeroom_db_pool_size",
    "Connections each pool keeps (STOREROOM_DATABASE_POOL_SIZE, ..._READER_POOL_SIZE), summed "
    "over the live processes (sampled every second, as are the two below).",
    ["pool"],
    multiprocess_mode="livesum",
)
DB_POOL_CHECKED_OUT = Gauge(
    "storeroom_db_pool_checked_out",
    "Connections in use, summed over the live processes.",
    ["pool"],
    multiprocess_mode="livesum",
)
DB_POOL_OVERFLOW = Gauge(
    "storeroom_db_pool_overflow",
    "Connections open beyond the pool's size (a burst), summed over the live processes.",
    ["pool"],
    multiprocess_mode="livesum",
)
DB_POOL_WAIT = Histogram(
    "storeroom_db_pool_wait_seconds",
    "Time a checkout waited for a pooled connection (opening one included).",
    ["pool"],
    buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
)

LOGIN_FAILURES = Counter(
    "storeroom_login_failures",
    "Password checks that failed: a wrong password or an unknown account (token form, Basic, "
    "current_password, web sign-in).",
)
THROTTLED = Counter(
    "storeroom_throttled",
    "Requests refused with 429 by a rate limit: login (failed logins) or requests "
    "(registration, password recovery).",
    ["limit"],
)

FILE_UPLOADS = Counter("storeroom_file_uploads", "Files uploaded and kept.")
FILE_UPLOAD_BYTES = Counter("storeroom_file_upload_bytes", "Bytes of the files uploaded and kept.")
FILE_DOWNLOAD_BYTES = Counter(
    "storeroom_file_download_bytes",
    "Bytes of file content sent to clients (proxied downloads; redirects send none).",
)

JOBS_FINISHED = Counter(
    "storeroom_jobs_finished",
    "Jobs a worker ran to an end, by type and status (succeeded, failed, cancelled).",
    ["type", "status"],
)
JOB_DURATION = Histogram(
    "storeroom_job_duration_seconds",
    "From a job's first start to its end, by type and status.",
    ["type", "status"],
    buckets=JOB_BUCKETS,
)
JOB_QUEUE_WAIT = Histogram(
    "storeroom_job_queue_wait_seconds",
    "From a job's creation to its first start by a worker, by type.",
    ["type"],
    buckets=JOB_BUCKETS,
)

SSE_CONNECTIONS = Gauge(
    "storeroom_sse_connections",
    "Open Server-Sent Events streams, summed over the live processes.",
    multiprocess_mode="livesum",
)


def metered_pool(name: str) -> type[AsyncAdaptedQueuePool]:
    """A pool class (SQLAlchemy's `poolclass`) that times each checkout's wait, labelled
    `pool=name`. Only the pool's own checkout path sees a wait begin: no pool event fires
    before a checkout."""
    wait = DB_POOL_WAIT.labels(pool=name)

    class MeteredPool(AsyncAdaptedQueuePool):
        def _do_get(self) -> ConnectionPoolEntry:
            started = time.perf_counter()
            try:
                return super()._do_get()
            finally:  # a timeout counts as the wait it was
                wait.observe(time.perf_counter() - started)

    MeteredPool.__name__ = MeteredPool.__qualname__ = f"MeteredPool[{name}]"
    return MeteredPool


async def sample_pools(engines: Mapping[str, AsyncEngine]) -> None:
    """Set the pool gauges from the pools as they are now. Run every second rather than at
    each checkout and checkin, where it would cost four writes per request (a few
    microseconds each in multiprocess mode) for a value scraped every few seconds."""
    for name, engine in engines.items():
        pool = engine.sync_engine.pool
        if not isinstance(pool, QueuePool):
            continue  # an in-memory SQLite database's single connection
        DB_POOL_SIZE.labels(pool=name).set(pool.size())
        DB_POOL_CHECKED_OUT.labels(pool=name).set(pool.checkedout())
        DB_POOL_OVERFLOW.labels(pool=name).set(max(0, pool.overflow()))


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


class _LiveProcessesCollector(multiprocess.MultiProcessCollector):
    """prometheus_client's collector, which first drops the live gauges of processes that
    are gone: a process killed outright (SIGKILL, the OOM killer) never ran its exit hook,
    and its open streams and pool connections would count until the directory is emptied."""

    def collect(self) -> Any:
        _forget_dead_processes(self._path)
        return super().collect()  # type: ignore[no-untyped-call]


def _forget_dead_processes(directory: str) -> None:
    """Drop the live-gauge files (`gauge_live<mode>_<pid>.db`) of PIDs that no longer exist."""
    suffixes = {path.stem.rsplit("_", 1)[1] for path in Path(directory).glob("gauge_live*_*.db")}
    for pid in (int(suffix) for suffix in suffixes if suffix.isdigit()):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
        except PermissionError:
            pass  # alive, under another user


def _registry() -> CollectorRegistry:
    directory = multiprocess_dir()
    if directory is None:
        return REGISTRY
    registry = CollectorRegistry()
    _LiveProcessesCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return registry


def exposition() -> tuple[bytes, str]:
    """The text a scrape gets: every process's values summed when they share a directory."""
    return generate_latest(_registry()), CONTENT_TYPE_LATEST


def serve_on_port(host: str, port: int) -> None:
    """Serve the exposition on a port of its own, from a daemon thread (`storeroom worker`,
    which has no HTTP server)."""
    start_http_server(port, addr=host, registry=_registry())


def forget_process() -> None:
    """At a process's exit: its "live" gauges (open streams, pool connections) stop counting."""
    directory = multiprocess_dir()
    if directory is not None:
        multiprocess.mark_process_dead(os.getpid(), directory)  # type: ignore[no-untyped-call]
