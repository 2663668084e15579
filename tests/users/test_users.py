"""Users over HTTP: registration, the caller's own account, and superuser administration."""

from fastapi.testclient import TestClient

from tests.conftest import PASSWORD, login, register


def test_register_returns_the_account_without_the_hash(client: TestClient) -> None:
    response = client.post(
        "/api/v1/users", json={"email": "Carol@Example.COM", "password": "long-enough"}
    )
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "email", "is_active", "is_superuser", "created_at"}
    assert body["email"] == "carol@example.com"
    assert body["is_active"] is True and body["is_superuser"] is False
    assert response.headers["location"] == f"/api/v1/users/{body['id']}"


def test_duplicate_email_in_any_case_is_refused(client: TestClient) -> None:
    register(client, "dave@example.com")
    response = client.post("/api/v1/users", json={"email": "DAVE@example.com", "password": "x" * 8})
    assert response.status_code == 400
    assert response.json()["detail"] == "Email already registered"
    assert response.json()["code"] == "email_taken"


def test_short_password_is_a_422_in_the_error_shape(client: TestClient) -> None:
    response = client.post("/api/v1/users", json={"email": "eve@example.com", "password": "short"})
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_error"
    assert body["errors"][0]["loc"] == ["body", "password"]
    assert "password" in body["detail"]


def test_invalid_email_wrong_types_and_unknown_fields_are_422(client: TestClient) -> None:
    for payload in (
        {"email": "not-an-email", "password": "long-enough"},
        {"email": 12, "password": "long-enough"},
        {"email": "x@example.com", "password": ["long-enough"]},
        {"email": "x@example.com", "password": "long-enough", "is_superuser": True},
        {"email": "a" * 300 + "@example.com", "password": "long-enough"},
        {"email": "x@example.com", "password": "p" * 5000},
    ):
        response = client.post("/api/v1/users", json=payload)
        assert response.status_code == 422, payload
        assert response.json()["code"] == "validation_error"
    assert (
        client.post(
            "/api/v1/auth/token", data={"username": "x@example.com", "password": "long-enough"}
        ).status_code
        == 401
    )


def test_nul_in_the_email_or_password_at_registration_is_a_422(client: TestClient) -> None:
    """A password may not contain NUL either, like every other string the API takes."""
    for field, payload in (
        ("email", {"email": "carol\x00@example.com", "password": "long-enough"}),
        ("password", {"email": "carol@example.com", "password": "long-\x00-enough"}),
    ):
        response = client.post("/api/v1/users", json=payload)
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "validation_error"
        assert response.json()["errors"][0]["loc"] == ["body", field]
    register(client, "carol@example.com")


