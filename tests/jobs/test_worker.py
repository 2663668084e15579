"""Jobs run by a real worker process, on each broker: an import and an export to the end with
their emails, cancelling a running import, and a second delivery of a job a live worker holds."""

import time

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from storeroom.core.config import Settings
from tests.conftest import run_in_app
from tests.jobs.conftest import (
    Worker,
    csv_rows,
    get_job,
    outbox_emails,
    start_import,
    upload,
    wait_for_job,
)


@pytest.fixture
def settings(worker: Worker) -> Settings:
    return worker.fresh_settings()


def _item_names(client: TestClient, headers: dict[str, str]) -> list[str]:
    response = client.get("/api/v1/items/export?format=ndjson", headers=headers)
    assert response.status_code == 200
    import json

    return [json.loads(line)["name"] for line in response.text.splitlines()]


def _wait_for_email(settings: Settings, containing: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while not (emails := outbox_emails(settings, containing)):
        assert time.monotonic() < deadline, f"no email containing {containing!r}"
        time.sleep(0.05)
    assert len(emails) == 1, emails
    return emails[0]


def test_import_runs_to_the_end_and_emails_the_owner(
    client: TestClient, alice: dict[str, str], settings: Settings, worker: Worker
) -> None:
    content = csv_rows(5) + b"not an item,,-1,,\r\n"
    job = start_import(client, alice, upload(client, alice, content))
    done = wait_for_job(client, alice, job["id"], worker=worker)
    assert done["status"] == "succeeded", done
    assert done["result"]["imported"] == 5
    assert done["result"]["error_count"] == 1
    assert done["progress"] == {"done": 6, "total": 6}
    assert done["attempts"] == 1
    assert done["started_at"] >= done["created_at"]
    assert sorted(_item_names(client, alice)) == [f"item-{n:06d}" for n in range(5)]

    email = _wait_for_email(settings, done["id"])
    assert "To: alice@example.com" in email
    assert "Subject: Your import succeeded" in email
    assert "Items imported: 5" in email
    assert "Invalid rows: 1" in email


def test_export_emails_a_link_to_its_file(
    client: TestClient, alice: dict[str, str], settings: Settings, worker: Worker
) -> None:
    for n in range(3):
        client.post("/api/v1/items", headers=alice, json={"name": f"lamp {n}", "price": "3"})
    response = client.post(
        "/api/v1/jobs", headers=alice, json={"type": "export_items", "format": "csv"}
    )
    assert response.status_code == 202
    done = wait_for_job(client, alice, response.json()["id"], worker=worker)
    assert done["status"] == "succeeded", done
    file_id = done["result"]["file_id"]
    download = client.get(f"/api/v1/files/{file_id}/content", headers=alice)
    assert download.status_code == 200
    assert download.text.count("lamp ") == 3

    email = _wait_for_email(settings, done["id"])
    assert "Subject: Your export succeeded" in email
    assert f"{settings.public_url}/api/v1/files/{file_id}/content" in email
    assert "Items exported: 3" in email


def test_cancelling_a_running_import_stops_it_and_keeps_what_it_committed(
    client: TestClient, alice: dict[str, str], settings: Settings, worker: Worker
) -> None:
    job = start_import(client, alice, upload(client, alice, csv_rows(100_000)))
    wait_for_job(client, alice, job["id"], lambda job: job["progress"]["done"] > 0, worker=worker)
    response = client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=alice)
    assert response.status_code == 202
    assert response.json()["cancel_requested"] is True

    done = wait_for_job(client, alice, job["id"], worker=worker)
    assert done["status"] == "cancelled", done
    imported = done["result"]["imported"]
    assert 0 < imported < 100_000
    assert imported == done["progress"]["done"]  # every row so far was valid
    names = _item_names(client, alice)
    assert len(names) == imported
    assert client.get("/api/v1/items", headers=alice).json()["total"] == imported
    assert "Subject: Your import was cancelled" in _wait_for_email(settings, done["id"])


def test_a_second_delivery_of_a_job_a_live_worker_holds_does_nothing(
    client: TestClient, alice: dict[str, str], settings: Settings, worker: Worker
) -> None:
    job = start_import(client, alice, upload(client, alice, csv_rows(10_000)))
    running = wait_for_job(
        client, alice, job["id"], lambda job: job["progress"]["done"] > 0, worker=worker
    )
    app: FastAPI = client.app  # type: ignore[assignment]
    # The worker has a second process free (concurrency 2): it takes this copy at once.
    run_in_app(client, app.state.job_queue.send, running["id"])

    done = wait_for_job(client, alice, job["id"], worker=worker)
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 1
    assert done["result"]["imported"] == 10_000
    assert client.get("/api/v1/items", headers=alice).json()["total"] == 10_000
    assert len(set(_item_names(client, alice))) == 10_000
    assert "this delivery does nothing" in worker.log_text()


def test_cancelling_a_finished_job_is_409(
    client: TestClient, alice: dict[str, str], worker: Worker
) -> None:
    job = start_import(client, alice, upload(client, alice, csv_rows(1)))
    assert wait_for_job(client, alice, job["id"], worker=worker)["status"] == "succeeded"
    response = client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=alice)
    assert response.status_code == 409
    assert response.json()["code"] == "job_finished"
    assert get_job(client, alice, job["id"])["status"] == "succeeded"
