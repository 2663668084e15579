"""Downloads over HTTP: whole, ranged and conditional, and inert in a browser."""

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from storeroom.core.config import Settings
from tests.asgi import call
from tests.conftest import run_in_app
from tests.files.conftest import files_on_disk, sha256, upload, uploaded

CONTENT = bytes(range(100))  # byte i has the value i


@pytest.fixture
def file_id(client: TestClient, alice: dict[str, str]) -> str:
    return uploaded(client, alice, CONTENT, filename=b"data.bin", content_type=b"text/csv")


def content_url(file_id: str) -> str:
    return f"/api/v1/files/{file_id}/content"


def test_a_download_carries_type_length_etag_and_disposition(
    client: TestClient, alice: dict[str, str], file_id: str
) -> None:
    response = client.get(content_url(file_id), headers=alice)
    assert response.status_code == 200
    assert response.content == CONTENT
    assert response.headers["content-type"] == "text/csv"
    assert response.headers["content-length"] == "100"
    assert response.headers["etag"] == f'"{sha256(CONTENT)}"'
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["content-disposition"] == 'attachment; filename="data.bin"'
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    ("range_header", "first", "last"),
    [
        ("bytes=0-9", 0, 9),
        ("bytes=10-10", 10, 10),
        ("bytes=90-", 90, 99),
        ("bytes=-5", 95, 99),
        ("bytes=-500", 0, 99),  # a suffix longer than the file is the whole file
        ("bytes=95-1000", 95, 99),  # a last position past the end is clamped
        ("Bytes = 3 - 4", 3, 4),
    ],
)
def test_a_single_range_is_206_with_content_range(
    client: TestClient,
    alice: dict[str, str],
    file_id: str,
    range_header: str,
    first: int,
    last: int,
) -> None:
    response = client.get(content_url(file_id), headers={**alice, "Range": range_header})
    assert response.status_code == 206
    assert response.content == CONTENT[first : last + 1]
    assert response.headers["content-range"] == f"bytes {first}-{last}/100"
    assert response.headers["content-length"] == str(last - first + 1)


@pytest.mark.parametrize(
    "range_header",
    ["bytes=100-", "bytes=100-200", "bytes=-0", "bytes=5-2", "bytes=abc", "bytes=1-x", "bytes=-"],
)
def test_an_unsatisfiable_or_malformed_range_is_416_in_the_error_shape(
    client: TestClient, alice: dict[str, str], file_id: str, range_header: str
) -> None:
    response = client.get(content_url(file_id), headers={**alice, "Range": range_header})
    assert response.status_code == 416
    assert response.json()["code"] == "range_not_satisfiable"
    assert response.headers["content-range"] == "bytes */100"


@pytest.mark.parametrize("range_header", ["bytes=0-1,5-6", "items=0-1"])
def test_several_ranges_or_another_unit_get_the_whole_file(
    client: TestClient, alice: dict[str, str], file_id: str, range_header: str
) -> None:
    response = client.get(content_url(file_id), headers={**alice, "Range": range_header})
    assert response.status_code == 200
    assert response.content == CONTENT


def test_any_range_of_an_empty_file_is_416(client: TestClient, alice: dict[str, str]) -> None:
    empty = uploaded(client, alice, b"")
    for range_header in ("bytes=0-", "bytes=-1", "bytes=0-0"):
        response = client.get(content_url(empty), headers={**alice, "Range": range_header})
        assert response.status_code == 416
        assert response.headers["content-range"] == "bytes */0"


@pytest.mark.parametrize("validator", ["{etag}", "W/{etag}", '"other", {etag}', "*"])
def test_if_none_match_with_the_etag_is_304_without_a_body(
    client: TestClient, alice: dict[str, str], file_id: str, validator: str
) -> None:
    etag = f'"{sha256(CONTENT)}"'
    response = client.get(
        content_url(file_id),
        headers={**alice, "If-None-Match": validator.format(etag=etag), "Range": "bytes=0-1"},
    )
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == etag


def test_if_none_match_with_another_etag_sends_the_file(
    client: TestClient, alice: dict[str, str], file_id: str
) -> None:
    response = client.get(content_url(file_id), headers={**alice, "If-None-Match": '"stale"'})
    assert response.status_code == 200
    assert response.content == CONTENT


