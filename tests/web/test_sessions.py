"""The session cookie as an API credential: it authenticates reads; a change made with it needs
the session's CSRF token and our own origin; other credentials need neither; and the session
ends on sign-out, a password change, deactivation and expiry."""

import pytest
from fastapi.testclient import TestClient

from storeroom.auth.sessions.service import SESSION_COOKIE
from storeroom.core.config import Settings
from storeroom.main import create_app
from tests.conftest import PASSWORD, FakeClock, register
from tests.web.sessions import EVIL_ORIGIN, OWN_ORIGIN, sign_in, with_token

LAMP = {"name": "Lamp", "price": "12.50"}


def item_count(client: TestClient, headers: dict[str, str] | None = None) -> int:
    response = client.get("/api/v1/items", headers=headers or {})
    assert response.status_code == 200, response.text
    total: int = response.json()["total"]
    return total


def test_the_session_cookie_authenticates_api_reads(client: TestClient) -> None:
    register(client, "alice@example.com")
    sign_in(client, "alice@example.com")
    me = client.get("/api/v1/users/me")
    assert me.status_code == 200
    assert me.json()["email"] == "alice@example.com"


def test_a_change_with_the_cookie_and_its_csrf_token_from_our_origin_is_made(
    client: TestClient,
) -> None:
    register(client, "alice@example.com")
    token = sign_in(client, "alice@example.com")
    created = client.post("/api/v1/items", json=LAMP, headers=with_token(token))
    assert created.status_code == 201, created.text
    item = created.json()
    patched = client.patch(
        f"/api/v1/items/{item['id']}",
        json={"price": "13.00"},
        headers={**with_token(token), "If-Match": created.headers["ETag"]},
    )
    assert patched.status_code == 200
    deleted = client.delete(f"/api/v1/items/{item['id']}", headers=with_token(token))
    assert deleted.status_code == 204


def test_a_change_with_the_cookie_but_no_csrf_token_is_refused_in_the_error_shape(
    client: TestClient,
) -> None:
    register(client, "alice@example.com")
    sign_in(client, "alice@example.com")
    refused = client.post("/api/v1/items", json=LAMP, headers={"Origin": OWN_ORIGIN})
    assert refused.status_code == 403
    body = refused.json()
    assert body["code"] == "csrf_rejected"
    assert set(body) == {"detail", "code", "request_id"}
    assert item_count(client) == 0


def test_a_wrong_csrf_token_is_refused(client: TestClient) -> None:
    register(client, "alice@example.com")
    token = sign_in(client, "alice@example.com")
    for wrong in (
        b"",
        b"0" * len(token),
        token[:-1].encode(),
        token.upper().encode(),
        "é".encode(),
    ):
        refused = client.post(
            "/api/v1/items", json=LAMP, headers={"X-CSRF-Token": wrong, "Origin": OWN_ORIGIN}
        )
        assert refused.status_code == 403, wrong
    assert item_count(client) == 0


def test_another_sessions_csrf_token_is_refused(client: TestClient) -> None:
    register(client, "alice@example.com")
    register(client, "bob@example.com")
    bobs_token = sign_in(client, "bob@example.com")
    client.cookies.clear()
    sign_in(client, "alice@example.com")
    refused = client.post("/api/v1/items", json=LAMP, headers=with_token(bobs_token))
    assert refused.status_code == 403


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": EVIL_ORIGIN},
        {"Origin": "null"},
        {"Origin": "http://testserver.evil.example"},
        {"Origin": "https://testserver"},  # another scheme is another origin
        {"Referer": f"{EVIL_ORIGIN}/page"},
        {},  # neither Origin nor Referer: nothing shows it came from our pages
    ],
    ids=["other", "null", "lookalike", "scheme", "referer", "none"],
)
def test_a_change_with_the_cookie_from_another_origin_is_refused(
    client: TestClient, headers: dict[str, str]
) -> None:
    register(client, "alice@example.com")
    token = sign_in(client, "alice@example.com")
    refused = client.post("/api/v1/items", json=LAMP, headers={"X-CSRF-Token": token, **headers})
    assert refused.status_code == 403
    assert refused.json()["code"] == "csrf_rejected"
    assert item_count(client) == 0


