"""Uploads over HTTP: streamed into storage with a hash, limits and quota, filenames."""

import asyncio
import re

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from storeroom.core.config import Settings
from tests.conftest import run_in_app
from tests.files.conftest import (
    MAX_UPLOAD_BYTES,
    MULTIPART,
    QUOTA_BYTES,
    files_on_disk,
    multipart_body,
    sha256,
    upload,
    uploaded,
)


def assert_nothing_stored(client: TestClient, headers: dict[str, str], settings: Settings) -> None:
    assert client.get("/api/v1/files", headers=headers).json()["total"] == 0
    assert files_on_disk(settings) == []


def test_upload_returns_the_metadata_and_a_location(
    client: TestClient, alice: dict[str, str], settings: Settings
) -> None:
    response = upload(client, alice, b"hello, shelf", filename=b"note.txt")
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {
        "id",
        "filename",
        "content_type",
        "size",
        "sha256",
        "item_id",
        "created_at",
    }
    assert body["item_id"] is None
    assert body["filename"] == "note.txt"
    assert body["content_type"] == "text/plain"
    assert body["size"] == 12
    assert body["sha256"] == sha256(b"hello, shelf")
    assert response.headers["location"] == f"/api/v1/files/{body['id']}"
    assert client.get(response.headers["location"], headers=alice).json() == body
    [stored] = files_on_disk(settings)
    assert stored.read_bytes() == b"hello, shelf"
    assert "note" not in str(stored)


def test_an_empty_file_is_stored(client: TestClient, alice: dict[str, str]) -> None:
    response = upload(client, alice, b"")
    assert response.status_code == 201
    assert response.json()["size"] == 0
    assert response.json()["sha256"] == sha256(b"")
    content = client.get(f"/api/v1/files/{response.json()['id']}/content", headers=alice)
    assert content.status_code == 200
    assert content.content == b""
    assert content.headers["content-length"] == "0"


def test_a_one_byte_file_round_trips(client: TestClient, alice: dict[str, str]) -> None:
    file_id = uploaded(client, alice, b"\x00")
    assert client.get(f"/api/v1/files/{file_id}/content", headers=alice).content == b"\x00"


def test_a_file_of_exactly_the_limit_is_accepted(client: TestClient, alice: dict[str, str]) -> None:
    content = bytes(range(256)) * (MAX_UPLOAD_BYTES // 256)
    response = upload(client, alice, content)
    assert response.status_code == 201
    assert response.json()["size"] == MAX_UPLOAD_BYTES
    download = client.get(f"/api/v1/files/{response.json()['id']}/content", headers=alice)
    assert download.content == content


def test_one_byte_over_the_limit_is_413_and_leaves_nothing(
    client: TestClient, alice: dict[str, str], settings: Settings
) -> None:
    response = upload(client, alice, b"x" * (MAX_UPLOAD_BYTES + 1))
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert str(MAX_UPLOAD_BYTES) in response.json()["detail"]
    assert_nothing_stored(client, alice, settings)


def test_a_content_length_far_over_the_limit_is_refused(
    client: TestClient, alice: dict[str, str], settings: Settings
) -> None:
    response = upload(client, alice, b"x" * (MAX_UPLOAD_BYTES + 200_000))
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert_nothing_stored(client, alice, settings)


def test_a_chunked_upload_over_the_limit_is_413_and_leaves_nothing(
    client: TestClient, alice: dict[str, str], settings: Settings
) -> None:
    body = multipart_body(b"y" * (MAX_UPLOAD_BYTES * 3))

    def chunks() -> object:
        for start in range(0, len(body), 100):
            yield body[start : start + 100]

    response = client.post(
        "/api/v1/files",
        content=chunks(),  # type: ignore[arg-type]
        headers={**alice, "Content-Type": MULTIPART},
    )
    assert response.status_code == 413
    assert_nothing_stored(client, alice, settings)


def test_the_quota_counts_every_file_of_the_user(
    client: TestClient, alice: dict[str, str], bob: dict[str, str], settings: Settings
) -> None:
    for _ in range(QUOTA_BYTES // MAX_UPLOAD_BYTES):
        uploaded(client, alice, b"q" * MAX_UPLOAD_BYTES)
    over = upload(client, alice, b"!")
    assert over.status_code == 413
    assert over.json()["code"] == "quota_exceeded"
    assert "quota" in over.json()["detail"]
    assert client.get("/api/v1/files", headers=alice).json()["total"] == 4
    assert len(files_on_disk(settings)) == 4
    assert upload(client, alice, b"").status_code == 201  # an empty file still fits
    assert upload(client, bob, b"bob's own quota").status_code == 201


def test_deleting_a_file_frees_its_quota(client: TestClient, alice: dict[str, str]) -> None:
    ids = [uploaded(client, alice, b"q" * MAX_UPLOAD_BYTES) for _ in range(4)]
    assert upload(client, alice, b"!").status_code == 413
    assert client.delete(f"/api/v1/files/{ids[0]}", headers=alice).status_code == 204
    assert upload(client, alice, b"!").status_code == 201


def test_concurrent_uploads_by_one_user_cannot_overrun_the_quota(
    client: TestClient, alice: dict[str, str], settings: Settings
) -> None:
    """Eight uploads race for room for four; the quota check must count them one by one."""
    app: FastAPI = client.app  # type: ignore[assignment]
    body = multipart_body(b"r" * 1000)

    async def race() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            responses = await asyncio.gather(
                *(
                    http.post(
                        "/api/v1/files",
                        content=body,
                        headers={**alice, "Content-Type": MULTIPART},
                    )
                    for _ in range(8)
                )
            )
        return sorted(response.status_code for response in responses)

    assert run_in_app(client, race) == [201] * 4 + [413] * 4
    listing = client.get("/api/v1/files", headers=alice).json()
    assert listing["total"] == 4
    assert sum(file["size"] for file in listing["items"]) <= QUOTA_BYTES
    assert len(files_on_disk(settings)) == 4


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        (b"../../etc/passwd", "passwd"),
        (b"a/b", "b"),
        (b"..\\..\\windows\\win.ini", "win.ini"),
        (b"evil\x00.html", "evil.html"),
        (b"..", "file"),
        (b"", "file"),
        (b"\xe2\x80\xaetxt.exe", "txt.exe"),  # a right-to-left override is dropped
        ("résumé 📦.txt".encode(), "résumé 📦.txt"),
    ],
)
def test_client_filenames_are_sanitized_and_never_become_paths(
    client: TestClient, alice: dict[str, str], settings: Settings, sent: bytes, kept: str
) -> None:
    response = upload(client, alice, b"content", filename=sent)
    assert response.status_code == 201, response.text
    assert response.json()["filename"] == kept
    [stored] = files_on_disk(settings)
    # The name is a key of Storeroom's own, under the storage's root: nothing of the client's.
    assert re.fullmatch("[0-9a-f]{32}", stored.name)
    root = settings.storage_location
    assert stored.location.startswith(str(root.path) if root.path else root.prefix)


