"""Files test plumbing: small limits, and multipart bodies built byte by byte (so filenames
with NUL, slashes or raw UTF-8 reach the server exactly as a hostile client would send them)."""

import hashlib

import httpx
import pytest
from fastapi.testclient import TestClient

from storeroom.core.config import Settings
from tests.s3 import Stored, s3_settings, stored

MAX_UPLOAD_BYTES = 1024
QUOTA_BYTES = 4096
BOUNDARY = "storeroom-test-boundary-7d1f"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


@pytest.fixture(params=["file", "s3"])
def storage_backend(request: pytest.FixtureRequest) -> str:
    """Every files test runs on local files and on S3 (a real S3 API: moto in server mode)."""
    backend: str = request.param
    return backend


@pytest.fixture
def settings(settings: Settings, storage_backend: str, request: pytest.FixtureRequest) -> Settings:
    limits = {"max_upload_bytes": MAX_UPLOAD_BYTES, "user_quota_bytes": QUOTA_BYTES}
    if storage_backend == "s3":
        return s3_settings(settings, request.getfixturevalue("s3_server"), **limits)
    return settings.model_copy(update=limits)


def multipart_body(
    content: bytes | None,
    *,
    filename: bytes = b"hello.txt",
    content_type: bytes | None = b"text/plain",
    fields: dict[str, str] | None = None,
) -> bytes:
    boundary = BOUNDARY.encode()
    parts = []
    for name, value in (fields or {}).items():
        parts.append(
            b'--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n'
            % (boundary, name.encode(), value.encode())
        )
    if content is not None:
        head = b'--%s\r\nContent-Disposition: form-data; name="file"; filename="%s"\r\n' % (
            boundary,
            filename,
        )
        if content_type is not None:
            head += b"Content-Type: %s\r\n" % content_type
        parts.append(head + b"\r\n" + content + b"\r\n")
    return b"".join(parts) + b"--%s--\r\n" % boundary


def upload(
    client: TestClient,
    headers: dict[str, str],
    content: bytes | None = b"hello",
    **options: object,
) -> httpx.Response:
    body = multipart_body(content, **options)  # type: ignore[arg-type]
    return client.post(
        "/api/v1/files", content=body, headers={**headers, "Content-Type": MULTIPART}
    )


def uploaded(client: TestClient, headers: dict[str, str], content: bytes, **options: object) -> str:
    response = upload(client, headers, content, **options)
    assert response.status_code == 201, response.text
    file_id: str = response.json()["id"]
    return file_id


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def files_on_disk(settings: Settings) -> list[Stored]:
    """Everything in the storage, finished or not: files and temp files in the storage
    directory, or objects and multipart uploads under the S3 prefix."""
    return stored(settings)
