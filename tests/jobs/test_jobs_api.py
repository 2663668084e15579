"""Jobs over HTTP with no worker running: jobs are queued on the embedded broker and stay queued,
which is what starting, listing, isolation and cancelling a queued job need."""

import uuid
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from storeroom.core.config import Settings
from storeroom.jobs import service as jobs_service
from storeroom.jobs.models import Job
from tests.conftest import run_in_app
from tests.jobs.conftest import csv_rows, get_job, queued_messages, start_import, upload


def _app(client: TestClient) -> FastAPI:
    app: FastAPI = client.app  # type: ignore[assignment]
    return app


def _export(client: TestClient, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    response = client.post(
        "/api/v1/jobs", headers=headers, json={"type": "export_items", "format": "csv", **params}
    )
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


def test_start_import_is_accepted_with_location_and_queued(
    client: TestClient, alice: dict[str, str], settings: Settings
) -> None:
    file_id = upload(client, alice, csv_rows(3))
    response = client.post(
        "/api/v1/jobs",
        headers=alice,
        json={"type": "import_items", "file_id": file_id, "options": {"strict": True}},
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["Location"] == f"/api/v1/jobs/{job['id']}"
    assert job["type"] == "import_items"
    assert job["status"] == "queued"
    assert job["params"] == {"file_id": file_id, "options": {"strict": True}}
    assert job["progress"] == {"done": 0, "total": None}
    assert job["result"] is None and job["error"] is None
    assert job["attempts"] == 0 and job["started_at"] is None and job["finished_at"] is None
    assert len(queued_messages(settings)) == 1
    assert get_job(client, alice, job["id"]) == job


def test_start_export_records_its_filters(client: TestClient, alice: dict[str, str]) -> None:
    job = _export(client, alice, q="lamp", tag=["Kitchen"], format="ndjson")
    assert job["params"] == {"format": "ndjson", "q": "lamp", "tag": ["kitchen"]}


INVALID_JOBS: list[dict[str, Any]] = [
    {"type": "reindex_everything"},
    {"file_id": str(uuid.uuid4())},
    {"type": "import_items"},
    {"type": "import_items", "file_id": "not-a-uuid"},
    {"type": "import_items", "file_id": str(uuid.uuid4()), "options": {"strict": "sometimes"}},
    {"type": "import_items", "file_id": str(uuid.uuid4()), "options": {"fast": True}},
    {"type": "export_items", "format": "xlsx"},
    {"type": "export_items", "q": "x"},
    {"type": "export_items", "surprise": 1},
]


def test_invalid_job_is_refused_and_nothing_is_queued(
    client: TestClient, alice: dict[str, str], settings: Settings
) -> None:
    for body in INVALID_JOBS:
        response = client.post("/api/v1/jobs", headers=alice, json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["code"] == "validation_error"
    assert queued_messages(settings) == []
    assert client.get("/api/v1/jobs", headers=alice).json()["total"] == 0


def test_importing_another_users_file_is_404_and_nothing_is_queued(
    client: TestClient, alice: dict[str, str], bob: dict[str, str], settings: Settings
) -> None:
    alices_file = upload(client, alice, csv_rows(3))
    response = client.post(
        "/api/v1/jobs", headers=bob, json={"type": "import_items", "file_id": alices_file}
    )
    assert response.status_code == 404
    assert response.json()["code"] == "file_not_found"
    missing = client.post(
        "/api/v1/jobs", headers=bob, json={"type": "import_items", "file_id": str(uuid.uuid4())}
    )
    assert missing.status_code == 404
    assert missing.json()["code"] == "file_not_found"
    assert queued_messages(settings) == []
    assert client.get("/api/v1/jobs", headers=bob).json()["total"] == 0


def test_another_users_job_is_404_like_a_missing_one(
    client: TestClient, alice: dict[str, str], bob: dict[str, str]
) -> None:
    job = _export(client, alice)
    for path in (f"/api/v1/jobs/{job['id']}", f"/api/v1/jobs/{uuid.uuid4()}"):
        response = client.get(path, headers=bob)
        assert response.status_code == 404
        assert response.json()["code"] == "job_not_found"
        cancel = client.post(f"{path}/cancel", headers=bob)
        assert cancel.status_code == 404
        assert cancel.json()["code"] == "job_not_found"
    assert client.get("/api/v1/jobs", headers=bob).json()["total"] == 0
    assert get_job(client, alice, job["id"])["status"] == "queued"


def test_list_is_newest_first_filtered_and_paginated(
    client: TestClient, alice: dict[str, str], bob: dict[str, str]
) -> None:
    file_id = upload(client, alice, csv_rows(2))
    first = _export(client, alice)
    imported = start_import(client, alice, file_id)
    last = _export(client, alice)
    _export(client, bob)
    client.post(f"/api/v1/jobs/{first['id']}/cancel", headers=alice)

    def ids(query: str) -> list[str]:
        response = client.get(f"/api/v1/jobs{query}", headers=alice)
        assert response.status_code == 200, response.text
        return [job["id"] for job in response.json()["items"]]

    assert ids("") == [last["id"], imported["id"], first["id"]]
    assert ids("?type=import_items") == [imported["id"]]
    assert ids("?status=cancelled") == [first["id"]]
    assert ids("?status=queued&type=export_items") == [last["id"]]
    page = client.get("/api/v1/jobs?offset=1&limit=1", headers=alice).json()
    assert [job["id"] for job in page["items"]] == [imported["id"]]
    assert (page["total"], page["offset"], page["limit"]) == (3, 1, 1)
    assert client.get("/api/v1/jobs?status=paused", headers=alice).status_code == 422


def test_read_only_api_key_can_read_jobs_but_not_start_or_cancel_them(
    client: TestClient, alice: dict[str, str]
) -> None:
    job = _export(client, alice)
    key = client.post(
        "/api/v1/users/me/api-keys", headers=alice, json={"name": "ro", "scope": "read"}
    ).json()["key"]
    reader = {"X-API-Key": key}
    assert client.get(f"/api/v1/jobs/{job['id']}", headers=reader).status_code == 200
    assert (
        client.post("/api/v1/jobs", headers=reader, json={"type": "export_items"}).status_code
        == 403
    )
    assert client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=reader).status_code == 403
    assert get_job(client, alice, job["id"])["status"] == "queued"


def test_cancelled_queued_job_never_starts(client: TestClient, alice: dict[str, str]) -> None:
    job = _export(client, alice)
    response = client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=alice)
    assert response.status_code == 202, response.text
    cancelled = response.json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["finished_at"] is not None

    # The message is still on the broker: its delivery claims nothing and runs nothing.
    app = _app(client)

    async def deliver() -> None:
        env = jobs_service.WorkerEnv(
            settings=app.state.settings,
            sessionmaker=app.state.sessionmaker,
            storage=app.state.file_storage,
            queue=app.state.job_queue,
        )
        await jobs_service.run(env, uuid.UUID(job["id"]), jobs_service.new_lease_owner())

    run_in_app(client, deliver)
    after = get_job(client, alice, job["id"])
    assert after == cancelled
    assert after["attempts"] == 0 and after["started_at"] is None


def test_cancelling_a_finished_job_is_409(client: TestClient, alice: dict[str, str]) -> None:
    job = _export(client, alice)
    assert client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=alice).status_code == 202
    again = client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=alice)
    assert again.status_code == 409
    assert again.json()["code"] == "job_finished"


