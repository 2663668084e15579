"""Import job benchmark (issue 11), on PostgreSQL:

- the whole import_items run of a 100,000-row CSV (reading the file from storage, counting its
  rows, parsing, validating every row with ItemCreate, inserting the items, their tags and the
  count, a checkpoint commit per 1,000 rows): rows/s;
- next to a raw SQLAlchemy Core insert() executemany of the same rows into items, 1,000 a
  transaction (no parsing, no validation, no tags): the ceiling the issue measures against.

The runner is called directly with a JobContext whose chunk commit writes the job row the way
the worker's does; Celery is not involved. Each runs three times, alternating, on emptied
tables; the best of each counts.

Run: make bench BENCH_ARGS=jobs_import   (or: .venv/bin/python -m bench jobs_import)
Needs PostgreSQL (STOREROOM_BENCH_JOBS_POSTGRES_URL, default a scratch database
storeroom_bench_jobs). STOREROOM_BENCH_IMPORT_ROWS shrinks a run.
"""

import asyncio
import csv
import io
import os
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bench.common import BENCH_SECRET_KEY, fresh_postgres_database, row
from storeroom.core.config import Settings
from storeroom.core.db import create_engine, create_sessionmaker, utcnow
from storeroom.files.models import StoredFile
from storeroom.files.storage import LocalStorage, StoredBlob
from storeroom.items.models import Item, ItemCount, ItemTag
from storeroom.jobs.context import JobContext
from storeroom.jobs.imports import run_import
from storeroom.jobs.models import Job
from storeroom.users.models import User

BENCH_URL = os.environ.get(
    "STOREROOM_BENCH_JOBS_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/storeroom_bench_jobs"
)
ROWS = int(os.environ.get("STOREROOM_BENCH_IMPORT_ROWS", "100000"))
ROUNDS = 3
CHUNK_ROWS = 1000


def _csv_bytes(rows: int) -> bytes:
    """An export-shaped CSV: quoted names, a two-line description every third row, 1-2 tags."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(("name", "description", "price", "tax", "tags"))
    for n in range(1, rows + 1):
        writer.writerow(
            (
                f'Item {n}, "bench"',
                f"Description of item {n}\nsecond line" if n % 3 == 0 else "",
                f"{n % 100000}.{n % 100:02d}",
                "20",
                f"bench;tag{n % 10}" if n % 2 else f"tag{n % 10}",
            )
        )
    return buffer.getvalue().encode()


def _core_rows(owner_id: int, rows: int) -> list[dict[str, Any]]:
    """The same items as plain dicts, as executemany takes them."""
    now = utcnow()
    return [
        {
            "owner_id": owner_id,
            "name": f'Item {n}, "bench"',
            "description": f"Description of item {n}\nsecond line" if n % 3 == 0 else None,
            "price": Decimal(f"{n % 100000}.{n % 100:02d}"),
            "tax": Decimal("20.00"),
            "tags": f"bench;tag{n % 10}" if n % 2 else f"tag{n % 10}",
            "version": 1,
            "created_at": now,
            "updated_at": now,
        }
        for n in range(1, rows + 1)
    ]


async def _empty(engine: AsyncEngine) -> None:
    """Empty the item tables the way a new database has them. TRUNCATE, not DELETE: a deleted
    table keeps its bloated primary key index, and with it PostgreSQL plans the foreign key
    checks of item_tags as sequential scans of items, for the connection's lifetime."""
    async with engine.begin() as connection:
        # files references items, so it goes too; the file's row is written again each time.
        await connection.execute(text("TRUNCATE items, item_tags, item_counts, files"))


async def _record_file(
    sessionmaker: async_sessionmaker[AsyncSession], owner_id: int, blob: StoredBlob
) -> uuid.UUID:
    async with sessionmaker() as session:
        file = StoredFile(
            owner_id=owner_id,
            filename="items.csv",
            content_type="text/csv",
            size=blob.size,
            sha256=blob.sha256,
            storage_key=blob.key,
        )
        session.add(file)
        await session.commit()
        return file.id


async def _executemany(sessionmaker: async_sessionmaker[AsyncSession], owner_id: int) -> float:
    rows = _core_rows(owner_id, ROWS)
    statement = insert(Item.metadata.tables["items"])
    started = time.perf_counter()
    async with sessionmaker() as session:
        connection = await session.connection()
        for start in range(0, ROWS, CHUNK_ROWS):
            await connection.execute(statement, rows[start : start + CHUNK_ROWS])
            await connection.commit()
    return time.perf_counter() - started


