"""A login storm against one uvicorn worker: many concurrent wrong logins (the token form, and
HTTP Basic on GET /api/v1/users/me), with one Bearer GET /api/v1/users/me sent while they run.

    .venv/bin/python -m bench login_storm [--backend sqlite|postgresql|mariadb]
        [--logins N] [--pool-size N] [--basic]

Prints how the logins answered (status counts, worst and median latency) and how long the
Bearer request took: a login path that holds a pooled connection while it waits for another one,
or for a password hash, stalls every request until the pool times out. Server databases are
scratch ones (STOREROOM_BENCH_POSTGRES_URL, STOREROOM_BENCH_MARIADB_URL), dropped and recreated.
"""

import argparse
import asyncio
import base64
import collections
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import PASSWORD, fresh_database, row, serve, storeroom_env

EMAIL = "storm@example.com"
ME = "/api/v1/users/me"


async def _timed(client: httpx.AsyncClient, method: str, path: str, **kwargs: object) -> tuple:
    started = time.perf_counter()
    try:
        response = await client.request(method, path, **kwargs)  # type: ignore[arg-type]
        status: int | str = response.status_code
    except httpx.TimeoutException:
        status = "timeout"
    return status, time.perf_counter() - started


async def _storm(base_url: str, logins: int, basic: bool) -> dict[str, list[tuple]]:
    limits = httpx.Limits(max_connections=2 * logins + 2, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:
        created = await client.post("/api/v1/users", json={"email": EMAIL, "password": PASSWORD})
        assert created.status_code == 201, created.text
        token = await client.post(
            "/api/v1/auth/token", data={"username": EMAIL, "password": PASSWORD}
        )
        bearer = {"Authorization": f"Bearer {token.json()['access_token']}"}
        wrong = base64.b64encode(f"{EMAIL}:wrong-password".encode()).decode()
        tasks = {
            "token form": [
                asyncio.create_task(
                    _timed(
                        client,
                        "POST",
                        "/api/v1/auth/token",
                        data={"username": EMAIL, "password": f"wrong-{number}"},
                    )
                )
                for number in range(logins)
            ],
            "Basic": [
                asyncio.create_task(
                    _timed(client, "GET", ME, headers={"Authorization": f"Basic {wrong}"})
                )
                for _ in range(logins if basic else 0)
            ],
        }
        await asyncio.sleep(0.3)  # the storm is under way
        tasks["Bearer during the storm"] = [
            asyncio.create_task(_timed(client, "GET", ME, headers=bearer))
        ]
        return {name: list(await asyncio.gather(*group)) for name, group in tasks.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "mariadb"], default="sqlite")
    parser.add_argument("--logins", type=int, default=40)
    parser.add_argument("--pool-size", type=int, default=None)
    parser.add_argument("--basic", action="store_true", help="also storm with HTTP Basic")
    parser.add_argument("--max-failures", type=int, default=1_000_000)
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="storeroom-bench-") as workdir:
        env = {
            **storeroom_env(fresh_database(options.backend, Path(workdir)), workdir),
            "STOREROOM_LOGIN_MAX_FAILURES": str(options.max_failures),
        }
        if options.pool_size is not None:
            env["STOREROOM_DATABASE_POOL_SIZE"] = str(options.pool_size)
        with serve("storeroom.main:create_app", env=env) as server:
            results = asyncio.run(_storm(server.base_url, options.logins, options.basic))

    pool = options.pool_size if options.pool_size is not None else "default"
    print(
        f"Login storm: {options.logins} concurrent wrong logins, 1 uvicorn worker, "
        f"{options.backend}, pool size {pool}"
    )
    for name, outcomes in results.items():
        if not outcomes:
            continue
        statuses = collections.Counter(str(status) for status, _ in outcomes)
        latencies = [seconds for _, seconds in outcomes]
        row(
            f"{name} ({len(outcomes)})",
            f"{dict(sorted(statuses.items()))}  worst {max(latencies):.2f} s  "
            f"median {statistics.median(latencies):.2f} s",
        )


if __name__ == "__main__":
    main()
