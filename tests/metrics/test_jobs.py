"""Jobs are counted however they end: not only the runs a worker finishes, but a queued job
cancelled before it started, a job the broker would not take, and the jobs the sweep ends."""

import uuid
from datetime import timedelta

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import update

from storeroom.core.config import Settings
from storeroom.core.db import utcnow
from storeroom.jobs import service as jobs_service
from storeroom.jobs.models import Job
from tests.conftest import run_in_app
from tests.metrics.conftest import scrape, value

FINISHED = "storeroom_jobs_finished_total"
DURATIONS = "storeroom_job_duration_seconds_count"


def _app(client: TestClient) -> FastAPI:
    app: FastAPI = client.app  # type: ignore[assignment]
    return app


def _export(client: TestClient, headers: dict[str, str]) -> str:
    response = client.post("/api/v1/jobs", headers=headers, json={"type": "export_items"})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def test_a_queued_job_cancelled_before_it_started_is_counted_without_a_duration(
    client: TestClient, alice: dict[str, str]
) -> None:
    labels = {"type": "export_items", "status": "cancelled"}
    job_id = _export(client, alice)
    before = scrape(client)

    cancelled = client.post(f"/api/v1/jobs/{job_id}/cancel", headers=alice)
    assert cancelled.json()["status"] == "cancelled"

    after = scrape(client)
    assert value(after, FINISHED, **labels) == value(before, FINISHED, **labels) + 1
    assert value(after, DURATIONS, **labels) == value(before, DURATIONS, **labels)


def test_a_job_the_broker_would_not_take_is_counted_as_failed(
    client: TestClient, alice: dict[str, str], settings: Settings
) -> None:
    from storeroom.jobs.celery_app import CeleryJobQueue, create_celery

    labels = {"type": "export_items", "status": "failed"}
    before = scrape(client)
    # A port nothing listens on: the send gives up after its short retry policy.
    broken = settings.model_copy(update={"broker_url": "redis://127.0.0.1:9/0"})
    _app(client).state.job_queue = CeleryJobQueue(create_celery(broken))

    response = client.post("/api/v1/jobs", headers=alice, json={"type": "export_items"})
    assert response.status_code == 503

    after = scrape(client)
    assert value(after, FINISHED, **labels) == value(before, FINISHED, **labels) + 1


def test_a_job_the_sweep_gives_up_on_is_counted_as_failed_with_its_duration(
    client: TestClient, alice: dict[str, str]
) -> None:
    labels = {"type": "export_items", "status": "failed"}
    app = _app(client)
    job_id = uuid.UUID(_export(client, alice))
    env = jobs_service.WorkerEnv(
        settings=app.state.settings,
        sessionmaker=app.state.sessionmaker,
        storage=app.state.file_storage,
        queue=app.state.job_queue,
    )

    async def claim_and_die(owner: str) -> None:
        """A worker claims the job and dies holding it: its lease runs out."""
        async with env.sessionmaker() as session:
            assert await jobs_service.claim(session, job_id, owner, lease=timedelta(seconds=30))
            await session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(lease_expires_at=utcnow() - timedelta(seconds=1))
            )
            await session.commit()

    before = scrape(client)
    for attempt in range(env.settings.job_max_attempts):
        run_in_app(client, claim_and_die, f"worker-{attempt}")
        run_in_app(client, jobs_service.sweep, env)

    assert client.get(f"/api/v1/jobs/{job_id}", headers=alice).json()["status"] == "failed"
    after = scrape(client)
    assert value(after, FINISHED, **labels) == value(before, FINISHED, **labels) + 1
    assert value(after, DURATIONS, **labels) == value(before, DURATIONS, **labels) + 1
