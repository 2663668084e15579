"""Job latency: from submit (the job row committed, its message sent) to started (a worker
claimed it), over 200 small jobs, on each broker that answers: the embedded filesystem broker
always, Redis and RabbitMQ when reachable.

A real `storeroom worker` (concurrency 2) runs against a scratch PostgreSQL database
(STOREROOM_BENCH_JOBS_LATENCY_POSTGRES_URL, default `.../storeroom_bench_jobs_latency`; SQLite
when PostgreSQL is not reachable). Jobs are submitted one at a time through the jobs service,
each once the previous one finished, so each meets an idle worker: the figure is the broker's
delivery plus the worker's pickup, not queueing. The job is an export of an empty catalog.

    .venv/bin/python -m bench jobs_latency [--jobs 200] [--brokers filesystem,redis,rabbitmq]
"""

import argparse
import asyncio
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bench.common import fresh_postgres_database
from storeroom.core.config import Settings
from storeroom.core.db import create_engine, create_sessionmaker
from storeroom.core.migrations import upgrade
from storeroom.jobs import service as jobs_service
from storeroom.jobs.celery_app import CeleryJobQueue, create_celery
from storeroom.jobs.models import Job
from storeroom.jobs.schemas import ExportItemsJob
from storeroom.jobs.supervisor import settings_environment
from storeroom.users.models import User

POSTGRES_URL = os.environ.get(
    "STOREROOM_BENCH_JOBS_LATENCY_POSTGRES_URL",
    "postgresql://root@127.0.0.1:5432/storeroom_bench_jobs_latency",
)
BROKERS = {
    "filesystem": "filesystem://",
    "redis": os.environ.get("STOREROOM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
    "rabbitmq": os.environ.get(
        "STOREROOM_BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//"
    ),
}
# What the issue measured for a bare Celery round trip on this machine class.
REFERENCE_MS = {"filesystem": 100.0, "redis": 4.0}
READY_SECONDS = 60.0
POLL_SECONDS = 0.002


def _reachable(url: str) -> bool:
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=2) as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
    except Exception:
        return False
    return True


def _database(directory: Path) -> tuple[str, str]:
    try:
        return fresh_postgres_database(POSTGRES_URL), "PostgreSQL"
    except Exception as exc:
        print(f"  (PostgreSQL unreachable: {exc}; using SQLite)")
        url = f"sqlite:///{directory / 'bench.db'}"
        upgrade(url)
        return url, "SQLite"


def _start_worker(settings: Settings, directory: Path) -> subprocess.Popen[bytes]:
    log = directory / "worker.log"
    with log.open("wb") as output:
        worker = subprocess.Popen(
            [sys.executable, "-m", "storeroom.cli", "worker", "--concurrency=2"],
            env={**os.environ, **settings_environment(settings)},
            cwd=directory,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + READY_SECONDS
    while b" ready." not in log.read_bytes():
        if worker.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"the worker did not start:\n{log.read_text()[-5000:]}")
        time.sleep(0.05)
    return worker


async def _submit_one_at_a_time(settings: Settings, jobs: int) -> list[float]:
    engine = create_engine(settings)
    sessionmaker = create_sessionmaker(engine)
    celery = create_celery(settings)
    queue = CeleryJobQueue(celery)
    latencies: list[float] = []
    try:
        async with sessionmaker() as session:
            user = User(email=f"bench-{secrets.token_hex(4)}@example.com", hashed_password="!")
            session.add(user)
            await session.commit()
            owner_id = user.id
        for _ in range(jobs):
            async with sessionmaker() as session:
                job = await jobs_service.create(
                    session, queue, owner_id, ExportItemsJob(type="export_items"), settings=settings
                )
            latencies.append(await _wait_started(sessionmaker, job.id))
    finally:
        queue.close()
        await engine.dispose()
    return latencies


async def _wait_started(sessionmaker: async_sessionmaker[AsyncSession], job_id: uuid.UUID) -> float:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        async with sessionmaker() as session:
            row = (
                await session.execute(
                    select(Job.created_at, Job.started_at, Job.finished_at).where(Job.id == job_id)
                )
            ).one()
        created_at, started_at, finished_at = row
        if finished_at is not None:  # the next job meets an idle worker
            assert started_at is not None
            return float((started_at - created_at).total_seconds() * 1000)
        await asyncio.sleep(POLL_SECONDS)
    sys.exit(f"job {job_id} did not finish within 30 s")


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run(broker: str, url: str, jobs: int) -> dict[str, float] | None:
    if broker != "filesystem" and not _reachable(url):
        print(f"{broker}: unreachable at {url}, skipped")
        return None
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        database_url, database = _database(directory)
        run_id = secrets.token_hex(4)
        settings = Settings(
            data_dir=directory / "data",
            database_url=database_url,
            secret_key="bench-" * 8,
            broker_url=url,
            job_queue=f"storeroom-bench-{run_id}",
            redis_key_prefix=f"storeroom-bench-{run_id}:",
            log_level="INFO",  # the worker says "ready" at INFO (its log is a file here)
        )
        worker = _start_worker(settings, directory)
        try:
            asyncio.run(_submit_one_at_a_time(settings, 5))  # warm up the worker's processes
            latencies = asyncio.run(_submit_one_at_a_time(settings, jobs))
        finally:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    figures = {
        "p50": statistics.median(latencies),
        "p99": _percentile(latencies, 0.99),
        "mean": statistics.fmean(latencies),
        "max": max(latencies),
    }
    polling = (
        f", polling every {settings.broker_polling_interval_seconds:g} s"
        if broker == "filesystem"
        else ""
    )
    print(
        f"{broker} ({database}{polling}): submit -> started over {jobs} jobs: "
        f"p50 {figures['p50']:.1f} ms, p99 {figures['p99']:.1f} ms, "
        f"mean {figures['mean']:.1f} ms, max {figures['max']:.1f} ms"
        + (
            f"; the issue's bare Celery round trip: ~{REFERENCE_MS[broker]:g} ms"
            if broker in REFERENCE_MS
            else ""
        )
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--brokers", default=",".join(BROKERS))
    options = parser.parse_args()
    print("jobs_latency: submit-to-started latency of small jobs, per broker")
    for broker in options.brokers.split(","):
        run(broker, BROKERS[broker], options.jobs)


if __name__ == "__main__":
    main()
