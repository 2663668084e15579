"""Throughput under real concurrency (issue 14): the two authenticated read paths at 32 and 64
connections, on every database that answers, side by side with a bare FastAPI app that
answers the same bytes under the same uvicorn.

For each database it migrates a scratch database, starts Storeroom (`storeroom.main:create_app`
under uvicorn with `storeroom serve`'s protocol and its defaults: pool, thread pool, embedded
worker on SQLite) and registers a user who owns 30 items; it records the exact bodies of
`GET /api/v1/users/me` and `GET /api/v1/items?limit=20` and starts the bare app replaying them.
Then, per path and concurrency, `wrk -t2 -cN -d5s` runs A B A B A B (bare, Storeroom, ...)
and the table gives the median of the three ratios.

Run: .venv/bin/python -m bench throughput
     .venv/bin/python -m bench.throughput --databases postgresql --connections 32 --workers 2
Scratch databases: STOREROOM_BENCH_POSTGRES_URL, STOREROOM_BENCH_MARIADB_URL (dropped and
recreated); SQLite in a temporary directory.
"""

import argparse
import asyncio
import json
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from bench.common import (
    BENCH_MARIADB_URL,
    BENCH_POSTGRES_URL,
    WrkResult,
    fresh_database,
    register_and_login,
    serve,
    storeroom_env,
    wrk,
)
from storeroom.core.config import async_database_url

PROTOCOL = "storeroom.core.server:HeadLimitedHttpToolsProtocol"  # what `storeroom serve` runs
PATHS = {"/users/me": "/api/v1/users/me", "/items?limit=20": "/api/v1/items?limit=20"}
ITEMS = 30
# The targets, as a share of the bare app's requests per second.
TARGETS = {
    ("postgresql", "/users/me"): 0.15,
    ("postgresql", "/items?limit=20"): 0.08,
    ("sqlite", "/users/me"): 0.10,
    ("sqlite", "/items?limit=20"): 0.04,
}
DATABASES = ["postgresql", "sqlite", "mariadb"]


@dataclass
class Measurement:
    database: str
    path: str
    connections: int
    bare: list[WrkResult]
    storeroom: list[WrkResult]

    @property
    def ratio(self) -> float:
        return statistics.median(
            mine.requests_per_second / bare.requests_per_second
            for bare, mine in zip(self.bare, self.storeroom, strict=True)
        )

    @property
    def target(self) -> float | None:
        return TARGETS.get((self.database, self.path))


def _answers(backend: str) -> bool:
    if backend == "sqlite":
        return True
    url = make_url(
        async_database_url(BENCH_POSTGRES_URL if backend == "postgresql" else BENCH_MARIADB_URL)
    ).set(database="postgres" if backend == "postgresql" else "mysql")

    async def select_one() -> None:
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with asyncio.timeout(5), engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        finally:
            await engine.dispose()

    try:
        asyncio.run(select_one())
    except Exception as exc:  # any failure means "not here": say so, skip it
        print(f"  {backend}: not reachable ({type(exc).__name__}); skipped")
        return False
    return True


def _prepare(base_url: str) -> tuple[dict[str, str], dict[str, str]]:
    """A user with ITEMS items; their Bearer header and the bodies of the measured paths."""
    token = register_and_login(base_url)
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base_url, headers=auth, timeout=30) as client:
        for number in range(ITEMS):
            client.post(
                "/api/v1/items",
                json={"name": f"Item {number}", "price": f"{number}.50", "tags": ["bench"]},
            ).raise_for_status()
        bodies = {}
        for url in PATHS.values():
            response = client.get(url)
            response.raise_for_status()
            bodies[url] = response.text
    return auth, bodies


def _measure_database(database: str, options: argparse.Namespace) -> list[Measurement]:
    measurements = []
    with tempfile.TemporaryDirectory(prefix="storeroom-bench-") as workdir:
        env = storeroom_env(fresh_database(database, Path(workdir)), workdir)
        with serve(
            "storeroom.main:create_app", env=env, http=PROTOCOL, workers=options.workers
        ) as app:
            auth, bodies = _prepare(app.base_url)
            replay = Path(workdir) / "replay.json"
            replay.write_text(json.dumps(bodies))
            with serve(
                "bench.bare_app:create_replay_app",
                env={"STOREROOM_BENCH_REPLAY": str(replay)},
                http=PROTOCOL,
                workers=options.workers,
            ) as bare:
                for connections in options.connections:
                    for label in options.paths:
                        url = PATHS[label]
                        run = {
                            "seconds": options.seconds,
                            "connections": connections,
                            "threads": options.threads,
                        }
                        # warm both up (JIT-free Python still fills caches, pools and pages)
                        wrk(bare.base_url + url, **{**run, "seconds": 2})
                        wrk(app.base_url + url, **{**run, "seconds": 2}, headers=auth)
                        measurement = Measurement(database, label, connections, [], [])
                        for _ in range(options.rounds):
                            measurement.bare.append(wrk(bare.base_url + url, **run))
                            mine = wrk(app.base_url + url, **run, headers=auth)
                            if mine.non_2xx or mine.errors:
                                raise SystemExit(
                                    f"{database} {label} c={connections}: {mine.non_2xx} "
                                    f"non-2xx responses, {mine.errors or 'no socket errors'}"
                                )
                            measurement.storeroom.append(mine)
                        measurements.append(measurement)
                        _print_row(measurement)
    return measurements


def _print_header(options: argparse.Namespace) -> None:
    print(
        f"Throughput (uvicorn workers: {options.workers}; wrk -t{options.threads} "
        f"-d{options.seconds}s, bare/Storeroom alternated x{options.rounds}, median ratio)"
    )
    print(
        f"  {'database':<11} {'path':<16} {'conns':>5} {'bare req/s':>11} "
        f"{'storeroom req/s':>15} {'p99 ms':>7} {'ratio':>7}  target"
    )


def _print_row(measurement: Measurement) -> None:
    bare = statistics.median(result.requests_per_second for result in measurement.bare)
    mine = statistics.median(result.requests_per_second for result in measurement.storeroom)
    p99 = statistics.median(result.p("99%") for result in measurement.storeroom)
    target = measurement.target
    verdict = "-"
    if target is not None:
        verdict = f">= {target:.0%} {'met' if measurement.ratio >= target else 'MISSED'}"
    print(
        f"  {measurement.database:<11} {measurement.path:<16} {measurement.connections:>5} "
        f"{bare:>11,.0f} {mine:>15,.0f} {p99:>7.1f} {measurement.ratio:>7.1%}  {verdict}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--databases",
        type=lambda value: value.split(","),
        default=DATABASES,
        help="comma-separated: postgresql,sqlite,mariadb (default: each that answers)",
    )
    parser.add_argument(
        "--connections", type=lambda value: [int(c) for c in value.split(",")], default=[32, 64]
    )
    parser.add_argument(
        "--paths",
        type=lambda value: value.split(","),
        default=list(PATHS),
        help="comma-separated, of: " + ", ".join(PATHS),
    )
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    options = parser.parse_args()
    databases = [database for database in options.databases if _answers(database)]
    _print_header(options)
    for database in databases:
        _measure_database(database, options)


if __name__ == "__main__":
    main()
