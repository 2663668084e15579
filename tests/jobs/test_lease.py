"""The lease and the sweep, through the jobs service with no broker: who may run a job, what a
run that lost its job may still commit, and what the sweep does with the jobs of dead workers."""

import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from storeroom.core.db import utcnow
from storeroom.items import service as items_service
from storeroom.items.models import Item
from storeroom.items.schemas import ItemCreate
from storeroom.jobs import service as jobs_service
from storeroom.jobs.context import JobContext
from storeroom.jobs.models import Job
from tests.conftest import run_in_app

LEASE = timedelta(seconds=30)


class RecordingQueue:
    def __init__(self) -> None:
        self.sent: list[uuid.UUID] = []
        self.notified: list[uuid.UUID] = []

    async def send(self, job_id: uuid.UUID) -> None:
        self.sent.append(job_id)

    async def send_notification(self, job_id: uuid.UUID) -> None:
        self.notified.append(job_id)

    def close(self) -> None:
        pass


@pytest.fixture
def queue(client: TestClient) -> RecordingQueue:
    recording = RecordingQueue()
    app: FastAPI = client.app  # type: ignore[assignment]
    app.state.job_queue = recording
    return recording


@pytest.fixture
def env(client: TestClient, queue: RecordingQueue) -> jobs_service.WorkerEnv:
    app: FastAPI = client.app  # type: ignore[assignment]
    return jobs_service.WorkerEnv(
        settings=app.state.settings,
        sessionmaker=app.state.sessionmaker,
        storage=app.state.file_storage,
        queue=queue,
    )


@pytest.fixture
def job_id(client: TestClient, alice: dict[str, str], queue: RecordingQueue) -> uuid.UUID:
    response = client.post("/api/v1/jobs", headers=alice, json={"type": "export_items"})
    assert response.status_code == 202
    queue.sent.clear()
    return uuid.UUID(response.json()["id"])


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[jobs_service.Runner], None]]:
    """Replace the runner every job type dispatches to."""

    def use(replacement: jobs_service.Runner) -> None:
        monkeypatch.setattr(jobs_service, "_runner", lambda _job_type: replacement)

    yield use


def _in_app(client: TestClient, env: jobs_service.WorkerEnv) -> Callable[..., Any]:
    def call(fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        return run_in_app(client, fn, *args)

    return call


async def _job(env: jobs_service.WorkerEnv, job_id: uuid.UUID) -> Job:
    async with env.sessionmaker() as session:
        job = await session.get(Job, job_id)
        assert job is not None
        return job


async def _claim(env: jobs_service.WorkerEnv, job_id: uuid.UUID, owner: str) -> bool:
    async with env.sessionmaker() as session:
        claimed = await jobs_service.claim(session, job_id, owner, lease=LEASE)
        await session.commit()
        return claimed


async def _expire_lease(env: jobs_service.WorkerEnv, job_id: uuid.UUID) -> None:
    async with env.sessionmaker() as session:
        await session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
        await session.commit()


async def _items(env: jobs_service.WorkerEnv) -> int:
    async with env.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(Item)) or 0)


def test_of_two_claims_one_wins(
    client: TestClient, env: jobs_service.WorkerEnv, job_id: uuid.UUID
) -> None:
    call = _in_app(client, env)
    assert call(_claim, env, job_id, "worker-a") is True
    assert call(_claim, env, job_id, "worker-b") is False
    job = call(_job, env, job_id)
    assert (job.status, job.lease_owner, job.attempts) == ("running", "worker-a", 1)


def test_a_delivery_of_a_job_a_live_worker_holds_does_nothing(
    client: TestClient,
    env: jobs_service.WorkerEnv,
    job_id: uuid.UUID,
    runner: Callable[[jobs_service.Runner], None],
) -> None:
    ran: list[uuid.UUID] = []

    async def record(ctx: JobContext) -> dict[str, Any]:
        ran.append(ctx.job_id)
        return {}

    runner(record)
    call = _in_app(client, env)
    call(_claim, env, job_id, "worker-a")
    before = call(_job, env, job_id)
    call(jobs_service.run, env, job_id, "worker-b")
    after = call(_job, env, job_id)
    assert ran == []
    assert (after.status, after.lease_owner, after.attempts) == ("running", "worker-a", 1)
    assert after.lease_expires_at == before.lease_expires_at


def test_a_job_whose_lease_ran_out_is_claimed_again(
    client: TestClient, env: jobs_service.WorkerEnv, job_id: uuid.UUID
) -> None:
    call = _in_app(client, env)
    call(_claim, env, job_id, "worker-a")
    started_at = call(_job, env, job_id).started_at
    call(_expire_lease, env, job_id)
    assert call(_claim, env, job_id, "worker-b") is True
    job = call(_job, env, job_id)
    assert (job.lease_owner, job.attempts, job.started_at) == ("worker-b", 2, started_at)


def test_a_run_that_lost_its_job_commits_nothing_more(
    client: TestClient,
    env: jobs_service.WorkerEnv,
    job_id: uuid.UUID,
    runner: Callable[[jobs_service.Runner], None],
) -> None:
    async def chunk_after_takeover(ctx: JobContext) -> dict[str, Any]:
        # This run stalled past its lease and another worker took the job over meanwhile.
        await _expire_lease(env, ctx.job_id)
        assert await _claim(env, ctx.job_id, "worker-b")
        async with ctx.sessionmaker() as session:
            await items_service.insert_many(
                session, ctx.owner_id, [ItemCreate(name="late", price="1")]
            )
            await ctx.commit_chunk(session, checkpoint={"row": 1}, done=1, total=1)
        raise AssertionError("commit_chunk must refuse")

    runner(chunk_after_takeover)
    call = _in_app(client, env)
    call(jobs_service.run, env, job_id, "worker-a")
    job = call(_job, env, job_id)
    assert (job.status, job.lease_owner, job.checkpoint, job.progress_done) == (
        "running",
        "worker-b",
        {},
        0,
    )
    assert call(_items, env) == 0
    assert env.queue.notified == []  # type: ignore[attr-defined]


