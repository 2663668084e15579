"""The export_items runner on each database: a new file of the caller's, byte for byte the
HTTP export, that re-imports to equal items; progress per batch; the quota; nothing left behind
by a failed or cancelled export.

The runner is called directly with a JobContext built here (the HTTP and worker round trips
are tested with the job endpoints)."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.ext.asyncio import AsyncSession

from storeroom.core.config import Settings
from storeroom.files.models import StoredFile
from storeroom.items import service as items_service
from storeroom.items.schemas import ItemCreate
from storeroom.jobs.exceptions import JobCancelled, JobFailed
from storeroom.jobs.exports import run_export
from tests.conftest import run_in_app
from tests.jobs.test_import_items import (
    ChunkRecorder,
    Crash,
    all_items,
    context,
    fields,
    import_file,
    my_id,
    total,
    upload,
)

QUOTA_BYTES = 2 * 1024 * 1024


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"user_quota_bytes": QUOTA_BYTES})


def export(
    client: TestClient,
    headers: dict[str, str],
    params: dict[str, Any],
    recorder: ChunkRecorder | None = None,
    checkpoint: dict[str, Any] | None = None,
) -> dict[str, Any]:
    ctx = context(
        client, my_id(client, headers), params, recorder or ChunkRecorder(), checkpoint=checkpoint
    )
    result: dict[str, Any] = run_in_app(client, run_export, ctx)
    return result


def export_fails(
    client: TestClient, headers: dict[str, str], params: dict[str, Any], **options: Any
) -> JobFailed:
    with pytest.raises(JobFailed) as failure:
        export(client, headers, params, **options)
    return failure.value


def seed(client: TestClient, headers: dict[str, str], count: int) -> None:
    """Many items at once through the bulk insert (setup, not the behaviour under test)."""
    owner_id = my_id(client, headers)
    items = [
        ItemCreate(
            name=f"Item {n:05d}",
            description=f"line one\nline two {n}" if n % 3 == 0 else None,
            price=f"{n}.25",  # type: ignore[arg-type]
            tags=["bulk", "even"] if n % 2 == 0 else ["bulk"],
        )
        for n in range(1, count + 1)
    ]

    async def insert() -> None:
        app: FastAPI = client.app  # type: ignore[assignment]
        async with app.state.sessionmaker() as session, session.begin():
            await items_service.insert_many(session, owner_id, items)

    run_in_app(client, insert)


def files_of(client: TestClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    response = client.get("/api/v1/files", headers=headers)
    assert response.status_code == 200, response.text
    files: list[dict[str, Any]] = response.json()["items"]
    return files


def content(client: TestClient, headers: dict[str, str], file_id: str) -> bytes:
    response = client.get(f"/api/v1/files/{file_id}/content", headers=headers)
    assert response.status_code == 200, response.text
    return response.content


def blobs_on_disk(settings: Settings) -> list[Path]:
    """Every file in the storage directory, finished or not."""
    root = settings.data_dir / "files"
    return sorted(path for path in root.rglob("*") if path.is_file()) if root.exists() else []


SPECIAL = [
    {"name": "=SUM(A1:A9)", "description": "-2+3", "price": "1", "tags": ["calc"]},
    {"name": "Shelf, oak", "description": 'two lines:\r\n"quoted"', "price": "120", "tax": "20"},
    {"name": "'quoted", "description": "@home", "price": "0.10", "tags": ["a", "b"]},
    {"name": "Ünïcode ☕", "price": "9999999999.99", "tax": "100"},
]


@pytest.mark.parametrize("export_format", ["csv", "ndjson"])
def test_export_is_a_new_file_with_the_bytes_of_the_http_export(
    client: TestClient, alice: dict[str, str], export_format: str
) -> None:
    for body in SPECIAL:
        client.post("/api/v1/items", json=body, headers=alice)
    result = export(client, alice, {"format": export_format, "q": None, "tag": []})

    expected = client.get(
        "/api/v1/items/export", params={"format": export_format}, headers=alice
    ).content
    assert result["rows"] == len(SPECIAL)
    assert result["size"] == len(expected)
    assert content(client, alice, result["file_id"]) == expected
    [file] = files_of(client, alice)
    assert file["id"] == result["file_id"]
    assert file["filename"] == f"items-{datetime.now(UTC):%Y-%m-%d}.{export_format}"
    assert file["size"] == len(expected)


def test_export_takes_the_filters_of_the_http_export(
    client: TestClient, alice: dict[str, str], bob: dict[str, str]
) -> None:
    seed(client, alice, 30)
    seed(client, bob, 5)
    params = {"format": "ndjson", "q": "item 0001", "tag": ["even"]}
    result = export(client, alice, params)

    expected = client.get(
        "/api/v1/items/export",
        params={"format": "ndjson", "q": "item 0001", "tag": "even"},
        headers=alice,
    ).content
    assert content(client, alice, result["file_id"]) == expected
    assert result["rows"] == 5  # 10, 12, 14, 16, 18
    assert files_of(client, bob) == []


def test_a_csv_export_reimports_to_equal_items(client: TestClient, alice: dict[str, str]) -> None:
    for body in SPECIAL:
        client.post("/api/v1/items", json=body, headers=alice)
    seed(client, alice, 1200)
    before = [fields(item) for item in all_items(client, alice)["items"]]
    result = export(client, alice, {"format": "csv", "q": None, "tag": []})

    imported = import_file(client, alice, result["file_id"])

    assert imported == {"imported": len(before), "error_count": 0, "errors": []}
    after = [fields(item) for item in all_items(client, alice)["items"]]
    assert after == before + before
    assert total(client, alice, tag="calc") == 2


def test_an_ndjson_export_reimports_to_equal_items(
    client: TestClient, alice: dict[str, str]
) -> None:
    for body in SPECIAL:
        client.post("/api/v1/items", json=body, headers=alice)
    before = [fields(item) for item in all_items(client, alice)["items"]]
    result = export(client, alice, {"format": "ndjson", "q": None, "tag": []})

    assert import_file(client, alice, result["file_id"])["imported"] == len(before)
    assert [fields(item) for item in all_items(client, alice)["items"]] == before + before


def test_progress_is_committed_per_batch_and_the_result_with_the_file(
    client: TestClient, alice: dict[str, str]
) -> None:
    seed(client, alice, 2500)
    recorder = ChunkRecorder()
    result = export(client, alice, {"format": "ndjson", "q": None, "tag": []}, recorder)

    assert recorder.progress == [(1000, 2500), (2000, 2500), (2500, 2500), (2500, 2500)]
    assert [list(checkpoint) for checkpoint, _, _ in recorder.calls[:3]] == [["writing"]] * 3
    assert recorder.saved == {"result": result}


def test_a_rerun_after_the_file_was_recorded_returns_it_again(
    client: TestClient, alice: dict[str, str]
) -> None:
    seed(client, alice, 10)
    first = ChunkRecorder(crash_after=2)  # after the file and its result were committed
    with pytest.raises(Crash):
        export(client, alice, {"format": "csv", "q": None, "tag": []}, first)

    result = export(client, alice, {"format": "csv", "q": None, "tag": []}, checkpoint=first.saved)

    assert [file["id"] for file in files_of(client, alice)] == [result["file_id"]]
    assert result["rows"] == 10


def test_a_rerun_deletes_the_blob_a_crashed_run_finished_but_did_not_record(
    client: TestClient, alice: dict[str, str], settings: Settings
) -> None:
    seed(client, alice, 10)
    app: FastAPI = client.app  # type: ignore[assignment]

    async def leftover() -> str:
        writer = await app.state.file_storage.open_write()
        await writer.write(b"the bytes of an export whose worker was killed")
        key: str = (await writer.finish()).key
        return key

    key = run_in_app(client, leftover)
    params = {"format": "csv", "q": None, "tag": []}
    result = export(client, alice, params, checkpoint={"writing": key})

    assert [file["id"] for file in files_of(client, alice)] == [result["file_id"]]
    assert len(blobs_on_disk(settings)) == 1
    assert not any(path.name == key for path in blobs_on_disk(settings))


def test_an_empty_export_is_an_empty_file(client: TestClient, alice: dict[str, str]) -> None:
    result = export(client, alice, {"format": "ndjson", "q": None, "tag": []})

    assert (result["rows"], result["size"]) == (0, 0)
    assert content(client, alice, result["file_id"]) == b""


def test_an_export_over_the_quota_fails_and_leaves_nothing_behind(
    client: TestClient, alice: dict[str, str], settings: Settings
) -> None:
    upload(client, alice, b"x" * (QUOTA_BYTES - 100_000), "big.bin", "application/octet-stream")
    seed(client, alice, 2500)  # about 500 KB of NDJSON
    disk_before = blobs_on_disk(settings)

    failure = export_fails(client, alice, {"format": "ndjson", "q": None, "tag": []})

    assert "storage quota" in failure.message
    assert [file["filename"] for file in files_of(client, alice)] == ["big.bin"]
    assert blobs_on_disk(settings) == disk_before


class UploadWhileExporting(ChunkRecorder):
    """After the first batch, a large upload of the same owner lands (its row only)."""

    async def __call__(
        self, session: AsyncSession, checkpoint: dict[str, Any], done: int, total: int | None
    ) -> None:
        await super().__call__(session, checkpoint, done, total)
        if len(self.calls) == 1:
            session.add(
                StoredFile(
                    owner_id=self.owner_id,
                    filename="late.bin",
                    content_type="application/octet-stream",
                    size=QUOTA_BYTES - 100,
                    sha256="0" * 64,
                    storage_key="f" * 32,
                )
            )
            await session.commit()

    owner_id: int = 0


def test_a_file_uploaded_while_exporting_counts_against_the_quota(
    client: TestClient, alice: dict[str, str], settings: Settings
) -> None:
    """The last check is made with the owner's row locked, as an upload's is."""
    seed(client, alice, 40)
    recorder = UploadWhileExporting()
    recorder.owner_id = my_id(client, alice)

    failure = export_fails(
        client, alice, {"format": "csv", "q": None, "tag": []}, recorder=recorder
    )

    assert "storage quota" in failure.message
    assert [file["filename"] for file in files_of(client, alice)] == ["late.bin"]
    assert blobs_on_disk(settings) == []


def test_a_cancelled_export_leaves_no_file(
    client: TestClient, alice: dict[str, str], settings: Settings
) -> None:
    seed(client, alice, 2500)
    with pytest.raises(JobCancelled):
        export(
            client, alice, {"format": "csv", "q": None, "tag": []}, ChunkRecorder(cancel_after=1)
        )

    assert files_of(client, alice) == []
    assert blobs_on_disk(settings) == []


def test_an_unknown_format_fails_cleanly(client: TestClient, alice: dict[str, str]) -> None:
    failure = export_fails(client, alice, {"format": "xlsx", "q": None, "tag": []})

    assert failure.message == "Unknown export format 'xlsx'"
    assert files_of(client, alice) == []
