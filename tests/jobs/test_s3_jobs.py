"""Jobs on S3 storage: a real worker reads an import's file from the store and writes an
export's file into it; nothing lands in the local data directory."""

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from storeroom.core.config import Settings
from tests.jobs.conftest import Worker, csv_rows, start_import, start_worker, upload, wait_for_job
from tests.s3 import BUCKET, REGION, MotoServer, StoreView


@pytest.fixture(scope="module")
def worker(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    migrated_databases: dict[str, str],
    s3_server: MotoServer,
) -> Iterator[Worker]:
    yield from start_worker(
        request,
        tmp_path_factory,
        migrated_databases,
        "filesystem",
        storage_url=f"s3://{BUCKET}/jobs-{tmp_path_factory.mktemp('prefix').name}",
        s3_endpoint_url=s3_server.endpoint_url,
        s3_region=REGION,
    )


@pytest.fixture
def settings(worker: Worker) -> Settings:
    return worker.fresh_settings()


def test_an_import_reads_its_file_from_the_store(
    client: TestClient, alice: dict[str, str], settings: Settings, worker: Worker
) -> None:
    file_id = upload(client, alice, csv_rows(2500))
    [stored] = [blob for blob in StoreView(settings).all() if blob.complete]
    assert stored.read_bytes() == csv_rows(2500)
    done = wait_for_job(client, alice, start_import(client, alice, file_id)["id"], worker=worker)
    assert done["status"] == "succeeded", done
    assert done["result"]["imported"] == 2500
    assert client.get("/api/v1/items", headers=alice).json()["total"] == 2500
    assert not (settings.data_dir / "files").exists()


def test_an_export_writes_its_file_into_the_store(
    client: TestClient, alice: dict[str, str], settings: Settings, worker: Worker
) -> None:
    for n in range(3):
        client.post("/api/v1/items", headers=alice, json={"name": f"lamp {n}", "price": "3"})
    response = client.post(
        "/api/v1/jobs", headers=alice, json={"type": "export_items", "format": "ndjson"}
    )
    assert response.status_code == 202, response.text
    done = wait_for_job(client, alice, response.json()["id"], worker=worker)
    assert done["status"] == "succeeded", done
    file_id = done["result"]["file_id"]
    download = client.get(f"/api/v1/files/{file_id}/content", headers=alice)
    assert download.status_code == 200
    assert download.text.count("lamp ") == 3
    same = client.get("/api/v1/items/export?format=ndjson", headers=alice).content
    stored = [blob.read_bytes() for blob in StoreView(settings).all() if blob.complete]
    assert same in stored
    assert not (settings.data_dir / "files").exists()
