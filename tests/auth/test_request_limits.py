"""Registration and password recovery are limited per client IP (recovery also per address it
names), with the login limits' 429 shape and Retry-After, lifted when the window has passed;
under the limit, recovery answers alike for known and unknown addresses."""

import pytest
from fastapi.testclient import TestClient

from storeroom.core.config import Settings
from tests.conftest import PASSWORD, FakeClock, client_from, register

REGISTRATIONS = 2
RECOVERIES_PER_IP = 3
RECOVERIES_PER_EMAIL = 2
WINDOW_SECONDS = 3600
RECOVERY = "/api/v1/auth/password-recovery"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "registration_max_per_ip": REGISTRATIONS,
            "registration_window_seconds": WINDOW_SECONDS,
            "password_recovery_max_per_ip": RECOVERIES_PER_IP,
            "password_recovery_max_per_email": RECOVERIES_PER_EMAIL,
            "password_recovery_window_seconds": WINDOW_SECONDS,
        }
    )


def _register_status(client: TestClient, email: str) -> int:
    response = client.post("/api/v1/users", json={"email": email, "password": PASSWORD})
    return response.status_code


def _assert_throttled(client: TestClient, method: str, path: str, body: dict[str, str]) -> int:
    """The request is refused in the one 429 shape; its Retry-After, in seconds."""
    response = client.request(method, path, json=body)
    assert response.status_code == 429, response.text
    assert response.json()["code"] == "too_many_requests"
    assert set(response.json()) <= {"detail", "code", "request_id"}
    retry_after = int(response.headers["retry-after"])
    assert 0 < retry_after <= WINDOW_SECONDS
    return retry_after


def test_registrations_from_one_address_are_limited(client: TestClient, clock: FakeClock) -> None:
    for number in range(REGISTRATIONS):
        assert _register_status(client, f"user{number}@example.com") == 201
    clock.advance(60)
    retry_after = _assert_throttled(
        client, "POST", "/api/v1/users", {"email": "more@example.com", "password": PASSWORD}
    )
    assert retry_after == WINDOW_SECONDS - 60
    assert _register_status(client_from(client, "198.51.100.7"), "more@example.com") == 201
    clock.advance(retry_after)
    assert _register_status(client, "later@example.com") == 201


def test_refused_registrations_are_not_counted(client: TestClient, clock: FakeClock) -> None:
    for number in range(REGISTRATIONS):
        register(client, f"user{number}@example.com")
    for _ in range(5):
        _assert_throttled(
            client, "POST", "/api/v1/users", {"email": "more@example.com", "password": PASSWORD}
        )
    clock.advance(WINDOW_SECONDS)
    assert _register_status(client, "more@example.com") == 201


def test_recovery_requests_from_one_address_are_limited(
    client: TestClient, clock: FakeClock
) -> None:
    register(client, "carol@example.com")
    bodies = set()
    for email in ("carol@example.com", "nobody@example.com", "someone@example.com"):
        response = client.post(RECOVERY, json={"email": email})
        assert response.status_code == 202
        bodies.add(response.content)
    assert len(bodies) == 1  # known and unknown addresses answer alike under the limit
    _assert_throttled(client, "POST", RECOVERY, {"email": "carol@example.com"})
    _assert_throttled(client, "POST", RECOVERY, {"email": "nobody2@example.com"})
    elsewhere = client_from(client, "198.51.100.7")
    assert elsewhere.post(RECOVERY, json={"email": "carol@example.com"}).status_code == 202
    clock.advance(WINDOW_SECONDS)
    assert client.post(RECOVERY, json={"email": "nobody2@example.com"}).status_code == 202


def test_recovery_requests_for_one_address_are_limited_from_every_address(
    client: TestClient,
) -> None:
    register(client, "carol@example.com")
    for number in range(RECOVERIES_PER_EMAIL):
        caller = client_from(client, f"198.51.100.{number + 1}")
        assert caller.post(RECOVERY, json={"email": "Carol@Example.com"}).status_code == 202
    _assert_throttled(
        client_from(client, "203.0.113.9"), "POST", RECOVERY, {"email": "carol@example.com"}
    )
    assert client.post(RECOVERY, json={"email": "dave@example.com"}).status_code == 202


def test_a_limited_recovery_looks_the_same_for_known_and_unknown_addresses(
    client: TestClient, clock: FakeClock
) -> None:
    register(client, "carol@example.com")
    for email in ("carol@example.com", "nobody@example.com"):
        for number in range(RECOVERIES_PER_EMAIL):
            caller = client_from(client, f"198.51.100.{number + 1}")
            assert caller.post(RECOVERY, json={"email": email}).status_code == 202
    known = client.post(RECOVERY, json={"email": "carol@example.com"})
    unknown = client.post(RECOVERY, json={"email": "nobody@example.com"})
    assert known.status_code == unknown.status_code == 429
    assert known.json()["detail"] == unknown.json()["detail"]
    assert known.headers["retry-after"] == unknown.headers["retry-after"]
