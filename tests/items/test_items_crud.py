"""Items over HTTP: create, read, update, delete, and who may do which."""

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import register

ITEMS = "/api/v1/items"


def create_item(client: TestClient, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    payload = {"name": "Lamp", "price": "12.50", **fields}
    response = client.post(ITEMS, json=payload, headers=headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def test_create_returns_the_item_with_location_and_etag(
    client: TestClient, alice: dict[str, str]
) -> None:
    response = client.post(
        ITEMS,
        json={
            "name": "  Espresso machine ",
            "description": "Dual boiler",
            "price": "649.9",
            "tax": "20",
            "tags": ["Kitchen", "coffee", "kitchen"],
        },
        headers=alice,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == "Espresso machine"
    assert body["price"] == "649.90"
    assert body["tax"] == "20.00"
    assert body["tags"] == ["kitchen", "coffee"]
    assert body["version"] == 1
    assert response.headers["location"] == f"{ITEMS}/{body['id']}"
    assert response.headers["etag"] == 'W/"1"'
    again = client.get(response.headers["location"], headers=alice)
    assert again.status_code == 200
    assert again.json() == {**body, "files": [], "files_total": 0}


def test_decimals_keep_every_digit(client: TestClient, alice: dict[str, str]) -> None:
    body = create_item(client, alice, price="9999999999.99", tax="99.99")
    read = client.get(f"{ITEMS}/{body['id']}", headers=alice).json()
    assert (read["price"], read["tax"]) == ("9999999999.99", "99.99")


def test_float_prices_are_refused(client: TestClient, alice: dict[str, str]) -> None:
    response = client.post(ITEMS, json={"name": "Lamp", "price": 12.5}, headers=alice)
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert "string" in response.json()["detail"]


def test_whole_number_price_is_accepted(client: TestClient, alice: dict[str, str]) -> None:
    assert create_item(client, alice, price=12)["price"] == "12.00"


def test_invalid_fields_are_422_and_create_nothing(
    client: TestClient, alice: dict[str, str]
) -> None:
    for payload in (
        {"name": "", "price": "1"},
        {"name": "   ", "price": "1"},
        {"name": "x" * 201, "price": "1"},
        {"name": "Lamp", "price": "-1"},
        {"name": "Lamp", "price": "1.005"},
        {"name": "Lamp", "price": "NaN"},
        {"name": "Lamp", "price": "Infinity"},
        {"name": "Lamp", "price": "12345678901.00"},
        {"name": "Lamp", "price": "abc"},
        {"name": "Lamp", "price": True},
        {"name": "Lamp", "price": "1", "tax": "100.01"},
        {"name": "Lamp", "price": "1", "tax": "-1"},
        {"name": "Lamp", "price": "1", "description": "d" * 10_001},
        {"name": "Lamp", "price": "1", "tags": ["t"] * 0 + [f"t{i}" for i in range(21)]},
        {"name": "Lamp", "price": "1", "tags": [""]},
        {"name": "Lamp", "price": "1", "tags": ["x" * 41]},
        {"name": "Lamp", "price": "1", "tags": ["a;b"]},
        {"name": "Lamp", "price": "1", "tags": [1]},
        {"name": "Lamp", "price": "1", "owner_id": 5},
        {"name": "Lamp"},
    ):
        response = client.post(ITEMS, json=payload, headers=alice)
        assert response.status_code == 422, payload
        assert response.json()["code"] == "validation_error"
    assert client.get(ITEMS, headers=alice).json()["total"] == 0


@pytest.mark.parametrize(
    ("fields", "detail"),
    [
        pytest.param(
            {"name": "La\x00mp"}, "name: must not contain NUL characters (U+0000)", id="name"
        ),
        pytest.param(
            {"description": "bright\x00"},
            "description: must not contain NUL characters (U+0000)",
            id="description",
        ),
        pytest.param(
            {"tags": ["kitchen", "\x00"]},
            "tags.1: Value error, a tag may not contain ';', ',' or control characters",
            id="tags",
        ),
    ],
)
def test_nul_in_a_text_field_is_a_422_and_creates_nothing(
    client: TestClient, alice: dict[str, str], fields: dict[str, Any], detail: str
) -> None:
    """PostgreSQL cannot store NUL; every database refuses it alike, before any query."""
    response = client.post(ITEMS, json={"name": "Lamp", "price": "1", **fields}, headers=alice)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    assert response.json()["detail"] == detail
    assert client.get(ITEMS, headers=alice).json()["total"] == 0


def test_every_endpoint_needs_a_user(client: TestClient) -> None:
    for method, path in (
        ("POST", ITEMS),
        ("GET", ITEMS),
        ("GET", f"{ITEMS}/export"),
        ("GET", f"{ITEMS}/1"),
        ("PATCH", f"{ITEMS}/1"),
        ("DELETE", f"{ITEMS}/1"),
    ):
        response = client.request(method, path, json={})
        assert response.status_code == 401, (method, path)
        assert response.json()["code"] == "not_authenticated" or response.json()["code"]


def test_another_users_item_is_404_everywhere(
    client: TestClient, alice: dict[str, str], bob: dict[str, str]
) -> None:
    item = create_item(client, alice)
    path = f"{ITEMS}/{item['id']}"
    missing = client.get(f"{ITEMS}/999999", headers=bob)
    for response in (
        client.get(path, headers=bob),
        client.patch(path, json={"name": "Mine"}, headers=bob),
        client.delete(path, headers=bob),
    ):
        assert response.status_code == 404
        assert response.json()["detail"] == missing.json()["detail"]
        assert response.json()["code"] == missing.json()["code"] == "item_not_found"
    assert client.get(ITEMS, headers=bob).json()["total"] == 0
    assert client.get(f"{ITEMS}/export", headers=bob).content == b""
    assert client.get(path, headers=alice).json() == {**item, "files": [], "files_total": 0}


def test_a_user_may_not_list_another_owner(
    client: TestClient, alice: dict[str, str], bob: dict[str, str]
) -> None:
    alices = client.get("/api/v1/users/me", headers=alice).json()["id"]
    create_item(client, alice)
    for path in (ITEMS, f"{ITEMS}/export"):
        response = client.get(path, params={"owner_id": alices}, headers=bob)
        assert response.status_code == 403
        assert response.json()["code"] == "superuser_required"


def test_superuser_reads_another_owners_items_but_cannot_change_them(
    client: TestClient, alice: dict[str, str], admin: dict[str, str]
) -> None:
    alices = client.get("/api/v1/users/me", headers=alice).json()["id"]
    item = create_item(client, alice)
    path = f"{ITEMS}/{item['id']}"
    listed = client.get(ITEMS, params={"owner_id": alices}, headers=admin).json()
    assert [row["id"] for row in listed["items"]] == [item["id"]]
    assert client.get(path, params={"owner_id": alices}, headers=admin).json() == {
        **item,
        "files": [],
        "files_total": 0,
    }
    exported = client.get(f"{ITEMS}/export", params={"owner_id": alices}, headers=admin)
    assert [line for line in exported.text.splitlines()] == [exported.text.strip()]
    assert exported.text.strip().startswith(f'{{"id":{item["id"]},')
    assert client.get(path, headers=admin).status_code == 404
    assert client.patch(path, json={"name": "x"}, headers=admin).status_code == 404
    assert client.delete(path, headers=admin).status_code == 404


def test_delete_removes_the_item(client: TestClient, alice: dict[str, str]) -> None:
    item = create_item(client, alice, tags=["a"])
    path = f"{ITEMS}/{item['id']}"
    assert client.delete(path, headers=alice).status_code == 204
    assert client.get(path, headers=alice).status_code == 404
    assert client.delete(path, headers=alice).status_code == 404
    assert client.get(ITEMS, params={"tag": "a"}, headers=alice).json()["total"] == 0


def test_deleting_the_owner_deletes_their_items(
    client: TestClient, alice: dict[str, str], bob: dict[str, str]
) -> None:
    create_item(client, alice, tags=["shared"])
    kept = create_item(client, bob, tags=["shared"])
    assert client.delete("/api/v1/users/me", headers=alice).status_code == 204
    listed = client.get(ITEMS, params={"tag": "shared"}, headers=bob).json()
    assert [row["id"] for row in listed["items"]] == [kept["id"]]


def test_item_id_out_of_range_is_422_not_500(client: TestClient, alice: dict[str, str]) -> None:
    for item_id in ("0", str(2**40)):
        response = client.get(f"{ITEMS}/{item_id}", headers=alice)
        assert response.status_code == 422, item_id
    assert client.get(f"{ITEMS}/abc", headers=alice).status_code == 404


def test_register_helper_users_are_distinct(client: TestClient) -> None:
    assert register(client, "carol@example.com")["id"] != register(client, "dan@example.com")["id"]


def test_a_read_only_api_key_reads_items_but_cannot_change_them(
    client: TestClient, alice: dict[str, str]
) -> None:
    item = create_item(client, alice)
    created = client.post(
        "/api/v1/users/me/api-keys", json={"name": "reader", "scope": "read"}, headers=alice
    )
    assert created.status_code == 201, created.text
    reader = {"X-API-Key": created.json()["key"]}
    path = f"{ITEMS}/{item['id']}"
    assert client.get(ITEMS, headers=reader).json()["total"] == 1
    assert client.get(path, headers=reader).json() == {**item, "files": [], "files_total": 0}
    assert client.get(f"{ITEMS}/export", headers=reader).status_code == 200
    for response in (
        client.post(ITEMS, json={"name": "x", "price": "1"}, headers=reader),
        client.patch(path, json={"name": "x"}, headers=reader),
        client.delete(path, headers=reader),
    ):
        assert response.status_code == 403
    assert client.get(path, headers=alice).json() == {**item, "files": [], "files_total": 0}
