"""Failed-login limits over HTTP (database-backed): per account, per client IP, with
Retry-After, lifted when the window has passed, exact under concurrency."""

import asyncio

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pwdlib.hashers.bcrypt import BcryptHasher

from storeroom.users.models import User
from tests.auth.conftest import MAX_FAILURES, WINDOW_SECONDS, failed_login
from tests.conftest import PASSWORD, FakeClock, client_from, register, run_in_app


def login_status(client: TestClient, email: str, password: str = PASSWORD) -> int:
    response = client.post("/api/v1/auth/token", data={"username": email, "password": password})
    return response.status_code


def test_too_many_failures_is_429_with_retry_after_even_with_the_right_password(
    client: TestClient, clock: FakeClock
) -> None:
    register(client, "alice@example.com")
    assert [failed_login(client, "alice@example.com") for _ in range(MAX_FAILURES)] == [
        401
    ] * MAX_FAILURES
    clock.advance(10)
    response = client.post(
        "/api/v1/auth/token", data={"username": "alice@example.com", "password": PASSWORD}
    )
    assert response.status_code == 429
    assert response.json()["code"] == "login_throttled"
    assert int(response.headers["retry-after"]) == WINDOW_SECONDS - 10


def test_login_is_allowed_again_once_the_window_has_passed(
    client: TestClient, clock: FakeClock
) -> None:
    register(client, "alice@example.com")
    for _ in range(MAX_FAILURES):
        failed_login(client, "alice@example.com")
    clock.advance(WINDOW_SECONDS - 1)
    assert login_status(client, "alice@example.com") == 429
    clock.advance(1)
    assert login_status(client, "alice@example.com") == 200


def test_the_account_limit_applies_from_every_address(client: TestClient) -> None:
    register(client, "alice@example.com")
    for _ in range(MAX_FAILURES):
        failed_login(client, "alice@example.com")
    elsewhere = client_from(client, "198.51.100.7")
    assert login_status(elsewhere, "alice@example.com") == 429


def test_one_address_failing_on_many_accounts_is_limited(client: TestClient) -> None:
    register(client, "alice@example.com")
    for number in range(MAX_FAILURES):
        failed_login(client, f"victim{number}@example.com")
    assert login_status(client, "alice@example.com") == 429
    assert login_status(client_from(client, "198.51.100.7"), "alice@example.com") == 200


def test_a_login_forgets_its_own_failures_from_that_address(client: TestClient) -> None:
    register(client, "alice@example.com")
    for _ in range(MAX_FAILURES - 1):
        failed_login(client, "alice@example.com")
    assert login_status(client, "alice@example.com") == 200
    for _ in range(MAX_FAILURES - 1):
        failed_login(client, "alice@example.com")
    assert login_status(client, "alice@example.com") == 200


def test_a_login_does_not_reset_another_addresses_failures(client: TestClient) -> None:
    register(client, "alice@example.com")
    attacker = client_from(client, "203.0.113.66")
    for _ in range(MAX_FAILURES - 1):
        failed_login(attacker, "alice@example.com")
    assert login_status(client, "alice@example.com") == 200
    failed_login(attacker, "alice@example.com")
    assert login_status(attacker, "alice@example.com") == 429
    assert login_status(client, "alice@example.com") == 429


def test_a_login_after_a_failure_still_upgrades_an_old_bcrypt_hash(client: TestClient) -> None:
    alice = register(client, "alice@example.com")

    async def use_bcrypt() -> None:
        app: FastAPI = client.app  # type: ignore[assignment]
        async with app.state.sessionmaker() as session, session.begin():
            user = await session.get(User, alice["id"])
            assert user is not None
            user.hashed_password = BcryptHasher().hash(PASSWORD)

    async def stored_hash() -> str:
        app: FastAPI = client.app  # type: ignore[assignment]
        async with app.state.sessionmaker() as session:
            user = await session.get(User, alice["id"])
            assert user is not None
            return user.hashed_password

    run_in_app(client, use_bcrypt)
    failed_login(client, "alice@example.com")
    assert login_status(client, "alice@example.com") == 200
    assert run_in_app(client, stored_hash).startswith("$argon2")


def concurrent_wrong_logins(
    client: TestClient, email: str, count: int, host: str = "192.0.2.10"
) -> list[httpx.Response]:
    """`count` wrong logins sent at once, from `host`, to the running app."""

    async def send_all() -> list[httpx.Response]:
        transport = httpx.ASGITransport(
            app=client.app, raise_app_exceptions=False, client=(host, 50000)
        )
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as burst:
            form = {"username": email, "password": "wrong-password"}
            return list(
                await asyncio.gather(
                    *(burst.post("/api/v1/auth/token", data=form) for _ in range(count))
                )
            )

    return run_in_app(client, send_all)


def test_a_burst_of_guesses_lets_no_more_than_the_limit_reach_the_password_check(
    client: TestClient,
) -> None:
    register(client, "alice@example.com")
    responses = concurrent_wrong_logins(client, "alice@example.com", 50)
    statuses = [response.status_code for response in responses]
    assert statuses.count(401) == MAX_FAILURES, statuses
    assert statuses.count(429) == 50 - MAX_FAILURES, statuses
    assert all(
        int(response.headers["retry-after"]) > 0
        for response in responses
        if response.status_code == 429
    )
    assert login_status(client, "alice@example.com") == 429


def test_failures_count_against_the_account_however_its_address_is_typed(
    client: TestClient,
) -> None:
    register(client, "carol@example.com")
    for typed in (" Carol@Example.com", "CAROL@EXAMPLE.COM", "carol@example.com "):
        assert failed_login(client, typed) == 401
    assert login_status(client, "carol@example.com") == 429


def test_an_accented_variant_of_a_locked_address_does_not_reach_the_account(
    client: TestClient,
) -> None:
    register(client, "carol@example.com")
    for _ in range(MAX_FAILURES):
        failed_login(client, "carol@example.com")
    for variant in ("càrol@example.com", "cárol@example.com", "carôl@example.com"):
        assert login_status(client_from(client, "198.51.100.7"), variant) == 401
    assert login_status(client, "carol@example.com") == 429
