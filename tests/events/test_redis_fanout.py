"""Events with Redis (STOREROOM_REDIS_URL): two API processes and a Celery worker share one
PostgreSQL database and one Redis; an event published by the worker, or by either API process,
reaches the clients of both, and either replays from the Redis log."""

import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import SERVICES_MODE, TEST_SECRET_KEY
from tests.events.conftest import WAIT_SECONDS, EventStream
from tests.events.test_processes import (
    ROWS,
    account,
    assert_import_progress,
    follow_import,
    start_import,
    upload_csv,
)
from tests.servers import serve

REDIS_URL = os.environ.get("STOREROOM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    if not SERVICES_MODE:
        pytest.skip("Redis tests need STOREROOM_TEST_SERVICES=auto|required")
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        if SERVICES_MODE == "required":
            raise
        pytest.skip(f"Redis unreachable: {exc}")
    prefix = f"storeroom-test-{secrets.token_hex(4)}:"
    yield prefix
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def db_backend(migrated_databases: dict[str, str]) -> str:
    if "postgresql" not in migrated_databases:
        pytest.skip(f"postgresql not enabled (STOREROOM_TEST_SERVICES={SERVICES_MODE or 'unset'})")
    return "postgresql"


def test_with_redis_a_workers_events_reach_clients_of_every_api_process(
    tmp_path: Path, database_url: str, redis_prefix: str
) -> None:
    shared = {
        "STOREROOM_DATABASE_URL": database_url,
        "STOREROOM_REDIS_URL": REDIS_URL,
        "STOREROOM_REDIS_KEY_PREFIX": redis_prefix,
        "STOREROOM_BROKER_URL": REDIS_URL,
        "STOREROOM_JOB_QUEUE": redis_prefix.rstrip(":"),
        "STOREROOM_EMBEDDED_WORKER": "false",
        "STOREROOM_DATA_DIR": str(tmp_path / "data"),  # the files the worker imports
        "STOREROOM_SECRET_KEY": TEST_SECRET_KEY,
    }
    worker_log = tmp_path / "worker.log"
    with worker_log.open("wb") as output:
        worker = subprocess.Popen(
            [sys.executable, "-m", "storeroom.cli", "worker", "--concurrency=1"],
            env={**os.environ, **shared},
            cwd=tmp_path,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    try:
        with (
            serve(tmp_path / "one", shared) as one,
            serve(tmp_path / "two", shared) as two,
            httpx.Client(base_url=one.base_url) as api_one,
            httpx.Client(base_url=two.base_url) as api_two,
        ):
            alice = account(api_one, "alice@example.com")
            bob = account(api_one, "bob@example.com")
            on_one = EventStream(one.base_url, "/api/v1/events", alice).open()
            on_two = EventStream(two.base_url, "/api/v1/events", alice).open()
            bobs = EventStream(two.base_url, "/api/v1/events", bob).open()
            file_id = upload_csv(api_one, alice, ROWS)
            job_id = start_import(api_one, alice, file_id)
            for stream in (on_one, on_two):
                assert stream.next().type == "file.created"
                queued = stream.next()
                assert queued.type == "job.queued"
                queued_id = queued.id or ""
                seen = follow_import(stream, job_id)
                assert_import_progress(seen, ROWS)
                progress_types = [type_ for type_, _done in seen]
            # An item made through the second process reaches a client of the first.
            made = api_two.post(
                "/api/v1/items", json={"name": "via two", "price": "1"}, headers=alice
            )
            assert made.status_code == 201
            created = on_one.next()
            assert (created.type, created.data["data"]) == ("item.created", made.json())
            bobs.assert_quiet()
            # A client reconnecting to the other process replays from the Redis log.
            first_id = on_two.take(1)[0].id  # the item, on the second process too
            assert first_id == created.id
            replay = EventStream(
                two.base_url, "/api/v1/events", {**alice, "Last-Event-ID": queued_id}
            ).open()
            replayed = [event.type for event in replay.take(len(progress_types) + 1)]
            assert replayed == [*progress_types, "item.created"]
            for stream in (on_one, on_two, bobs, replay):
                stream.close()
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