async def _import(
    sessionmaker: async_sessionmaker[AsyncSession],
    storage: LocalStorage,
    settings: Settings,
    owner_id: int,
    file_id: uuid.UUID,
) -> tuple[float, dict[str, Any]]:
    async with sessionmaker() as session:
        job = Job(owner_id=owner_id, type="import_items", status="running", params={})
        session.add(job)
        await session.commit()
        job_id = job.id

    async def commit_chunk(
        session: AsyncSession, checkpoint: dict[str, Any], done: int, total: int | None
    ) -> None:
        await session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(checkpoint=checkpoint, progress_done=done, progress_total=total)
        )
        await session.commit()

    ctx = JobContext(
        job_id=job_id,
        owner_id=owner_id,
        params={"file_id": str(file_id), "options": {"strict": False}},
        checkpoint={},
        sessionmaker=sessionmaker,
        storage=storage,
        settings=settings,
        _commit_chunk=commit_chunk,
    )
    started = time.perf_counter()
    result = await run_import(ctx)
    return time.perf_counter() - started, result


async def _check(sessionmaker: async_sessionmaker[AsyncSession], owner_id: int) -> None:
    async with sessionmaker() as session:
        items = await session.scalar(select(func.count()).select_from(Item))
        kept = await session.scalar(select(ItemCount.total).where(ItemCount.owner_id == owner_id))
        tags = await session.scalar(select(func.count()).select_from(ItemTag))
    expected_tags = ROWS + (ROWS + 1) // 2
    assert (items, kept, tags) == (ROWS, ROWS, expected_tags), (items, kept, tags)


async def _run(database_url: str, data_dir: Path) -> dict[str, list[float]]:
    settings = Settings(
        database_url=database_url,
        data_dir=data_dir,
        secret_key=BENCH_SECRET_KEY,
        environment="production",
        file_fsync=False,
    )
    engine = create_engine(settings)
    sessionmaker = create_sessionmaker(engine)
    storage = LocalStorage(data_dir / "files", fsync=False)
    content = _csv_bytes(ROWS)
    writer = await storage.open_write()
    await writer.write(content)
    blob = await writer.finish()
    async with sessionmaker() as session:
        user = User(email="bench@example.com", hashed_password="-")
        session.add(user)
        await session.commit()
        owner_id = user.id

    timings: dict[str, list[float]] = {"executemany": [], "import": []}
    for _round in range(ROUNDS):
        await _empty(engine)
        timings["executemany"].append(await _executemany(sessionmaker, owner_id))
        await _empty(engine)
        file_id = await _record_file(sessionmaker, owner_id, blob)
        seconds, result = await _import(sessionmaker, storage, settings, owner_id, file_id)
        assert result == {"imported": ROWS, "error_count": 0, "errors": []}, result
        await _check(sessionmaker, owner_id)
        timings["import"].append(seconds)
    await engine.dispose()
    timings["size"] = [len(content)]
    return timings


def main() -> None:
    database_url = fresh_postgres_database(BENCH_URL)
    with tempfile.TemporaryDirectory(prefix="storeroom-bench-jobs-") as workdir:
        timings = asyncio.run(_run(database_url, Path(workdir)))
    raw_rate = ROWS / min(timings["executemany"])
    import_rate = ROWS / min(timings["import"])
    print("Import job benchmark (PostgreSQL, run_import called directly, best of 3)")
    row(
        f"CSV of {ROWS:,} rows ({timings['size'][0] / 1e6:.1f} MB, 1.5 tags a row)",
        "",
    )
    row(
        "raw Core insert() executemany, items only, 1,000 a txn",
        f"{raw_rate:,.0f} rows/s  "
        f"({', '.join(f'{ROWS / s:,.0f}' for s in timings['executemany'])})",
    )
    row(
        "import_items: read, parse, validate, insert items and tags",
        f"{import_rate:,.0f} rows/s  ({', '.join(f'{ROWS / s:,.0f}' for s in timings['import'])})",
    )
    row("  ratio to executemany (target >= 50%)", f"{import_rate / raw_rate:.0%}")
    row("load average (1 min) after the run", f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
