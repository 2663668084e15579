"""Auth test plumbing: a small login limit, so limits are reached in a few requests."""

import base64
from typing import Any

import pytest
from fastapi.testclient import TestClient

from storeroom.core.config import Settings
from tests.conftest import PASSWORD

MAX_FAILURES = 3
WINDOW_SECONDS = 300


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"login_max_failures": MAX_FAILURES, "login_failure_window_seconds": WINDOW_SECONDS}
    )


def token_pair(client: TestClient, email: str, password: str = PASSWORD) -> dict[str, Any]:
    response = client.post("/api/v1/auth/token", data={"username": email, "password": password})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def basic(email: str, password: str = PASSWORD) -> dict[str, str]:
    encoded = base64.b64encode(f"{email}:{password}".encode()).decode("ascii")
    return {"Authorization": f"Basic {encoded}"}


def bearer(access_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}"}


def failed_login(client: TestClient, email: str) -> int:
    response = client.post(
        "/api/v1/auth/token", data={"username": email, "password": "wrong-password"}
    )
    return response.status_code
