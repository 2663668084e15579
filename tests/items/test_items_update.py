"""Changing items: partial updates, versions, ETags and conditional requests."""

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from storeroom.core.etags import parse_etags
from storeroom.items import service as items_service
from storeroom.items.exceptions import ItemChanged
from storeroom.items.schemas import ItemUpdate
from tests.conftest import run_in_app
from tests.items.test_items_crud import ITEMS, create_item


def test_patch_changes_only_the_fields_sent(client: TestClient, alice: dict[str, str]) -> None:
    item = create_item(client, alice, description="keep me", tags=["a", "b"], tax="5")
    response = client.patch(f"{ITEMS}/{item['id']}", json={"price": "13"}, headers=alice)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["price"] == "13.00"
    assert body["version"] == 2
    assert response.headers["etag"] == 'W/"2"'
    unchanged = {k: v for k, v in item.items() if k not in ("price", "version", "updated_at")}
    assert {k: v for k, v in body.items() if k in unchanged} == unchanged
    assert body["updated_at"] >= item["updated_at"]
    assert client.get(f"{ITEMS}/{item['id']}", headers=alice).json() == {
        **body,
        "files": [],
        "files_total": 0,
    }


@pytest.mark.parametrize(
    "changes",
    [{"name": "La\x00mp"}, {"description": "\x00"}, {"tags": ["kitchen\x00"]}],
    ids=["name", "description", "tags"],
)
def test_patch_with_nul_in_a_text_field_is_422_and_changes_nothing(
    client: TestClient, alice: dict[str, str], changes: dict[str, Any]
) -> None:
    item = create_item(client, alice, description="keep me", tags=["kept"])
    response = client.patch(f"{ITEMS}/{item['id']}", json=changes, headers=alice)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    assert response.json()["errors"][0]["loc"][:2] == ["body", *changes]
    assert client.get(f"{ITEMS}/{item['id']}", headers=alice).json() == {
        **item,
        "files": [],
        "files_total": 0,
    }


def test_patch_replaces_tags_and_the_tag_filter_follows(
    client: TestClient, alice: dict[str, str]
) -> None:
    item = create_item(client, alice, tags=["old", "kept"])
    response = client.patch(f"{ITEMS}/{item['id']}", json={"tags": ["new", "kept"]}, headers=alice)
    assert response.json()["tags"] == ["new", "kept"]
    assert client.get(ITEMS, params={"tag": "old"}, headers=alice).json()["total"] == 0
    assert client.get(ITEMS, params={"tag": "new"}, headers=alice).json()["total"] == 1


def test_patch_may_clear_the_description_with_null(
    client: TestClient, alice: dict[str, str]
) -> None:
    item = create_item(client, alice, description="to be removed")
    response = client.patch(f"{ITEMS}/{item['id']}", json={"description": None}, headers=alice)
    assert response.status_code == 200
    assert response.json()["description"] is None


def test_patch_with_null_for_a_required_field_is_422_and_changes_nothing(
    client: TestClient, alice: dict[str, str]
) -> None:
    item = create_item(client, alice, tags=["a"])
    for field in ("name", "price", "tax", "tags"):
        response = client.patch(
            f"{ITEMS}/{item['id']}", json={field: None, "description": "x"}, headers=alice
        )
        assert response.status_code == 422, field
        assert response.json()["code"] == "validation_error"
        assert response.json()["errors"][0]["loc"] == ["body", field]
    assert client.get(f"{ITEMS}/{item['id']}", headers=alice).json() == {
        **item,
        "files": [],
        "files_total": 0,
    }


def test_patch_with_invalid_values_or_unknown_fields_is_422(
    client: TestClient, alice: dict[str, str]
) -> None:
    item = create_item(client, alice)
    for payload in ({"price": "-1"}, {"name": ""}, {"version": 7}, {"owner_id": 2}, []):
        response = client.patch(f"{ITEMS}/{item['id']}", json=payload, headers=alice)
        assert response.status_code == 422, payload
    assert client.get(f"{ITEMS}/{item['id']}", headers=alice).json() == {
        **item,
        "files": [],
        "files_total": 0,
    }


def test_empty_patch_changes_nothing_and_keeps_the_version(
    client: TestClient, alice: dict[str, str]
) -> None:
    item = create_item(client, alice)
    response = client.patch(f"{ITEMS}/{item['id']}", json={}, headers=alice)
    assert response.status_code == 200
    assert response.json() == item


