"""The Redis-backed login limiter, against a real Redis (STOREROOM_TEST_REDIS_URL, default
redis://127.0.0.1:6379/0). Runs when STOREROOM_TEST_SERVICES is set; "required" fails when
Redis is unreachable. Every test uses its own key prefix and removes its keys."""

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from redis.asyncio import Redis

from storeroom.auth.rate_limit import RedisLoginLimiter
from storeroom.core.config import Settings
from storeroom.main import create_app
from tests.auth.conftest import MAX_FAILURES, failed_login
from tests.auth.test_rate_limit import concurrent_wrong_logins, login_status
from tests.conftest import PASSWORD, SERVICES_MODE, client_from, register

REDIS_URL = os.environ.get("STOREROOM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
WINDOW = timedelta(minutes=5)
START = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


async def _ping() -> None:
    async with Redis.from_url(REDIS_URL, socket_connect_timeout=2) as redis:
        await redis.ping()


async def _delete_keys(prefix: str) -> None:
    async with Redis.from_url(REDIS_URL) as redis:
        keys = [key async for key in redis.scan_iter(match=f"{prefix}*")]
        if keys:
            await redis.delete(*keys)


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    if not SERVICES_MODE:
        pytest.skip("Redis tests need STOREROOM_TEST_SERVICES=auto|required")
    try:
        asyncio.run(_ping())
    except Exception as exc:
        if SERVICES_MODE == "required":
            pytest.fail(f"STOREROOM_TEST_SERVICES=required but Redis at {REDIS_URL}: {exc}")
        pytest.skip(f"Redis unreachable at {REDIS_URL}: {exc}")
    prefix = f"storeroom-test:{uuid.uuid4().hex}:"
    yield prefix
    asyncio.run(_delete_keys(prefix))


def with_limiter(prefix: str, test: Callable[[RedisLoginLimiter], Awaitable[None]]) -> None:
    async def run() -> None:
        limiter = RedisLoginLimiter(Redis.from_url(REDIS_URL), prefix, MAX_FAILURES, WINDOW)
        try:
            await test(limiter)
        finally:
            await limiter.close()

    asyncio.run(run())


def test_redis_limiter_blocks_at_the_limit_with_retry_after(redis_prefix: str) -> None:
    async def test(limiter: RedisLoginLimiter) -> None:
        for _ in range(MAX_FAILURES):
            assert await limiter.reserve("user:1", "192.0.2.1", START) == 0
        later = START + timedelta(seconds=30)
        assert await limiter.reserve("user:1", "192.0.2.1", later) == 270
        assert await limiter.reserve("user:1", "192.0.2.99", later) == 270
        assert await limiter.reserve("user:2", "192.0.2.1", later) == 270

    with_limiter(redis_prefix, test)


def test_redis_limiter_lets_failures_slide_out_of_the_window(redis_prefix: str) -> None:
    async def test(limiter: RedisLoginLimiter) -> None:
        await limiter.reserve("user:1", "192.0.2.1", START)
        for _ in range(MAX_FAILURES - 1):
            await limiter.reserve("user:1", "192.0.2.1", START + timedelta(minutes=1))
        assert await limiter.reserve("user:1", "192.0.2.1", START + timedelta(minutes=2)) == 180
        assert await limiter.reserve("user:1", "192.0.2.1", START + WINDOW) == 0

    with_limiter(redis_prefix, test)


def test_redis_limiter_forgets_only_that_addresses_failures(redis_prefix: str) -> None:
    async def test(limiter: RedisLoginLimiter) -> None:
        for _ in range(MAX_FAILURES - 1):
            await limiter.reserve("user:1", "203.0.113.66", START)
        await limiter.reserve("user:1", "192.0.2.1", START)
        await limiter.forget("user:1", "192.0.2.1")
        assert await limiter.reserve("user:1", "192.0.2.1", START) == 0
        assert await limiter.reserve("user:1", "192.0.2.1", START) > 0

    with_limiter(redis_prefix, test)


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
def test_api_processes_share_the_redis_counter(settings: Settings, redis_prefix: str) -> None:
    shared = settings.model_copy(update={"redis_url": REDIS_URL, "redis_key_prefix": redis_prefix})
    with TestClient(create_app(shared)) as first, TestClient(create_app(shared)) as second:
        register(first, "alice@example.com")
        for _ in range(MAX_FAILURES):
            assert failed_login(first, "alice@example.com") == 401
        response = second.post(
            "/api/v1/auth/token", data={"username": "alice@example.com", "password": PASSWORD}
        )
        assert response.status_code == 429
        assert int(response.headers["retry-after"]) > 0


@pytest.fixture
def redis_client(settings: Settings, redis_prefix: str) -> Iterator[TestClient]:
    """The app with its rate limits in Redis."""
    with_redis = settings.model_copy(
        update={"redis_url": REDIS_URL, "redis_key_prefix": redis_prefix}
    )
    with TestClient(create_app(with_redis), raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
def test_a_burst_of_guesses_lets_no_more_than_the_limit_through_redis(
    redis_client: TestClient,
) -> None:
    register(redis_client, "alice@example.com")
    statuses = [
        response.status_code
        for response in concurrent_wrong_logins(redis_client, "alice@example.com", 50)
    ]
    assert statuses.count(401) == MAX_FAILURES, statuses
    assert statuses.count(429) == 50 - MAX_FAILURES, statuses


def test_an_accented_variant_of_a_locked_address_does_not_reach_the_account_in_redis(
    redis_client: TestClient,
) -> None:
    register(redis_client, "carol@example.com")
    for _ in range(MAX_FAILURES):
        failed_login(redis_client, "carol@example.com")
    elsewhere = client_from(redis_client, "198.51.100.7")
    for variant in ("càrol@example.com", "cárol@example.com", "carôl@example.com"):
        assert login_status(elsewhere, variant) == 401
    assert login_status(redis_client, "carol@example.com") == 429


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
def test_registrations_are_limited_per_address_in_redis(
    settings: Settings, redis_prefix: str
) -> None:
    limited = settings.model_copy(
        update={
            "redis_url": REDIS_URL,
            "redis_key_prefix": redis_prefix,
            "registration_max_per_ip": 2,
        }
    )
    with TestClient(create_app(limited)) as first, TestClient(create_app(limited)) as second:
        register(first, "alice@example.com")
        register(second, "bob@example.com")
        refused = first.post(
            "/api/v1/users", json={"email": "carol@example.com", "password": PASSWORD}
        )
        assert refused.status_code == 429
        assert refused.json()["code"] == "too_many_requests"
        assert int(refused.headers["retry-after"]) > 0
