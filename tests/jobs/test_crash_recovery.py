"""The crash test, on each broker: SIGKILL the whole worker in the middle of a 50,000-row import,
start a new one, and the job finishes with exactly the file's rows: none lost, none twice.

No broker redelivers the running task of a worker killed this way in time (the filesystem
broker never does; Redis only after its visibility timeout; RabbitMQ does at once, while the
dead worker's lease still holds, so that delivery does nothing). The job's lease runs out and
the new worker's sweep sends it again; the import resumes after its last committed chunk."""

import time

import pytest
from fastapi.testclient import TestClient

from storeroom.core.config import Settings
from tests.jobs.conftest import Worker, csv_rows, start_import, upload, wait_for_job

ROWS = 50_000


@pytest.fixture
def settings(worker: Worker) -> Settings:
    return worker.fresh_settings()


def test_worker_killed_mid_import_then_restarted_imports_every_row_once(
    client: TestClient, alice: dict[str, str], worker: Worker
) -> None:
    job = start_import(client, alice, upload(client, alice, csv_rows(ROWS)))
    submitted = time.monotonic()
    running = wait_for_job(
        client, alice, job["id"], lambda job: job["progress"]["done"] >= ROWS // 5, worker=worker
    )
    worker.kill()
    killed = time.monotonic()
    done_at_kill = running["progress"]["done"]
    assert 0 < done_at_kill < ROWS

    worker.start()
    restarted = time.monotonic()
    done = wait_for_job(client, alice, job["id"], worker=worker)
    finished = time.monotonic()

    assert done["status"] == "succeeded", done
    assert done["attempts"] == 2
    assert done["result"]["imported"] == ROWS
    assert done["result"]["error_count"] == 0
    assert done["progress"] == {"done": ROWS, "total": ROWS}
    # Counted twice: from the owner's item counter, and by matching every row.
    assert client.get("/api/v1/items", headers=alice).json()["total"] == ROWS
    assert client.get("/api/v1/items?q=item-", headers=alice).json()["total"] == ROWS
    export = client.get("/api/v1/items/export?format=csv", headers=alice)
    names = [line.split(",", 2)[1] for line in export.text.splitlines()[1:]]
    assert len(names) == ROWS
    assert set(names) == {f"item-{n:06d}" for n in range(ROWS)}
    print(
        f"\n[{worker.broker}] killed {killed - submitted:.2f} s after submit at "
        f"{done_at_kill}/{ROWS} rows; new worker ready in {restarted - killed:.2f} s; "
        f"job finished {finished - restarted:.2f} s later "
        f"({finished - killed:.2f} s after the kill)"
    )
