"""Password recovery over HTTP, with the reset email delivered to a real SMTP server."""

import re
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from storeroom.core.config import Settings
from tests.conftest import PASSWORD, login, register
from tests.smtp import SmtpServer

NEW_PASSWORD = "a-fresh-password-42"
RECOVERY = "/api/v1/auth/password-recovery"
RESET = "/api/v1/auth/reset-password"


@pytest.fixture
def settings(settings: Settings, smtp_server: SmtpServer) -> Settings:
    return settings.model_copy(
        update={**smtp_server.settings_update(), "public_url": "https://storeroom.test"}
    )


def _reset_token_from_email(smtp_server: SmtpServer, to: str) -> str:
    received = smtp_server.next_email()
    assert received.rcpt_tos == [to]
    links = re.findall(r"https://storeroom\.test/reset-password\?\S+", received.text())
    assert len(links) == 1, received.text()
    assert links[0] in received.html()
    return parse_qs(urlsplit(links[0]).query)["token"][0]


def _request_reset_token(client: TestClient, smtp_server: SmtpServer, email: str) -> str:
    response = client.post(RECOVERY, json={"email": email})
    assert response.status_code == 202, response.text
    return _reset_token_from_email(smtp_server, email)


@pytest.fixture
def carol(client: TestClient, smtp_server: SmtpServer) -> str:
    """A registered account whose welcome email is already out of the way."""
    register(client, "carol@example.com")
    assert smtp_server.next_email().message["Subject"] == "Welcome to Storeroom"
    return "carol@example.com"


def _login_status(client: TestClient, email: str, password: str) -> int:
    response = client.post("/api/v1/auth/token", data={"username": email, "password": password})
    return response.status_code


def test_reset_link_from_the_email_sets_a_password_that_logs_in(
    client: TestClient, smtp_server: SmtpServer, carol: str
) -> None:
    token = _request_reset_token(client, smtp_server, carol)
    response = client.post(RESET, json={"token": token, "new_password": NEW_PASSWORD})
    assert response.status_code == 200, response.text
    assert (
        client.get("/api/v1/users/me", headers=login(client, carol, NEW_PASSWORD)).json()["email"]
        == carol
    )
    assert _login_status(client, carol, PASSWORD) == 401


def test_reset_email_is_addressed_and_worded_for_the_account(
    client: TestClient, smtp_server: SmtpServer, carol: str
) -> None:
    client.post(RECOVERY, json={"email": "Carol@Example.com"})
    received = smtp_server.next_email()
    assert received.message["To"] == carol
    assert received.message["Subject"] == "Reset your Storeroom password"
    assert received.message.get_content_type() == "multipart/alternative"
    assert "60 minutes" in received.text()
    assert carol in received.html()


def test_reset_token_works_only_once(
    client: TestClient, smtp_server: SmtpServer, carol: str
) -> None:
    token = _request_reset_token(client, smtp_server, carol)
    assert (
        client.post(RESET, json={"token": token, "new_password": NEW_PASSWORD}).status_code == 200
    )
    again = client.post(RESET, json={"token": token, "new_password": "yet-another-password"})
    assert again.status_code == 400
    assert again.json()["code"] == "invalid_reset_token"
    assert _login_status(client, carol, NEW_PASSWORD) == 200


def test_expired_reset_token_is_400_and_changes_nothing(
    client: TestClient, app: FastAPI, smtp_server: SmtpServer, carol: str
) -> None:
    token = _request_reset_token(client, smtp_server, carol)
    key = app.state.settings.signing_key()
    claims = jwt.decode(token, key, algorithms=["HS256"])
    issued = datetime.now(UTC) - timedelta(hours=2)
    claims.update(iat=int(issued.timestamp()), exp=int((issued + timedelta(hours=1)).timestamp()))
    expired = jwt.encode(claims, key, algorithm="HS256")
    response = client.post(RESET, json={"token": expired, "new_password": NEW_PASSWORD})
    assert response.status_code == 400
    assert response.json()["code"] == "reset_token_expired"
    assert set(response.json()) <= {"detail", "code", "request_id"}
    assert _login_status(client, carol, PASSWORD) == 200


def test_tampered_reset_token_is_400_and_changes_nothing(
    client: TestClient, app: FastAPI, smtp_server: SmtpServer, carol: str
) -> None:
    bob = register(client, "bob@example.com")
    smtp_server.next_email()
    token = _request_reset_token(client, smtp_server, carol)
    header, payload, signature = token.split(".")
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    claims = jwt.decode(token, options={"verify_signature": False})
    for forged in (
        f"{header}.{payload}.{signature[:middle]}{flipped}{signature[middle + 1 :]}",
        jwt.encode(
            {**claims, "sub": str(bob["id"])}, "not-the-signing-key-" * 3, algorithm="HS256"
        ),
        jwt.encode({**claims, "sub": str(bob["id"])}, app.state.settings.signing_key()),
        jwt.encode({**claims, "alg": "none"}, None, algorithm="none"),
        token[:-10],
        "not-a-token",
    ):
        response = client.post(RESET, json={"token": forged, "new_password": NEW_PASSWORD})
        assert response.status_code == 400, forged
        assert response.json()["code"] == "invalid_reset_token"
    assert _login_status(client, carol, PASSWORD) == 200
    assert _login_status(client, "bob@example.com", PASSWORD) == 200