def test_a_very_long_filename_is_cut_keeping_its_extension(
    client: TestClient, alice: dict[str, str]
) -> None:
    response = upload(client, alice, b"content", filename=b"n" * 3000 + b".csv")
    assert response.status_code == 201
    name = response.json()["filename"]
    assert len(name) == 255
    assert name.endswith("nnn.csv")


def test_a_part_header_beyond_8_kib_is_400(client: TestClient, alice: dict[str, str]) -> None:
    response = upload(client, alice, b"content", filename=b"n" * 20_000)
    assert response.status_code == 400
    assert response.json()["code"] == "malformed_multipart"


def test_a_missing_file_field_is_422(
    client: TestClient, alice: dict[str, str], settings: Settings
) -> None:
    body = multipart_body(None, fields={"comment": "no file here"})
    response = client.post(
        "/api/v1/files", content=body, headers={**alice, "Content-Type": MULTIPART}
    )
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert "file" in response.json()["detail"]
    assert_nothing_stored(client, alice, settings)


def test_two_files_in_one_upload_are_422_and_leave_nothing(
    client: TestClient, alice: dict[str, str], settings: Settings
) -> None:
    one = multipart_body(b"first").rsplit(b"--storeroom", 1)[0]
    body = one + multipart_body(b"second")
    response = client.post(
        "/api/v1/files", content=body, headers={**alice, "Content-Type": MULTIPART}
    )
    assert response.status_code == 422
    assert_nothing_stored(client, alice, settings)


def test_a_body_that_is_not_multipart_is_415(client: TestClient, alice: dict[str, str]) -> None:
    response = client.post("/api/v1/files", json={"file": "aGVsbG8="}, headers=alice)
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"
    raw = client.post(
        "/api/v1/files", content=b"hello", headers={**alice, "Content-Type": "text/plain"}
    )
    assert raw.status_code == 415


def test_a_truncated_multipart_body_is_400_and_leaves_nothing(
    client: TestClient, alice: dict[str, str], settings: Settings
) -> None:
    body = multipart_body(b"z" * 500)[:-60]
    response = client.post(
        "/api/v1/files", content=body, headers={**alice, "Content-Type": MULTIPART}
    )
    assert response.status_code == 400
    assert response.json()["code"] == "malformed_multipart"
    assert_nothing_stored(client, alice, settings)


def test_a_boundary_less_multipart_type_is_400(client: TestClient, alice: dict[str, str]) -> None:
    response = client.post(
        "/api/v1/files",
        content=multipart_body(b"x"),
        headers={**alice, "Content-Type": "multipart/form-data"},
    )
    assert response.status_code == 400


def test_an_unknown_content_type_is_recorded_as_octet_stream(
    client: TestClient, alice: dict[str, str]
) -> None:
    response = upload(client, alice, b"x", content_type=b"not a media type")
    assert response.json()["content_type"] == "application/octet-stream"
    missing = upload(client, alice, b"x", content_type=None)
    assert missing.json()["content_type"] == "application/octet-stream"


def test_uploading_needs_a_user(client: TestClient) -> None:
    response = client.post(
        "/api/v1/files", content=multipart_body(b"x"), headers={"Content-Type": MULTIPART}
    )
    assert response.status_code == 401
