"""HTTP Basic over HTTP: accepted wherever a user is required, with the login's 401 and limits;
/docs shows every credential scheme."""

import base64
from pathlib import Path

from fastapi.testclient import TestClient

from storeroom.core.config import Settings
from storeroom.main import create_app
from tests.auth.conftest import MAX_FAILURES, basic
from tests.conftest import TEST_SECRET_KEY, register


def test_basic_credentials_authenticate(client: TestClient) -> None:
    register(client, "alice@example.com")
    response = client.get("/api/v1/users/me", headers=basic("ALICE@example.com"))
    assert response.status_code == 200
    assert response.json()["email"] == "alice@example.com"


def test_basic_takes_a_utf8_password(client: TestClient) -> None:
    register(client, "alice@example.com", "pässwörd-ünicode")
    response = client.get(
        "/api/v1/users/me", headers=basic("alice@example.com", "pässwörd-ünicode")
    )
    assert response.status_code == 200


def test_wrong_basic_password_is_the_same_401_as_a_wrong_login(client: TestClient) -> None:
    register(client, "alice@example.com")
    wrong = client.get("/api/v1/users/me", headers=basic("alice@example.com", "wrong-password"))
    unknown = client.get("/api/v1/users/me", headers=basic("nobody@example.com"))
    form = client.post(
        "/api/v1/auth/token", data={"username": "alice@example.com", "password": "wrong-password"}
    )
    assert wrong.status_code == unknown.status_code == form.status_code == 401
    assert {key: wrong.json()[key] for key in ("detail", "code")} == {
        key: form.json()[key] for key in ("detail", "code")
    }
    assert unknown.json()["detail"] == wrong.json()["detail"]


def test_malformed_basic_header_is_401(client: TestClient) -> None:
    no_colon = base64.b64encode(b"alice@example.com").decode()
    for value in ("Basic !!!not-base64", f"Basic {no_colon}", "Basic", "Basic /w=="):
        response = client.get("/api/v1/users/me", headers={"Authorization": value})
        assert response.status_code == 401, value
        assert response.json()["code"] == "invalid_credentials"


def test_basic_failures_count_toward_the_login_limit(client: TestClient) -> None:
    register(client, "alice@example.com")
    for _ in range(MAX_FAILURES):
        response = client.get("/api/v1/users/me", headers=basic("alice@example.com", "wrong-pass"))
        assert response.status_code == 401
    blocked = client.get("/api/v1/users/me", headers=basic("alice@example.com"))
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) > 0


def test_docs_offer_bearer_basic_and_api_key_schemes(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, secret_key=TEST_SECRET_KEY))
    schema = TestClient(app).get("/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    kinds = {
        (scheme["type"], scheme.get("scheme") or scheme.get("name")) for scheme in schemes.values()
    }
    assert ("oauth2", None) in kinds
    assert ("http", "basic") in kinds
    assert ("apiKey", "X-API-Key") in kinds
    me = schema["paths"]["/api/v1/users/me"]["get"]["security"]
    assert len(me) == len(schemes) == 3


def test_a_nul_in_basic_credentials_is_a_wrong_login_not_a_crash(client: TestClient) -> None:
    register(client, "alice@example.com")
    for headers in (basic("alice\x00@example.com"), basic("alice@example.com", "pass\x00word")):
        response = client.get("/api/v1/users/me", headers=headers)
        assert response.status_code == 401, response.text
        assert response.json()["code"] == "invalid_credentials"
