"""HEAD: answered wherever GET is, with the GET's status and headers and no body; the Allow
header of a 405 names it."""

import re

from fastapi import FastAPI
from fastapi.testclient import TestClient

from storeroom.core.config import Settings
from tests.asgi import call
from tests.conftest import register
from tests.files.conftest import MULTIPART, multipart_body
from tests.web.sessions import reset_token

# Pages outside the API's schema that a browser or a probe may HEAD.
PAGES = [
    "/",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/openapi.json",
    "/login",
    "/register",
    "/forgot-password",
    "/reset-password?token={reset_token}",
    "/app",
    "/app/password",
    "/static/app.css",
    "/static/app.js",
]


def get_paths(client: TestClient) -> list[str]:
    """Every GET but the event streams, whose GET never ends by itself (see below)."""
    app: FastAPI = client.app  # type: ignore[assignment]
    paths = [
        path
        for path, operations in app.openapi()["paths"].items()
        if "get" in operations and not path.endswith("/events")
    ]
    return paths + PAGES


def test_head_of_an_event_stream_ends_after_its_head(
    client: TestClient, alice: dict[str, str]
) -> None:
    job = client.post("/api/v1/jobs", json={"type": "export_items", "format": "csv"}, headers=alice)
    assert job.status_code == 202, job.text
    app: FastAPI = client.app  # type: ignore[assignment]
    for path in ("/api/v1/events", f"/api/v1/jobs/{job.json()['id']}/events"):
        head = call(client, "HEAD", path, alice)
        assert head.status == 200, path
        assert head.header("content-type") == "text/event-stream; charset=utf-8"
        assert head.body == b""
        assert app.state.event_hub.subscription_count == 0  # nothing left subscribed


def test_every_get_resource_answers_head_with_the_same_status_and_headers_and_no_body(
    client: TestClient, admin: dict[str, str], settings: Settings
) -> None:
    item = client.post(
        "/api/v1/items", json={"name": "Lamp", "price": "12.00", "tags": ["a"]}, headers=admin
    ).json()
    upload = client.post(
        "/api/v1/files",
        content=multipart_body(b"some bytes", fields={"item_id": str(item["id"])}),
        headers={**admin, "Content-Type": MULTIPART},
    )
    assert upload.status_code == 201, upload.text
    job = client.post("/api/v1/jobs", json={"type": "export_items", "format": "csv"}, headers=admin)
    assert job.status_code == 202, job.text
    names = {
        "item_id": item["id"],
        "file_id": upload.json()["id"],
        "user_id": item["owner_id"],
        "job_id": job.json()["id"],
        "reset_token": reset_token(client, settings, "admin@example.com"),
    }
    paths = get_paths(client)
    assert len(paths) >= 16
    for template in paths:
        path = re.sub(r"\{(\w+)\}", lambda match: str(names[match[1]]), template)
        get = call(client, "GET", path, admin)
        head = call(client, "HEAD", path, admin)
        assert get.status < 400, (path, get.status, get.body)
        assert (head.status, head.comparable_headers()) == (
            get.status,
            get.comparable_headers(),
        ), path
        assert head.body == b"", path
        assert [m["type"] for m in head.messages] == ["http.response.start", "http.response.body"]


def test_head_of_an_error_is_the_errors_head(client: TestClient, alice: dict[str, str]) -> None:
    for path, headers, status in [
        ("/api/v1/users/me", {}, 401),
        ("/api/v1/items/999999", alice, 404),
        ("/api/v1/items?limit=0", alice, 422),
    ]:
        get = call(client, "GET", path, headers)
        head = call(client, "HEAD", path, headers)
        assert get.status == head.status == status
        assert head.comparable_headers() == get.comparable_headers()
        assert head.header("content-length") == str(len(get.body))
        assert head.body == b""


def test_allow_names_head_wherever_get_is_allowed(client: TestClient) -> None:
    register(client, "carol@example.com")
    options = client.options("/api/v1/items")
    assert options.status_code == 405
    assert options.headers["allow"] == "GET, HEAD, POST"
    assert client.put("/api/v1/users/me").headers["allow"] == "DELETE, GET, HEAD, PATCH"
    assert client.delete("/healthz").headers["allow"] == "GET, HEAD"
    # Where there is no GET there is no HEAD either.
    head_of_post_only = client.head("/api/v1/auth/token")
    assert head_of_post_only.status_code == 405
    assert head_of_post_only.headers["allow"] == "POST"