def test_a_cancel_stops_the_runner_after_its_chunk_is_committed(
    client: TestClient,
    env: jobs_service.WorkerEnv,
    job_id: uuid.UUID,
    runner: Callable[[jobs_service.Runner], None],
) -> None:
    async def cancelled_midway(ctx: JobContext) -> dict[str, Any]:
        for chunk in range(3):
            if chunk == 1:  # the owner cancels while the second chunk is under way
                async with ctx.sessionmaker() as other:
                    job = await other.get(Job, ctx.job_id)
                    assert job is not None
                    cancelling = await jobs_service.cancel(other, env.queue, job)
                    assert (cancelling.status, cancelling.cancel_requested) == ("running", True)
            async with ctx.sessionmaker() as session:
                await items_service.insert_many(
                    session, ctx.owner_id, [ItemCreate(name=f"item {chunk}", price="1")]
                )
                await ctx.commit_chunk(
                    session, checkpoint={"chunk": chunk}, done=chunk + 1, total=3
                )
        raise AssertionError("the cancel was not noticed")

    runner(cancelled_midway)
    call = _in_app(client, env)
    call(jobs_service.run, env, job_id, "worker-a")
    job = call(_job, env, job_id)
    assert job.status == "cancelled"
    assert job.result == {"done": 2, "total": 3}
    assert job.checkpoint == {"chunk": 1}
    assert call(_items, env) == 2
    assert env.queue.notified == [job_id]  # type: ignore[attr-defined]


def test_sweep_sends_again_a_job_whose_worker_died(
    client: TestClient, env: jobs_service.WorkerEnv, job_id: uuid.UUID
) -> None:
    call = _in_app(client, env)
    call(_claim, env, job_id, "dead-worker")
    call(_expire_lease, env, job_id)
    report = call(jobs_service.sweep, env)
    assert report.requeued == 1
    assert env.queue.sent == [job_id]  # type: ignore[attr-defined]
    job = call(_job, env, job_id)
    assert (job.status, job.lease_owner, job.attempts) == ("queued", None, 1)
    # A second sweep (another worker's, say) finds nothing to do.
    assert call(jobs_service.sweep, env).requeued == 0
    assert env.queue.sent == [job_id]  # type: ignore[attr-defined]


def test_sweep_leaves_jobs_of_live_workers_alone(
    client: TestClient, env: jobs_service.WorkerEnv, job_id: uuid.UUID
) -> None:
    call = _in_app(client, env)
    call(_claim, env, job_id, "live-worker")
    report = call(jobs_service.sweep, env)
    assert (report.requeued, report.cancelled, report.failed) == (0, 0, 0)
    assert call(_job, env, job_id).lease_owner == "live-worker"


def test_sweep_cancels_a_job_whose_worker_died_after_a_cancel_was_asked(
    client: TestClient, alice: dict[str, str], env: jobs_service.WorkerEnv, job_id: uuid.UUID
) -> None:
    call = _in_app(client, env)
    call(_claim, env, job_id, "worker-a")
    response = client.post(f"/api/v1/jobs/{job_id}/cancel", headers=alice)
    assert response.json()["status"] == "running"
    call(_expire_lease, env, job_id)
    assert call(jobs_service.sweep, env).cancelled == 1
    job = call(_job, env, job_id)
    assert job.status == "cancelled" and job.finished_at is not None
    assert env.queue.sent == []  # type: ignore[attr-defined]
    assert env.queue.notified == [job_id]  # type: ignore[attr-defined]


def test_sweep_fails_a_job_that_killed_its_worker_too_often(
    client: TestClient, env: jobs_service.WorkerEnv, job_id: uuid.UUID
) -> None:
    call = _in_app(client, env)
    for attempt in range(env.settings.job_max_attempts):
        call(_claim, env, job_id, f"worker-{attempt}")
        call(_expire_lease, env, job_id)
        call(jobs_service.sweep, env)
    job = call(_job, env, job_id)
    assert job.status == "failed"
    assert job.error == f"The worker running this job stopped {job.attempts} times; gave up."
    assert env.queue.notified == [job_id]  # type: ignore[attr-defined]


def test_sweep_removes_finished_jobs_past_their_retention(
    client: TestClient, alice: dict[str, str], env: jobs_service.WorkerEnv, job_id: uuid.UUID
) -> None:
    call = _in_app(client, env)
    client.post(f"/api/v1/jobs/{job_id}/cancel", headers=alice)
    recent = client.post("/api/v1/jobs", headers=alice, json={"type": "export_items"}).json()
    client.post(f"/api/v1/jobs/{recent['id']}/cancel", headers=alice)
    queued = client.post("/api/v1/jobs", headers=alice, json={"type": "export_items"}).json()

    async def age(target: uuid.UUID, days: int) -> None:
        async with env.sessionmaker() as session:
            await session.execute(
                update(Job)
                .where(Job.id == target)
                .values(finished_at=utcnow() - timedelta(days=days))
            )
            await session.commit()

    call(age, job_id, env.settings.job_retention_days + 1)
    call(age, uuid.UUID(recent["id"]), env.settings.job_retention_days - 1)
    assert call(jobs_service.sweep, env).deleted == 1
    remaining = {job["id"] for job in client.get("/api/v1/jobs", headers=alice).json()["items"]}
    assert remaining == {recent["id"], queued["id"]}
