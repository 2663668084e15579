"""A token names one account as it is now: deleting the account, changing its password or
email, or deactivating it ends every session opened before (API keys excepted), and ids of
deleted rows are never handed out again."""

from typing import Any

from fastapi.testclient import TestClient

from tests.auth.conftest import MAX_FAILURES, bearer, token_pair
from tests.conftest import PASSWORD, promote_to_superuser, register

ME = "/api/v1/users/me"
NEW_PASSWORD = "a-brand-new-password"


def _refresh(client: TestClient, pair: dict[str, Any]) -> int:
    response = client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    return response.status_code


def _api_key(client: TestClient, pair: dict[str, Any]) -> dict[str, str]:
    response = client.post(
        f"{ME}/api-keys", json={"name": "backup"}, headers=bearer(pair["access_token"])
    )
    assert response.status_code == 201, response.text
    return {"X-API-Key": response.json()["key"]}


def test_a_deleted_accounts_token_does_not_log_into_the_next_account(
    client: TestClient,
) -> None:
    victim_id = register(client, "victim@example.com")["id"]
    old = token_pair(client, "victim@example.com")
    assert client.delete(ME, headers=bearer(old["access_token"])).status_code == 204

    newcomer = register(client, "newcomer@example.com")

    assert newcomer["id"] != victim_id
    assert client.get(ME, headers=bearer(old["access_token"])).status_code == 401
    assert _refresh(client, old) == 401
    key = client.post(f"{ME}/api-keys", json={"name": "x"}, headers=bearer(old["access_token"]))
    assert key.status_code == 401


def test_ids_of_deleted_items_and_keys_are_never_handed_out_again(
    client: TestClient, alice: dict[str, str]
) -> None:
    item = client.post("/api/v1/items", json={"name": "Lamp", "price": "10"}, headers=alice)
    assert client.delete(f"/api/v1/items/{item.json()['id']}", headers=alice).status_code == 204
    again = client.post("/api/v1/items", json={"name": "Lamp", "price": "10"}, headers=alice)
    assert again.json()["id"] > item.json()["id"]

    key = client.post(f"{ME}/api-keys", json={"name": "one"}, headers=alice).json()
    assert client.delete(f"{ME}/api-keys/{key['id']}", headers=alice).status_code == 204
    second = client.post(f"{ME}/api-keys", json={"name": "two"}, headers=alice).json()
    assert second["id"] > key["id"]


def test_changing_the_password_ends_every_session_but_not_the_api_keys(
    client: TestClient,
) -> None:
    register(client, "alice@example.com")
    laptop = token_pair(client, "alice@example.com")
    phone = token_pair(client, "alice@example.com")
    api_key = _api_key(client, laptop)

    changed = client.patch(
        ME,
        json={"password": NEW_PASSWORD, "current_password": PASSWORD},
        headers=bearer(laptop["access_token"]),
    )

    assert changed.status_code == 200
    for session in (laptop, phone):
        assert client.get(ME, headers=bearer(session["access_token"])).status_code == 401
        assert _refresh(client, session) == 401
    assert client.get(ME, headers=api_key).status_code == 200
    fresh = token_pair(client, "alice@example.com", NEW_PASSWORD)
    assert client.get(ME, headers=bearer(fresh["access_token"])).status_code == 200


def test_changing_the_email_ends_every_session(client: TestClient) -> None:
    register(client, "alice@example.com")
    pair = token_pair(client, "alice@example.com")

    changed = client.patch(
        ME,
        json={"email": "alice@new.example", "current_password": PASSWORD},
        headers=bearer(pair["access_token"]),
    )

    assert changed.status_code == 200
    assert client.get(ME, headers=bearer(pair["access_token"])).status_code == 401
    assert _refresh(client, pair) == 401
    token_pair(client, "alice@new.example")


def test_a_failed_change_ends_no_session(client: TestClient) -> None:
    register(client, "alice@example.com")
    pair = token_pair(client, "alice@example.com")
    refused = client.patch(
        ME,
        json={"password": NEW_PASSWORD, "current_password": "not-the-password"},
        headers=bearer(pair["access_token"]),
    )
    assert refused.status_code == 400
    assert client.get(ME, headers=bearer(pair["access_token"])).status_code == 200
    assert _refresh(client, pair) == 200


def test_deactivation_ends_sessions_for_good_even_after_reactivation(
    client: TestClient,
) -> None:
    admin_id = register(client, "admin@example.com")["id"]
    promote_to_superuser(client, admin_id)
    admin = bearer(token_pair(client, "admin@example.com")["access_token"])
    alice_id = register(client, "alice@example.com")["id"]
    pair = token_pair(client, "alice@example.com")

    for active in (False, True):
        response = client.patch(
            f"/api/v1/users/{alice_id}", json={"is_active": active}, headers=admin
        )
        assert response.status_code == 200

    assert client.get(ME, headers=bearer(pair["access_token"])).status_code == 401
    assert _refresh(client, pair) == 401
    token_pair(client, "alice@example.com")


def test_current_password_guesses_are_limited_like_logins(client: TestClient) -> None:
    register(client, "alice@example.com")
    headers = bearer(token_pair(client, "alice@example.com")["access_token"])

    def change(current_password: str) -> Any:
        return client.patch(
            ME,
            json={"password": NEW_PASSWORD, "current_password": current_password},
            headers=headers,
        )

    for _ in range(MAX_FAILURES):
        assert change("a-wrong-guess").status_code == 400
    throttled = change(PASSWORD)

    assert throttled.status_code == 429
    assert throttled.json()["code"] == "login_throttled"
    assert int(throttled.headers["Retry-After"]) > 0
    assert client.get(ME, headers=headers).status_code == 200  # nothing changed
    login = client.post(
        "/api/v1/auth/token", data={"username": "alice@example.com", "password": PASSWORD}
    )
    assert login.status_code == 429  # the same account-wide counter as logins