def test_a_same_origin_referer_stands_in_for_a_missing_origin(client: TestClient) -> None:
    register(client, "alice@example.com")
    token = sign_in(client, "alice@example.com")
    created = client.post(
        "/api/v1/items",
        json=LAMP,
        headers={"X-CSRF-Token": token, "Referer": f"{OWN_ORIGIN}/app"},
    )
    assert created.status_code == 201


def test_the_public_urls_origin_is_ours_too(settings: Settings) -> None:
    public = settings.model_copy(update={"public_url": "http://storeroom.example"})
    with TestClient(create_app(public)) as client:
        register(client, "alice@example.com")
        token = sign_in(client, "alice@example.com")
        created = client.post(
            "/api/v1/items", json=LAMP, headers=with_token(token, "http://storeroom.example")
        )
    assert created.status_code == 201


def test_an_explicit_cors_origin_is_trusted_with_the_token_and_any_origin_is_not(
    settings: Settings,
) -> None:
    for origins, status in ((["http://shop.example"], 201), (["*"], 403)):
        with TestClient(
            create_app(settings.model_copy(update={"cors_origins": origins}))
        ) as client:
            register(client, f"alice-{status}@example.com")
            token = sign_in(client, f"alice-{status}@example.com")
            response = client.post(
                "/api/v1/items", json=LAMP, headers=with_token(token, "http://shop.example")
            )
        assert response.status_code == status, origins


def test_a_cross_site_form_post_with_the_cookie_is_refused(client: TestClient) -> None:
    register(client, "alice@example.com")
    sign_in(client, "alice@example.com")
    refused = client.post(
        "/api/v1/items",
        data={"name": "Planted", "price": "1"},
        headers={"Origin": EVIL_ORIGIN},
    )
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/json"
    assert refused.json()["code"] == "csrf_rejected"
    assert item_count(client) == 0


def test_bearer_basic_and_api_key_requests_need_no_csrf_token(client: TestClient) -> None:
    register(client, "alice@example.com")
    sign_in(client, "alice@example.com")  # the cookie rides along and is not what counts
    bearer = client.post(
        "/api/v1/auth/token", data={"username": "alice@example.com", "password": PASSWORD}
    ).json()["access_token"]
    headers = {"Authorization": f"Bearer {bearer}", "Origin": EVIL_ORIGIN}
    key = client.post("/api/v1/users/me/api-keys", json={"name": "ci"}, headers=headers)
    assert key.status_code == 201
    for credential in (
        {"Authorization": f"Bearer {bearer}"},
        {"X-API-Key": key.json()["key"]},
    ):
        created = client.post(
            "/api/v1/items", json=LAMP, headers={**credential, "Origin": EVIL_ORIGIN}
        )
        assert created.status_code == 201, created.text
    client.cookies.clear()
    basic = client.post(
        "/api/v1/items", json=LAMP, auth=("alice@example.com", PASSWORD), headers={}
    )
    assert basic.status_code == 201
    assert item_count(client, {"Authorization": f"Bearer {bearer}"}) == 3


def test_signing_out_ends_the_session_on_the_server(client: TestClient) -> None:
    register(client, "alice@example.com")
    token = sign_in(client, "alice@example.com")
    cookie = client.cookies[SESSION_COOKIE]
    signed_out = client.post(
        "/logout",
        data={"csrf_token": token},
        headers={"Origin": OWN_ORIGIN},
        follow_redirects=False,
    )
    assert signed_out.status_code == 303
    assert signed_out.headers["location"] == "/login?notice=signed-out"
    assert f'{SESSION_COOKIE}=""' in signed_out.headers["set-cookie"]
    # A copy of the cookie kept elsewhere is no good either.
    client.cookies.set(SESSION_COOKIE, cookie)
    assert client.get("/api/v1/users/me").status_code == 401
    assert client.get("/app", follow_redirects=False).headers["location"] == "/login"