def test_if_range_with_another_etag_sends_the_whole_file(
    client: TestClient, alice: dict[str, str], file_id: str
) -> None:
    stale = client.get(
        content_url(file_id), headers={**alice, "Range": "bytes=0-1", "If-Range": '"stale"'}
    )
    assert stale.status_code == 200
    assert stale.content == CONTENT
    current = client.get(
        content_url(file_id),
        headers={**alice, "Range": "bytes=0-1", "If-Range": f'"{sha256(CONTENT)}"'},
    )
    assert current.status_code == 206
    assert current.content == CONTENT[:2]


def test_an_html_upload_is_served_as_an_inert_attachment(
    client: TestClient, alice: dict[str, str]
) -> None:
    page = b"<html><script>alert(document.cookie)</script></html>"
    file_id = uploaded(client, alice, page, filename=b"evil.html", content_type=b"text/html")
    assert client.get(f"/api/v1/files/{file_id}", headers=alice).json()["content_type"] == (
        "text/html"
    )
    response = client.get(content_url(file_id), headers=alice)
    assert response.content == page
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"].startswith("attachment;")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in response.headers["content-security-policy"]


@pytest.mark.parametrize("content_type", [b"image/svg+xml", b"application/javascript", b"text/xml"])
def test_active_content_types_are_served_as_octet_stream(
    client: TestClient, alice: dict[str, str], content_type: bytes
) -> None:
    file_id = uploaded(client, alice, b"<svg/>", content_type=content_type)
    response = client.get(content_url(file_id), headers=alice)
    assert response.headers["content-type"] == "application/octet-stream"


def test_a_safe_image_type_is_served_as_declared(client: TestClient, alice: dict[str, str]) -> None:
    file_id = uploaded(client, alice, b"\x89PNG", filename=b"a.png", content_type=b"image/png")
    response = client.get(content_url(file_id), headers=alice)
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-disposition"] == 'attachment; filename="a.png"'


def test_a_non_ascii_name_is_sent_as_filename_star(
    client: TestClient, alice: dict[str, str]
) -> None:
    file_id = uploaded(client, alice, b"x", filename='Größe "1".txt'.encode())
    disposition = client.get(content_url(file_id), headers=alice).headers["content-disposition"]
    assert disposition == (
        "attachment; filename=\"Gr__e _1_.txt\"; filename*=UTF-8''Gr%C3%B6%C3%9Fe%20%221%22.txt"
    )


def test_another_users_file_is_404_everywhere(
    client: TestClient, alice: dict[str, str], bob: dict[str, str], file_id: str
) -> None:
    for method, path in (
        ("GET", f"/api/v1/files/{file_id}"),
        ("GET", content_url(file_id)),
        ("DELETE", f"/api/v1/files/{file_id}"),
    ):
        response = client.request(method, path, headers=bob)
        assert response.status_code == 404, (method, path)
        assert response.json()["code"] == "file_not_found"
    assert client.get("/api/v1/files", headers=bob).json()["total"] == 0
    assert client.get(content_url(file_id), headers=alice).content == CONTENT


def test_a_malformed_file_id_is_422(client: TestClient, alice: dict[str, str]) -> None:
    assert client.get("/api/v1/files/not-a-uuid", headers=alice).status_code == 422


def test_deleting_removes_the_row_and_the_bytes(
    client: TestClient, alice: dict[str, str], settings: Settings, file_id: str
) -> None:
    assert len(files_on_disk(settings)) == 1
    assert client.delete(f"/api/v1/files/{file_id}", headers=alice).status_code == 204
    assert client.get(f"/api/v1/files/{file_id}", headers=alice).status_code == 404
    assert client.get(content_url(file_id), headers=alice).status_code == 404
    assert files_on_disk(settings) == []


def test_a_row_whose_bytes_are_gone_is_404_not_500(
    client: TestClient, alice: dict[str, str], settings: Settings, file_id: str
) -> None:
    [stored] = files_on_disk(settings)
    stored.unlink()
    response = client.get(content_url(file_id), headers=alice)
    assert response.status_code == 404
    assert response.json()["code"] == "file_content_missing"


