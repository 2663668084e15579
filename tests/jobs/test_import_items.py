"""The import_items runner on each database: CSV and NDJSON, good and bad rows, strict mode,
checkpointed chunks that a rerun resumes after, and files that cannot be imported at all.

The runner is called directly with a JobContext built here (the HTTP and worker round trips
are tested with the job endpoints); its items are then read back over HTTP."""

import copy
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.ext.asyncio import AsyncSession

from storeroom.files.storage import BlobInfo, BlobWriter, Storage
from storeroom.jobs.context import JobContext
from storeroom.jobs.exceptions import JobCancelled, JobFailed
from storeroom.jobs.imports import run_import
from tests.conftest import run_in_app

HEADER = "name,description,price,tax,tags\r\n"


class Crash(Exception):
    """A worker dying at a chosen point (as far as the database can tell)."""


@dataclass
class ChunkRecorder:
    """The job row's side of commit_chunk: commits the chunk and remembers what it saved.
    `crash_before`/`crash_after` make the Nth call die before or after its commit, and
    `cancel_after` raise JobCancelled after the Nth commit."""

    calls: list[tuple[dict[str, Any], int, int | None]] = field(default_factory=list)
    crash_before: int | None = None
    crash_after: int | None = None
    cancel_after: int | None = None

    async def __call__(
        self, session: AsyncSession, checkpoint: dict[str, Any], done: int, total: int | None
    ) -> None:
        number = len(self.calls) + 1
        if number == self.crash_before:
            raise Crash(f"before commit {number}")
        await session.commit()
        self.calls.append((copy.deepcopy(checkpoint), done, total))
        if number == self.crash_after:
            raise Crash(f"after commit {number}")
        if number == self.cancel_after:
            raise JobCancelled()

    @property
    def saved(self) -> dict[str, Any]:
        """The last committed checkpoint (what a redelivered task starts from)."""
        return copy.deepcopy(self.calls[-1][0]) if self.calls else {}

    @property
    def progress(self) -> list[tuple[int, int | None]]:
        return [(done, total) for _checkpoint, done, total in self.calls]


def my_id(client: TestClient, headers: dict[str, str]) -> int:
    user_id: int = client.get("/api/v1/users/me", headers=headers).json()["id"]
    return user_id


def upload(
    client: TestClient,
    headers: dict[str, str],
    content: bytes,
    filename: str = "items.csv",
    content_type: str = "text/csv",
) -> str:
    response = client.post(
        "/api/v1/files", files={"file": (filename, content, content_type)}, headers=headers
    )
    assert response.status_code == 201, response.text
    file_id: str = response.json()["id"]
    return file_id


def context(
    client: TestClient,
    owner_id: int,
    params: dict[str, Any],
    recorder: ChunkRecorder,
    *,
    checkpoint: dict[str, Any] | None = None,
    storage: Storage | None = None,
) -> JobContext:
    app: FastAPI = client.app  # type: ignore[assignment]
    return JobContext(
        job_id=uuid.uuid4(),
        owner_id=owner_id,
        params=params,
        checkpoint=checkpoint or {},
        sessionmaker=app.state.sessionmaker,
        storage=storage or app.state.file_storage,
        settings=app.state.settings,
        _commit_chunk=recorder,
    )


def import_file(
    client: TestClient,
    headers: dict[str, str],
    file_id: str,
    *,
    strict: bool = False,
    recorder: ChunkRecorder | None = None,
    checkpoint: dict[str, Any] | None = None,
    storage: Storage | None = None,
) -> dict[str, Any]:
    params = {"file_id": file_id, "options": {"strict": strict}}
    ctx = context(
        client,
        my_id(client, headers),
        params,
        recorder or ChunkRecorder(),
        checkpoint=checkpoint,
        storage=storage,
    )
    result: dict[str, Any] = run_in_app(client, run_import, ctx)
    return result


