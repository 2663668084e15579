"""Idempotent retries of creates (items, API keys): the same Idempotency-Key with the same request
replays the first response and the effect happens once; another request with the key is 422,
a retry while the first runs is 409; failures are not kept; keys are per caller and expire."""

import asyncio
import base64
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import func, select

from storeroom.core.config import Settings
from storeroom.idempotency import service as idempotency_service
from storeroom.idempotency.models import IdempotencyKey
from storeroom.items import service as items_service
from tests.conftest import FakeClock, run_in_app

ITEM = {"name": "Lamp", "price": "12.50", "tags": ["home"]}
HOUR = 3600


def create_item(
    client: TestClient, headers: dict[str, str], key: str | bytes, body: Any = ITEM
) -> httpx.Response:
    return client.post("/api/v1/items", json=body, headers={**headers, "Idempotency-Key": key})


def item_total(client: TestClient, headers: dict[str, str]) -> int:
    total: int = client.get("/api/v1/items", headers=headers).json()["total"]
    return total


def assert_replayed(retry: httpx.Response, first: httpx.Response) -> None:
    assert retry.status_code == first.status_code
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.content == first.content
    for header in ("location", "etag", "content-type", "cache-control", "pragma"):
        assert retry.headers.get(header) == first.headers.get(header), header


def assert_ran(response: httpx.Response) -> None:
    assert response.status_code == 201, response.text
    assert "idempotent-replayed" not in response.headers


async def count_rows(app: FastAPI) -> int:
    async with app.state.sessionmaker() as session:
        total = await session.scalar(select(func.count()).select_from(IdempotencyKey))
        return int(total or 0)


def kept_rows(client: TestClient) -> int:
    return run_in_app(client, count_rows, client.app)


def test_a_retried_create_replays_the_first_response_and_creates_once(
    client: TestClient, alice: dict[str, str]
) -> None:
    first = create_item(client, alice, "order-1")
    assert_ran(first)
    assert first.headers["location"] == f"/api/v1/items/{first.json()['id']}"
    retry = create_item(client, alice, "order-1")
    assert_replayed(retry, first)
    assert item_total(client, alice) == 1


def test_json_bodies_are_compared_by_value(client: TestClient, alice: dict[str, str]) -> None:
    first = create_item(client, alice, "order-1")
    reordered = b'{ "tags": ["home"],\n  "price": "12.50", "name": "Lamp" }'
    retry = client.post(
        "/api/v1/items",
        content=reordered,
        headers={**alice, "Idempotency-Key": "order-1", "Content-Type": "application/json"},
    )
    assert_replayed(retry, first)


def test_the_same_key_with_another_request_is_422_and_does_nothing(
    client: TestClient, alice: dict[str, str]
) -> None:
    assert_ran(create_item(client, alice, "order-1"))
    other_body = create_item(client, alice, "order-1", {"name": "Chair", "price": "40"})
    other_route = client.post(
        "/api/v1/users/me/api-keys",
        json={"name": "ci"},
        headers={**alice, "Idempotency-Key": "order-1"},
    )
    for response in (other_body, other_route):
        assert response.status_code == 422
        assert response.json()["code"] == "idempotency_key_reused"
        assert "request_id" in response.json()
    assert item_total(client, alice) == 1
    assert client.get("/api/v1/users/me/api-keys", headers=alice).json()["total"] == 0


def test_keys_belong_to_their_caller(
    client: TestClient, alice: dict[str, str], bob: dict[str, str]
) -> None:
    assert_ran(create_item(client, alice, "order-1"))
    bobs = create_item(client, bob, "order-1", {"name": "Bob's lamp", "price": "3"})
    assert_ran(bobs)
    assert bobs.json()["name"] == "Bob's lamp"
    assert item_total(client, alice) == 1
    assert item_total(client, bob) == 1


def test_keys_compare_exactly_and_requests_without_one_are_not_deduplicated(
    client: TestClient, alice: dict[str, str]
) -> None:
    assert_ran(create_item(client, alice, "order-1"))
    assert_ran(create_item(client, alice, "Order-1"))  # MariaDB's collation would merge these
    assert_ran(create_item(client, alice, "x" * 255))
    for _ in range(2):
        assert_ran(client.post("/api/v1/items", json=ITEM, headers=alice))
    assert item_total(client, alice) == 5
    assert kept_rows(client) == 3


