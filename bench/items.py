"""Items benchmark (issue 4), on PostgreSQL with one uvicorn worker:

- GET /api/v1/items?limit=20 with a JWT over 10,000 items (req/s, p99), next to a bare FastAPI
  app answering /healthz-shaped JSON (the framework's ceiling);
- GET /api/v1/items/export of 1,000,000 items as NDJSON and CSV (rows/s, server RSS), next to
  a raw SQLAlchemy Core async stream of the same rows with yield_per=1000 (the ceiling).

Run: make bench BENCH_ARGS=items   (or: .venv/bin/python -m bench items)
Needs PostgreSQL (STOREROOM_BENCH_ITEMS_POSTGRES_URL, default a scratch database
storeroom_bench_items) and wrk. Seeding uses bulk SQL (generate_series), not the API.
"""

import asyncio
import os
import tempfile
import threading
import time
from dataclasses import dataclass

import httpx
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from bench.common import (
    Server,
    fresh_postgres_database,
    register_and_login,
    row,
    serve,
    storeroom_env,
    wrk,
)
from storeroom.items.models import Item

BENCH_URL = os.environ.get(
    "STOREROOM_BENCH_ITEMS_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/storeroom_bench_items"
)
LIST_ITEMS = 10_000
EXPORT_ITEMS = int(os.environ.get("STOREROOM_BENCH_EXPORT_ITEMS", "1000000"))
SECONDS = int(os.environ.get("STOREROOM_BENCH_SECONDS", "10"))
CONNECTIONS = 16

_SEED_ITEMS = text(
    """
    INSERT INTO items (owner_id, name, description, price, tax, tags, version,
                       created_at, updated_at)
    SELECT :owner_id,
           'Item ' || g || ', "bench"',
           CASE WHEN g % 3 = 0 THEN 'Description of item ' || g || E'\\nsecond line' END,
           (g % 100000) / 100.0,
           20,
           'bench;tag' || (g % 10),
           1,
           now() - make_interval(secs => g),
           now() - make_interval(secs => g)
    FROM generate_series(1, :count) AS g
    """
)
_SEED_TAGS = text(
    """
    INSERT INTO item_tags (item_id, tag, owner_id)
    SELECT id, tag, owner_id
    FROM items, unnest(string_to_array(tags, ';')) AS tag
    WHERE owner_id = :owner_id
    """
)


async def _seed(database_url: str, owners: dict[int, tuple[int, bool]]) -> None:
    engine = create_async_engine(database_url, poolclass=NullPool)
    async with engine.begin() as connection:
        for owner_id, (count, with_tags) in owners.items():
            await connection.execute(_SEED_ITEMS, {"owner_id": owner_id, "count": count})
            await connection.execute(
                text("INSERT INTO item_counts (owner_id, total) VALUES (:owner_id, :count)"),
                {"owner_id": owner_id, "count": count},
            )
            if with_tags:
                await connection.execute(_SEED_TAGS, {"owner_id": owner_id})
    async with engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(text("VACUUM ANALYZE items"))
        await connection.execute(text("VACUUM ANALYZE item_tags"))
    await engine.dispose()


async def _raw_core_stream(database_url: str, owner_id: int) -> tuple[int, float]:
    """The ceiling: the same columns, streamed by SQLAlchemy Core with yield_per=1000."""
    engine = create_async_engine(database_url, poolclass=NullPool)
    columns = [column for column in Item.__table__.columns]
    started = time.perf_counter()
    rows = 0
    async with engine.connect() as connection:
        result = await connection.stream(
            select(*columns)
            .where(Item.owner_id == owner_id)
            .order_by(Item.id)
            .execution_options(yield_per=1000)
        )
        async for partition in result.partitions():
            rows += len(partition)
    elapsed = time.perf_counter() - started
    await engine.dispose()
    return rows, elapsed


def _user_id(base_url: str, token: str) -> int:
    response = httpx.get(
        f"{base_url}/api/v1/users/me", headers={"Authorization": f"Bearer {token}"}
    )
    user_id: int = response.json()["id"]
    return user_id


@dataclass
class ExportRun:
    rows: int
    seconds: float
    idle_rss_kib: int
    peak_rss_kib: int

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds


def _export(server: Server, token: str, export_format: str) -> ExportRun:
    """Download the whole export, counting records, while sampling the server's RSS."""
    idle = server.rss_kib()
    peak = idle
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, server.rss_kib())
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    newlines = 0
    started = time.perf_counter()
    with (
        httpx.Client(base_url=server.base_url, timeout=600) as client,
        client.stream(
            "GET",
            "/api/v1/items/export",
            params={"format": export_format},
            headers={"Authorization": f"Bearer {token}"},
        ) as response,
    ):
        response.raise_for_status()
        for chunk in response.iter_raw(1 << 16):
            newlines += chunk.count(b"\n")
    elapsed = time.perf_counter() - started
    done.set()
    sampler.join()
    # NDJSON: one line per item. CSV: a header line, and descriptions with a newline in them
    # (every third item) add one more.
    records = newlines if export_format == "ndjson" else EXPORT_ITEMS
    return ExportRun(records, elapsed, idle, max(peak, server.rss_kib()))


