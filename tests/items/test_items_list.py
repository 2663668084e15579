"""Listing items: search, tag filters, sorting, pagination and their bounds."""

from decimal import Decimal
from typing import Any

from fastapi.testclient import TestClient

from tests.items.test_items_crud import ITEMS, create_item


def listing(client: TestClient, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    response = client.get(ITEMS, params=params, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def ids(page: dict[str, Any]) -> list[int]:
    return [item["id"] for item in page["items"]]


def test_empty_catalog_is_an_empty_page(client: TestClient, alice: dict[str, str]) -> None:
    assert listing(client, alice) == {"items": [], "total": 0, "offset": 0, "limit": 20}


def test_page_shape_and_default_sort_is_newest_first(
    client: TestClient, alice: dict[str, str]
) -> None:
    created = [create_item(client, alice, name=f"Item {i}")["id"] for i in range(3)]
    page = listing(client, alice)
    assert set(page) == {"items", "total", "offset", "limit"}
    assert page["total"] == 3
    assert ids(page) == created[::-1]


def test_offset_and_limit_walk_the_whole_list_without_gaps_or_repeats(
    client: TestClient, alice: dict[str, str]
) -> None:
    created = {create_item(client, alice, name="Same name", price="1")["id"] for _ in range(7)}
    seen: list[int] = []
    for offset in range(0, 7, 3):
        page = listing(client, alice, offset=offset, limit=3, sort="name")
        assert page["total"] == 7 and page["offset"] == offset and page["limit"] == 3
        seen.extend(ids(page))
    assert sorted(seen) == sorted(created) and len(seen) == 7


def test_offset_past_the_end_is_an_empty_page_with_the_total(
    client: TestClient, alice: dict[str, str]
) -> None:
    create_item(client, alice)
    create_item(client, alice)
    page = listing(client, alice, offset=50, limit=10)
    assert page == {"items": [], "total": 2, "offset": 50, "limit": 10}


def test_limit_bounds_are_1_to_100(client: TestClient, alice: dict[str, str]) -> None:
    create_item(client, alice)
    assert listing(client, alice, limit=1)["limit"] == 1
    assert listing(client, alice, limit=100)["limit"] == 100


INVALID_LIST_PARAMS: list[dict[str, Any]] = [
    {"limit": 0},
    {"limit": 101},
    {"limit": "ten"},
    {"offset": -1},
    {"q": "a"},
    {"q": "x" * 201},
    {"sort": "id"},
    {"sort": "--name"},
    {"tag": ""},
    {"tag": "x" * 41},
    {"tag": [f"t{i}" for i in range(21)]},
    {"owner_id": 0},
]


def test_invalid_list_parameters_are_422_in_the_error_shape(
    client: TestClient, alice: dict[str, str]
) -> None:
    for params in INVALID_LIST_PARAMS:
        filters_only = set(params) <= {"q", "tag", "owner_id"}
        for path in (ITEMS, f"{ITEMS}/export") if filters_only else (ITEMS,):
            response = client.get(path, params=params, headers=alice)
            assert response.status_code == 422, (path, params)
            body = response.json()
            assert body["code"] == "validation_error"
            assert body["errors"][0]["loc"][0] == "query"


def test_nul_in_the_search_or_a_tag_filter_is_a_422(
    client: TestClient, alice: dict[str, str]
) -> None:
    create_item(client, alice, tags=["kitchen"])
    for params in ({"q": "la\x00mp"}, {"tag": "kitchen\x00"}, {"tag": ["kitchen", "\x00"]}):
        response = client.get(ITEMS, params=params, headers=alice)
        assert response.status_code == 422, (params, response.text)
        body = response.json()
        assert body["code"] == "validation_error"
        assert body["errors"][0]["loc"][:2] == ["query", *params]
    nul_q = client.get(ITEMS, params={"q": "la\x00mp"}, headers=alice).json()
    assert nul_q["detail"] == "q: must not contain NUL characters (U+0000)"


def test_q_matches_name_or_description_case_insensitively(
    client: TestClient, alice: dict[str, str]
) -> None:
    by_name = create_item(client, alice, name="Red Kettle")["id"]
    by_description = create_item(client, alice, name="Pot", description="a KETTLE-like pot")["id"]
    create_item(client, alice, name="Lamp", description="bright")
    page = listing(client, alice, q="kettle", sort="created_at")
    assert ids(page) == [by_name, by_description] and page["total"] == 2


def test_q_treats_like_wildcards_literally(client: TestClient, alice: dict[str, str]) -> None:
    literal = create_item(client, alice, name="100% cotton")["id"]
    create_item(client, alice, name="1000 cotton buds")
    assert ids(listing(client, alice, q="0%")) == [literal]
    assert listing(client, alice, q="__")["total"] == 0


def test_tags_filter_keeps_items_having_every_tag(
    client: TestClient, alice: dict[str, str]
) -> None:
    both = create_item(client, alice, tags=["red", "wool"])["id"]
    create_item(client, alice, tags=["red"])
    create_item(client, alice, tags=["wool", "blue"])
    assert ids(listing(client, alice, tag=["red", "wool"])) == [both]
    assert listing(client, alice, tag=["RED"])["total"] == 2
    assert listing(client, alice, tag=["green"])["total"] == 0


def test_tags_compare_exactly_not_accent_insensitively(
    client: TestClient, alice: dict[str, str]
) -> None:
    cafe = create_item(client, alice, tags=["cafe", "café"])
    assert cafe["tags"] == ["cafe", "café"]
    assert listing(client, alice, tag="café")["total"] == 1
    assert listing(client, alice, tag="cafè")["total"] == 0


def test_filters_combine_with_search_and_pagination(
    client: TestClient, alice: dict[str, str], bob: dict[str, str]
) -> None:
    wanted = [
        create_item(client, alice, name=f"Wool scarf {i}", tags=["winter"])["id"] for i in range(3)
    ]
    create_item(client, alice, name="Wool socks", tags=["summer"])
    create_item(client, alice, name="Cotton scarf", tags=["winter"])
    create_item(client, bob, name="Wool scarf", tags=["winter"])
    page = listing(client, alice, q="wool", tag="winter", sort="name", limit=2, offset=1)
    assert page["total"] == 3
    assert ids(page) == wanted[1:]


def test_sorting_is_stable_with_ties_broken_by_id(
    client: TestClient, alice: dict[str, str]
) -> None:
    for name, price in [("b", "10"), ("a", "9.99"), ("b", "10"), ("c", "100"), ("a", "9.99")]:
        create_item(client, alice, name=name, price=price)
    for sort, key in [("created_at", "created_at"), ("name", "name"), ("price", "price")]:
        for reverse in (False, True):
            param = f"-{sort}" if reverse else sort

            def sort_key(item: dict[str, Any], key: str = key) -> tuple[Any, int]:
                value = item[key]
                return (Decimal(value) if key == "price" else value, item["id"])

            items = listing(client, alice, sort=param)["items"]
            assert items == sorted(items, key=sort_key, reverse=reverse), param
            pages = [
                listing(client, alice, sort=param, limit=2, offset=o)["items"] for o in (0, 2, 4)
            ]
            assert [item for page in pages for item in page] == items, param


def test_total_follows_creates_and_deletes_with_and_without_filters(
    client: TestClient, alice: dict[str, str], bob: dict[str, str]
) -> None:
    first = create_item(client, alice, name="Red lamp", tags=["red"])
    create_item(client, alice, name="Blue lamp", tags=["blue"])
    create_item(client, bob, name="Red lamp", tags=["red"])
    assert listing(client, alice)["total"] == 2
    assert listing(client, alice, tag="red")["total"] == 1
    assert listing(client, alice, q="lamp")["total"] == 2
    client.delete(f"{ITEMS}/{first['id']}", headers=alice)
    assert listing(client, alice)["total"] == 1
    assert listing(client, alice, tag="red")["total"] == 0
    assert listing(client, bob)["total"] == 1
    assert listing(client, alice, offset=5)["total"] == 1


def test_list_entries_are_exactly_the_single_item_reads(
    client: TestClient, alice: dict[str, str]
) -> None:
    create_item(client, alice, description='ünïcødé "quoted"', tags=["a", "b"], tax="7.5")
    create_item(client, alice, price="0")
    for entry in listing(client, alice)["items"]:
        assert client.get(f"{ITEMS}/{entry['id']}", headers=alice).json() == {
            **entry,
            "files": [],
            "files_total": 0,
        }