def test_an_invalid_key_is_422_and_creates_nothing(
    client: TestClient, alice: dict[str, str]
) -> None:
    for key in ["", "x" * 256, "clé".encode(), b"a\x01b"]:
        response = create_item(client, alice, key)
        assert response.status_code == 422, key
        assert response.json()["code"] == "validation_error"
        assert response.json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    assert item_total(client, alice) == 0
    assert kept_rows(client) == 0


def test_a_5xx_is_not_kept_so_the_retry_runs_again(
    client: TestClient, alice: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_args: Any) -> None:
        raise RuntimeError("the database went away")

    with monkeypatch.context() as patch:
        patch.setattr(items_service, "create", broken)
        assert create_item(client, alice, "order-1").status_code == 500
    assert kept_rows(client) == 0
    assert_ran(create_item(client, alice, "order-1"))
    assert item_total(client, alice) == 1


def test_a_4xx_is_not_kept_either(client: TestClient, alice: dict[str, str]) -> None:
    invalid = create_item(client, alice, "order-1", {"name": "Lamp", "price": "-1"})
    assert invalid.status_code == 422
    assert invalid.json()["code"] == "validation_error"
    fixed = create_item(client, alice, "order-1")
    assert_ran(fixed)
    assert item_total(client, alice) == 1


def test_a_key_is_replayed_for_the_configured_hours_then_runs_again(
    client: TestClient, alice: dict[str, str], clock: FakeClock, settings: Settings
) -> None:
    assert settings.idempotency_hours == 24
    first = create_item(client, alice, "order-1")
    clock.advance(24 * HOUR - 1)
    assert_replayed(create_item(client, alice, "order-1"), first)
    clock.advance(1)
    again = create_item(client, alice, "order-1")
    assert_ran(again)
    assert again.json()["id"] != first.json()["id"]
    assert_replayed(create_item(client, alice, "order-1"), again)
    assert item_total(client, alice) == 2


def test_expired_keys_are_swept_periodically(
    client: TestClient, alice: dict[str, str], clock: FakeClock
) -> None:
    create_item(client, alice, "old")
    clock.advance(23 * HOUR)
    create_item(client, alice, "recent")
    clock.advance(HOUR)
    app: FastAPI = client.app  # type: ignore[assignment]

    async def sweep_soon() -> None:
        async with idempotency_service.expired_key_sweeper(
            app.state.sessionmaker, clock, interval_seconds=0.01
        ):
            for _ in range(500):
                await asyncio.sleep(0.01)
                if await count_rows(app) == 1:
                    return

    run_in_app(client, sweep_soon)
    assert kept_rows(client) == 1
    assert_ran(create_item(client, alice, "old"))


def _http(client: TestClient) -> httpx.AsyncClient:
    app: FastAPI = client.app  # type: ignore[assignment]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def test_concurrent_first_requests_with_one_key_create_once(
    client: TestClient, alice: dict[str, str]
) -> None:
    async def race() -> list[httpx.Response]:
        async with _http(client) as http:
            return list(
                await asyncio.gather(
                    *(
                        http.post(
                            "/api/v1/items",
                            json=ITEM,
                            headers={**alice, "Idempotency-Key": "order-1"},
                        )
                        for _ in range(6)
                    )
                )
            )

    responses = run_in_app(client, race)
    ran = [r for r in responses if r.status_code == 201 and "idempotent-replayed" not in r.headers]
    assert len(ran) == 1
    for response in responses:
        if response is ran[0]:
            continue
        if response.status_code == 201:
            assert_replayed(response, ran[0])
        else:
            assert response.status_code == 409, response.text
            assert response.json()["code"] == "idempotency_key_in_progress"
    assert item_total(client, alice) == 1


