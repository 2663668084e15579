"""Files attached to items: only to one's own, listed with the item, detached when it goes."""

import pytest
from fastapi.testclient import TestClient

from storeroom.core.config import Settings
from storeroom.files import service as files_service
from tests.files.conftest import files_on_disk, multipart_body, upload, uploaded

ITEMS = "/api/v1/items"


def create_item(client: TestClient, headers: dict[str, str]) -> int:
    response = client.post(ITEMS, json={"name": "Lamp", "price": "12.50"}, headers=headers)
    assert response.status_code == 201, response.text
    item_id: int = response.json()["id"]
    return item_id


def test_a_file_uploaded_with_item_id_is_listed_with_the_item(
    client: TestClient, alice: dict[str, str]
) -> None:
    item_id = create_item(client, alice)
    response = upload(
        client, alice, b"photo", filename=b"lamp.jpg", fields={"item_id": str(item_id)}
    )
    assert response.status_code == 201, response.text
    assert response.json()["item_id"] == item_id
    item = client.get(f"{ITEMS}/{item_id}", headers=alice).json()
    assert item["files"] == [response.json()]


def test_an_item_says_how_many_files_it_has(client: TestClient, alice: dict[str, str]) -> None:
    item_id = create_item(client, alice)
    assert client.get(f"{ITEMS}/{item_id}", headers=alice).json()["files_total"] == 0
    uploaded(client, alice, b"a", fields={"item_id": str(item_id)})
    uploaded(client, alice, b"not attached")
    item = client.get(f"{ITEMS}/{item_id}", headers=alice).json()
    assert len(item["files"]) == item["files_total"] == 1


def test_an_item_lists_its_newest_files_and_the_file_list_pages_the_rest(
    client: TestClient, alice: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files_service, "ITEM_FILES_SHOWN", 2)
    item_id = create_item(client, alice)
    attached = {
        uploaded(client, alice, bytes([n]), fields={"item_id": str(item_id)}) for n in range(5)
    }
    uploaded(client, alice, b"not attached")

    item = client.get(f"{ITEMS}/{item_id}", headers=alice).json()
    assert item["files_total"] == 5
    shown = [file["id"] for file in item["files"]]
    first_page = client.get(
        "/api/v1/files", params={"item_id": item_id, "limit": 2}, headers=alice
    ).json()
    assert [file["id"] for file in first_page["items"]] == shown
    rest = client.get(
        "/api/v1/files", params={"item_id": item_id, "offset": 2}, headers=alice
    ).json()
    assert rest["total"] == 5
    listed = shown + [file["id"] for file in rest["items"]]
    assert len(listed) == 5 and set(listed) == attached


def test_item_id_may_follow_the_file_in_the_form(client: TestClient, alice: dict[str, str]) -> None:
    item_id = create_item(client, alice)
    head = multipart_body(b"photo").rsplit(b"--storeroom", 1)[0]
    body = head + multipart_body(None, fields={"item_id": str(item_id)})
    response = client.post(
        "/api/v1/files",
        content=body,
        headers={
            **alice,
            "Content-Type": "multipart/form-data; boundary=storeroom-test-boundary-7d1f",
        },
    )
    assert response.status_code == 201, response.text
    assert response.json()["item_id"] == item_id


def test_files_can_be_listed_by_item(client: TestClient, alice: dict[str, str]) -> None:
    item_id = create_item(client, alice)
    attached = uploaded(client, alice, b"a", fields={"item_id": str(item_id)})
    uploaded(client, alice, b"b")
    listing = client.get("/api/v1/files", params={"item_id": item_id}, headers=alice).json()
    assert [file["id"] for file in listing["items"]] == [attached]
    assert listing["total"] == 1
    assert client.get("/api/v1/files", headers=alice).json()["total"] == 2


def test_attaching_to_another_users_item_is_404_and_leaves_nothing(
    client: TestClient, alice: dict[str, str], bob: dict[str, str], settings: Settings
) -> None:
    bobs_item = create_item(client, bob)
    response = upload(client, alice, b"sneaky", fields={"item_id": str(bobs_item)})
    assert response.status_code == 404
    assert response.json()["code"] == "item_not_found"
    assert client.get("/api/v1/files", headers=alice).json()["total"] == 0
    assert files_on_disk(settings) == []
    assert client.get(f"{ITEMS}/{bobs_item}", headers=bob).json()["files"] == []


def test_attaching_to_a_missing_item_is_404(client: TestClient, alice: dict[str, str]) -> None:
    response = upload(client, alice, b"x", fields={"item_id": "999999"})
    assert response.status_code == 404


@pytest.mark.parametrize("item_id", ["abc", "0", "-1", "1.5", "99999999999", "\u0661"])
def test_an_item_id_that_is_not_an_id_is_422(
    client: TestClient, alice: dict[str, str], settings: Settings, item_id: str
) -> None:
    response = upload(client, alice, b"x", fields={"item_id": item_id})
    assert response.status_code == 422
    assert "item_id" in response.json()["detail"]
    assert files_on_disk(settings) == []


def test_deleting_the_item_detaches_its_files(client: TestClient, alice: dict[str, str]) -> None:
    item_id = create_item(client, alice)
    file_id = uploaded(client, alice, b"keep me", fields={"item_id": str(item_id)})
    assert client.delete(f"{ITEMS}/{item_id}", headers=alice).status_code == 204
    file = client.get(f"/api/v1/files/{file_id}", headers=alice).json()
    assert file["item_id"] is None
    assert client.get(f"/api/v1/files/{file_id}/content", headers=alice).content == b"keep me"


def test_attaching_or_deleting_a_file_changes_the_items_etag(
    client: TestClient, alice: dict[str, str]
) -> None:
    item_id = create_item(client, alice)
    before = client.get(f"{ITEMS}/{item_id}", headers=alice).headers["etag"]
    file_id = uploaded(client, alice, b"new photo", fields={"item_id": str(item_id)})
    after_upload = client.get(f"{ITEMS}/{item_id}", headers={**alice, "If-None-Match": before})
    assert after_upload.status_code == 200
    assert len(after_upload.json()["files"]) == 1
    client.delete(f"/api/v1/files/{file_id}", headers=alice)
    after_delete = client.get(
        f"{ITEMS}/{item_id}", headers={**alice, "If-None-Match": after_upload.headers["etag"]}
    )
    assert after_delete.status_code == 200
    assert after_delete.json()["files"] == []