def test_malformed_json_is_a_422(client: TestClient) -> None:
    response = client.post(
        "/api/v1/users", content=b'{"email": ', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


def test_me_returns_the_callers_account(client: TestClient, alice: dict[str, str]) -> None:
    response = client.get("/api/v1/users/me", headers=alice)
    assert response.status_code == 200
    assert response.json()["email"] == "alice@example.com"


def test_changing_email_needs_the_current_password(
    client: TestClient, alice: dict[str, str]
) -> None:
    refused = client.patch("/api/v1/users/me", json={"email": "new@example.com"}, headers=alice)
    assert refused.status_code == 400
    wrong = client.patch(
        "/api/v1/users/me",
        json={"email": "new@example.com", "current_password": "wrong-password"},
        headers=alice,
    )
    assert wrong.status_code == 400
    assert client.get("/api/v1/users/me", headers=alice).json()["email"] == "alice@example.com"
    changed = client.patch(
        "/api/v1/users/me",
        json={"email": "New@Example.com", "current_password": PASSWORD},
        headers=alice,
    )
    assert changed.status_code == 200
    assert changed.json()["email"] == "new@example.com"
    login(client, "new@example.com")


def test_changing_password_lets_the_new_one_log_in_and_not_the_old(
    client: TestClient, alice: dict[str, str]
) -> None:
    response = client.patch(
        "/api/v1/users/me",
        json={"password": "a-brand-new-one", "current_password": PASSWORD},
        headers=alice,
    )
    assert response.status_code == 200
    login(client, "alice@example.com", "a-brand-new-one")
    old = client.post(
        "/api/v1/auth/token", data={"username": "alice@example.com", "password": PASSWORD}
    )
    assert old.status_code == 401


def test_taking_someone_elses_email_is_refused(
    client: TestClient, alice: dict[str, str], bob: dict[str, str]
) -> None:
    response = client.patch(
        "/api/v1/users/me",
        json={"email": "BOB@example.com", "current_password": PASSWORD},
        headers=alice,
    )
    assert response.status_code == 400
    assert response.json()["detail"] == "Email already registered"


def test_patch_me_with_nul_is_422_and_changes_nothing(
    client: TestClient, alice: dict[str, str]
) -> None:
    for field, changes in (
        ("email", {"email": "new\x00@example.com", "current_password": PASSWORD}),
        ("password", {"password": "a-brand-\x00-one", "current_password": PASSWORD}),
        ("current_password", {"password": "a-brand-new-one", "current_password": "\x00"}),
    ):
        response = client.patch("/api/v1/users/me", json=changes, headers=alice)
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["loc"] == ["body", field]
    assert client.get("/api/v1/users/me", headers=alice).json()["email"] == "alice@example.com"
    login(client, "alice@example.com", PASSWORD)


def test_patch_me_with_null_email_is_422(client: TestClient, alice: dict[str, str]) -> None:
    response = client.patch(
        "/api/v1/users/me", json={"email": None, "current_password": PASSWORD}, headers=alice
    )
    assert response.status_code == 422


def test_deleted_account_can_no_longer_log_in_or_use_its_token(
    client: TestClient, alice: dict[str, str]
) -> None:
    assert client.delete("/api/v1/users/me", headers=alice).status_code == 204
    assert client.get("/api/v1/users/me", headers=alice).status_code == 401
    response = client.post(
        "/api/v1/auth/token", data={"username": "alice@example.com", "password": PASSWORD}
    )
    assert response.status_code == 401


def test_superuser_lists_and_filters_users(
    client: TestClient, admin: dict[str, str], alice: dict[str, str], bob: dict[str, str]
) -> None:
    everyone = client.get("/api/v1/users", headers=admin).json()
    assert everyone["total"] == 3
    assert [u["email"] for u in everyone["items"]] == [
        "admin@example.com",
        "alice@example.com",
        "bob@example.com",
    ]
    page = client.get("/api/v1/users?offset=1&limit=1", headers=admin).json()
    assert page == {**page, "total": 3, "offset": 1, "limit": 1}
    assert [u["email"] for u in page["items"]] == ["alice@example.com"]
    found = client.get("/api/v1/users?q=ALI", headers=admin).json()
    assert [u["email"] for u in found["items"]] == ["alice@example.com"]
    assert client.get("/api/v1/users?q=%25", headers=admin).json()["total"] == 0


def test_nul_in_the_user_search_is_a_422(client: TestClient, admin: dict[str, str]) -> None:
    response = client.get("/api/v1/users", params={"q": "ali\x00"}, headers=admin)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    assert response.json()["detail"] == "q: must not contain NUL characters (U+0000)"


def test_pagination_bounds_are_422(client: TestClient, admin: dict[str, str]) -> None:
    for query in ("limit=0", "limit=101", "offset=-1", "limit=abc"):
        response = client.get(f"/api/v1/users?{query}", headers=admin)
        assert response.status_code == 422, query
        assert response.json()["code"] == "validation_error"


def test_non_superuser_cannot_list_users(client: TestClient, alice: dict[str, str]) -> None:
    response = client.get("/api/v1/users", headers=alice)
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


def test_another_user_is_404_like_a_missing_one(
    client: TestClient, alice: dict[str, str], bob: dict[str, str]
) -> None:
    bob_id = client.get("/api/v1/users/me", headers=bob).json()["id"]
    other = client.get(f"/api/v1/users/{bob_id}", headers=alice)
    missing = client.get("/api/v1/users/999999", headers=alice)
    assert other.status_code == missing.status_code == 404
    assert other.json()["detail"] == missing.json()["detail"] == "User not found"
    assert (
        client.patch(
            f"/api/v1/users/{bob_id}", json={"is_active": False}, headers=alice
        ).status_code
        == 404
    )


def test_non_superuser_cannot_promote_themselves(client: TestClient, alice: dict[str, str]) -> None:
    alice_id = client.get("/api/v1/users/me", headers=alice).json()["id"]
    assert client.get(f"/api/v1/users/{alice_id}", headers=alice).status_code == 200
    response = client.patch(f"/api/v1/users/{alice_id}", json={"is_superuser": True}, headers=alice)
    assert response.status_code == 403
    assert client.get("/api/v1/users/me", headers=alice).json()["is_superuser"] is False


def test_superuser_deactivates_a_user_who_then_cannot_log_in(
    client: TestClient, admin: dict[str, str], alice: dict[str, str]
) -> None:
    alice_id = client.get("/api/v1/users/me", headers=alice).json()["id"]
    response = client.patch(f"/api/v1/users/{alice_id}", json={"is_active": False}, headers=admin)
    assert response.status_code == 200
    assert response.json()["is_active"] is False
    assert client.get("/api/v1/users/me", headers=alice).status_code == 401
    assert client.get(f"/api/v1/users/{alice_id}", headers=admin).json()["is_active"] is False


def test_superuser_gets_404_for_missing_user(client: TestClient, admin: dict[str, str]) -> None:
    assert client.get("/api/v1/users/424242", headers=admin).status_code == 404
    assert client.get("/api/v1/users/0", headers=admin).status_code == 422
    assert client.get("/api/v1/users/99999999999999", headers=admin).status_code == 422


def test_superuser_cannot_deactivate_or_demote_themselves(
    client: TestClient, admin: dict[str, str]
) -> None:
    admin_id = client.get("/api/v1/users/me", headers=admin).json()["id"]
    for change in ({"is_active": False}, {"is_superuser": False}):
        response = client.patch(f"/api/v1/users/{admin_id}", json=change, headers=admin)
        assert response.status_code == 403
    me = client.get("/api/v1/users/me", headers=admin).json()
    assert me["is_active"] is True and me["is_superuser"] is True
