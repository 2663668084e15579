"""Helpers for the TestClient tests of the web UI: sign in through the form, read the page's
CSRF token."""

import re

from fastapi import FastAPI
from fastapi.testclient import TestClient

from storeroom.auth.recovery import service as recovery_service
from storeroom.core.config import Settings
from storeroom.users import service as users_service
from tests.conftest import PASSWORD, run_in_app

OWN_ORIGIN = "http://testserver"  # TestClient's base URL: the origin our pages are served from
EVIL_ORIGIN = "https://evil.example"
_CSRF_META = re.compile(r'<meta name="csrf-token" content="([0-9a-f]+)">')


def sign_in(client: TestClient, email: str, password: str = PASSWORD) -> str:
    """Sign in through the form; the client keeps the cookie. Returns the session's CSRF
    token, as the dashboard page gives it to its script."""
    response = client.post(
        "/login",
        data={"email": email, "password": password},
        headers={"Origin": OWN_ORIGIN},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    return csrf_token(client)


def csrf_token(client: TestClient) -> str:
    page = client.get("/app", follow_redirects=False)
    assert page.status_code == 200, page.status_code
    found = _CSRF_META.search(page.text)
    assert found, page.text
    return found[1]


def with_token(token: str, origin: str = OWN_ORIGIN) -> dict[str, str]:
    return {"X-CSRF-Token": token, "Origin": origin}


def reset_token(client: TestClient, settings: Settings, email: str) -> str:
    """A password-reset token for the account, as the recovery email would carry it."""
    app: FastAPI = client.app  # type: ignore[assignment]

    async def token() -> str:
        async with app.state.sessionmaker() as session:
            user = await users_service.get_by_email(session, email)
            assert user is not None
            return recovery_service.create_reset_token(user, settings)

    return run_in_app(client, token)
