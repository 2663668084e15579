"""Headers a browser or a cache acts on: nosniff everywhere, no-store on credentials and the
account, and CORS that never hands credentials to any origin or to the opaque origin "null"."""

import pydantic
import pytest
from fastapi.testclient import TestClient

from storeroom.core.config import Settings
from storeroom.main import create_app
from tests.conftest import PASSWORD, register


def test_every_response_says_nosniff(client: TestClient, alice: dict[str, str]) -> None:
    for response in (
        client.get("/healthz"),
        client.get("/api/v1/users/me", headers=alice),
        client.get("/api/v1/nowhere"),
        client.post("/api/v1/items", json={}, headers=alice),
    ):
        assert response.headers["x-content-type-options"] == "nosniff", response.request.url


def test_responses_carrying_credentials_or_the_account_are_not_stored(
    client: TestClient,
) -> None:
    register(client, "alice@example.com")
    login = client.post(
        "/api/v1/auth/token", data={"username": "alice@example.com", "password": PASSWORD}
    )
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    refreshed = client.post(
        "/api/v1/auth/refresh", json={"refresh_token": login.json()["refresh_token"]}
    )
    key = client.post("/api/v1/users/me/api-keys", json={"name": "ci"}, headers=headers)
    me = client.get("/api/v1/users/me", headers=headers)
    patched = client.patch("/api/v1/users/me", json={}, headers=headers)

    for response in (login, refreshed, key, me, patched):
        assert response.status_code in (200, 201), response.text
        assert response.headers["cache-control"] == "no-store", response.request.url
        assert response.headers["pragma"] == "no-cache"


def _cors_client(settings: Settings, origins: list[str]) -> TestClient:
    return TestClient(create_app(settings.model_copy(update={"cors_origins": origins})))


def test_any_origin_never_comes_with_credentials(settings: Settings) -> None:
    with _cors_client(settings, ["*"]) as client:
        simple = client.get("/healthz", headers={"Origin": "https://evil.example"})
        preflight = client.options(
            "/api/v1/users/me",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
    for response in (simple, preflight):
        assert response.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in response.headers


def test_the_null_origin_is_never_allowed(settings: Settings) -> None:
    with _cors_client(settings, ["*"]) as client:
        simple = client.get("/healthz", headers={"Origin": "null"})
        preflight = client.options(
            "/api/v1/users/me",
            headers={"Origin": "null", "Access-Control-Request-Method": "GET"},
        )
    assert simple.status_code == 200
    assert "access-control-allow-origin" not in simple.headers
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers


def test_null_cannot_be_configured_as_an_origin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOREROOM_CORS_ORIGINS", "https://app.example, null")
    with pytest.raises(pydantic.ValidationError, match="null"):
        Settings()


def test_explicit_origins_get_credentials_and_their_own_origin_back(settings: Settings) -> None:
    with _cors_client(settings, ["https://app.example"]) as client:
        allowed = client.get("/healthz", headers={"Origin": "https://app.example"})
        other = client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert allowed.headers["access-control-allow-credentials"] == "true"
    assert "access-control-allow-origin" not in other.headers
