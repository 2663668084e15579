"""The pages over HTTP: where they send a visitor, what their forms answer, and the headers that
keep them safe in a browser. (The database does not change any of this: SQLite only; the
session rules run on every database in test_sessions.py.)"""

import re

import httpx
import pytest
from fastapi.testclient import TestClient

from storeroom.auth.sessions.service import SESSION_COOKIE
from storeroom.core.config import Settings
from storeroom.main import create_app
from tests.conftest import PASSWORD, register
from tests.web.sessions import EVIL_ORIGIN, OWN_ORIGIN, reset_token, sign_in

PAGES = ["/login", "/register", "/forgot-password", "/reset-password"]
SIGNED_IN_PAGES = ["/app", "/app/password"]


@pytest.fixture
def db_backend() -> str:
    return "sqlite"


def post_form(
    client: TestClient, path: str, data: dict[str, str], origin: str = OWN_ORIGIN
) -> httpx.Response:
    return client.post(path, data=data, headers={"Origin": origin}, follow_redirects=False)


def test_the_root_goes_to_the_dashboard(client: TestClient) -> None:
    response = client.get("/", follow_redirects=False)
    assert response.status_code == 307
    assert response.headers["location"] == "/app"


def test_the_dashboard_sends_a_visitor_to_sign_in_and_back(client: TestClient) -> None:
    response = client.get("/app?notice=x", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2Fapp%3Fnotice%3Dx"
    page = client.get(response.headers["location"])
    assert 'name="next" value="/app?notice=x"' in page.text


def test_every_page_has_a_strict_csp_and_no_inline_code(client: TestClient) -> None:
    register(client, "alice@example.com")
    responses = [client.get(path) for path in PAGES]
    sign_in(client, "alice@example.com")
    responses += [client.get(path) for path in SIGNED_IN_PAGES]
    responses.append(client.post("/logout", headers={"Origin": EVIL_ORIGIN}))  # an error page
    for response in responses:
        where = response.request.url
        assert response.headers["content-type"] == "text/html; charset=utf-8", where
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "style-src 'self'" in csp, where
        assert "unsafe" not in csp and "frame-ancestors 'none'" in csp, where
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "same-origin"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store"
        assert not re.search(r"<script(?![^>]*\bsrc=)", response.text), where
        assert not re.search(r"<style|\sstyle=|\son[a-z]+=", response.text), where


def test_every_field_has_a_label(client: TestClient) -> None:
    register(client, "alice@example.com")
    texts = [client.get(path).text for path in PAGES[:3]]
    sign_in(client, "alice@example.com")
    texts += [client.get(path).text for path in SIGNED_IN_PAGES]
    for text in texts:
        labelled = set(re.findall(r'<label for="([^"]+)"', text))
        inputs = re.findall(r"<(?:input|select|textarea)\b([^>]*)>", text)
        for attributes in inputs:
            if 'type="hidden"' in attributes:
                continue
            field_id = re.search(r'id="([^"]+)"', attributes)
            assert field_id and field_id[1] in labelled, attributes


def test_signing_in_sets_an_httponly_samesite_cookie(client: TestClient) -> None:
    register(client, "alice@example.com")
    response = post_form(client, "/login", {"email": "alice@example.com", "password": PASSWORD})
    assert response.status_code == 303
    assert response.headers["location"] == "/app"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # the public URL is http://


def test_the_cookie_is_secure_when_the_public_url_is_https(settings: Settings) -> None:
    https = settings.model_copy(update={"public_url": "https://storeroom.example"})
    with TestClient(create_app(https), base_url="https://storeroom.example") as client:
        register(client, "alice@example.com")
        response = post_form(
            client,
            "/login",
            {"email": "alice@example.com", "password": PASSWORD},
            origin="https://storeroom.example",
        )
    assert response.status_code == 303
    assert "Secure" in response.headers["set-cookie"]


@pytest.mark.parametrize(
    ("target", "destination"),
    [
        ("/app?q=lamp", "/app?q=lamp"),
        ("/app/password", "/app/password"),
        ("//evil.example/app", "/app"),
        ("https://evil.example/app", "/app"),
        ("/\\evil.example", "/app"),
        ("javascript:alert(1)", "/app"),
        ("/app\r\nSet-Cookie: x=y", "/app"),
        ("", "/app"),
    ],
)
def test_signing_in_goes_only_to_a_path_on_this_site(
    client: TestClient, target: str, destination: str
) -> None:
    register(client, "alice@example.com")
    response = post_form(
        client, "/login", {"email": "alice@example.com", "password": PASSWORD, "next": target}
    )
    assert response.status_code == 303
    assert response.headers["location"] == destination


def test_a_wrong_password_shows_the_form_again_with_a_401(client: TestClient) -> None:
    register(client, "alice@example.com")
    response = post_form(client, "/login", {"email": "alice@example.com", "password": "nope"})
    assert response.status_code == 401
    assert "Incorrect email or password" in response.text
    assert 'value="alice@example.com"' in response.text
    assert "set-cookie" not in response.headers


def test_too_many_failed_sign_ins_answer_429_with_retry_after(settings: Settings) -> None:
    strict = settings.model_copy(update={"login_max_failures": 2})
    with TestClient(create_app(strict)) as client:
        register(client, "alice@example.com")
        statuses = [
            post_form(client, "/login", {"email": "alice@example.com", "password": "nope"})
            for _ in range(3)
        ]
        right = post_form(client, "/login", {"email": "alice@example.com", "password": PASSWORD})
    assert [response.status_code for response in statuses] == [401, 401, 429]
    assert right.status_code == 429
    assert int(right.headers["retry-after"]) > 0
    assert "Too many failed logins" in right.text


def test_a_sign_in_form_posted_from_another_site_is_refused(client: TestClient) -> None:
    register(client, "alice@example.com")
    response = post_form(
        client, "/login", {"email": "alice@example.com", "password": PASSWORD}, EVIL_ORIGIN
    )
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/html")
    assert "set-cookie" not in response.headers


def test_registering_signs_the_new_account_in(client: TestClient) -> None:
    response = post_form(client, "/register", {"email": "Carol@Example.com", "password": PASSWORD})
    assert response.status_code == 303
    assert response.headers["location"] == "/app"
    assert client.get("/api/v1/users/me").json()["email"] == "carol@example.com"


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        ({"email": "not-an-email", "password": PASSWORD}, 422, "valid email address"),
        ({"email": "dave@example.com", "password": "short"}, 422, "at least 8 characters"),
        ({"email": "alice@example.com", "password": PASSWORD}, 400, "Email already registered"),
    ],
)
def test_registration_shows_the_apis_error_next_to_the_field(
    client: TestClient, data: dict[str, str], status: int, message: str
) -> None:
    register(client, "alice@example.com")
    response = post_form(client, "/register", data)
    assert response.status_code == status
    field = next(name for name in ("email", "password") if f'id="{name}-error"' in response.text)
    error = re.search(rf'<p class="field-error" id="{field}-error">([^<]*)</p>', response.text)
    assert error and message in error[1]
    assert f'aria-describedby="{field}-error"' in response.text or "-error" in response.text
    assert "set-cookie" not in response.headers


