"""Logging in and presenting tokens: every failure is a 401 with the same shape."""

from datetime import UTC, datetime, timedelta

import jwt
from fastapi.testclient import TestClient

from storeroom.core.config import Settings
from storeroom.core.security import create_token, password_hash
from tests.conftest import PASSWORD, login, register, run_in_app


def _token_form(email: str, password: str) -> dict[str, str]:
    return {"username": email, "password": password}


def test_login_returns_a_bearer_token_that_works(client: TestClient) -> None:
    register(client, "alice@example.com")
    response = client.post("/api/v1/auth/token", data=_token_form("alice@example.com", PASSWORD))
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 30 * 60
    me = client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200


def test_login_email_is_case_insensitive(client: TestClient) -> None:
    register(client, "alice@example.com")
    login(client, "ALICE@Example.com")


def test_an_address_differing_by_an_accent_is_another_account(client: TestClient) -> None:
    carol = register(client, "carol@example.com")
    wrong_account = client.post(
        "/api/v1/auth/token", data=_token_form("càrol@example.com", PASSWORD)
    )
    assert wrong_account.status_code == 401
    other = register(client, "càrol@example.com", "another-long-password")
    assert other["id"] != carol["id"]
    me = client.get(
        "/api/v1/users/me", headers=login(client, "càrol@example.com", "another-long-password")
    )
    assert me.json()["email"] == "càrol@example.com"
    assert (
        client.get("/api/v1/users/me", headers=login(client, "carol@example.com")).json()["id"]
        == carol["id"]
    )


def test_wrong_password_unknown_email_and_inactive_user_look_the_same(
    client: TestClient, admin: dict[str, str]
) -> None:
    register(client, "alice@example.com")
    carol = register(client, "carol@example.com")
    client.patch(f"/api/v1/users/{carol['id']}", json={"is_active": False}, headers=admin)
    attempts = [
        _token_form("alice@example.com", "wrong-password"),
        _token_form("nobody@example.com", PASSWORD),
        _token_form("carol@example.com", PASSWORD),
    ]
    bodies = []
    for form in attempts:
        response = client.post("/api/v1/auth/token", data=form)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        body = response.json()
        bodies.append((body["detail"], body["code"]))
    assert len(set(bodies)) == 1


def test_login_form_missing_fields_is_422(client: TestClient) -> None:
    response = client.post("/api/v1/auth/token", data={"username": "alice@example.com"})
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


def test_missing_token_is_401(client: TestClient) -> None:
    response = client.get("/api/v1/users/me")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["code"] == "not_authenticated"


def _me(client: TestClient, token: str) -> tuple[int, dict[str, str]]:
    response = client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    return response.status_code, response.json()


def test_expired_token_is_401_token_expired(
    client: TestClient, settings: Settings, alice: dict[str, str]
) -> None:
    alice_id = client.get("/api/v1/users/me", headers=alice).json()["id"]
    token, _ = create_token(
        str(alice_id),
        "access",
        key=settings.signing_key(),
        lifetime=timedelta(minutes=5),
        now=datetime.now(UTC) - timedelta(hours=1),
    )
    status, body = _me(client, token)
    assert status == 401
    assert body["detail"] == "Token expired"


def test_tampered_token_is_401(client: TestClient, alice: dict[str, str]) -> None:
    token = alice["Authorization"].removeprefix("Bearer ")
    header, payload, signature = token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    assert _me(client, f"{header}.{payload}.{flipped}")[0] == 401


def test_token_signed_with_another_key_is_401(client: TestClient, alice: dict[str, str]) -> None:
    alice_id = client.get("/api/v1/users/me", headers=alice).json()["id"]
    token, _ = create_token(
        str(alice_id), "access", key="an-attacker-key-" * 3, lifetime=timedelta(minutes=5)
    )
    assert _me(client, token)[0] == 401


def test_alg_none_token_is_401(client: TestClient, alice: dict[str, str]) -> None:
    alice_id = client.get("/api/v1/users/me", headers=alice).json()["id"]
    now = int(datetime.now(UTC).timestamp())
    claims = {"sub": str(alice_id), "type": "access", "iat": now, "exp": now + 600, "jti": "x"}
    token = jwt.encode(claims, key=None, algorithm="none")
    assert _me(client, token)[0] == 401


def test_token_of_another_type_is_401(
    client: TestClient, settings: Settings, alice: dict[str, str]
) -> None:
    alice_id = client.get("/api/v1/users/me", headers=alice).json()["id"]
    token, _ = create_token(
        str(alice_id), "refresh", key=settings.signing_key(), lifetime=timedelta(minutes=5)
    )
    assert _me(client, token)[0] == 401


def test_garbage_and_non_numeric_subjects_are_401(
    client: TestClient, settings: Settings, alice: dict[str, str]
) -> None:
    token, _ = create_token(
        "not-a-number", "access", key=settings.signing_key(), lifetime=timedelta(minutes=5)
    )
    assert _me(client, token)[0] == 401
    assert _me(client, "garbage")[0] == 401
    assert client.get("/api/v1/users/me", headers={"Authorization": "Bearer"}).status_code == 401


def test_bcrypt_hash_from_an_older_system_logs_in_and_is_upgraded(client: TestClient) -> None:
    user = register(client, "legacy@example.com")
    from pwdlib.hashers.bcrypt import BcryptHasher

    from storeroom.users.models import User

    legacy_hash = BcryptHasher().hash("legacy-password")

    async def set_hash(value: str) -> None:
        async with client.app.state.sessionmaker() as session, session.begin():  # type: ignore[attr-defined]
            row = await session.get(User, user["id"])
            assert row is not None
            row.hashed_password = value

    async def read_hash() -> str:
        async with client.app.state.sessionmaker() as session:  # type: ignore[attr-defined]
            row = await session.get(User, user["id"])
            assert row is not None
            return row.hashed_password

    run_in_app(client, set_hash, legacy_hash)
    login(client, "legacy@example.com", "legacy-password")
    upgraded = run_in_app(client, read_hash)
    assert upgraded.startswith("$argon2")
    assert password_hash.verify("legacy-password", upgraded)
    login(client, "legacy@example.com", "legacy-password")


def test_a_nul_in_the_login_is_a_wrong_login_not_a_crash(client: TestClient) -> None:
    register(client, "alice@example.com")
    for email, password in (("alice\x00@example.com", PASSWORD), ("alice@example.com", "a\x00b")):
        response = client.post("/api/v1/auth/token", data=_token_form(email, password))
        assert response.status_code == 401, response.text
        assert response.json()["code"] == "invalid_credentials"
