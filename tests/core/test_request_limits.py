"""Request bodies other than uploads are capped (STOREROOM_MAX_BODY_BYTES): a larger one is
refused with 413 in the one error shape before it is buffered, and changes nothing."""

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from fastapi.testclient import TestClient

from storeroom.core.config import Settings
from storeroom.main import create_app
from tests.conftest import PASSWORD, register

LIMIT = 16 * 1024  # above the largest valid item (10,000-character description)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"max_body_bytes": LIMIT})


def _assert_too_large(response: object) -> None:
    status = getattr(response, "status_code", None)
    body = response.json()  # type: ignore[attr-defined]
    assert status == 413, body
    assert body["code"] == "payload_too_large"
    assert str(LIMIT) in body["detail"]


def test_an_oversized_json_body_is_413_before_anything_happens(
    client: TestClient, alice: dict[str, str]
) -> None:
    huge_name = "x" * (LIMIT + 1)
    response = client.post("/api/v1/items", json={"name": huge_name, "price": "1"}, headers=alice)
    _assert_too_large(response)
    assert client.get("/api/v1/items", headers=alice).json()["total"] == 0


def test_an_unauthenticated_endpoint_is_capped_too(client: TestClient) -> None:
    response = client.post("/api/v1/auth/logout", json={"refresh_token": "x" * (2 * LIMIT)})
    _assert_too_large(response)


def test_a_chunked_body_without_length_is_cut_off_at_the_limit(
    client: TestClient, alice: dict[str, str]
) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(LIMIT // 1024 + 2):
            yield b"y" * 1024
        yield b'", "price": "1"}'

    response = client.post(
        "/api/v1/items",
        content=chunks(),
        headers={**alice, "Content-Type": "application/json"},
    )
    _assert_too_large(response)


def test_an_oversized_login_form_is_413(client: TestClient) -> None:
    register(client, "alice@example.com")
    response = client.post(
        "/api/v1/auth/token",
        data={"username": "alice@example.com", "password": PASSWORD, "pad": "z" * LIMIT},
    )
    _assert_too_large(response)


def test_a_body_under_the_limit_is_served(client: TestClient, alice: dict[str, str]) -> None:
    response = client.post(
        "/api/v1/items",
        json={"name": "Lamp", "description": "d" * 10_000, "price": "1"},
        headers=alice,
    )
    assert response.status_code == 201


def test_uploads_keep_their_own_larger_limit(client: TestClient, alice: dict[str, str]) -> None:
    content = b"u" * (4 * LIMIT)
    response = client.post(
        "/api/v1/files",
        files={"file": ("big.bin", content, "application/octet-stream")},
        headers=alice,
    )
    assert response.status_code == 201, response.text
    assert response.json()["size"] == len(content)


@pytest.fixture
def live_server(settings: Settings) -> Iterator[int]:
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    port: int = server.servers[0].sockets[0].getsockname()[1]
    yield port
    server.should_exit = True
    thread.join(timeout=10)


def test_a_declared_150_mb_body_is_refused_before_it_is_sent(live_server: int) -> None:
    """Only the headers and 8 KiB of a declared 150 MB body go out; the 413 comes back
    without the server waiting for (or keeping) the rest."""
    with socket.create_connection(("127.0.0.1", live_server), timeout=10) as connection:
        connection.sendall(
            b"POST /api/v1/auth/logout HTTP/1.1\r\nHost: test\r\n"
            b"Content-Type: application/json\r\nContent-Length: 150000000\r\n\r\n"
            + b'{"refresh_token": "'
            + b"a" * 8192
        )
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = connection.recv(65536)
            if not chunk:
                break
            response += chunk
    assert response.startswith(b"HTTP/1.1 413 "), response[:200]
