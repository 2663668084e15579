"""Files test plumbing: small limits, and multipart bodies built byte by byte (so filenames
with NUL, slashes or raw UTF-8 reach the server exactly as a hostile client would send them)."""

import hashlib
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from storeroom.core.config import Settings

MAX_UPLOAD_BYTES = 1024
QUOTA_BYTES = 4096
BOUNDARY = "storeroom-test-boundary-7d1f"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"max_upload_bytes": MAX_UPLOAD_BYTES, "user_quota_bytes": QUOTA_BYTES}
    )


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


def files_on_disk(settings: Settings) -> list[Path]:
    """Every regular file in the storage directory, finished or not."""
    root = settings.data_dir / "files"
    return sorted(path for path in root.rglob("*") if path.is_file()) if root.exists() else []
