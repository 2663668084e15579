"""Jobs test plumbing: real worker processes (`python -m storeroom.cli worker`), started once per
module and broker, stopped by their PID, and the helpers the job tests share.

A module that needs a worker overrides `settings` with `worker.fresh_settings()`; its tests then
run once per broker profile: the embedded filesystem broker on SQLite always, and, when
STOREROOM_TEST_SERVICES is set, RabbitMQ on PostgreSQL and Redis on MariaDB (each needs both
servers). Every test run uses its own queue (and Redis key prefix), so parallel runs on one broker
never take each other's messages.
"""

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from storeroom.core.config import Settings, async_database_url
from storeroom.jobs.celery_app import broker_folders
from storeroom.jobs.supervisor import settings_environment
from tests.conftest import SERVICES_MODE, TEST_SECRET_KEY, _empty_tables

BROKER_URLS = {
    "rabbitmq": os.environ.get(
        "STOREROOM_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//"
    ),
    "redis": os.environ.get("STOREROOM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
}
# broker -> the database its worker tests run on
PROFILES = {"filesystem": "sqlite", "rabbitmq": "postgresql", "redis": "mariadb"}
WORKER_READY_SECONDS = 30.0
# Short enough that a killed worker's jobs are picked up again within seconds.
TEST_LEASE_SECONDS = 2.0
TEST_SWEEP_INTERVAL_SECONDS = 0.5
JOB_WAIT_SECONDS = 60.0


def _broker_reachable(url: str) -> str | None:
    """None when the broker answers, else why not."""
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=2) as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:
        return str(exc) or type(exc).__name__
    return None


def _cleanup_broker(settings: Settings) -> None:
    """Drop what a test run left on a shared broker server: its queue, exchanges and keys."""
    scheme = settings.broker_url.partition("://")[0]
    if scheme == "redis":
        import redis

        client = redis.Redis.from_url(settings.broker_url)
        try:
            keys = list(client.scan_iter(match=f"{settings.redis_key_prefix}*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()
    elif scheme == "amqp":
        from kombu import Connection

        with Connection(settings.broker_url, connect_timeout=2) as connection:
            channel = connection.default_channel
            channel.queue_delete(settings.job_queue)
            for exchange in (settings.job_queue, f"{settings.job_queue}.pidbox"):
                channel.exchange_delete(exchange)
            channel.exchange_delete(f"reply.{settings.job_queue}.pidbox")


@dataclass
class Worker:
    """A `storeroom worker` process on the module's broker and database."""

    settings: Settings
    workdir: Path
    concurrency: int = 2
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    logs: list[Path] = field(default_factory=list)

    @property
    def broker(self) -> str:
        scheme = self.settings.broker_url.partition("://")[0]
        return {"amqp": "rabbitmq"}.get(scheme, scheme)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> "Worker":
        assert self.process is None or self.process.poll() is not None, "already running"
        self.starts += 1
        log = self.workdir / f"worker-{self.starts}.log"
        self.logs.append(log)
        with log.open("wb") as output:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "storeroom.cli",
                    "worker",
                    f"--concurrency={self.concurrency}",
                    f"--hostname=test{self.starts}-{secrets.token_hex(3)}@%h",
                ],
                env={**os.environ, **settings_environment(self.settings)},
                cwd=self.workdir,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: the pool's children die with it
            )
        deadline = time.monotonic() + WORKER_READY_SECONDS
        while b" ready." not in log.read_bytes():
            if self.process.poll() is not None:
                raise RuntimeError(f"the worker exited:\n{self.log_text()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"the worker was not ready in time:\n{self.log_text()}")
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool) at once, as a crash would."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.pid, signal.SIGKILL)
        self.process.wait()

    def log_text(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-20_000:]}" for path in self.logs
        )

    def fresh_settings(self) -> Settings:
        """The module's settings, with every table emptied for the next test."""
        assert self.process is not None and self.process.poll() is None, self.log_text()
        asyncio.run(_empty_tables(self.settings.database_url))
        return self.settings


