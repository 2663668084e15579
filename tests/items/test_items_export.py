"""Exporting items: NDJSON and CSV streams equal to the list, CSV that re-imports, and a
failure mid-stream that a real HTTP client cannot mistake for a complete export."""

import csv
import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from storeroom.core.config import Settings
from storeroom.items import service as items_service
from storeroom.items.models import Item, ItemTag, join_tags
from storeroom.items.schemas import CSV_COLUMNS, item_create_from_csv_row
from storeroom.main import create_app
from tests.asgi import call
from tests.conftest import run_in_app
from tests.items.test_items_crud import ITEMS, create_item

EXPORT = f"{ITEMS}/export"


def my_id(client: TestClient, headers: dict[str, str]) -> int:
    user_id: int = client.get("/api/v1/users/me", headers=headers).json()["id"]
    return user_id


def seed_items(client: TestClient, owner_id: int, count: int) -> None:
    """Many items at once, straight into the tables (setup, not the behaviour under test)."""
    start = datetime(2026, 1, 1, tzinfo=UTC)

    async def seed() -> None:
        app: FastAPI = client.app  # type: ignore[assignment]
        async with app.state.sessionmaker() as session, session.begin():
            for n in range(count):
                tags = ["bulk", "even"] if n % 2 == 0 else ["bulk"]
                item = Item(
                    owner_id=owner_id,
                    name=f'Item {n:05d}, "quoted"',
                    description=None if n % 3 else f"line one\nline two {n}",
                    price=Decimal(n) / 100,
                    tax=Decimal("7.50"),
                    tags_text=join_tags(tags),
                    version=1,
                    created_at=start + timedelta(seconds=n),
                    updated_at=start + timedelta(seconds=n),
                )
                session.add(item)
                await session.flush()
                session.add_all(
                    ItemTag(item_id=item.id, tag=tag, owner_id=owner_id) for tag in tags
                )
            await items_service.add_to_count(session, owner_id, count)

    run_in_app(client, seed)


def listed_items(client: TestClient, headers: dict[str, str], **params: Any) -> list[Any]:
    items: list[Any] = []
    offset = 0
    while True:
        page = client.get(
            ITEMS,
            params={"sort": "created_at", "limit": 100, "offset": offset, **params},
            headers=headers,
        ).json()
        items.extend(page["items"])
        offset += 100
        if offset >= page["total"]:
            return sorted(items, key=lambda item: item["id"])


# A spreadsheet runs a cell starting with one of the first six as a formula; the export puts a
# ' in front of such text cells, and of those already starting with ' (so import can undo it).
QUOTED_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")


def text_cell(value: str) -> str:
    return "'" + value if value.startswith(QUOTED_STARTS) else value


def as_csv_row(item: dict[str, Any]) -> dict[str, str]:
    return {
        "id": str(item["id"]),
        "name": text_cell(item["name"]),
        "description": text_cell(item["description"] or ""),
        "price": item["price"],
        "tax": item["tax"],
        "tags": text_cell(";".join(item["tags"])),
        "created_at": item["created_at"],
        "updated_at": item["updated_at"],
    }


@pytest.mark.parametrize("count", [0, 1, 5000])
def test_export_equals_the_list_in_both_formats(
    client: TestClient, alice: dict[str, str], bob: dict[str, str], count: int
) -> None:
    if count == 1:
        create_item(client, alice, tags=["one"], description="only")
    elif count:
        seed_items(client, my_id(client, alice), count)
    create_item(client, bob, name="Not alice's")
    expected = listed_items(client, alice)
    assert len(expected) == count

    ndjson = client.get(EXPORT, params={"format": "ndjson"}, headers=alice)
    assert ndjson.status_code == 200
    assert ndjson.headers["content-type"] == "application/x-ndjson"
    assert [json.loads(line) for line in ndjson.text.splitlines()] == expected

    exported = client.get(EXPORT, params={"format": "csv"}, headers=alice)
    assert exported.status_code == 200
    assert exported.headers["content-type"] == "text/csv; charset=utf-8"
    reader = csv.DictReader(io.StringIO(exported.text, newline=""))
    assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
    assert list(reader) == [as_csv_row(item) for item in expected]


def test_export_is_an_attachment_named_for_today(client: TestClient, alice: dict[str, str]) -> None:
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    for export_format in ("ndjson", "csv"):
        response = client.get(EXPORT, params={"format": export_format}, headers=alice)
        assert response.headers["content-disposition"] == (
            f'attachment; filename="items-{today}.{export_format}"'
        )


def test_export_applies_search_and_tag_filters(client: TestClient, alice: dict[str, str]) -> None:
    wanted = create_item(client, alice, name="Wool scarf", tags=["winter", "red"])
    create_item(client, alice, name="Wool socks", tags=["winter"])
    create_item(client, alice, name="Cotton scarf", tags=["red"])
    response = client.get(EXPORT, params={"q": "scarf", "tag": ["red", "winter"]}, headers=alice)
    assert [json.loads(line) for line in response.text.splitlines()] == [wanted]


def test_nul_in_the_exports_search_or_tag_filter_is_a_422(
    client: TestClient, alice: dict[str, str]
) -> None:
    create_item(client, alice, tags=["kitchen"])
    for params in ({"q": "la\x00mp"}, {"tag": ["kitchen", "\x00"]}):
        for export_format in ("ndjson", "csv"):
            response = client.get(EXPORT, params={**params, "format": export_format}, headers=alice)
            assert response.status_code == 422, (params, response.text)
            assert response.json()["code"] == "validation_error"
            assert response.json()["errors"][0]["loc"][:2] == ["query", *params]


