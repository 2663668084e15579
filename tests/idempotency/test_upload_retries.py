"""Idempotent retries of uploads: a retry is recognised by its key, media type and length before
its body is read, so a replay never reads the body again; a retry while the first upload still
streams is 409; a failed upload is not kept."""

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from storeroom.core.config import Settings
from tests.conftest import run_in_app
from tests.files.conftest import MULTIPART, files_on_disk, multipart_body


def upload(
    client: TestClient, headers: dict[str, str], body: bytes, key: str = "upload-1"
) -> httpx.Response:
    return client.post(
        "/api/v1/files",
        content=body,
        headers={**headers, "Content-Type": MULTIPART, "Idempotency-Key": key},
    )


def file_total(client: TestClient, headers: dict[str, str]) -> int:
    total: int = client.get("/api/v1/files", headers=headers).json()["total"]
    return total


class RawUpload:
    """POST /api/v1/files straight through ASGI, its body fed in `parts` one per receive (and
    `between` awaited before the second), counting how often the app asked for the body."""

    def __init__(
        self,
        app: FastAPI,
        headers: dict[str, str],
        parts: list[bytes],
        content_length: int,
        between: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.app = app
        self.headers = [
            (b"host", b"testserver"),
            (b"content-type", MULTIPART.encode()),
            (b"content-length", str(content_length).encode()),
            *((name.lower().encode(), value.encode()) for name, value in headers.items()),
        ]
        self.parts = parts
        self.between = between
        self.reads = 0
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        self.reads += 1
        if self.reads > len(self.parts):
            return {"type": "http.disconnect"}
        if self.reads == 2 and self.between is not None:
            await self.between()
        return {
            "type": "http.request",
            "body": self.parts[self.reads - 1],
            "more_body": self.reads < len(self.parts),
        }

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    async def __call__(self) -> "RawUpload":
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/api/v1/files",
            "raw_path": b"/api/v1/files",
            "root_path": "",
            "query_string": b"",
            "headers": self.headers,
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        await self.app(scope, self.receive, self.send)
        return self

    @property
    def status(self) -> int:
        status: int = self.sent[0]["status"]
        return status

    @property
    def response_headers(self) -> dict[str, str]:
        return {name.decode(): value.decode() for name, value in self.sent[0]["headers"]}

    @property
    def body(self) -> bytes:
        return b"".join(message.get("body", b"") for message in self.sent[1:])


def test_a_retried_upload_is_answered_without_reading_its_body(
    client: TestClient, alice: dict[str, str], settings: Settings
) -> None:
    body = multipart_body(b"shelf contents " * 20)
    first = upload(client, alice, body)
    assert first.status_code == 201, first.text
    app: FastAPI = client.app  # type: ignore[assignment]

    # The retry declares the same length but sends nothing: any read would find the client gone.
    retry = RawUpload(app, {**alice, "Idempotency-Key": "upload-1"}, [], len(body))
    run_in_app(client, retry)
    assert retry.reads == 0
    assert retry.status == 201
    assert retry.response_headers["idempotent-replayed"] == "true"
    assert retry.response_headers["location"] == first.headers["location"]
    assert retry.body == first.content
    assert file_total(client, alice) == 1
    assert len(files_on_disk(settings)) == 1


def test_a_retry_with_a_new_multipart_boundary_is_the_same_upload(
    client: TestClient, alice: dict[str, str]
) -> None:
    """httpx, like browsers and curl, draws a new boundary for every request it sends."""
    headers = {**alice, "Idempotency-Key": "upload-1"}
    files = {"file": ("note.txt", b"hello, shelf", "text/plain")}
    first = client.post("/api/v1/files", files=files, headers=headers)
    retry = client.post("/api/v1/files", files=files, headers=headers)
    assert first.status_code == 201, first.text
    assert first.request.headers["content-type"] != retry.request.headers["content-type"]
    assert retry.status_code == 201
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.json() == first.json()
    assert file_total(client, alice) == 1


def test_an_upload_retried_with_another_length_is_422(
    client: TestClient, alice: dict[str, str]
) -> None:
    assert upload(client, alice, multipart_body(b"first file")).status_code == 201
    other = upload(client, alice, multipart_body(b"another, longer file"))
    assert other.status_code == 422
    assert other.json()["code"] == "idempotency_key_reused"
    assert file_total(client, alice) == 1


def test_a_retry_while_the_upload_streams_is_409(
    client: TestClient, alice: dict[str, str], settings: Settings
) -> None:
    body = multipart_body(b"x" * 900)
    app: FastAPI = client.app  # type: ignore[assignment]
    retries: list[httpx.Response] = []

    async def retry_meanwhile() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            retries.append(
                await http.post(
                    "/api/v1/files",
                    content=body,
                    headers={**alice, "Content-Type": MULTIPART, "Idempotency-Key": "upload-1"},
                )
            )

    first = RawUpload(
        app,
        {**alice, "Idempotency-Key": "upload-1"},
        [body[:500], body[500:]],
        len(body),
        between=retry_meanwhile,
    )
    run_in_app(client, first)
    [retry] = retries
    assert retry.status_code == 409
    assert retry.json()["code"] == "idempotency_key_in_progress"
    assert first.status == 201
    again = upload(client, alice, body)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.body
    assert file_total(client, alice) == 1
    assert len(files_on_disk(settings)) == 1


def test_a_failed_upload_is_not_kept_so_its_retry_runs(
    client: TestClient, alice: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def disk_failure() -> None:
        raise OSError("no space left on device")

    body = multipart_body(b"hello")
    app: FastAPI = client.app  # type: ignore[assignment]
    with monkeypatch.context() as patch:
        patch.setattr(app.state.file_storage, "open_write", disk_failure)
        assert upload(client, alice, body).status_code == 500
    retry = upload(client, alice, body)
    assert retry.status_code == 201
    assert "idempotent-replayed" not in retry.headers
    assert file_total(client, alice) == 1