def test_retried_create_with_idempotency_key_queues_one_job(
    client: TestClient, alice: dict[str, str], settings: Settings
) -> None:
    headers = {**alice, "Idempotency-Key": "export-1"}
    body = {"type": "export_items", "format": "csv"}
    first = client.post("/api/v1/jobs", headers=headers, json=body)
    again = client.post("/api/v1/jobs", headers=headers, json=body)
    assert first.status_code == again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert again.headers["Location"] == first.headers["Location"]
    assert len(queued_messages(settings)) == 1


class _BrokenQueue:
    async def send(self, job_id: uuid.UUID) -> None:
        raise ConnectionRefusedError("broker down")

    async def send_notification(self, job_id: uuid.UUID) -> None:
        raise ConnectionRefusedError("broker down")

    def close(self) -> None:
        pass


def test_job_that_cannot_be_sent_is_marked_failed_not_left_queued(
    client: TestClient, alice: dict[str, str]
) -> None:
    _app(client).state.job_queue = _BrokenQueue()
    response = client.post("/api/v1/jobs", headers=alice, json={"type": "export_items"})
    assert response.status_code == 503
    assert response.json()["code"] == "job_queue_unavailable"
    jobs = client.get("/api/v1/jobs", headers=alice).json()["items"]
    assert [(job["status"], job["error"] is not None) for job in jobs] == [("failed", True)]


def test_unreachable_broker_fails_the_job_quickly(
    client: TestClient, alice: dict[str, str], settings: Settings
) -> None:
    from storeroom.jobs.celery_app import CeleryJobQueue, create_celery

    # A port nothing listens on: the send gives up after its short retry policy.
    broken = settings.model_copy(update={"broker_url": "redis://127.0.0.1:9/0"})
    _app(client).state.job_queue = CeleryJobQueue(create_celery(broken))
    response = client.post("/api/v1/jobs", headers=alice, json={"type": "export_items"})
    assert response.status_code == 503


def test_job_rows_go_with_their_owner(client: TestClient, alice: dict[str, str]) -> None:
    _export(client, alice)
    password = "correct-horse-battery"
    deleted = client.request(
        "DELETE", "/api/v1/users/me", headers=alice, json={"current_password": password}
    )
    assert deleted.status_code == 204, deleted.text

    async def count() -> int:
        from sqlalchemy import func, select

        async with _app(client).state.sessionmaker() as session:
            return int(await session.scalar(select(func.count()).select_from(Job)) or 0)

    assert run_in_app(client, count) == 0
