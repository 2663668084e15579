"""The application shell: health probes, request ids, the one error shape, configuration."""

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from storeroom.core.config import Environment, Settings
from storeroom.main import create_app


def test_healthz_is_ok(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_ready_on_a_migrated_database(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "database": "ok",
        "migrations": "ok",
        "rate_limits": "database",
        "storage": "ok",
    }


def test_root_redirects_to_the_web_ui_and_its_footer_links_the_docs(client: TestClient) -> None:
    response = client.get("/", follow_redirects=False)
    assert response.status_code == 307
    assert response.headers["location"] == "/app"
    assert '<a href="/docs">' in client.get("/login").text
    assert client.get("/docs").status_code == 200
    assert "/api/v1/auth/token" in client.get("/openapi.json").json()["paths"]


def test_every_response_carries_a_request_id_and_echoes_a_sane_one(client: TestClient) -> None:
    generated = client.get("/healthz").headers["x-request-id"]
    assert len(generated) == 32
    echoed = client.get("/healthz", headers={"X-Request-ID": "trace-123"})
    assert echoed.headers["x-request-id"] == "trace-123"
    hostile = client.get("/healthz", headers={"X-Request-ID": "a b\tc" + "x" * 300})
    assert hostile.headers["x-request-id"] != "a b\tc" + "x" * 300


def test_unknown_route_and_wrong_method_use_the_error_shape(client: TestClient) -> None:
    missing = client.get("/api/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"
    wrong = client.put("/api/v1/users/me")
    assert wrong.status_code == 405
    assert wrong.json()["code"] == "method_not_allowed"
    assert wrong.headers["allow"] == "DELETE, GET, HEAD, PATCH"
    assert "request_id" in wrong.json()


def test_unexpected_error_is_500_with_request_id_and_no_internals(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(settings)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals: password=hunter2")

    with TestClient(app, raise_server_exceptions=False) as client, caplog.at_level(logging.ERROR):
        response = client.get("/boom")
    assert response.status_code == 500
    body = response.json()
    assert body["code"] == "internal_error"
    assert body["request_id"] == response.headers["x-request-id"]
    assert "hunter2" not in response.text
    assert any("hunter2" in (record.exc_text or "") for record in caplog.records)


def test_readyz_is_503_when_migrations_are_pending(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    settings = Settings(database_url=f"sqlite:///{empty}", data_dir=tmp_path, secret_key="k" * 40)
    with TestClient(create_app(settings)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["migrations"] == "pending"


def test_readyz_is_503_when_the_database_is_unreachable(tmp_path: Path) -> None:
    settings = Settings(
        database_url="postgresql://nobody@127.0.0.1:9/nowhere",
        data_dir=tmp_path,
        secret_key="k" * 40,
    )
    with TestClient(create_app(settings)) as client:
        response = client.get("/readyz")
        assert client.get("/healthz").status_code == 200
    assert response.status_code == 503
    assert response.json()["database"] == "unreachable"


def test_cors_allows_configured_origins_only(settings: Settings) -> None:
    settings.cors_origins = ["https://app.example.com"]
    with TestClient(create_app(settings)) as client:
        allowed = client.options(
            "/api/v1/users/me",
            headers={"Origin": "https://app.example.com", "Access-Control-Request-Method": "GET"},
        )
        denied = client.options(
            "/api/v1/users/me",
            headers={"Origin": "https://evil.example.com", "Access-Control-Request-Method": "GET"},
        )
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "access-control-allow-origin" not in denied.headers


def test_cors_origins_come_from_a_comma_separated_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STOREROOM_CORS_ORIGINS", "https://a.example, https://b.example")
    assert Settings().cors_origins == ["https://a.example", "https://b.example"]


def test_development_generates_a_secret_key_once_and_keeps_it(tmp_path: Path) -> None:
    first = Settings(data_dir=tmp_path).signing_key()
    second = Settings(data_dir=tmp_path).signing_key()
    assert first == second and len(first) >= 32
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_production_refuses_to_start_without_a_secret_key(tmp_path: Path) -> None:
    env = {
        "STOREROOM_ENVIRONMENT": "production",
        "STOREROOM_DATA_DIR": str(tmp_path),
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        [sys.executable, "-m", "storeroom.cli", "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "STOREROOM_SECRET_KEY" in result.stderr
    assert not (tmp_path / "secret_key").exists()
    settings = Settings(environment=Environment.production, data_dir=tmp_path)
    with pytest.raises(RuntimeError, match="STOREROOM_SECRET_KEY"):
        create_app(settings)


def test_app_factory_builds_with_defaults(app: FastAPI) -> None:
    assert app.title == "Storeroom"
