"""The worker `storeroom serve` runs by itself on the embedded broker: started with the app,
restarted when it dies, stopped with the app, and only one for several app processes."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from storeroom.core.config import Settings
from storeroom.jobs.supervisor import EmbeddedWorker, settings_environment
from storeroom.main import create_app
from tests.jobs.conftest import csv_rows, start_import, upload, wait_for_job

READY_SECONDS = 30.0


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"embedded_worker": True, "job_lease_seconds": 2.0})


@pytest.fixture
def db_backend() -> str:
    return "sqlite"  # the embedded default: SQLite and the filesystem broker


def _supervisor(client: TestClient) -> EmbeddedWorker:
    app: FastAPI = client.app  # type: ignore[assignment]
    supervisor: EmbeddedWorker = app.state.job_worker
    return supervisor


def _worker_pid(supervisor: EmbeddedWorker, starts: int) -> int:
    deadline = time.monotonic() + READY_SECONDS
    while supervisor.starts < starts or supervisor.process is None:
        assert time.monotonic() < deadline, "the embedded worker was not (re)started"
        time.sleep(0.05)
    return supervisor.process.pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def served(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_serve_runs_a_worker_restarts_it_and_stops_it(app: FastAPI) -> None:
    with TestClient(app, raise_server_exceptions=False) as client:
        new_pid = _import_twice_with_a_crash_between(client)
    assert not _alive(new_pid)  # the app shut down: so did its worker


def _import_twice_with_a_crash_between(client: TestClient) -> int:
    client.post("/api/v1/users", json={"email": "alice@example.com", "password": "a-long-password"})
    token = client.post(
        "/api/v1/auth/token", data={"username": "alice@example.com", "password": "a-long-password"}
    ).json()["access_token"]
    alice = {"Authorization": f"Bearer {token}"}
    supervisor = _supervisor(client)

    first = start_import(client, alice, upload(client, alice, csv_rows(3)))
    assert wait_for_job(client, alice, first["id"])["status"] == "succeeded"

    pid = _worker_pid(supervisor, 1)
    os.killpg(pid, signal.SIGKILL)  # the worker and its pool die at once
    second = start_import(client, alice, upload(client, alice, csv_rows(3, start=3)))
    new_pid = _worker_pid(supervisor, 2)
    assert new_pid != pid
    assert wait_for_job(client, alice, second["id"])["status"] == "succeeded"
    assert client.get("/api/v1/items", headers=alice).json()["total"] == 6
    return new_pid


def test_a_second_app_process_starts_no_second_worker(
    served: TestClient, settings: Settings
) -> None:
    supervisor = _supervisor(served)
    _worker_pid(supervisor, 1)
    other = create_app(settings)  # another `serve --workers` process, same data directory
    with TestClient(other) as other_client:
        time.sleep(1)
        assert _supervisor(other_client).process is None
    assert supervisor.starts == 1


def test_a_worker_whose_serve_was_killed_before_it_started_watching_stops(
    settings: Settings,
) -> None:
    """`serve` SIGKILLed in the second the worker takes to start: the worker is already an
    orphan when it starts watching, and must stop rather than run on unsupervised."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    worker = subprocess.Popen(
        [sys.executable, "-m", "storeroom.cli", "worker", f"--parent-pid={gone.pid}"],
        env={**os.environ, **settings_environment(settings)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, errors = worker.communicate(timeout=READY_SECONDS)
        assert worker.returncode == 0, errors
        assert "the serve process that started this worker is gone" in errors
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
            pytest.fail("the orphaned worker kept running")