def test_forgot_password_answers_the_same_for_any_address(client: TestClient) -> None:
    register(client, "alice@example.com")
    known = post_form(client, "/forgot-password", {"email": "alice@example.com"})
    unknown = post_form(client, "/forgot-password", {"email": "nobody@example.com"})
    assert known.status_code == unknown.status_code == 200
    assert known.text == unknown.text
    assert "reset link is on its way" in known.text


def test_a_reset_link_sets_a_new_password_once(client: TestClient, settings: Settings) -> None:
    register(client, "alice@example.com")
    token = reset_token(client, settings, "alice@example.com")
    page = client.get("/reset-password", params={"token": token})
    assert page.status_code == 200
    assert 'name="new_password"' in page.text

    short = post_form(client, "/reset-password", {"token": token, "new_password": "short"})
    assert short.status_code == 422
    assert "at least 8 characters" in short.text

    done = post_form(
        client, "/reset-password", {"token": token, "new_password": "another-long-password"}
    )
    assert done.status_code == 303
    assert done.headers["location"] == "/login?notice=password-reset"
    sign_in(client, "alice@example.com", "another-long-password")

    again = client.get("/reset-password", params={"token": token})
    assert again.status_code == 400
    assert "already been used" in again.text


@pytest.mark.parametrize("token", ["", "garbage", "x" * 5000])
def test_a_bad_reset_link_says_so(client: TestClient, token: str) -> None:
    page = client.get("/reset-password", params={"token": token})
    assert page.status_code in (400, 422)
    assert page.headers["content-type"].startswith("text/html")
    posted = post_form(client, "/reset-password", {"token": token, "new_password": PASSWORD})
    assert posted.status_code in (400, 422)
    assert posted.headers["content-type"].startswith("text/html")


def test_static_assets_are_served_and_a_missing_one_is_404(client: TestClient) -> None:
    for path, media_type in [
        ("/static/app.css", "text/css"),
        ("/static/app.js", "text/javascript"),
        ("/static/favicon.svg", "image/svg+xml"),
        ("/static/docs/swagger-ui.css", "text/css"),
    ]:
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith(media_type), path
    for missing in ("/static/nope.js", "/static/../pyproject.toml", "/static/%00", "/static/"):
        response = client.get(missing)
        assert response.status_code == 404, missing
        assert response.json()["code"] == "not_found"


def test_the_api_key_page_needs_no_javascript_to_sign_out(client: TestClient) -> None:
    register(client, "alice@example.com")
    sign_in(client, "alice@example.com")
    page = client.get("/app")
    form = re.search(r'<form method="post" action="/logout".*?</form>', page.text, re.S)
    assert form and 'name="csrf_token"' in form[0]