def test_patch_with_the_current_etag_applies(client: TestClient, alice: dict[str, str]) -> None:
    item = create_item(client, alice)
    response = client.patch(
        f"{ITEMS}/{item['id']}", json={"name": "Desk lamp"}, headers={**alice, "If-Match": 'W/"1"'}
    )
    assert response.status_code == 200
    assert response.json()["name"] == "Desk lamp"
    strong = client.patch(
        f"{ITEMS}/{item['id']}", json={"name": "Lamp"}, headers={**alice, "If-Match": '"2"'}
    )
    assert strong.status_code == 200
    star = client.patch(
        f"{ITEMS}/{item['id']}", json={"name": "Lamp 2"}, headers={**alice, "If-Match": "*"}
    )
    assert star.status_code == 200 and star.json()["version"] == 4


def test_patch_with_stale_etag_changes_nothing(client: TestClient, alice: dict[str, str]) -> None:
    item = create_item(client, alice)
    path = f"{ITEMS}/{item['id']}"
    first = client.patch(path, json={"name": "First"}, headers={**alice, "If-Match": 'W/"1"'})
    assert first.status_code == 200
    for stale in ('W/"1"', '"1", W/"3"', "garbage", '""'):
        second = client.patch(path, json={"name": "Second"}, headers={**alice, "If-Match": stale})
        assert second.status_code == 412, stale
        assert second.json()["code"] == "item_changed"
    assert client.get(path, headers=alice).json() == {**first.json(), "files": [], "files_total": 0}


def test_empty_patch_with_stale_etag_is_still_412(
    client: TestClient, alice: dict[str, str]
) -> None:
    item = create_item(client, alice)
    response = client.patch(f"{ITEMS}/{item['id']}", json={}, headers={**alice, "If-Match": '"9"'})
    assert response.status_code == 412


def test_patch_without_if_match_applies_and_bumps_the_version(
    client: TestClient, alice: dict[str, str]
) -> None:
    item = create_item(client, alice)
    path = f"{ITEMS}/{item['id']}"
    for version, name in enumerate(["a", "b", "c"], start=2):
        response = client.patch(path, json={"name": name}, headers=alice)
        assert response.json()["version"] == version


def test_get_with_matching_if_none_match_is_304(client: TestClient, alice: dict[str, str]) -> None:
    item = create_item(client, alice)
    path = f"{ITEMS}/{item['id']}"
    etag = client.get(path, headers=alice).headers["etag"]
    cached = client.get(path, headers={**alice, "If-None-Match": etag})
    assert cached.status_code == 304
    assert cached.content == b""
    assert cached.headers["etag"] == etag
    client.patch(path, json={"name": "changed"}, headers=alice)
    fresh = client.get(path, headers={**alice, "If-None-Match": etag})
    assert fresh.status_code == 200
    assert fresh.headers["etag"] == 'W/"2"'


def test_if_none_match_never_reveals_another_users_item(
    client: TestClient, alice: dict[str, str], bob: dict[str, str]
) -> None:
    item = create_item(client, alice)
    response = client.get(f"{ITEMS}/{item['id']}", headers={**bob, "If-None-Match": "*"})
    assert response.status_code == 404


def test_delete_with_stale_etag_is_412_and_keeps_the_item(
    client: TestClient, alice: dict[str, str]
) -> None:
    item = create_item(client, alice)
    path = f"{ITEMS}/{item['id']}"
    client.patch(path, json={"name": "changed"}, headers=alice)
    assert client.delete(path, headers={**alice, "If-Match": 'W/"1"'}).status_code == 412
    assert client.get(path, headers=alice).status_code == 200
    assert client.delete(path, headers={**alice, "If-Match": 'W/"2"'}).status_code == 204


def test_a_write_landing_between_read_and_update_makes_the_update_412(
    client: TestClient, alice: dict[str, str]
) -> None:
    """Two clients holding the same ETag: the version check is part of the UPDATE itself, so
    the second one loses even though it read the item before the first one wrote."""
    item = create_item(client, alice)

    async def race() -> str:
        app: FastAPI = client.app  # type: ignore[assignment]
        async with app.state.sessionmaker() as slow:
            stale = await items_service.get(slow, item["id"], item["owner_id"])
            async with app.state.sessionmaker() as fast, fast.begin():
                fresh = await items_service.get(fast, item["id"], item["owner_id"])
                await items_service.update_item(
                    fast, fresh, ItemUpdate(name="fast"), expected=parse_etags('W/"1"')
                )
            try:
                await items_service.update_item(
                    slow, stale, ItemUpdate(name="slow"), expected=parse_etags('W/"1"')
                )
            except ItemChanged:
                await slow.rollback()
                return "412"
            return "applied"

    assert run_in_app(client, race) == "412"
    body = client.get(f"{ITEMS}/{item['id']}", headers=alice).json()
    assert (body["name"], body["version"]) == ("fast", 2)