def _hold_first_create(monkeypatch: pytest.MonkeyPatch) -> tuple[asyncio.Event, asyncio.Event]:
    """The first item create waits, after its key is claimed, until `go` is set."""
    started, go = asyncio.Event(), asyncio.Event()
    original = items_service.create
    calls = 0

    async def first_waits(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            started.set()
            await go.wait()
        return await original(*args)

    monkeypatch.setattr(items_service, "create", first_waits)
    return started, go


def test_a_retry_while_the_first_runs_is_409(
    client: TestClient, alice: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = {**alice, "Idempotency-Key": "order-1"}

    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        started, go = _hold_first_create(monkeypatch)
        async with _http(client) as http:
            first = asyncio.ensure_future(http.post("/api/v1/items", json=ITEM, headers=headers))
            await started.wait()
            retry = await http.post("/api/v1/items", json=ITEM, headers=headers)
            go.set()
            return await first, retry

    first, retry = run_in_app(client, scenario)
    assert retry.status_code == 409
    assert retry.json()["code"] == "idempotency_key_in_progress"
    assert_ran(first)
    assert_replayed(create_item(client, alice, "order-1"), first)
    assert item_total(client, alice) == 1


def test_a_claim_left_by_a_request_that_died_is_taken_over(
    client: TestClient, alice: dict[str, str], clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request that fails and cannot free its key (as if its process died) leaves a claim:
    retries get 409 until it is five minutes old, then one runs."""

    async def broken(*_args: Any) -> None:
        raise RuntimeError("crash")

    with monkeypatch.context() as patch:
        patch.setattr(items_service, "create", broken)
        patch.setattr(idempotency_service, "release", broken)
        assert create_item(client, alice, "order-1").status_code == 500
    assert create_item(client, alice, "order-1").status_code == 409
    clock.advance(5 * 60)
    retry = create_item(client, alice, "order-1")
    assert_ran(retry)
    assert_replayed(create_item(client, alice, "order-1"), retry)
    assert item_total(client, alice) == 1


def test_a_request_whose_claim_was_taken_over_rolls_back(
    client: TestClient, alice: dict[str, str], clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first request is merely slow: a retry takes its claim over as abandoned and runs;
    the first can no longer keep its response, so its effect is undone and it answers 409."""
    headers = {**alice, "Idempotency-Key": "order-1"}

    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        started, go = _hold_first_create(monkeypatch)
        async with _http(client) as http:
            first = asyncio.ensure_future(http.post("/api/v1/items", json=ITEM, headers=headers))
            await started.wait()
            clock.advance(5 * 60)
            retry = await http.post("/api/v1/items", json=ITEM, headers=headers)
            go.set()
            return await first, retry

    first, retry = run_in_app(client, scenario)
    assert_ran(retry)
    assert first.status_code == 409
    assert first.json()["code"] == "idempotency_key_in_progress"
    assert item_total(client, alice) == 1
    assert_replayed(create_item(client, alice, "order-1"), retry)


def test_a_retried_api_key_create_replays_the_key_kept_sealed(
    client: TestClient, alice: dict[str, str]
) -> None:
    headers = {**alice, "Idempotency-Key": "key-1"}
    first = client.post("/api/v1/users/me/api-keys", json={"name": "ci"}, headers=headers)
    assert_ran(first)
    assert first.headers["cache-control"] == "no-store"
    retry = client.post("/api/v1/users/me/api-keys", json={"name": "ci"}, headers=headers)
    assert_replayed(retry, first)
    assert retry.headers["cache-control"] == "no-store"
    assert client.get("/api/v1/users/me/api-keys", headers=alice).json()["total"] == 1
    key = retry.json()["key"]
    assert client.get("/api/v1/users/me", headers={"X-API-Key": key}).status_code == 200

    app: FastAPI = client.app  # type: ignore[assignment]

    async def kept_body() -> bytes:
        async with app.state.sessionmaker() as session:
            body = await session.scalar(select(IdempotencyKey.body))
            assert body is not None
            return base64.b64decode(body)

    kept = run_in_app(client, kept_body)
    assert key.encode() not in kept
    assert b'"name":"ci"' not in kept  # the whole body is sealed


def test_a_sealed_response_under_a_changed_secret_key_is_409(
    client: TestClient, alice: dict[str, str], settings: Settings
) -> None:
    # An API key of alice's to call with: her access token dies with the secret key.
    made = client.post("/api/v1/users/me/api-keys", json={"name": "script"}, headers=alice)
    headers = {"X-API-Key": made.json()["key"], "Idempotency-Key": "key-1"}
    assert_ran(client.post("/api/v1/users/me/api-keys", json={"name": "ci"}, headers=headers))
    settings.secret_key = SecretStr("another-secret-key-" + "x" * 40)
    retry = client.post("/api/v1/users/me/api-keys", json={"name": "ci"}, headers=headers)
    assert retry.status_code == 409
    assert retry.json()["code"] == "idempotency_key_unusable"
