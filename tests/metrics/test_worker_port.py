"""A `storeroom worker` of its own (not under `serve`) serves its metrics, the sum of its
prefork pool's processes, on --metrics-port."""

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from storeroom.core.config import Settings, async_database_url
from storeroom.jobs.supervisor import settings_environment
from storeroom.main import create_app
from tests.conftest import TEST_SECRET_KEY, login, register
from tests.jobs.conftest import csv_rows, start_import, upload, wait_for_job
from tests.metrics.conftest import parse, value
from tests.servers import free_port


@pytest.fixture
def worker_settings(tmp_path: Path, migrated_databases: dict[str, str]) -> Settings:
    database = tmp_path / "storeroom.db"
    shutil.copyfile(Path(migrated_databases["sqlite"].split(":///", 1)[1]), database)
    return Settings(
        database_url=async_database_url(f"sqlite:///{database}"),
        data_dir=tmp_path / "data",
        secret_key=TEST_SECRET_KEY,
        metrics_enabled=True,
        broker_polling_interval_seconds=0.05,
    )


@pytest.fixture
def metrics_port(worker_settings: Settings, tmp_path: Path) -> Iterator[int]:
    port = free_port()
    log = tmp_path / "worker.log"
    env = {**os.environ, **settings_environment(worker_settings)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "storeroom.cli", "worker", f"--metrics-port={port}"],
            env=env,
            cwd=tmp_path,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while b" ready." not in log.read_bytes():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield port
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_a_worker_serves_the_jobs_it_ran_on_its_metrics_port(
    worker_settings: Settings, metrics_port: int
) -> None:
    with TestClient(create_app(worker_settings)) as client:
        register(client, "alice@example.com")
        alice = login(client, "alice@example.com")
        job = start_import(client, alice, upload(client, alice, csv_rows(3)))
        assert wait_for_job(client, alice, job["id"])["status"] == "succeeded"

    series = parse(httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text)
    done = {"type": "import_items", "status": "succeeded"}
    assert value(series, "storeroom_jobs_finished_total", **done) == 1
    assert value(series, "storeroom_job_queue_wait_seconds_count", type="import_items") == 1
    metrics_dir = worker_settings.data_dir / "metrics" / f"worker-{metrics_port}"
    assert list(metrics_dir.glob("counter_*.db"))
