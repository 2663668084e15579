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
from tests.conftest import PASSWORD, SERVICES_MODE, register

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
        for _ in range(MAX_FAILURES - 1):
            await limiter.record_failure("alice@example.com", "192.0.2.1", START)
        assert (await limiter.check("alice@example.com", "192.0.2.1", START)).retry_after == 0
        await limiter.record_failure("alice@example.com", "192.0.2.1", START)
        later = START + timedelta(seconds=30)
        window = await limiter.check("alice@example.com", "192.0.2.1", later)
        assert window.retry_after == 270
        assert window.own_failures == MAX_FAILURES
        other_ip = await limiter.check("alice@example.com", "192.0.2.99", later)
        assert other_ip.retry_after == 270 and other_ip.own_failures == 0
        other_account = await limiter.check("bob@example.com", "192.0.2.1", later)
        assert other_account.retry_after == 270

    with_limiter(redis_prefix, test)


def test_redis_limiter_lets_failures_slide_out_of_the_window(redis_prefix: str) -> None:
    async def test(limiter: RedisLoginLimiter) -> None:
        await limiter.record_failure("alice@example.com", "192.0.2.1", START)
        for _ in range(MAX_FAILURES - 1):
            await limiter.record_failure(
                "alice@example.com", "192.0.2.1", START + timedelta(minutes=1)
            )
        blocked = await limiter.check(
            "alice@example.com", "192.0.2.1", START + timedelta(minutes=2)
        )
        assert blocked.retry_after == 180
        allowed = await limiter.check("alice@example.com", "192.0.2.1", START + WINDOW)
        assert allowed.retry_after == 0 and allowed.own_failures == MAX_FAILURES - 1

    with_limiter(redis_prefix, test)


def test_redis_limiter_forgets_only_that_addresses_failures(redis_prefix: str) -> None:
    async def test(limiter: RedisLoginLimiter) -> None:
        for _ in range(MAX_FAILURES - 1):
            await limiter.record_failure("alice@example.com", "203.0.113.66", START)
        await limiter.record_failure("alice@example.com", "192.0.2.1", START)
        await limiter.forget("alice@example.com", "192.0.2.1")
        assert (await limiter.check("alice@example.com", "192.0.2.1", START)).own_failures == 0
        await limiter.record_failure("alice@example.com", "203.0.113.66", START)
        assert (await limiter.check("alice@example.com", "192.0.2.1", START)).retry_after > 0

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
