"""Jobs: the `export_items` runner, the owner's (filtered) items into a new file of theirs."""

from datetime import UTC, datetime
from typing import Any

import anyio
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from storeroom.files import service as files_service
from storeroom.files.models import StoredFile
from storeroom.files.storage import BlobWriter, StoredBlob
from storeroom.items import service as items_service
from storeroom.items.schemas import ExportFormat
from storeroom.jobs.context import JobContext
from storeroom.jobs.exceptions import JobCancelled, JobFailed
from storeroom.users.models import User

# The same types GET /api/v1/items/export sends (a download serves NDJSON as octet-stream).
CONTENT_TYPES = {ExportFormat.csv: "text/csv", ExportFormat.ndjson: "application/x-ndjson"}


async def run_export(ctx: JobContext) -> dict[str, Any]:
    """Stream the export (the bytes of GET /api/v1/items/export) into storage, reporting
    progress per batch of items, then record the file and the job's result in one transaction.
    Nothing is resumed: a rerun starts again, and a run that fails or is cancelled before that
    last commit leaves no file behind. A rerun after it finds the result in the checkpoint.
    The progress commits name the blob being written, so a rerun after a crash that left it
    complete but unrecorded deletes it (an incomplete one is the storage sweep's)."""
    saved = ctx.checkpoint.get("result")
    if saved is not None:
        return dict(saved)
    abandoned = ctx.checkpoint.get("writing")
    if abandoned:
        await ctx.storage.delete(abandoned)
    export_format, filters = _export_options(ctx)
    async with ctx.sessionmaker() as session:
        engine = session.bind
        room = ctx.settings.user_quota_bytes - await files_service.bytes_used(session, ctx.owner_id)
        total = await items_service.count_matching(session, filters)
    assert isinstance(engine, AsyncEngine)

    writer = await ctx.storage.open_write()
    try:
        rows = await _write(ctx, writer, engine, export_format, filters, room, total)
        blob = await writer.finish()
    except BaseException:
        with anyio.CancelScope(shield=True):
            await writer.abort()
        raise
    return await _record(ctx, blob, export_format, rows)


def _export_options(ctx: JobContext) -> tuple[ExportFormat, items_service.ItemFilters]:
    try:
        export_format = ExportFormat(ctx.params.get("format", ExportFormat.csv))
    except ValueError:
        raise JobFailed(f"Unknown export format {ctx.params.get('format')!r}") from None
    filters = items_service.ItemFilters(
        owner_id=ctx.owner_id, q=ctx.params.get("q"), tags=tuple(ctx.params.get("tag") or ())
    )
    return export_format, filters


def _over_quota(ctx: JobContext) -> JobFailed:
    return JobFailed(
        f"The export would exceed your storage quota of {ctx.settings.user_quota_bytes} bytes; "
        "delete some files or export fewer items (q, tag)"
    )


async def _write(
    ctx: JobContext,
    writer: BlobWriter,
    engine: AsyncEngine,
    export_format: ExportFormat,
    filters: items_service.ItemFilters,
    room: int,
    total: int,
) -> int:
    rows = 0
    batches = items_service.export_batches(engine, filters, export_format)
    try:
        async for chunk, count in batches:
            if writer.size + len(chunk) > room:
                raise _over_quota(ctx)
            await writer.write(chunk)
            rows += count
            if count:
                async with ctx.sessionmaker() as session:
                    await ctx.commit_chunk(
                        session,
                        checkpoint={"writing": writer.key},
                        done=rows,
                        total=max(total, rows),
                    )
    finally:
        await batches.aclose()
    return rows


async def _record(
    ctx: JobContext, blob: StoredBlob, export_format: ExportFormat, rows: int
) -> dict[str, Any]:
    """The file's row, checked against the quota with the owner locked (as an upload is), and
    the result, committed together; the bytes go again if that does not happen."""
    result: dict[str, Any] = {}
    try:
        async with ctx.sessionmaker() as session:
            file = await _insert_file(ctx, session, blob, export_format)
            result = {"file_id": str(file.id), "rows": rows, "size": blob.size}
            await ctx.commit_chunk(session, checkpoint={"result": result}, done=rows, total=rows)
    except JobCancelled as exc:  # raised after the commit: the file is there
        raise JobCancelled(exc.result if exc.result is not None else result) from exc
    except BaseException:
        with anyio.CancelScope(shield=True):
            await ctx.storage.delete(blob.key)
        raise
    return result


async def _insert_file(
    ctx: JobContext, session: AsyncSession, blob: StoredBlob, export_format: ExportFormat
) -> StoredFile:
    owner = await session.scalar(select(User.id).where(User.id == ctx.owner_id).with_for_update())
    if owner is None:
        raise JobFailed("The account no longer exists")
    file = StoredFile(
        owner_id=ctx.owner_id,
        item_id=None,
        filename=f"items-{datetime.now(UTC):%Y-%m-%d}.{export_format.value}",
        content_type=CONTENT_TYPES[export_format],
        size=blob.size,
        sha256=blob.sha256,
        storage_key=blob.key,
    )
    session.add(file)
    await session.flush()
    if await files_service.bytes_used(session, ctx.owner_id) > ctx.settings.user_quota_bytes:
        raise _over_quota(ctx)
    return file