def test_a_cross_site_sign_out_is_refused(client: TestClient) -> None:
    register(client, "alice@example.com")
    sign_in(client, "alice@example.com")
    refused = client.post("/logout", headers={"Origin": EVIL_ORIGIN}, follow_redirects=False)
    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith("text/html")
    assert client.get("/api/v1/users/me").status_code == 200


def test_a_password_change_through_the_api_ends_the_session(client: TestClient) -> None:
    register(client, "alice@example.com")
    token = sign_in(client, "alice@example.com")
    changed = client.patch(
        "/api/v1/users/me",
        json={"current_password": PASSWORD, "password": "another-long-password"},
        headers=with_token(token),
    )
    assert changed.status_code == 200
    assert client.get("/api/v1/users/me").status_code == 401


def test_the_password_page_keeps_this_browser_signed_in_and_ends_the_others(
    client: TestClient,
) -> None:
    register(client, "alice@example.com")
    sign_in(client, "alice@example.com")
    other_browser = client.cookies[SESSION_COOKIE]
    client.cookies.clear()
    token = sign_in(client, "alice@example.com")
    changed = client.post(
        "/app/password",
        data={
            "current_password": PASSWORD,
            "new_password": "another-long-password",
            "csrf_token": token,
        },
        headers={"Origin": OWN_ORIGIN},
        follow_redirects=False,
    )
    assert changed.status_code == 303
    assert changed.headers["location"] == "/app?notice=password-changed"
    assert client.get("/api/v1/users/me").status_code == 200  # with the new cookie
    client.cookies.set(SESSION_COOKIE, other_browser)
    assert client.get("/api/v1/users/me").status_code == 401


def test_a_wrong_current_password_on_the_password_page_changes_nothing(
    client: TestClient,
) -> None:
    register(client, "alice@example.com")
    token = sign_in(client, "alice@example.com")
    page = client.post(
        "/app/password",
        data={
            "current_password": "wrong",
            "new_password": "another-long-password",
            "csrf_token": token,
        },
        headers={"Origin": OWN_ORIGIN},
    )
    assert page.status_code == 400
    assert "The current password is wrong." in page.text
    assert client.get("/api/v1/users/me").status_code == 200
    client.cookies.clear()
    sign_in(client, "alice@example.com")  # the old password still works


def test_deactivation_ends_the_session_for_good(client: TestClient, admin: dict[str, str]) -> None:
    alice = register(client, "alice@example.com")
    sign_in(client, "alice@example.com")
    for active in (False, True):
        response = client.patch(
            f"/api/v1/users/{alice['id']}", json={"is_active": active}, headers=admin
        )
        assert response.status_code == 200
        assert client.get("/api/v1/users/me").status_code == 401


def test_a_session_ends_when_it_expires(
    client: TestClient, clock: FakeClock, settings: Settings
) -> None:
    register(client, "alice@example.com")
    sign_in(client, "alice@example.com")
    clock.advance(settings.session_days * 24 * 3600 - 60)
    assert client.get("/api/v1/users/me").status_code == 200
    clock.advance(120)
    assert client.get("/api/v1/users/me").status_code == 401


@pytest.mark.parametrize("cookie", ["nonsense", "x" * 5000, "\u00e9t\u00e9", "a\x00b", ""])
def test_a_made_up_session_cookie_is_a_401(client: TestClient, cookie: str) -> None:
    header = {"Cookie": f"{SESSION_COOKIE}={cookie}".encode()}
    response = client.get("/api/v1/users/me", headers=header)
    assert response.status_code == 401
    assert response.json()["code"] in ("session_ended", "not_authenticated")
    assert client.get("/app", headers=header, follow_redirects=False).status_code == 303