def import_fails(
    client: TestClient, headers: dict[str, str], file_id: str, **options: Any
) -> JobFailed:
    with pytest.raises(JobFailed) as failure:
        import_file(client, headers, file_id, **options)
    return failure.value


def all_items(client: TestClient, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    """Every item (in creation order) and the list's total, read over HTTP."""
    items: list[dict[str, Any]] = []
    total = 0
    while True:
        response = client.get(
            "/api/v1/items",
            params={**params, "sort": "created_at", "offset": len(items), "limit": 100},
            headers=headers,
        )
        assert response.status_code == 200, response.text
        page = response.json()
        total = page["total"]
        items += page["items"]
        if len(page["items"]) < 100:
            return {"items": items, "total": total}


def total(client: TestClient, headers: dict[str, str], **params: Any) -> int:
    """The list's total: the kept count, or with a filter the matches counted."""
    response = client.get("/api/v1/items", params={**params, "limit": 1}, headers=headers)
    assert response.status_code == 200, response.text
    count: int = response.json()["total"]
    return count


def fields(item: dict[str, Any]) -> tuple[Any, ...]:
    return (item["name"], item["description"], item["price"], item["tax"], item["tags"])


def numbered_csv(rows: int, *, bad_every: int = 0) -> bytes:
    """`rows` data rows named Item 00001...; every `bad_every`th has a negative price."""
    lines = [HEADER]
    for n in range(1, rows + 1):
        price = "-1" if bad_every and n % bad_every == 0 else f"{n}.50"
        tags = "bulk;even" if n % 2 == 0 else "bulk"
        lines.append(f"Item {n:05d},,{price},20,{tags}\r\n")
    return "".join(lines).encode()


# --- CSV and NDJSON ----------------------------------------------------------------------------


def test_csv_import_adds_the_valid_rows_and_reports_the_invalid_ones(
    client: TestClient, alice: dict[str, str]
) -> None:
    content = (
        HEADER + "Espresso machine,Dual boiler,649.90,20,kitchen;coffee\r\n"
        ",no name,1.00,0,\r\n"
        "Kettle,,29,,kitchen\r\n"
        "Grinder,,-5,0,coffee\r\n"
        "Mug,,4.5,7.5,\r\n"
    ).encode()
    result = import_file(client, alice, upload(client, alice, content))

    assert result["imported"] == 3
    assert result["error_count"] == 2
    assert [error["row"] for error in result["errors"]] == [2, 4]
    assert result["errors"][0]["message"].startswith("name:")
    assert result["errors"][1]["message"].startswith("price:")
    listed = all_items(client, alice)
    assert [fields(item) for item in listed["items"]] == [
        ("Espresso machine", "Dual boiler", "649.90", "20.00", ["kitchen", "coffee"]),
        ("Kettle", None, "29.00", "0.00", ["kitchen"]),
        ("Mug", None, "4.50", "7.50", []),
    ]


def test_ndjson_import_adds_the_valid_lines_and_reports_the_invalid_ones(
    client: TestClient, alice: dict[str, str]
) -> None:
    content = (
        b'{"name": "Espresso machine", "price": "649.90", "tax": "20", "tags": ["Kitchen"]}\n'
        b"not json\n"
        b"\n"
        b'["a list"]\n'
        b'{"name": "Kettle", "price": 12.5}\n'
        b'{"name": "Mug", "price": "4", "colour": "red"}\n'
        b'{"id": 7, "owner_id": 99, "name": "Exported", "description": "x", "price": "1.00",'
        b' "tax": "0.00", "tags": [], "version": 3, "created_at": "2026-01-01T00:00:00Z",'
        b' "updated_at": "2026-01-01T00:00:00Z"}'
    )
    file_id = upload(client, alice, content, "items.ndjson", "application/x-ndjson")
    result = import_file(client, alice, file_id)

    assert result["imported"] == 2
    assert result["error_count"] == 4
    assert [error["row"] for error in result["errors"]] == [2, 4, 5, 6]
    assert result["errors"][0]["message"].startswith("not valid JSON")
    assert "JSON object" in result["errors"][1]["message"]
    assert result["errors"][2]["message"].startswith("price:")
    assert result["errors"][3]["message"].startswith("colour:")
    listed = all_items(client, alice)
    assert [fields(item) for item in listed["items"]] == [
        ("Espresso machine", None, "649.90", "20.00", ["kitchen"]),
        ("Exported", "x", "1.00", "0.00", []),
    ]
    assert listed["items"][1]["owner_id"] == my_id(client, alice)


def test_format_is_taken_from_the_extension_when_the_type_says_nothing(
    client: TestClient, alice: dict[str, str]
) -> None:
    csv_id = upload(client, alice, numbered_csv(2), "a.CSV", "application/octet-stream")
    ndjson_id = upload(client, alice, b'{"name": "x", "price": "1"}\n', "b.jsonl", "text/plain")

    assert import_file(client, alice, csv_id)["imported"] == 2
    assert import_file(client, alice, ndjson_id)["imported"] == 1
    assert total(client, alice) == 3


def test_bom_crlf_and_quoted_fields_with_commas_and_newlines_are_read(
    client: TestClient, alice: dict[str, str]
) -> None:
    content = (
        "\ufeffname,description,price,tax,tags\r\n"
        '"Shelf, oak","two lines:\r\nfirst, then ""second""",120.00,20,"home;wood"\r\n'
        "'=SUM(A1),'-starts with a dash,1,0,\r\n"
        'Ünïcode ☕,"multi\nline\n",3,0,café\r\n'
    ).encode()
    result = import_file(client, alice, upload(client, alice, content))

    assert result == {"imported": 3, "error_count": 0, "errors": []}
    assert [fields(item) for item in all_items(client, alice)["items"]] == [
        ("Shelf, oak", 'two lines:\r\nfirst, then "second"', "120.00", "20.00", ["home", "wood"]),
        ("=SUM(A1)", "-starts with a dash", "1.00", "0.00", []),
        ("Ünïcode ☕", "multi\nline\n", "3.00", "0.00", ["café"]),
    ]


class TinyChunks(Storage):
    """The app's storage, read back a few bytes at a time: rows, quoted newlines, the BOM and
    multi-byte characters all end up split across chunks."""

    def __init__(self, inner: Storage, size: int) -> None:
        self.inner = inner
        self.size = size

    async def open_write(self) -> BlobWriter:
        return await self.inner.open_write()

    async def open_read(
        self, key: str, *, start: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        chunks = await self.inner.open_read(key, start=start, length=length)

        async def split() -> AsyncIterator[bytes]:
            async for chunk in chunks:
                for offset in range(0, len(chunk), self.size):
                    yield chunk[offset : offset + self.size]

        return split()

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def exists(self, key: str) -> bool:
        return await self.inner.exists(key)

    def iter_blobs(self) -> AsyncIterator[BlobInfo]:
        return self.inner.iter_blobs()

    async def sweep_incomplete(self, older_than_seconds: float) -> int:
        return await self.inner.sweep_incomplete(older_than_seconds)


@pytest.mark.parametrize("size", [1, 3, 7])
def test_rows_split_across_reads_are_put_back_together(
    client: TestClient, alice: dict[str, str], size: int
) -> None:
    content = (
        "\ufeffname,description,price,tax,tags\r\n"
        '"Shelf, oak","two lines:\r\nfirst, then ""second""",120.00,20,"home;wood"\r\n'
        "Ünïcode ☕,€ and 😀,3,0,café\r\n"
        "Last,no newline at the end,1,0,"
    ).encode()
    storage = TinyChunks(client.app.state.file_storage, size)  # type: ignore[attr-defined]
    result = import_file(client, alice, upload(client, alice, content), storage=storage)

    assert result["imported"] == 3
    assert [fields(item) for item in all_items(client, alice)["items"]] == [
        ("Shelf, oak", 'two lines:\r\nfirst, then "second"', "120.00", "20.00", ["home", "wood"]),
        ("Ünïcode ☕", "€ and 😀", "3.00", "0.00", ["café"]),
        ("Last", "no newline at the end", "1.00", "0.00", []),
    ]


@pytest.mark.parametrize("size", [1, 5])
def test_ndjson_lines_split_across_reads_are_put_back_together(
    client: TestClient, alice: dict[str, str], size: int
) -> None:
    content = (
        '\ufeff{"name": "Ünïcode ☕", "price": "3", "tags": ["café"]}\r\n'
        '{"name": "Last", "description": "€ and 😀", "price": "1"}'
    ).encode()
    storage = TinyChunks(client.app.state.file_storage, size)  # type: ignore[attr-defined]
    file_id = upload(client, alice, content, "items.jsonl", "application/octet-stream")
    result = import_file(client, alice, file_id, storage=storage)

    assert result["imported"] == 2
    assert [fields(item) for item in all_items(client, alice)["items"]] == [
        ("Ünïcode ☕", None, "3.00", "0.00", ["café"]),
        ("Last", "€ and 😀", "1.00", "0.00", []),
    ]


def test_csv_with_old_mac_line_ends_is_read(client: TestClient, alice: dict[str, str]) -> None:
    content = b'name,description,price\rLamp,"two\rlines",5\rChair,,6\r'
    result = import_file(client, alice, upload(client, alice, content))

    assert result["imported"] == 2
    assert [fields(item)[:3] for item in all_items(client, alice)["items"]] == [
        ("Lamp", "two\rlines", "5.00"),
        ("Chair", None, "6.00"),
    ]


def test_csv_columns_may_be_left_out_or_reordered_and_export_columns_are_ignored(
    client: TestClient, alice: dict[str, str]
) -> None:
    content = (
        b"Price,ID,Name,created_at\r\n"
        b"5,17,Lamp,2026-01-01T00:00:00Z\r\n"
        b"6,18,Chair\r\n"  # one field short
    )
    result = import_file(client, alice, upload(client, alice, content))

    assert result["imported"] == 1
    assert result["errors"] == [{"row": 2, "message": "expected 4 fields, found 3"}]
    assert [fields(item) for item in all_items(client, alice)["items"]] == [
        ("Lamp", None, "5.00", "0.00", [])
    ]


def test_only_the_first_hundred_errors_are_listed_but_all_are_counted(
    client: TestClient, alice: dict[str, str]
) -> None:
    content = HEADER + "".join(f"Bad {n},,-1,0,\r\n" for n in range(150)) + "Good,,1,0,\r\n"
    result = import_file(client, alice, upload(client, alice, content.encode()))

    assert result["imported"] == 1
    assert result["error_count"] == 150
    assert len(result["errors"]) == 100
    assert result["errors"][-1]["row"] == 100


# --- strict mode -------------------------------------------------------------------------------


def test_strict_import_with_an_invalid_row_fails_and_imports_nothing(
    client: TestClient, alice: dict[str, str]
) -> None:
    recorder = ChunkRecorder()
    file_id = upload(client, alice, numbered_csv(2500, bad_every=1200))
    failure = import_fails(client, alice, file_id, strict=True, recorder=recorder)

    assert "2 of 2500 rows are invalid" in failure.message
    assert failure.result is not None
    assert failure.result["imported"] == 0
    assert failure.result["error_count"] == 2
    assert [error["row"] for error in failure.result["errors"]] == [1200, 2400]
    assert all(checkpoint == {} for checkpoint, _done, _total in recorder.calls)
    assert total(client, alice) == 0


def test_strict_import_of_a_valid_file_imports_every_row(
    client: TestClient, alice: dict[str, str]
) -> None:
    result = import_file(client, alice, upload(client, alice, numbered_csv(1500)), strict=True)

    assert result == {"imported": 1500, "error_count": 0, "errors": []}
    assert total(client, alice) == 1500


# --- chunks, progress, resume ---------------------------------------------------------------


def test_progress_is_committed_per_chunk_of_a_thousand_rows(
    client: TestClient, alice: dict[str, str]
) -> None:
    recorder = ChunkRecorder()
    import_file(
        client, alice, upload(client, alice, numbered_csv(2500, bad_every=7)), recorder=recorder
    )

    assert recorder.progress == [(1000, 2500), (2000, 2500), (2500, 2500)]
    assert [checkpoint["rows_done"] for checkpoint, _, _ in recorder.calls] == [1000, 2000, 2500]
    assert [checkpoint["imported"] for checkpoint, _, _ in recorder.calls] == [858, 1715, 2143]


def test_tags_and_item_counts_are_kept_right(client: TestClient, alice: dict[str, str]) -> None:
    client.post(
        "/api/v1/items", json={"name": "Before", "price": "1", "tags": ["even"]}, headers=alice
    )
    import_file(client, alice, upload(client, alice, numbered_csv(2500, bad_every=10)))

    assert total(client, alice) == 1 + 2250  # the kept count
    assert total(client, alice, tag="bulk") == 2250
    assert total(client, alice, tag="even") == 1 + 1000
    assert total(client, alice, tag=["bulk", "even"]) == 1000
    first_two = client.get(
        "/api/v1/items", params={"tag": "even", "sort": "created_at", "limit": 2}, headers=alice
    ).json()["items"]
    assert [(item["name"], item["tags"]) for item in first_two] == [
        ("Before", ["even"]),
        ("Item 00002", ["bulk", "even"]),
    ]


@pytest.mark.parametrize("crash", ["before", "after"])
def test_a_rerun_after_a_crash_imports_exactly_the_rest(
    client: TestClient, alice: dict[str, str], crash: str
) -> None:
    """The worker dies while committing the second chunk (before: that chunk is rolled back;
    after: it is in), and the redelivered task starts from the last committed checkpoint."""
    file_id = upload(client, alice, numbered_csv(3500, bad_every=500))
    first = ChunkRecorder(**{f"crash_{crash}": 2})
    with pytest.raises(Crash):
        import_file(client, alice, file_id, recorder=first)
    committed = 2000 if crash == "after" else 1000
    assert first.saved["rows_done"] == committed
    assert total(client, alice) == committed - committed // 500

    second = ChunkRecorder()
    result = import_file(client, alice, file_id, recorder=second, checkpoint=first.saved)

    assert result["imported"] == 3500 - 7
    assert result["error_count"] == 7
    assert [error["row"] for error in result["errors"]] == list(range(500, 3501, 500))
    assert second.progress[0] == (committed + 1000, 3500)
    listed = all_items(client, alice)
    names = [item["name"] for item in listed["items"]]
    expected = [f"Item {n:05d}" for n in range(1, 3501) if n % 500]
    assert sorted(names) == expected  # none lost, none twice
    assert listed["total"] == len(expected)
    assert total(client, alice, tag="bulk") == len(expected)


def test_a_rerun_after_the_last_chunk_imports_nothing_more(
    client: TestClient, alice: dict[str, str]
) -> None:
    file_id = upload(client, alice, numbered_csv(1000))
    first = ChunkRecorder(crash_after=1)
    with pytest.raises(Crash):
        import_file(client, alice, file_id, recorder=first)

    result = import_file(client, alice, file_id, checkpoint=first.saved)

    assert result["imported"] == 1000
    assert total(client, alice) == 1000


def test_a_cancel_stops_after_the_chunk_and_reports_what_it_kept(
    client: TestClient, alice: dict[str, str]
) -> None:
    file_id = upload(client, alice, numbered_csv(2500))
    with pytest.raises(JobCancelled) as cancelled:
        import_file(client, alice, file_id, recorder=ChunkRecorder(cancel_after=1))

    assert cancelled.value.result == {"imported": 1000, "error_count": 0, "errors": []}
    assert total(client, alice) == 1000


def test_the_counting_pass_reports_in_and_a_cancel_there_imports_nothing(
    client: TestClient, alice: dict[str, str]
) -> None:
    file_id = upload(client, alice, numbered_csv(12_000))
    recorder = ChunkRecorder(cancel_after=1)
    with pytest.raises(JobCancelled) as cancelled:
        import_file(client, alice, file_id, recorder=recorder)

    assert recorder.calls == [({}, 0, None)]
    assert cancelled.value.result == {"imported": 0, "error_count": 0, "errors": []}
    assert total(client, alice) == 0


# --- files that cannot be imported --------------------------------------------------------------


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"


@pytest.mark.parametrize(
    ("content", "filename", "content_type", "message"),
    [
        (PNG, "items.csv", "text/csv", "looks binary"),
        (HEADER.encode() + b"Caf\xe9,,1,0,\r\n", "items.csv", "text/csv", "not UTF-8"),
        (b'{"name": "\xff"}\n', "items.ndjson", "application/x-ndjson", "not UTF-8"),
        (b"%PDF-1.7 ...", "items.pdf", "application/pdf", "neither CSV"),
        (b"Dear diary,\ntoday I\n", "notes.csv", "text/csv", "not the header"),
        (b"name,price,name\r\nx,1,y\r\n", "items.csv", "text/csv", "names a column twice"),
        (b"", "items.csv", "text/csv", "empty"),
        (
            b'name,price\r\n"x' + b"y" * 200_000 + b'",1\r\n',
            "items.csv",
            "text/csv",
            "not valid CSV",
        ),
    ],
    ids=[
        "binary",
        "latin-1-csv",
        "latin-1-ndjson",
        "pdf",
        "not-csv",
        "dup-column",
        "empty",
        "huge",
    ],
)
def test_a_file_that_is_not_csv_or_ndjson_fails_cleanly_and_imports_nothing(
    client: TestClient,
    alice: dict[str, str],
    content: bytes,
    filename: str,
    content_type: str,
    message: str,
) -> None:
    file_id = upload(client, alice, content, filename, content_type)
    failure = import_fails(client, alice, file_id)

    assert failure.message.startswith(f"Cannot import '{filename}'"), failure.message
    assert message in failure.message
    assert total(client, alice) == 0


def test_a_file_that_turns_binary_late_imports_nothing(
    client: TestClient, alice: dict[str, str]
) -> None:
    content = numbered_csv(3000) + b"\x00\x01\x02"
    failure = import_fails(client, alice, upload(client, alice, content))

    assert "looks binary" in failure.message
    assert total(client, alice) == 0


def test_an_empty_ndjson_file_imports_nothing_and_succeeds(
    client: TestClient, alice: dict[str, str]
) -> None:
    recorder = ChunkRecorder()
    file_id = upload(client, alice, b"", "items.ndjson", "application/x-ndjson")

    assert import_file(client, alice, file_id, recorder=recorder)["imported"] == 0
    assert recorder.progress == [(0, 0)]


def test_someone_elses_file_is_not_imported(
    client: TestClient, alice: dict[str, str], bob: dict[str, str]
) -> None:
    file_id = upload(client, bob, numbered_csv(3))
    failure = import_fails(client, alice, file_id)

    assert failure.message == "The file to import no longer exists"
    assert total(client, alice) == 0
    assert total(client, bob) == 0


def test_prices_keep_their_exact_value(client: TestClient, alice: dict[str, str]) -> None:
    content = HEADER + "A,,9999999999.99,99.99,\r\nB,,0.1,0,\r\n"
    import_file(client, alice, upload(client, alice, content.encode()))

    prices = [Decimal(item["price"]) for item in all_items(client, alice)["items"]]
    assert prices == [Decimal("9999999999.99"), Decimal("0.10")]
