"""Metrics from many processes: `storeroom serve --workers 2` with its embedded job worker
writes every process's values into one directory, and a scrape of either app process sums
them all (prometheus_client's multiprocess mode)."""

import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict

from tests.metrics.conftest import Series, scrape, value
from tests.servers import ServeProcess, serve

PASSWORD = "correct horse battery"
REQUESTS = "storeroom_http_requests_total"
HEALTHZ = {"method": "GET", "route": "/healthz", "status": "200"}


@pytest.fixture(scope="module")
def two_workers(
    tmp_path_factory: pytest.TempPathFactory, migrated_databases: dict[str, str]
) -> Iterator[ServeProcess]:
    workdir = tmp_path_factory.mktemp("metrics-serve")
    database = workdir / "storeroom.db"
    shutil.copyfile(Path(migrated_databases["sqlite"].split(":///", 1)[1]), database)
    env = {
        "STOREROOM_DATABASE_URL": f"sqlite:///{database}",
        "STOREROOM_METRICS_ENABLED": "true",
        "STOREROOM_EMBEDDED_WORKER": "true",
        "STOREROOM_BROKER_POLLING_INTERVAL_SECONDS": "0.05",
    }
    with serve(workdir, env, "--workers", "2") as server:
        # The probe that saw the server up is counted a moment after its answer, while the
        # process is still busy starting (its sweeps, the job worker).
        _eventually(lambda: value(_scrape(server), REQUESTS, **HEALTHZ) >= 1)
        yield server


def _scrape(server: ServeProcess) -> Series:
    with httpx.Client(base_url=server.base_url, timeout=30) as client:  # a new connection
        return scrape(client)


