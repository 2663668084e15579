"""Events across processes, with real `storeroom serve` processes on the embedded default: a
running import's progress from the embedded worker, and streams ending cleanly when the
server stops."""

import os
import shutil
import signal
import time
from pathlib import Path

import httpx

from tests.conftest import login, register
from tests.events.conftest import EventStream
from tests.jobs.conftest import csv_rows
from tests.servers import serve

ROWS = 3500  # four chunks of the import


def upload_csv(api: httpx.Client, who: dict[str, str], rows: int) -> str:
    response = api.post(
        "/api/v1/files", headers=who, files={"file": ("items.csv", csv_rows(rows), "text/csv")}
    )
    assert response.status_code == 201, response.text
    file_id: str = response.json()["id"]
    return file_id


def start_import(api: httpx.Client, who: dict[str, str], file_id: str) -> str:
    response = api.post(
        "/api/v1/jobs", headers=who, json={"type": "import_items", "file_id": file_id}
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def account(api: httpx.Client, email: str) -> dict[str, str]:
    register(api, email)  # type: ignore[arg-type]
    return login(api, email)  # type: ignore[arg-type]


def follow_import(stream: EventStream, job_id: str) -> list[tuple[str, int]]:
    """(type, done) of the job's events until it ends; nothing but the job's events comes."""
    seen = []
    while True:
        event = stream.next()
        assert event.data["data"]["id"] == job_id, event
        seen.append((event.type, event.data["data"]["progress"]["done"]))
        if event.type in ("job.succeeded", "job.failed", "job.cancelled"):
            return seen


def assert_import_progress(seen: list[tuple[str, int]], rows: int) -> None:
    assert seen[-1] == ("job.succeeded", rows), seen
    progress = [done for type_, done in seen if type_ == "job.progress"]
    assert len(progress) >= 4, seen  # a start and one per committed chunk
    assert progress == sorted(progress) and progress[-1] == rows


def migrated_sqlite(migrated_databases: dict[str, str], tmp_path: Path) -> dict[str, str]:
    template = Path(migrated_databases["sqlite"].split(":///", 1)[1])
    copy = tmp_path / "storeroom.db"
    shutil.copy(template, copy)
    return {"STOREROOM_DATABASE_URL": f"sqlite:///{copy}"}


def test_a_running_import_streams_its_progress_from_the_embedded_worker(
    tmp_path: Path, migrated_databases: dict[str, str]
) -> None:
    env = {**migrated_sqlite(migrated_databases, tmp_path), "STOREROOM_EMBEDDED_WORKER": "true"}
    with serve(tmp_path, env) as server, httpx.Client(base_url=server.base_url) as api:
        alice = account(api, "alice@example.com")
        file_id = upload_csv(api, alice, ROWS)
        everything = EventStream(server.base_url, "/api/v1/events", alice).open()
        job_id = start_import(api, alice, file_id)
        one_job = EventStream(server.base_url, f"/api/v1/jobs/{job_id}/events", alice).open()
        queued = everything.next()
        assert (queued.type, queued.data["data"]["id"]) == ("job.queued", job_id)
        seen = follow_import(everything, job_id)
        assert_import_progress(seen, ROWS)
        everything.assert_quiet()  # progress per chunk, never an item.created per row
        job_seen = follow_import(one_job, job_id)
        assert job_seen[-1] == ("job.succeeded", ROWS)
        one_job.assert_ended()
        assert one_job.ended_cleanly
        items = api.get("/api/v1/items?limit=1", headers=alice).json()
        assert items["total"] == ROWS
        everything.close()


def test_open_streams_end_cleanly_when_the_server_stops(
    tmp_path: Path, migrated_databases: dict[str, str]
) -> None:
    env = migrated_sqlite(migrated_databases, tmp_path)
    with serve(tmp_path, env) as server, httpx.Client(base_url=server.base_url) as api:
        alice = account(api, "alice@example.com")
        streams = [EventStream(server.base_url, "/api/v1/events", alice).open() for _ in range(3)]
        stopping = time.monotonic()
        os.killpg(server.process.pid, signal.SIGTERM)
        for stream in streams:
            stream.assert_ended(timeout=10)
            assert stream.ended_cleanly, stream.error
        assert server.process.wait(timeout=10) in (0, -signal.SIGTERM)
        assert time.monotonic() - stopping < 5, "the server waited for the streams"
