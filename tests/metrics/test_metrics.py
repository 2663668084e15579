"""GET /metrics: the series exist and move with what the API does, labelled by route template
(never the raw path), behind the optional token."""

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from storeroom.core.config import Settings
from storeroom.main import create_app
from tests.conftest import register
from tests.metrics.conftest import parse, scrape, value

REQUESTS = "storeroom_http_requests_total"
DURATION_COUNT = "storeroom_http_request_duration_seconds_count"


def test_metrics_are_off_unless_enabled(settings: Settings) -> None:
    off = settings.model_copy(update={"metrics_enabled": False})
    with TestClient(create_app(off)) as client:
        assert client.get("/metrics").status_code == 404


def test_a_request_counts_under_its_route_template(
    client: TestClient, alice: dict[str, str]
) -> None:
    labels = {"method": "GET", "route": "/api/v1/items/{item_id}", "status": "404"}
    before = scrape(client)

    assert client.get("/api/v1/items/123", headers=alice).status_code == 404

    after = scrape(client)
    assert value(after, REQUESTS, **labels) == value(before, REQUESTS, **labels) + 1
    assert value(after, DURATION_COUNT, **labels) == value(before, DURATION_COUNT, **labels) + 1
    assert not [key for key in after if "/123" in dict(key[1]).get("route", "")]


def test_unmatched_paths_share_one_label(client: TestClient) -> None:
    labels = {"method": "GET", "route": "unmatched", "status": "404"}
    before = scrape(client)

    for n in range(3):
        assert client.get(f"/no/such/path/{n}").status_code == 404

    after = scrape(client)
    assert value(after, REQUESTS, **labels) == value(before, REQUESTS, **labels) + 3
    assert not [key for key in after if "/no/such" in dict(key[1]).get("route", "")]


def test_head_is_counted_as_head_under_the_get_route(
    client: TestClient, alice: dict[str, str]
) -> None:
    labels = {"method": "HEAD", "route": "/api/v1/users/me", "status": "200"}
    before = scrape(client)

    assert client.head("/api/v1/users/me", headers=alice).status_code == 200

    assert value(scrape(client), REQUESTS, **labels) == value(before, REQUESTS, **labels) + 1


def test_a_failed_login_counts(client: TestClient) -> None:
    register(client, "carol@example.com")
    before = scrape(client)

    response = client.post(
        "/api/v1/auth/token", data={"username": "carol@example.com", "password": "wrong-guess"}
    )

    assert response.status_code == 401
    after = scrape(client)
    assert value(after, "storeroom_login_failures_total") == (
        value(before, "storeroom_login_failures_total") + 1
    )
    labels = {"method": "POST", "route": "/api/v1/auth/token", "status": "401"}
    assert value(after, REQUESTS, **labels) == value(before, REQUESTS, **labels) + 1


@pytest.fixture
def one_failure_allowed(settings: Settings) -> Settings:
    return settings.model_copy(update={"login_max_failures": 1})


def test_a_throttled_login_counts(one_failure_allowed: Settings) -> None:
    with TestClient(create_app(one_failure_allowed)) as client:
        register(client, "dave@example.com")
        before = scrape(client)
        wrong = {"username": "dave@example.com", "password": "wrong-guess"}

        assert client.post("/api/v1/auth/token", data=wrong).status_code == 401
        assert client.post("/api/v1/auth/token", data=wrong).status_code == 429

        after = scrape(client)
    throttled = "storeroom_throttled_total"
    assert value(after, throttled, limit="login") == value(before, throttled, limit="login") + 1
    assert value(after, "storeroom_login_failures_total") == (
        value(before, "storeroom_login_failures_total") + 1
    )