def _eventually(condition: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _metrics_dir(server: ServeProcess) -> Path:
    return server.log.parent / "data" / "metrics" / f"serve-{server.port}"


def _healthz_by_process(server: ServeProcess) -> dict[str, float]:
    """pid -> /healthz requests, read from each process's own counter file."""
    counts: dict[str, float] = {}
    for path in _metrics_dir(server).glob("counter_*.db"):
        pid = path.stem.rsplit("_", 1)[1]
        for key, count, _timestamp, _position in MmapedDict.read_all_values_from_file(path):
            _metric, name, labels, _help = json.loads(key)
            if name == REQUESTS and labels == HEALTHZ:
                counts[pid] = counts.get(pid, 0) + count
    return counts


def test_a_scrape_sums_the_requests_both_processes_served(two_workers: ServeProcess) -> None:
    before = value(_scrape(two_workers), REQUESTS, **HEALTHZ)
    sent = 300
    for _ in range(sent):
        # A new connection each time: the kernel hands connections to either process.
        assert httpx.get(f"{two_workers.base_url}/healthz", timeout=30).status_code == 200

    _eventually(lambda: sum(_healthz_by_process(two_workers).values()) == before + sent)
    by_process = _healthz_by_process(two_workers)
    assert len([count for count in by_process.values() if count]) == 2, by_process
    for _ in range(5):  # either process answers the scrape, and says the same
        assert value(_scrape(two_workers), REQUESTS, **HEALTHZ) == before + sent


def _token(client: httpx.Client, email: str) -> dict[str, str]:
    client.post("/api/v1/users", json={"email": email, "password": PASSWORD})
    response = client.post("/api/v1/auth/token", data={"username": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def test_a_job_run_by_the_embedded_worker_is_counted(two_workers: ServeProcess) -> None:
    with httpx.Client(base_url=two_workers.base_url, timeout=30) as client:
        alice = _token(client, "alice@example.com")
        uploaded = client.post(
            "/api/v1/files",
            headers=alice,
            files={"file": ("items.csv", b"name,price\r\nLamp,12.50\r\n", "text/csv")},
        )
        assert uploaded.status_code == 201, uploaded.text
        job = client.post(
            "/api/v1/jobs",
            headers=alice,
            json={"type": "import_items", "file_id": uploaded.json()["id"]},
        ).json()
        deadline = time.monotonic() + 60
        while client.get(f"/api/v1/jobs/{job['id']}", headers=alice).json()["status"] != (
            "succeeded"
        ):
            assert time.monotonic() < deadline, two_workers.output()
            time.sleep(0.1)

        series = scrape(client)

    done = {"type": "import_items", "status": "succeeded"}
    assert value(series, "storeroom_jobs_finished_total", **done) == 1
    assert value(series, "storeroom_job_duration_seconds_count", **done) == 1
    assert value(series, "storeroom_job_queue_wait_seconds_count", type="import_items") == 1
    assert value(series, "storeroom_file_uploads_total") >= 1


def test_open_event_streams_are_counted_over_the_processes(two_workers: ServeProcess) -> None:
    with httpx.Client(base_url=two_workers.base_url, timeout=30) as client:
        bob = _token(client, "bob@example.com")
    streams = [httpx.Client(base_url=two_workers.base_url, timeout=30) for _ in range(4)]
    try:
        opened = []
        for stream_client in streams:
            response = stream_client.send(
                stream_client.build_request("GET", "/api/v1/events", headers=bob), stream=True
            )
            assert response.status_code == 200
            chunks = response.iter_raw()  # kept: a dropped iterator closes the response
            next(chunks)  # the stream's head has been sent: it is open
            opened.append((response, chunks))
        assert value(_scrape(two_workers), "storeroom_sse_connections") == 4
        for response, _chunks in opened:
            response.close()
    finally:
        for stream_client in streams:
            stream_client.close()

    _eventually(lambda: value(_scrape(two_workers), "storeroom_sse_connections") == 0)


def test_a_failed_login_is_counted_once_whichever_process_took_it(
    two_workers: ServeProcess,
) -> None:
    with httpx.Client(base_url=two_workers.base_url, timeout=30) as client:
        _token(client, "carol@example.com")
        before = value(scrape(client), "storeroom_login_failures_total")
        response = client.post(
            "/api/v1/auth/token", data={"username": "carol@example.com", "password": "nope-nope"}
        )
        assert response.status_code == 401
        assert value(scrape(client), "storeroom_login_failures_total") == before + 1


def _streams_by_process(server: ServeProcess) -> dict[int, float]:
    """pid -> open event streams, read from each process's own live-gauge file."""
    counts: dict[int, float] = {}
    for path in _metrics_dir(server).glob("gauge_livesum_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        for key, count, _timestamp, _position in MmapedDict.read_all_values_from_file(path):
            if json.loads(key)[1] == "storeroom_sse_connections":
                counts[pid] = counts.get(pid, 0) + count
    return counts


def test_a_killed_process_stops_counting_its_open_streams(two_workers: ServeProcess) -> None:
    """Last in this module: it kills one of the server's app processes (uvicorn starts
    another). A process killed outright never runs its exit hook; the next scrape drops its
    live gauges."""
    with httpx.Client(base_url=two_workers.base_url, timeout=30) as client:
        dave = _token(client, "dave@example.com")
    with httpx.Client(base_url=two_workers.base_url, timeout=30) as stream_client:
        response = stream_client.send(
            stream_client.build_request("GET", "/api/v1/events", headers=dave), stream=True
        )
        assert response.status_code == 200
        chunks = response.iter_raw()
        next(chunks)
        assert value(_scrape(two_workers), "storeroom_sse_connections") == 1
        [holder] = [pid for pid, count in _streams_by_process(two_workers).items() if count]

        os.kill(holder, signal.SIGKILL)

        _eventually(lambda: value(_scrape(two_workers), "storeroom_sse_connections") == 0)
        assert holder not in _streams_by_process(two_workers)
        response.close()
    # The counters the dead process wrote still count: counters never go down.
    assert value(_scrape(two_workers), REQUESTS, **HEALTHZ) >= 1
