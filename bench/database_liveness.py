"""What keeping dead pooled connections away from requests costs: pre-ping vs the free check.

After a database restart the connections in the pool are dead. Storeroom notices the ones the
database closed at checkout without a round trip (the driver has already read their end); a
ping (STOREROOM_DATABASE_PRE_PING) also catches connections that died silently, at a round
trip per checkout. For each setting, one uvicorn worker on PostgreSQL:

- `GET /api/v1/users/me` (Bearer: one query) with wrk, req/s and latency;
- the database ends every session of the service (what a restart does to the pool), then 32
  requests at once: how many fail.

    .venv/bin/python -m bench database_liveness
"""

import asyncio
import contextlib
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from bench.common import (
    BENCH_POSTGRES_URL,
    WrkResult,
    fresh_postgres_database,
    register_and_login,
    row,
    serve,
    storeroom_env,
    wrk,
)

ME = "/api/v1/users/me"
SECONDS = 5
ROUNDS = 4  # alternated, so that a noisy neighbour weighs on both settings alike
CONNECTIONS = 8
BURST = 32
SETTINGS = {"free check only": "false", "pre-ping": "true"}


async def _end_sessions(database_url: str) -> int:
    database = make_url(database_url).database
    engine = create_async_engine(
        make_url(database_url).set(database="postgres"),
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",
    )
    try:
        async with engine.connect() as connection:
            ended = await connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :database AND pid <> pg_backend_pid()"
                ),
                {"database": database},
            )
            return len(ended.all())
    finally:
        await engine.dispose()


def _burst(base_url: str, headers: dict[str, str]) -> list[int]:
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as client:  # noqa: SIM117
        with ThreadPoolExecutor(BURST) as pool:
            return list(pool.map(lambda _: client.get(ME).status_code, range(BURST)))


def main() -> None:
    database_url = fresh_postgres_database(BENCH_POSTGRES_URL)
    rates: dict[str, list[WrkResult]] = {label: [] for label in SETTINGS}
    failures = {}
    with contextlib.ExitStack() as stack:
        servers = {}
        for number, (label, pre_ping) in enumerate(SETTINGS.items()):
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="storeroom-bench-"))
            env = {**storeroom_env(database_url, workdir), "STOREROOM_DATABASE_PRE_PING": pre_ping}
            server = stack.enter_context(serve("storeroom.main:create_app", env=env))
            token = register_and_login(server.base_url, f"bench{number}@example.com")
            headers = {"Authorization": f"Bearer {token}"}
            servers[label] = (server, headers)
            wrk(server.base_url + ME, seconds=2, connections=CONNECTIONS, headers=headers)
        for _ in range(ROUNDS):
            for label, (server, headers) in servers.items():
                url = server.base_url + ME
                rates[label].append(
                    wrk(url, seconds=SECONDS, connections=CONNECTIONS, headers=headers)
                )
        for label, (server, headers) in servers.items():
            _burst(server.base_url, headers)  # a pool full of connections
            ended = asyncio.run(_end_sessions(database_url))
            time.sleep(0.3)
            statuses = _burst(server.base_url, headers)
            failures[label] = (ended, sum(status != 200 for status in statuses))

    def median(label: str) -> WrkResult:
        ordered = sorted(rates[label], key=lambda result: result.requests_per_second)
        return ordered[len(ordered) // 2]

    base = median("free check only").requests_per_second
    print(
        f"Database liveness: GET {ME} (Bearer), 1 uvicorn worker each, PostgreSQL, "
        f"-c{CONNECTIONS}, median of {ROUNDS} alternated {SECONDS} s runs"
    )
    for label in SETTINGS:
        result = median(label)
        _ended, failed = failures[label]
        row(
            f"{label} req/s",
            f"{result.requests_per_second:,.1f}  p50 {result.p('50%'):.2f} ms  "
            f"p99 {result.p('99%'):.2f} ms  ({result.requests_per_second / base:.1%})",
        )
        row(f"{label}: {BURST} requests after every session ended", f"{failed} failed")


if __name__ == "__main__":
    main()
