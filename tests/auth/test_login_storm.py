"""A login storm against a real `storeroom serve` process, on every database: four times as many
concurrent wrong logins as the pool has connections must all be answered (401 or 429, never
500), and a Bearer request sent meanwhile must not wait for them."""

import asyncio
import base64
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import PASSWORD
from tests.servers import serve

POOL_SIZE = 2  # STOREROOM_DATABASE_POOL_SIZE: 2 kept + 2 overflow
STORM = 4 * (POOL_SIZE + POOL_SIZE)
EMAIL = "alice@example.com"
ME = "/api/v1/users/me"


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[str]:
    """`storeroom serve` on the test's database with a small pool, and a login limit high
    enough that every wrong password is hashed (a 401, not a 429)."""
    env = {
        "STOREROOM_DATABASE_URL": database_url,
        "STOREROOM_DATABASE_POOL_SIZE": str(POOL_SIZE),
        "STOREROOM_LOGIN_MAX_FAILURES": "1000000",
    }
    with serve(tmp_path, env) as process:
        yield process.base_url


async def _timed(send: "asyncio.Future[httpx.Response]") -> tuple[int, float]:
    """The status (0 for no answer in time) and how long it took."""
    started = time.monotonic()
    try:
        status = (await send).status_code
    except httpx.TimeoutException:
        status = 0
    return status, time.monotonic() - started


async def _storm(base_url: str, credential: str) -> tuple[list[tuple[int, float]], int, float]:
    """STORM wrong logins at once, and a Bearer GET /users/me once they are under way."""
    limits = httpx.Limits(max_connections=STORM + 1, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base_url, timeout=40, limits=limits) as client:
        created = await client.post("/api/v1/users", json={"email": EMAIL, "password": PASSWORD})
        assert created.status_code == 201, created.text
        token = await client.post(
            "/api/v1/auth/token", data={"username": EMAIL, "password": PASSWORD}
        )
        bearer = {"Authorization": f"Bearer {token.json()['access_token']}"}
        basic = base64.b64encode(f"{EMAIL}:wrong-password".encode()).decode()

        def wrong_login(number: int) -> "asyncio.Future[httpx.Response]":
            if credential == "basic":
                return asyncio.ensure_future(
                    client.get(ME, headers={"Authorization": f"Basic {basic}"})
                )
            form = {"username": EMAIL, "password": f"wrong-password-{number}"}
            return asyncio.ensure_future(client.post("/api/v1/auth/token", data=form))

        logins = [asyncio.ensure_future(_timed(wrong_login(number))) for number in range(STORM)]
        await asyncio.sleep(0.5)  # every login has been sent and is being worked on
        bearer_status, bearer_seconds = await _timed(
            asyncio.ensure_future(client.get(ME, headers=bearer))
        )
        return list(await asyncio.gather(*logins)), bearer_status, bearer_seconds


@pytest.mark.parametrize("credential", ["token form", "basic"])
def test_a_login_storm_larger_than_the_pool_stalls_nothing(
    server: str, credential: str, db_backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    logins, bearer_status, bearer_seconds = asyncio.run(_storm(server, credential))

    statuses = sorted({status for status, _ in logins})
    worst = max(seconds for _, seconds in logins)
    with capsys.disabled():
        print(
            f"\nlogin storm ({db_backend}, {credential}, {STORM} wrong logins, pool "
            f"{POOL_SIZE}+{POOL_SIZE}): statuses {statuses}, worst {worst:.2f} s; "
            f"Bearer during it {bearer_status} in {bearer_seconds:.2f} s"
        )
    assert bearer_status == 200
    assert bearer_seconds < 1
    assert set(statuses) <= {401, 429}
    assert worst < 20  # well inside the pool's 30 s timeout: nothing waited on the pool