def test_export_format_must_be_ndjson_or_csv(client: TestClient, alice: dict[str, str]) -> None:
    response = client.get(EXPORT, params={"format": "xml"}, headers=alice)
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


def test_csv_quotes_commas_quotes_newlines_and_unicode_and_re_imports(
    client: TestClient, alice: dict[str, str]
) -> None:
    tricky = create_item(
        client,
        alice,
        name='Comma, "quote" ; semicolon',
        description='multi\nline\r\nwith "quotes", commas and ünïcødé 🚀',
        price="1234567.89",
        tax="19.6",
        tags=["größe", "a b", "🚀"],
    )
    plain = create_item(client, alice, name="=1+2", price="0")
    exported = client.get(EXPORT, params={"format": "csv"}, headers=alice).content
    rows = list(csv.DictReader(io.StringIO(exported.decode("utf-8"), newline="")))
    assert rows == [as_csv_row(tricky), as_csv_row(plain)]
    for row, original in zip(rows, (tricky, plain), strict=True):
        again = item_create_from_csv_row(row)
        assert again.name == original["name"]
        assert again.description == original["description"]
        assert str(again.price) == original["price"] and str(again.tax) == original["tax"]
        assert again.tags == original["tags"]


def test_a_query_failing_before_the_first_byte_is_an_error_response(
    client: TestClient, alice: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_args: Any) -> Any:
        raise OperationalError("SELECT ...", {}, Exception("database went away"))

    monkeypatch.setattr(items_service, "fetch_export_batch", broken)
    response = client.get(EXPORT, headers=alice)
    assert response.status_code == 500
    assert response.json()["code"] == "internal_error"
    assert "request_id" in response.json()


@pytest.fixture
def live_app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def live_server(live_app: FastAPI) -> Iterator[str]:
    """The app under a real uvicorn on a free port, for what TestClient cannot show (how the
    connection ends)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(live_app, log_level="critical", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


def test_a_failure_mid_stream_aborts_the_connection(
    client: TestClient,
    alice: dict[str, str],
    live_server: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    seed_items(client, my_id(client, alice), 2500)
    real_fetch = items_service.fetch_export_batch
    calls = 0

    async def fails_on_second_batch(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OperationalError("SELECT ...", {}, Exception("connection reset"))
        return await real_fetch(*args)

    monkeypatch.setattr(items_service, "fetch_export_batch", fails_on_second_batch)
    received = b""
    with (
        httpx.Client(base_url=live_server, timeout=30) as http,
        http.stream("GET", EXPORT, headers=alice) as response,
    ):
        assert response.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            for chunk in response.iter_raw():
                received += chunk
    assert received.count(b"\n") == 1000  # the first batch arrived, then the connection died
    assert "export failed mid-stream" in caplog.text


def test_a_client_leaving_mid_export_gives_the_database_connection_back(
    client: TestClient, alice: dict[str, str], live_server: str, live_app: FastAPI
) -> None:
    seed_items(client, my_id(client, alice), 3000)
    with httpx.Client(base_url=live_server, timeout=30) as http:
        with http.stream("GET", EXPORT, headers=alice) as response:
            assert response.status_code == 200
            next(response.iter_raw())
        # The client hung up after the first chunk; the server stops and returns its connection.
        deadline = time.monotonic() + 10
        while live_app.state.engine.pool.checkedout() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert live_app.state.engine.pool.checkedout() == 0
        assert http.get(EXPORT, headers=alice, params={"format": "csv"}).status_code == 200


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """Exports read 2 items per batch, so a few items make many batches."""
    monkeypatch.setattr(items_service, "EXPORT_BATCH_SIZE", 2)
    items_service._export_statement.cache_clear()  # built with the batch size as its limit
    yield 2
    items_service._export_statement.cache_clear()


def test_head_of_an_export_reads_no_more_than_its_first_batch(
    client: TestClient,
    alice: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    small_batches: int,
) -> None:
    app: FastAPI = client.app  # type: ignore[assignment]
    seed_items(client, my_id(client, alice), 9)
    real_fetch = items_service.fetch_export_batch
    batches = 0

    async def counting_fetch(*args: Any) -> Any:
        nonlocal batches
        batches += 1
        return await real_fetch(*args)

    monkeypatch.setattr(items_service, "fetch_export_batch", counting_fetch)
    for export_format in ("ndjson", "csv"):
        batches = 0
        get = call(client, "GET", f"{EXPORT}?format={export_format}", alice)
        get_batches, batches = batches, 0
        head = call(client, "HEAD", f"{EXPORT}?format={export_format}", alice)
        assert get.status == head.status == 200
        assert head.comparable_headers() == get.comparable_headers()
        assert head.body == b""
        assert get_batches == 5  # 2 + 2 + 2 + 2 + 1
        assert batches <= 2  # the first, and perhaps the next one already on its way
        assert app.state.engine.pool.checkedout() == 0


def test_head_through_uvicorn_leaves_the_connection_usable(
    client: TestClient, alice: dict[str, str], live_server: str
) -> None:
    create_item(client, alice, name="Lamp")
    with httpx.Client(base_url=live_server, timeout=30) as http:
        head = http.head(EXPORT, headers=alice)
        assert head.status_code == 200
        assert head.headers["content-type"] == "application/x-ndjson"
        assert head.content == b""
        get = http.get(EXPORT, headers=alice)  # the same keep-alive connection
        assert get.status_code == 200
        assert json.loads(get.content)["name"] == "Lamp"