def test_the_list_pages_through_files_newest_first(
    client: TestClient, alice: dict[str, str]
) -> None:
    ids = [uploaded(client, alice, bytes([n])) for n in range(5)]
    first = client.get("/api/v1/files", params={"limit": 2}, headers=alice).json()
    assert first["total"] == 5
    assert [file["id"] for file in first["items"]] == ids[::-1][:2]
    rest = client.get("/api/v1/files", params={"offset": 2, "limit": 10}, headers=alice).json()
    assert [file["id"] for file in rest["items"]] == ids[::-1][2:]
    assert client.get("/api/v1/files", params={"limit": 0}, headers=alice).status_code == 422


def test_reading_files_needs_a_user(client: TestClient, file_id: str) -> None:
    assert client.get("/api/v1/files").status_code == 401
    assert client.get(content_url(file_id)).status_code == 401
    assert upload(client, {}, b"x").status_code == 401


def open_descriptors_under(directory: Path) -> list[str]:
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
    return [target for target in targets if target.startswith(str(directory))]


def test_a_download_cut_off_by_the_client_closes_the_file(
    client: TestClient, alice: dict[str, str], settings: Settings, file_id: str
) -> None:
    app: FastAPI = client.app  # type: ignore[assignment]
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()  # the client never says anything more
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])
        else:
            raise OSError("connection reset by peer")

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": content_url(file_id),
        "raw_path": content_url(file_id).encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", alice["Authorization"].encode()),
            (b"range", b"bytes=0-49"),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }

    async def download() -> None:
        with contextlib.suppress(Exception):
            await app(scope, receive, send)

    run_in_app(client, download)
    assert statuses == [206]
    assert open_descriptors_under(settings.data_dir / "files") == []


def test_a_read_only_api_key_downloads_but_cannot_upload_or_delete(
    client: TestClient, alice: dict[str, str], file_id: str
) -> None:
    created = client.post(
        "/api/v1/users/me/api-keys", json={"name": "backup", "scope": "read"}, headers=alice
    )
    read_key = {"X-API-Key": created.json()["key"]}
    assert client.get(content_url(file_id), headers=read_key).content == CONTENT
    assert upload(client, read_key, b"x").status_code == 403
    assert client.delete(f"/api/v1/files/{file_id}", headers=read_key).status_code == 403
    assert client.get("/api/v1/files", headers=alice).json()["total"] == 1


class CountingChunks:
    """A download's chunks as storage hands them over, counting what is read of them."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.bytes_read = 0
        self.closed = False

    def __aiter__(self) -> "CountingChunks":
        return self

    async def __anext__(self) -> bytes:
        chunk: bytes = await anext(self.inner)
        self.bytes_read += len(chunk)
        return chunk

    async def aclose(self) -> None:
        self.closed = True
        await self.inner.aclose()


@pytest.mark.parametrize(
    ("conditions", "status"),
    [
        ({}, 200),
        ({"Range": "bytes=10-19"}, 206),
        ({"Range": "bytes=10-19", "If-Range": '"another"'}, 200),
        ({"If-None-Match": f'"{sha256(CONTENT)}"'}, 304),
        ({"Range": "bytes=500-"}, 416),
    ],
)
def test_head_of_a_download_has_the_gets_head_and_reads_no_bytes(
    client: TestClient,
    alice: dict[str, str],
    settings: Settings,
    file_id: str,
    monkeypatch: pytest.MonkeyPatch,
    conditions: dict[str, str],
    status: int,
) -> None:
    app: FastAPI = client.app  # type: ignore[assignment]
    storage = app.state.file_storage
    opened: list[CountingChunks] = []
    real_open_read = storage.open_read

    async def counting_open_read(key: str, **options: Any) -> CountingChunks:
        opened.append(CountingChunks(await real_open_read(key, **options)))
        return opened[-1]

    monkeypatch.setattr(storage, "open_read", counting_open_read)
    headers = {**alice, **conditions}
    get = call(client, "GET", content_url(file_id), headers)
    head = call(client, "HEAD", content_url(file_id), headers)

    assert get.status == head.status == status
    assert head.comparable_headers() == get.comparable_headers()
    assert head.body == b""
    if status != 304:
        assert head.header("content-length") == str(len(get.body))
    if status in (200, 206):
        get_read, head_read = opened
        assert get_read.bytes_read == len(get.body) > 0
        assert head_read.bytes_read == 0 and head_read.closed
    assert open_descriptors_under(settings.data_dir / "files") == []
