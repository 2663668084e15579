"""Refresh tokens over HTTP: rotation, reuse detection, logout, expiry and revoke-all."""

from fastapi import FastAPI
from fastapi.testclient import TestClient

from storeroom.auth import service as auth_service
from tests.auth.conftest import bearer, token_pair
from tests.conftest import FakeClock, register, run_in_app


def refresh(client: TestClient, refresh_token: str) -> int:
    return client.post("/api/v1/auth/refresh", json={"refresh_token": refresh_token}).status_code


def test_login_returns_an_access_and_a_refresh_token(client: TestClient) -> None:
    register(client, "alice@example.com")
    pair = token_pair(client, "alice@example.com")
    assert set(pair) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert pair["token_type"] == "bearer"
    assert len(pair["refresh_token"]) >= 43


def test_refresh_returns_a_working_pair_and_the_old_token_stops_working(
    client: TestClient,
) -> None:
    register(client, "alice@example.com")
    first = token_pair(client, "alice@example.com")
    response = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert response.status_code == 200
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    me = client.get("/api/v1/users/me", headers=bearer(second["access_token"]))
    assert me.json()["email"] == "alice@example.com"
    assert refresh(client, second["refresh_token"]) == 200


def test_reusing_a_refresh_token_revokes_its_whole_family(client: TestClient) -> None:
    register(client, "alice@example.com")
    stolen = token_pair(client, "alice@example.com")["refresh_token"]
    legitimate = client.post("/api/v1/auth/refresh", json={"refresh_token": stolen}).json()
    reused = client.post("/api/v1/auth/refresh", json={"refresh_token": stolen})
    assert reused.status_code == 401
    assert reused.json()["code"] == "invalid_refresh_token"
    assert refresh(client, legitimate["refresh_token"]) == 401


def test_reuse_leaves_the_users_other_sessions_alone(client: TestClient) -> None:
    register(client, "alice@example.com")
    stolen = token_pair(client, "alice@example.com")["refresh_token"]
    laptop = token_pair(client, "alice@example.com")["refresh_token"]
    assert refresh(client, stolen) == 200
    assert refresh(client, stolen) == 401
    assert refresh(client, laptop) == 200


def test_logout_revokes_the_refresh_token(client: TestClient) -> None:
    register(client, "alice@example.com")
    pair = token_pair(client, "alice@example.com")
    response = client.post("/api/v1/auth/logout", json={"refresh_token": pair["refresh_token"]})
    assert response.status_code == 204
    assert refresh(client, pair["refresh_token"]) == 401


def test_logout_with_an_unknown_token_is_204(client: TestClient) -> None:
    response = client.post("/api/v1/auth/logout", json={"refresh_token": "never-issued"})
    assert response.status_code == 204


def test_unknown_or_malformed_refresh_token_is_refused(client: TestClient) -> None:
    assert refresh(client, "never-issued") == 401
    for body in ({}, {"refresh_token": ""}, {"refresh_token": 12}, {"refresh_token": "x" * 300}):
        response = client.post("/api/v1/auth/refresh", json=body)
        assert response.status_code == 422, body
        assert response.json()["code"] == "validation_error"


def test_expired_refresh_token_is_401(client: TestClient, clock: FakeClock) -> None:
    register(client, "alice@example.com")
    pair = token_pair(client, "alice@example.com")
    clock.advance(15 * 24 * 3600)
    assert refresh(client, pair["refresh_token"]) == 401


def test_refresh_token_of_a_deleted_account_is_401(client: TestClient) -> None:
    register(client, "alice@example.com")
    pair = token_pair(client, "alice@example.com")
    client.delete("/api/v1/users/me", headers=bearer(pair["access_token"]))
    assert refresh(client, pair["refresh_token"]) == 401


def test_revoke_all_refresh_tokens_ends_every_session(client: TestClient) -> None:
    alice = register(client, "alice@example.com")
    register(client, "bob@example.com")
    phone = token_pair(client, "alice@example.com")["refresh_token"]
    laptop = token_pair(client, "alice@example.com")["refresh_token"]
    bobs = token_pair(client, "bob@example.com")["refresh_token"]

    async def revoke() -> None:
        app: FastAPI = client.app  # type: ignore[assignment]
        async with app.state.sessionmaker() as session, session.begin():
            await auth_service.revoke_all_refresh_tokens(session, alice["id"])

    run_in_app(client, revoke)
    assert refresh(client, phone) == 401
    assert refresh(client, laptop) == 401
    assert refresh(client, bobs) == 200


def test_nul_in_a_refresh_token_is_a_422(client: TestClient) -> None:
    for path in ("/api/v1/auth/refresh", "/api/v1/auth/logout"):
        response = client.post(path, json={"refresh_token": "sr\x00token"})
        assert response.status_code == 422, (path, response.text)
        assert response.json()["errors"][0]["loc"] == ["body", "refresh_token"]
