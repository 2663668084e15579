"""The same API through httpx.AsyncClient on anyio, with the lifespan running."""

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def async_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://storeroom") as client:
            yield client


async def test_register_login_and_read_me(async_client: httpx.AsyncClient) -> None:
    created = await async_client.post(
        "/api/v1/users", json={"email": "async@example.com", "password": "long-enough"}
    )
    assert created.status_code == 201
    token = await async_client.post(
        "/api/v1/auth/token", data={"username": "async@example.com", "password": "long-enough"}
    )
    assert token.status_code == 200
    me = await async_client.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {token.json()['access_token']}"}
    )
    assert me.json()["email"] == "async@example.com"


async def test_concurrent_registrations_of_one_email_give_one_account(
    async_client: httpx.AsyncClient,
) -> None:
    import anyio

    statuses: list[int] = []

    async def attempt() -> None:
        response = await async_client.post(
            "/api/v1/users", json={"email": "race@example.com", "password": "long-enough"}
        )
        statuses.append(response.status_code)

    async with anyio.create_task_group() as group:
        for _ in range(4):
            group.start_soon(attempt)
    assert sorted(statuses) == [201, 400, 400, 400]


async def test_readyz_over_async_client(async_client: httpx.AsyncClient) -> None:
    response = await async_client.get("/readyz")
    assert response.status_code == 200