def main() -> None:
    database_url = fresh_postgres_database(BENCH_URL)
    with tempfile.TemporaryDirectory(prefix="storeroom-bench-items-") as workdir:
        with serve("bench.bare_app:app", factory=False) as bare:
            wrk(f"{bare.base_url}/healthz", seconds=2, connections=CONNECTIONS)  # warm up
            bare_result = wrk(f"{bare.base_url}/healthz", seconds=SECONDS, connections=CONNECTIONS)

        with serve("storeroom.main:create_app", env=storeroom_env(database_url, workdir)) as server:
            list_token = register_and_login(server.base_url, "list@example.com")
            export_token = register_and_login(server.base_url, "export@example.com")
            list_user = _user_id(server.base_url, list_token)
            export_user = _user_id(server.base_url, export_token)
            seeding = time.perf_counter()
            asyncio.run(
                _seed(
                    database_url,
                    {list_user: (LIST_ITEMS, True), export_user: (EXPORT_ITEMS, False)},
                )
            )
            seeded_in = time.perf_counter() - seeding

            auth = {"Authorization": f"Bearer {list_token}"}
            list_url = f"{server.base_url}/api/v1/items?limit=20"
            page = httpx.get(list_url, headers=auth).json()
            assert page["total"] == LIST_ITEMS and len(page["items"]) == 20, page.get("total")
            wrk(list_url, seconds=2, connections=CONNECTIONS, headers=auth)  # warm up
            listing = wrk(list_url, seconds=SECONDS, connections=CONNECTIONS, headers=auth)
            assert listing.non_2xx == 0, f"{listing.non_2xx} non-2xx responses from the list"
            me = wrk(
                f"{server.base_url}/api/v1/users/me",
                seconds=SECONDS // 2 or 1,
                connections=CONNECTIONS,
                headers=auth,
            )
            tagged_url = f"{server.base_url}/api/v1/items?limit=20&tag=tag3&q=item&sort=-price"
            tagged = wrk(
                tagged_url, seconds=SECONDS // 2 or 1, connections=CONNECTIONS, headers=auth
            )

            raw_rows, raw_seconds = asyncio.run(_raw_core_stream(database_url, export_user))
            assert raw_rows == EXPORT_ITEMS, raw_rows
            ndjson = _export(server, export_token, "ndjson")
            assert ndjson.rows == EXPORT_ITEMS, ndjson.rows
            csv_run = _export(server, export_token, "csv")
            hwm = server.peak_rss_kib()

    raw_rate = raw_rows / raw_seconds
    print("Items benchmark (1 uvicorn worker, PostgreSQL, wrk -t1)")
    row(f"seeded {LIST_ITEMS:,} + {EXPORT_ITEMS:,} items with bulk SQL", f"{seeded_in:.1f} s")
    row("bare FastAPI /healthz req/s (ceiling)", f"{bare_result.requests_per_second:,.0f}")
    row(
        f"GET /items?limit=20 of {LIST_ITEMS:,}, JWT, c={CONNECTIONS}",
        f"{listing.requests_per_second:,.0f} req/s  p50 {listing.p('50%'):.2f} ms  "
        f"p99 {listing.p('99%'):.2f} ms",
    )
    row(
        "  ratio to bare FastAPI (target >= 8%)",
        f"{listing.requests_per_second / bare_result.requests_per_second:.1%}",
    )
    row(
        "  for scale: GET /users/me (auth alone, no item query)",
        f"{me.requests_per_second:,.0f} req/s "
        f"({me.requests_per_second / bare_result.requests_per_second:.1%} of bare)",
    )
    row(
        "GET /items?limit=20&tag=tag3&q=item&sort=-price",
        f"{tagged.requests_per_second:,.0f} req/s  p99 {tagged.p('99%'):.2f} ms",
    )
    row("raw Core stream, yield_per=1000 (ceiling)", f"{raw_rate:,.0f} rows/s")
    for label, run in (("NDJSON", ndjson), ("CSV", csv_run)):
        row(
            f"export {EXPORT_ITEMS:,} items as {label}",
            f"{run.rows_per_second:,.0f} rows/s ({run.seconds:.1f} s)",
        )
        row("  ratio to raw Core stream (target >= 50%)", f"{run.rows_per_second / raw_rate:.1%}")
        row(
            "  server RSS idle -> peak during export (target: +64 MiB at most)",
            f"{run.idle_rss_kib / 1024:.0f} -> {run.peak_rss_kib / 1024:.0f} MiB "
            f"(+{(run.peak_rss_kib - run.idle_rss_kib) / 1024:.1f} MiB)",
        )
    row("server VmHWM (whole run)", f"{hwm / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