def _profile_settings(
    broker: str,
    database: str,
    migrated_databases: dict[str, str],
    workdir: Path,
    **overrides: Any,
) -> Settings:
    if database == "sqlite":
        template = Path(migrated_databases["sqlite"].split(":///", 1)[1])
        copy = workdir / "storeroom.db"
        shutil.copy(template, copy)
        database_url = async_database_url(f"sqlite:///{copy}")
    else:
        database_url = migrated_databases[database]
    run_id = secrets.token_hex(4)
    values: dict[str, Any] = {
        "database_url": database_url,
        "data_dir": workdir / "data",
        "secret_key": TEST_SECRET_KEY,
        "environment": "development",
        "broker_url": BROKER_URLS.get(broker, "filesystem://"),
        "job_queue": f"storeroom-test-{run_id}",
        "redis_key_prefix": f"storeroom-test-{run_id}:",
        "job_lease_seconds": TEST_LEASE_SECONDS,
        "job_sweep_interval_seconds": TEST_SWEEP_INTERVAL_SECONDS,
        "log_level": "INFO",
        **overrides,
    }
    return Settings(**values)


def start_worker(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    migrated_databases: dict[str, str],
    broker: str,
    **overrides: Any,
) -> Iterator[Worker]:
    """Set up a broker profile (skipping it when its servers are not enabled), start a worker
    on it, and stop it by its PID afterwards."""
    database = PROFILES[broker]
    if broker != "filesystem":
        if not SERVICES_MODE:
            pytest.skip(f"{broker} not enabled (STOREROOM_TEST_SERVICES unset)")
        problem = _broker_reachable(BROKER_URLS[broker])
        if problem is not None:
            if SERVICES_MODE == "required":
                pytest.fail(
                    f"STOREROOM_TEST_SERVICES=required but {broker} is unreachable: {problem}"
                )
            pytest.skip(f"{broker} unreachable: {problem}")
    if database not in migrated_databases:
        pytest.skip(f"{database} not enabled (STOREROOM_TEST_SERVICES={SERVICES_MODE or 'unset'})")
    workdir = tmp_path_factory.mktemp(f"worker-{broker}")
    settings = _profile_settings(broker, database, migrated_databases, workdir, **overrides)
    worker = Worker(settings, workdir)
    try:
        worker.start()
        yield worker
    finally:
        # Every test waited for its jobs; a warm shutdown would only add the prefork pool's
        # 5-6 s of stopping per module (the embedded worker's test stops one gracefully).
        worker.kill()
        if broker != "filesystem":
            _cleanup_broker(settings)
        if request.session.testsfailed:
            print(worker.log_text())  # shown with the failure's captured output


@pytest.fixture(scope="module", params=list(PROFILES))
def worker(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    migrated_databases: dict[str, str],
) -> Iterator[Worker]:
    """A real worker for this module, once per broker profile."""
    yield from start_worker(request, tmp_path_factory, migrated_databases, request.param)


# --- helpers -------------------------------------------------------------------------------


def upload(
    client: TestClient,
    headers: dict[str, str],
    content: bytes,
    filename: str = "items.csv",
    content_type: str = "text/csv",
) -> str:
    response = client.post(
        "/api/v1/files", headers=headers, files={"file": (filename, content, content_type)}
    )
    assert response.status_code == 201, response.text
    file_id: str = response.json()["id"]
    return file_id


def csv_rows(count: int, *, start: int = 0) -> bytes:
    lines = ["name,description,price,tax,tags"]
    lines += [
        f"item-{n:06d},row {n},{n % 1000}.50,20,bulk;n{n % 7}" for n in range(start, start + count)
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


def start_import(
    client: TestClient, headers: dict[str, str], file_id: str, *, strict: bool = False
) -> dict[str, Any]:
    response = client.post(
        "/api/v1/jobs",
        headers=headers,
        json={"type": "import_items", "file_id": file_id, "options": {"strict": strict}},
    )
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


def get_job(client: TestClient, headers: dict[str, str], job_id: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/jobs/{job_id}", headers=headers)
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


def wait_for_job(
    client: TestClient,
    headers: dict[str, str],
    job_id: str,
    until: Callable[[dict[str, Any]], bool] = lambda job: job["finished_at"] is not None,
    *,
    timeout: float = JOB_WAIT_SECONDS,
    worker: Worker | None = None,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = get_job(client, headers, job_id)
        if until(job):
            return job
        if time.monotonic() > deadline:
            logs = worker.log_text() if worker is not None else ""
            raise AssertionError(f"job never got there: {job}\n{logs}")
        time.sleep(0.02)


def queued_messages(settings: Settings) -> list[Path]:
    """Messages waiting in the filesystem broker's queue folder."""
    folder = broker_folders(settings)["data_folder_in"]
    return sorted(folder.glob("*.msg")) if folder.exists() else []


def outbox_emails(settings: Settings, containing: str) -> list[str]:
    if not settings.outbox_dir.exists():
        return []
    texts = [path.read_text(errors="replace") for path in sorted(settings.outbox_dir.glob("*.eml"))]
    return [text for text in texts if containing in text]
