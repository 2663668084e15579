"""Personal API keys over HTTP: create, use, list, revoke, expire, scopes and ownership."""

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from storeroom.auth.api_keys import service as api_keys_service
from storeroom.auth.dependencies import RequireScope, current_credential
from storeroom.auth.schemas import Scope
from storeroom.core.config import Settings
from storeroom.main import create_app
from tests.conftest import PASSWORD, TEST_SECRET_KEY, FakeClock


def create_key(client: TestClient, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    response = client.post(
        "/api/v1/users/me/api-keys", json={"name": "script", **fields}, headers=headers
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def with_key(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def test_create_shows_the_key_once_and_the_list_only_its_prefix(
    client: TestClient, alice: dict[str, str]
) -> None:
    created = create_key(client, alice)
    assert created["key"].startswith("sr_") and len(created["key"]) >= 3 + 43
    assert created["key"].startswith(created["prefix"]) and len(created["prefix"]) < 16
    assert created["scope"] == "write" and created["last_used_at"] is None
    listed = client.get("/api/v1/users/me/api-keys", headers=alice).json()
    assert listed["total"] == 1
    assert set(listed["items"][0]) == {
        "id",
        "name",
        "prefix",
        "scope",
        "created_at",
        "last_used_at",
        "expires_at",
    }
    assert listed["items"][0]["prefix"] == created["prefix"]


def test_api_key_authenticates_and_records_its_last_use(
    client: TestClient, alice: dict[str, str]
) -> None:
    key = create_key(client, alice)["key"]
    me = client.get("/api/v1/users/me", headers=with_key(key))
    assert me.status_code == 200
    assert me.json()["email"] == "alice@example.com"
    listed = client.get("/api/v1/users/me/api-keys", headers=alice).json()
    assert listed["items"][0]["last_used_at"] is not None


def test_unknown_key_is_the_same_401_as_a_bad_token(client: TestClient) -> None:
    unknown = client.get("/api/v1/users/me", headers=with_key("sr_" + "x" * 43))
    garbage = client.get("/api/v1/users/me", headers=with_key("not-a-key"))
    bad_token = client.get("/api/v1/users/me", headers={"Authorization": "Bearer nope"})
    assert unknown.status_code == garbage.status_code == bad_token.status_code == 401
    assert unknown.json()["detail"] == garbage.json()["detail"] == bad_token.json()["detail"]


def test_revoked_key_is_401(client: TestClient, alice: dict[str, str]) -> None:
    created = create_key(client, alice)
    response = client.delete(f"/api/v1/users/me/api-keys/{created['id']}", headers=alice)
    assert response.status_code == 204
    assert client.get("/api/v1/users/me", headers=with_key(created["key"])).status_code == 401
    assert client.get("/api/v1/users/me/api-keys", headers=alice).json()["total"] == 0


def test_key_stops_working_when_it_expires(
    client: TestClient, alice: dict[str, str], clock: FakeClock
) -> None:
    expires_at = clock.now + timedelta(hours=1)
    created = create_key(client, alice, expires_at=expires_at.isoformat())
    assert client.get("/api/v1/users/me", headers=with_key(created["key"])).status_code == 200
    clock.advance(3601)
    assert client.get("/api/v1/users/me", headers=with_key(created["key"])).status_code == 401


def test_expiry_in_the_past_or_without_a_time_zone_is_refused(
    client: TestClient, alice: dict[str, str], clock: FakeClock
) -> None:
    past = client.post(
        "/api/v1/users/me/api-keys",
        json={"name": "old", "expires_at": (clock.now - timedelta(minutes=1)).isoformat()},
        headers=alice,
    )
    assert past.status_code == 400
    assert past.json()["code"] == "expiry_in_the_past"
    naive = client.post(
        "/api/v1/users/me/api-keys",
        json={"name": "naive", "expires_at": "2999-01-01T00:00:00"},
        headers=alice,
    )
    assert naive.status_code == 422
    for body in ({}, {"name": ""}, {"name": "x" * 101}, {"name": "k", "scope": "admin"}):
        response = client.post("/api/v1/users/me/api-keys", json=body, headers=alice)
        assert response.status_code == 422, body
    assert client.get("/api/v1/users/me/api-keys", headers=alice).json()["total"] == 0


@pytest.mark.parametrize(
    "expires_at",
    ["9999-12-31T23:59:59-14:00", "9999-12-31T12:00:00-23:59", "0001-01-01T00:00:00+14:00"],
)
def test_expiry_that_utc_cannot_hold_is_a_422(
    client: TestClient, alice: dict[str, str], expires_at: str
) -> None:
    """Each names an instant past year 9999 or before year 1 once converted to UTC."""
    response = client.post(
        "/api/v1/users/me/api-keys", json={"name": "far", "expires_at": expires_at}, headers=alice
    )
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation_error"
    assert body["detail"] == "expires_at: is outside the years 1-9999 once converted to UTC"
    assert body["errors"][0]["loc"] == ["body", "expires_at"]
    assert client.get("/api/v1/users/me/api-keys", headers=alice).json()["total"] == 0


def test_expiry_is_kept_in_utc_up_to_the_last_second_of_9999(
    client: TestClient, alice: dict[str, str]
) -> None:
    created = create_key(client, alice, expires_at="9999-12-31T09:59:59-14:00")
    assert created["expires_at"] == "9999-12-31T23:59:59Z"
    listed = client.get("/api/v1/users/me/api-keys", headers=alice).json()
    assert listed["items"][0]["expires_at"] == "9999-12-31T23:59:59Z"
    assert client.get("/api/v1/users/me", headers=with_key(created["key"])).status_code == 200


def test_nul_in_a_key_name_is_a_422_and_creates_nothing(
    client: TestClient, alice: dict[str, str]
) -> None:
    response = client.post("/api/v1/users/me/api-keys", json={"name": "ci\x00"}, headers=alice)
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == "name: must not contain NUL characters (U+0000)"
    assert client.get("/api/v1/users/me/api-keys", headers=alice).json()["total"] == 0


def test_read_key_reads_but_gets_403_on_every_state_changing_request(
    client: TestClient, alice: dict[str, str]
) -> None:
    write_key = create_key(client, alice)
    read = with_key(create_key(client, alice, scope="read")["key"])
    assert client.get("/api/v1/users/me", headers=read).status_code == 200
    assert client.get("/api/v1/users/me/api-keys", headers=read).status_code == 200
    refused = [
        client.patch(
            "/api/v1/users/me",
            json={"password": "x" * 8, "current_password": PASSWORD},
            headers=read,
        ),
        client.delete("/api/v1/users/me", headers=read),
        client.post("/api/v1/users/me/api-keys", json={"name": "escalate"}, headers=read),
        client.delete(f"/api/v1/users/me/api-keys/{write_key['id']}", headers=read),
        client.patch("/api/v1/users/1", json={"is_active": False}, headers=read),
    ]
    assert [response.status_code for response in refused] == [403] * len(refused)
    assert refused[0].json()["code"] == "insufficient_scope"
    assert client.get("/api/v1/users/me/api-keys", headers=alice).json()["total"] == 2
    assert client.get("/api/v1/users/me", headers=read).status_code == 200


def test_write_key_may_change_state(client: TestClient, alice: dict[str, str]) -> None:
    write = with_key(create_key(client, alice)["key"])
    response = client.post("/api/v1/users/me/api-keys", json={"name": "second"}, headers=write)
    assert response.status_code == 201


def test_another_users_key_is_404_like_a_missing_one(
    client: TestClient, alice: dict[str, str], bob: dict[str, str]
) -> None:
    bobs = create_key(client, bob)
    other = client.delete(f"/api/v1/users/me/api-keys/{bobs['id']}", headers=alice)
    missing = client.delete("/api/v1/users/me/api-keys/999999", headers=alice)
    assert other.status_code == missing.status_code == 404
    assert other.json()["detail"] == missing.json()["detail"]
    assert client.get("/api/v1/users/me/api-keys", headers=alice).json()["total"] == 0
    assert client.get("/api/v1/users/me", headers=with_key(bobs["key"])).status_code == 200


def test_a_user_may_hold_only_so_many_keys(
    client: TestClient, alice: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api_keys_service, "MAX_KEYS_PER_USER", 2)
    first = create_key(client, alice)
    create_key(client, alice)
    refused = client.post("/api/v1/users/me/api-keys", json={"name": "third"}, headers=alice)
    assert refused.status_code == 409
    assert refused.json()["code"] == "too_many_api_keys"
    client.delete(f"/api/v1/users/me/api-keys/{first['id']}", headers=alice)
    create_key(client, alice)


def test_keys_of_a_deleted_account_stop_working(client: TestClient, alice: dict[str, str]) -> None:
    key = create_key(client, alice)["key"]
    assert client.delete("/api/v1/users/me", headers=alice).status_code == 204
    assert client.get("/api/v1/users/me", headers=with_key(key)).status_code == 401


def test_every_state_changing_authenticated_route_requires_write_scope(tmp_path: Path) -> None:
    """A guard for new routers: a POST/PUT/PATCH/DELETE route that takes a credential must also
    declare require_scope("write"), or a read-only key could change state through it."""

    def calls(dependant: Any) -> list[Any]:
        found = [dependant.call]
        for sub in dependant.dependencies:
            found += calls(sub)
        return found

    app = create_app(Settings(data_dir=tmp_path, secret_key=TEST_SECRET_KEY))
    unguarded = []
    for route in app.routes:
        if not isinstance(route, APIRoute) or not route.methods - {"GET", "HEAD", "OPTIONS"}:
            continue
        called = calls(route.dependant)
        writes = any(
            isinstance(call, RequireScope) and call.scope is Scope.write for call in called
        )
        if current_credential in called and not writes:
            unguarded.append(f"{sorted(route.methods)} {route.path}")
    assert unguarded == []