def test_an_upload_and_a_download_count_their_bytes(
    client: TestClient, alice: dict[str, str]
) -> None:
    content = b"x" * 300_000
    before = scrape(client)

    created = client.post(
        "/api/v1/files", headers=alice, files={"file": ("a.bin", content, "text/plain")}
    )
    assert created.status_code == 201, created.text
    download = client.get(f"/api/v1/files/{created.json()['id']}/content", headers=alice)
    assert download.content == content

    after = scrape(client)
    for name, moved in (
        ("storeroom_file_uploads_total", 1),
        ("storeroom_file_upload_bytes_total", len(content)),
        ("storeroom_file_download_bytes_total", len(content)),
    ):
        assert value(after, name) == value(before, name) + moved, name
    route = "/api/v1/files/{file_id}/content"
    assert value(after, REQUESTS, method="GET", route=route, status="200") == (
        value(before, REQUESTS, method="GET", route=route, status="200") + 1
    )


def test_a_refused_upload_counts_no_bytes(client: TestClient, alice: dict[str, str]) -> None:
    before = scrape(client)

    response = client.post(
        "/api/v1/files",
        headers=alice,
        files={"file": ("a.bin", b"abc", "text/plain")},
        data={"item_id": "999"},  # no such item: 404, nothing kept
    )

    assert response.status_code == 404
    after = scrape(client)
    assert value(after, "storeroom_file_upload_bytes_total") == value(
        before, "storeroom_file_upload_bytes_total"
    )


def test_the_database_pools_are_measured(client: TestClient, alice: dict[str, str]) -> None:
    before = scrape(client)

    assert client.get("/api/v1/users/me", headers=alice).status_code == 200

    after = scrape(client)
    waits = "storeroom_db_pool_wait_seconds_count"
    assert value(after, waits, pool="reader") > value(before, waits, pool="reader")
    for pool in ("reader", "sessions"):
        assert value(after, "storeroom_db_pool_size", pool=pool) == 20
        assert ("storeroom_db_pool_checked_out", frozenset({("pool", pool)})) in after
        assert ("storeroom_db_pool_overflow", frozenset({("pool", pool)})) in after


def test_every_documented_series_is_exposed(client: TestClient, alice: dict[str, str]) -> None:
    client.get("/api/v1/users/me", headers=alice)
    names = {name for name, _ in scrape(client)}
    for name in (
        "storeroom_http_requests_total",
        "storeroom_http_request_duration_seconds_bucket",
        "storeroom_db_pool_size",
        "storeroom_db_pool_checked_out",
        "storeroom_db_pool_overflow",
        "storeroom_db_pool_wait_seconds_bucket",
        "storeroom_login_failures_total",
        "storeroom_file_upload_bytes_total",
        "storeroom_file_download_bytes_total",
        "storeroom_sse_connections",
    ):
        assert name in names, name


@pytest.fixture
def guarded(settings: Settings) -> Settings:
    return settings.model_copy(update={"metrics_token": SecretStr("scrape-me-please")})


def test_a_token_guards_the_metrics(guarded: Settings) -> None:
    with TestClient(create_app(guarded)) as client:
        missing = client.get("/metrics")
        wrong = client.get("/metrics", headers={"Authorization": "Bearer scrape-me-not"})
        right = client.get("/metrics", headers={"Authorization": "Bearer scrape-me-please"})

    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["code"] == "unauthorized"
    assert wrong.status_code == 401
    assert right.status_code == 200
    assert {name for name, _ in parse(right.text)} >= {REQUESTS, DURATION_COUNT}


def test_an_empty_token_guards_nothing(settings: Settings) -> None:
    unset = settings.model_copy(update={"metrics_token": SecretStr("")})
    with TestClient(create_app(unset)) as client:
        assert client.get("/metrics").status_code == 200


def test_metrics_are_not_in_the_api_reference(client: TestClient) -> None:
    assert "/metrics" not in client.get("/openapi.json").json()["paths"]


def test_the_grafana_dashboard_uses_only_series_that_exist(client: TestClient) -> None:
    dashboard = (Path(__file__).parents[2] / "docs" / "grafana-dashboard.json").read_text()
    families = {
        family.name for family in text_string_to_metric_families(client.get("/metrics").text)
    }
    used = set(re.findall(r"storeroom_[a-z_]+", dashboard))
    assert used
    for name in used:
        assert re.sub(r"_(total|bucket|count|sum)$", "", name) in families, name