def test_access_token_is_not_a_reset_token(client: TestClient, carol: str) -> None:
    access = login(client, carol)["Authorization"].removeprefix("Bearer ")
    response = client.post(RESET, json={"token": access, "new_password": NEW_PASSWORD})
    assert response.status_code == 400
    assert _login_status(client, carol, PASSWORD) == 200


def test_password_change_before_the_reset_voids_the_token(
    client: TestClient, smtp_server: SmtpServer, carol: str
) -> None:
    token = _request_reset_token(client, smtp_server, carol)
    changed = client.patch(
        "/api/v1/users/me",
        json={"password": "changed-meanwhile", "current_password": PASSWORD},
        headers=login(client, carol),
    )
    assert changed.status_code == 200
    response = client.post(RESET, json={"token": token, "new_password": NEW_PASSWORD})
    assert response.status_code == 400
    assert _login_status(client, carol, "changed-meanwhile") == 200


def test_unknown_email_gets_the_same_202_and_no_email(
    client: TestClient, smtp_server: SmtpServer, carol: str
) -> None:
    unknown = client.post(RECOVERY, json={"email": "nobody@example.com"})
    known = client.post(RECOVERY, json={"email": carol})
    assert unknown.status_code == known.status_code == 202
    assert unknown.json() == known.json()
    assert unknown.headers["content-length"] == known.headers["content-length"]
    assert smtp_server.next_email().rcpt_tos == [carol]
    smtp_server.assert_no_more_email()


def test_inactive_account_gets_no_email(
    client: TestClient, smtp_server: SmtpServer, admin: dict[str, str], carol: str
) -> None:
    smtp_server.next_email()  # the admin's welcome
    carol_id = client.get("/api/v1/users/me", headers=login(client, carol)).json()["id"]
    deactivate = client.patch(f"/api/v1/users/{carol_id}", json={"is_active": False}, headers=admin)
    assert deactivate.status_code == 200
    response = client.post(RECOVERY, json={"email": carol})
    assert response.status_code == 202
    client.post(RECOVERY, json={"email": "admin@example.com"})
    assert smtp_server.next_email().rcpt_tos == ["admin@example.com"]
    smtp_server.assert_no_more_email()


def test_token_of_a_deactivated_account_is_refused(
    client: TestClient, smtp_server: SmtpServer, admin: dict[str, str], carol: str
) -> None:
    smtp_server.next_email()  # the admin's welcome
    token = _request_reset_token(client, smtp_server, carol)
    carol_id = client.get("/api/v1/users/me", headers=login(client, carol)).json()["id"]
    client.patch(f"/api/v1/users/{carol_id}", json={"is_active": False}, headers=admin)
    response = client.post(RESET, json={"token": token, "new_password": NEW_PASSWORD})
    assert response.status_code == 400


def test_short_new_password_is_422_and_the_token_still_works(
    client: TestClient, smtp_server: SmtpServer, carol: str
) -> None:
    token = _request_reset_token(client, smtp_server, carol)
    short = client.post(RESET, json={"token": token, "new_password": "short"})
    assert short.status_code == 422
    assert short.json()["code"] == "validation_error"
    assert (
        client.post(RESET, json={"token": token, "new_password": NEW_PASSWORD}).status_code == 200
    )


def test_nul_in_the_recovery_email_is_a_422_and_sends_nothing(
    client: TestClient, smtp_server: SmtpServer, carol: str
) -> None:
    response = client.post(RECOVERY, json={"email": "carol@example.com\x00"})
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    smtp_server.assert_no_more_email()


def test_nul_in_a_new_password_is_422_and_the_token_still_works(
    client: TestClient, smtp_server: SmtpServer, carol: str
) -> None:
    token = _request_reset_token(client, smtp_server, carol)
    refused = client.post(RESET, json={"token": token, "new_password": "a-fresh-\x00-password"})
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"] == "new_password: must not contain NUL characters (U+0000)"
    assert _login_status(client, carol, PASSWORD) == 200
    assert (
        client.post(RESET, json={"token": token, "new_password": NEW_PASSWORD}).status_code == 200
    )


def test_malformed_recovery_requests_are_422(client: TestClient) -> None:
    for payload in ({}, {"email": "not-an-email"}, {"email": "a@example.com", "extra": 1}):
        response = client.post(RECOVERY, json=payload)
        assert response.status_code == 422, payload
        assert response.json()["code"] == "validation_error"
    for payload in ({"token": "", "new_password": NEW_PASSWORD}, {"token": "x" * 5000}):
        assert client.post(RESET, json=payload).status_code == 422, payload


def test_reset_ends_every_session_of_the_account(
    client: TestClient, smtp_server: SmtpServer, carol: str
) -> None:
    before = client.post("/api/v1/auth/token", data={"username": carol, "password": PASSWORD})
    refresh_token = before.json()["refresh_token"]
    access = {"Authorization": f"Bearer {before.json()['access_token']}"}
    token = _request_reset_token(client, smtp_server, carol)
    assert (
        client.post(RESET, json={"token": token, "new_password": NEW_PASSWORD}).status_code == 200
    )
    response = client.post("/api/v1/auth/refresh", json={"refresh_token": refresh_token})
    assert response.status_code == 401
    assert client.get("/api/v1/users/me", headers=access).status_code == 401
