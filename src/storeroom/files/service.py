"""Files: upload, read, list and delete files, keeping storage and rows in step."""

import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from sqlalchemy import delete as delete_rows
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from storeroom.core.db import after_commit
from storeroom.core.errors import Unauthorized
from storeroom.core.leader import periodically
from storeroom.core.pagination import PageParams
from storeroom.events import service as events_service
from storeroom.events.service import EventType
from storeroom.files.downloads import DownloadPlan
from storeroom.files.exceptions import (
    FileContentMissing,
    FileNotFound,
    InvalidUpload,
    QuotaExceeded,
    UploadTooLarge,
)
from storeroom.files.models import StoredFile
from storeroom.files.multipart import PartEnd, PartStart, iter_parts
from storeroom.files.naming import (
    content_disposition,
    normalize_content_type,
    sanitize_filename,
    served_content_type,
)
from storeroom.files.schemas import FileRead
from storeroom.files.storage import (
    BlobCorrupt,
    BlobInfo,
    BlobMissing,
    BlobWriter,
    Storage,
    StoredBlob,
)
from storeroom.items import service as items_service
from storeroom.items.exceptions import ItemNotFound
from storeroom.metrics import service as metrics_service
from storeroom.users.models import User

logger = logging.getLogger("storeroom.files")

# What a multipart body may carry besides the file's bytes: boundaries, part headers and the
# small form fields. A Content-Length beyond the upload limit plus this is refused unread.
FORM_OVERHEAD_BYTES = 64 * 1024
MAX_FIELD_BYTES = 64
MAX_ITEM_ID = 2**31 - 1
# How many attached files an item's own response lists (the newest); the rest are a page of
# GET /files?item_id= away.
ITEM_FILES_SHOWN = 100
# An upload's temp file untouched this long belongs to a crashed or abandoned request.
INCOMPLETE_UPLOAD_MAX_AGE_SECONDS = 3600


@dataclass(frozen=True, slots=True)
class UploadLimits:
    max_upload_bytes: int
    quota_bytes: int


@dataclass(frozen=True, slots=True)
class IncomingUpload:
    body: AsyncIterable[bytes]
    content_type: str | None
    content_length: int | None


@dataclass(frozen=True, slots=True)
class _ReceivedFile:
    blob: StoredBlob
    filename: str
    content_type: str
    item_id: int | None


def _too_large(limits: UploadLimits) -> UploadTooLarge:
    return UploadTooLarge(f"The upload is larger than the {limits.max_upload_bytes} bytes allowed")


async def bytes_used(session: AsyncSession, owner_id: int) -> int:
    total = await session.scalar(
        select(func.coalesce(func.sum(StoredFile.size), 0)).where(StoredFile.owner_id == owner_id)
    )
    return int(total or 0)


async def upload(
    session: AsyncSession,
    storage: Storage,
    owner_id: int,
    incoming: IncomingUpload,
    limits: UploadLimits,
) -> StoredFile:
    """Stream the multipart body's `file` straight into storage (hashing on the way), then
    record it. Anything refused leaves neither bytes nor a row behind."""
    if (
        incoming.content_length is not None
        and incoming.content_length > limits.max_upload_bytes + FORM_OVERHEAD_BYTES
    ):
        raise _too_large(limits)
    parts = iter_parts(
        incoming.body,
        incoming.content_type,
        max_body_bytes=limits.max_upload_bytes + FORM_OVERHEAD_BYTES,
    )
    room = limits.quota_bytes - await bytes_used(session, owner_id)
    # End the read transaction before the (possibly long) transfer, so a slow upload does not
    # hold a pooled connection; nothing has been written in it.
    await session.commit()
    received = await _receive(storage, parts, limits, room)
    try:
        return await _record(session, owner_id, received, limits)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await storage.delete(received.blob.key)
        raise


async def _receive(
    storage: Storage,
    parts: AsyncIterator[PartStart | bytes | PartEnd],
    limits: UploadLimits,
    room: int,
) -> _ReceivedFile:
    writer: BlobWriter | None = None
    filename = content_type = ""
    in_file = False
    fields: dict[str, bytearray] = {}
    current_field: bytearray | None = None
    try:
        async for event in parts:
            if isinstance(event, PartStart):
                if event.name == "file":
                    if writer is not None:
                        raise InvalidUpload("file: send exactly one file")
                    writer = await storage.open_write()
                    filename = sanitize_filename(event.filename)
                    content_type = normalize_content_type(event.content_type)
                    in_file = True
                elif event.name == "item_id":
                    if event.name in fields:
                        raise InvalidUpload(f"{event.name}: send it once")
                    current_field = fields[event.name] = bytearray()
            elif isinstance(event, PartEnd):
                in_file = False
                current_field = None
            elif in_file:
                assert writer is not None
                size = writer.size + len(event)
                if size > limits.max_upload_bytes:
                    raise _too_large(limits)
                if size > room:
                    raise QuotaExceeded()
                await writer.write(event)
            elif current_field is not None:
                current_field.extend(event)
                if len(current_field) > MAX_FIELD_BYTES:
                    raise InvalidUpload("item_id: too long")
            # Any other form field is read past and ignored.
        if writer is None:
            raise InvalidUpload("file: Field required (the multipart field 'file')")
        item_id = _item_id(fields.get("item_id"))
        blob = await writer.finish()
    except BaseException:
        if writer is not None:
            with anyio.CancelScope(shield=True):
                await writer.abort()
        raise
    return _ReceivedFile(
        blob=blob,
        filename=filename,
        content_type=content_type,
        item_id=item_id,
    )


def _item_id(raw: bytearray | None) -> int | None:
    if raw is None or not raw.strip():
        return None
    text = raw.decode("ascii", errors="replace").strip()
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_ITEM_ID:
        raise InvalidUpload("item_id: Input should be the id of one of your items")
    return int(text)


async def _record(
    session: AsyncSession, owner_id: int, received: _ReceivedFile, limits: UploadLimits
) -> StoredFile:
    """Insert the row and check the quota with the owner's row locked, so that concurrent
    uploads by one user are counted one after another (PostgreSQL and MariaDB lock the row;
    SQLite has one writer at a time, and the insert below takes that lock before the sum)."""
    owner = await session.scalar(select(User.id).where(User.id == owner_id).with_for_update())
    if owner is None:  # the account was deleted while its upload streamed in
        raise Unauthorized()
    if received.item_id is not None and not await items_service.touch(
        session, received.item_id, owner_id
    ):
        raise ItemNotFound()
    file = StoredFile(
        owner_id=owner_id,
        item_id=received.item_id,
        filename=received.filename,
        content_type=received.content_type,
        size=received.blob.size,
        sha256=received.blob.sha256,
        storage_key=received.blob.key,
    )
    session.add(file)
    await session.flush()
    if await bytes_used(session, owner_id) > limits.quota_bytes:
        raise QuotaExceeded()
    await events_service.record(
        session, owner_id, EventType.file_created, FileRead.model_validate(file)
    )
    after_commit(session, _count_upload(file.size))
    return file


def _count_upload(size: int) -> Callable[[], Awaitable[None]]:
    async def count() -> None:
        metrics_service.FILE_UPLOADS.inc()
        metrics_service.FILE_UPLOAD_BYTES.inc(size)

    return count


async def get_owned(session: AsyncSession, owner_id: int, file_id: uuid.UUID) -> StoredFile:
    file = await session.scalar(
        select(StoredFile).where(StoredFile.id == file_id, StoredFile.owner_id == owner_id)
    )
    if file is None:
        raise FileNotFound()
    return file


async def list_owned(
    session: AsyncSession, owner_id: int, page: PageParams, *, item_id: int | None = None
) -> tuple[Sequence[StoredFile], int]:
    query = select(StoredFile).where(StoredFile.owner_id == owner_id)
    if item_id is not None:
        query = query.where(StoredFile.item_id == item_id)
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    rows = await session.scalars(
        query.order_by(StoredFile.created_at.desc(), StoredFile.id.desc())
        .offset(page.offset)
        .limit(page.limit)
    )
    return rows.all(), total or 0


async def list_for_item(session: AsyncSession, item_id: int) -> tuple[Sequence[StoredFile], int]:
    """The newest files attached to an item (whose owner the caller already checked), at most
    ITEM_FILES_SHOWN of them, and how many it has in all (GET /files?item_id= pages the rest in
    the same order)."""
    rows = (
        await session.scalars(
            select(StoredFile)
            .where(StoredFile.item_id == item_id)
            .order_by(StoredFile.created_at.desc(), StoredFile.id.desc())
            .limit(ITEM_FILES_SHOWN)
        )
    ).all()
    if len(rows) < ITEM_FILES_SHOWN:
        return rows, len(rows)
    total = await session.scalar(
        select(func.count()).select_from(StoredFile).where(StoredFile.item_id == item_id)
    )
    return rows, total or 0


async def open_content(
    storage: Storage, file: StoredFile, plan: DownloadPlan
) -> AsyncIterator[bytes]:
    try:
        content = await storage.open_read(file.storage_key, start=plan.start, length=plan.length)
    except BlobMissing as exc:
        logger.error("file %s has no bytes in storage (key %s)", file.id, file.storage_key)
        raise FileContentMissing() from exc
    return _CountingSentBytes(content)


class _CountingSentBytes:
    """The content, each chunk counted once sent: the response asks for the next chunk only
    after sending the last. Closing it closes the storage's iterator, even unread (a HEAD)."""

    def __init__(self, content: AsyncIterator[bytes]) -> None:
        self._content = content
        self._unsent = 0

    def __aiter__(self) -> "_CountingSentBytes":
        return self

    async def __anext__(self) -> bytes:
        if self._unsent:
            metrics_service.FILE_DOWNLOAD_BYTES.inc(self._unsent)
            self._unsent = 0
        chunk = await anext(self._content)
        self._unsent = len(chunk)
        return chunk

    async def aclose(self) -> None:
        close = getattr(self._content, "aclose", None)
        if close is not None:
            await close()


async def download_url(storage: Storage, file: StoredFile) -> str | None:
    """A presigned URL to send the client to, when the storage hands them out."""
    return await storage.download_url(
        file.storage_key,
        content_type=served_content_type(file.content_type),
        content_disposition=content_disposition(file.filename),
    )


async def delete(session: AsyncSession, file: StoredFile) -> None:
    """Delete the file's row; the caller removes its bytes once that is committed
    (`remove_blobs`), so a failed commit cannot leave the row without its bytes."""
    if file.item_id is not None:
        # The item's response lists its files, so it changed; its row is locked before the
        # file's, in the same order as deleting the item (which detaches its files) takes them.
        await items_service.touch(session, file.item_id, file.owner_id)
    await session.delete(file)
    await session.flush()
    await events_service.record(
        session, file.owner_id, EventType.file_deleted, {"id": str(file.id)}
    )


async def delete_all_of_owner(session: AsyncSession, owner_id: int) -> list[str]:
    """Delete the owner's file rows (deleting the account) and return their storage keys: the
    caller removes the bytes with `remove_blobs` once the deletion is committed."""
    keys = list(
        await session.scalars(select(StoredFile.storage_key).where(StoredFile.owner_id == owner_id))
    )
    await session.execute(
        delete_rows(StoredFile)
        .where(StoredFile.owner_id == owner_id)
        .execution_options(synchronize_session=False)
    )
    return keys


async def remove_blobs(storage: Storage, keys: Sequence[str]) -> None:
    """Remove the bytes of files whose rows are already gone; run it after the commit that
    deleted them, so a crash or failure in between leaves bytes without a row (which `storeroom
    files verify --remove-unreferenced` reclaims), never a row without bytes."""
    for key in keys:
        try:
            await storage.delete(key)
        except Exception:
            logger.exception(
                "could not remove the bytes of deleted file (key %s); "
                "`storeroom files verify --remove-unreferenced` reclaims them",
                key,
            )


async def sweep_incomplete_uploads(storage: Storage) -> int:
    removed = await storage.sweep_incomplete(INCOMPLETE_UPLOAD_MAX_AGE_SECONDS)
    if removed:
        logger.info("removed %d abandoned incomplete upload(s)", removed)
    return removed


def incomplete_upload_sweeper(
    storage: Storage, interval_seconds: float, *, lock_path: Path | None = None
) -> contextlib.AbstractAsyncContextManager[None]:
    """Sweep abandoned uploads now, then every `interval_seconds` until the block exits; with
    `lock_path`, in one app process of those sharing it (see core/leader.py)."""

    async def sweep() -> None:
        await sweep_incomplete_uploads(storage)

    return periodically(
        sweep, interval_seconds, what="sweeping incomplete uploads", lock_path=lock_path
    )


@dataclass(frozen=True, slots=True)
class MissingContent:
    file_id: uuid.UUID
    owner_id: int
    storage_key: str


@dataclass(frozen=True, slots=True)
class SizeMismatch:
    file_id: uuid.UUID
    storage_key: str
    expected: int
    actual: int


@dataclass(slots=True)
class StorageReport:
    rows: int = 0
    blobs: int = 0
    missing_content: list[MissingContent] = field(default_factory=list)
    size_mismatches: list[SizeMismatch] = field(default_factory=list)
    unreferenced: list[BlobInfo] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not (self.missing_content or self.size_mismatches or self.unreferenced)


async def remove_unreferenced(storage: Storage, report: StorageReport) -> int:
    """Delete the blobs `verify` found without a row, if untouched for an hour (a younger one
    may belong to an upload whose row is being committed right now)."""
    cutoff = time.time() - INCOMPLETE_UPLOAD_MAX_AGE_SECONDS
    removed = 0
    for blob in report.unreferenced:
        if blob.modified_at < cutoff:
            await storage.delete(blob.key)
            removed += 1
    return removed


async def verify(session: AsyncSession, storage: Storage) -> StorageReport:
    """Compare the rows with the blobs: rows without bytes, bytes without rows, and bytes whose
    size differs from the row's."""
    report = StorageReport()
    result = await session.execute(
        select(StoredFile.id, StoredFile.owner_id, StoredFile.storage_key, StoredFile.size)
    )
    rows = {row.storage_key: row for row in result}
    report.rows = len(rows)
    async for blob in storage.iter_blobs():
        report.blobs += 1
        row = rows.pop(blob.key, None)
        if row is None:
            report.unreferenced.append(blob)
        elif row.size != blob.size:
            report.size_mismatches.append(SizeMismatch(row.id, blob.key, row.size, blob.size))
    report.missing_content = [
        MissingContent(row.id, row.owner_id, row.storage_key) for row in rows.values()
    ]
    return report


@dataclass(slots=True)
class MigrationReport:
    copied: int = 0
    copied_bytes: int = 0
    already_there: int = 0
    missing: list[str] = field(default_factory=list)  # keys with no bytes in the source
    corrupt: list[str] = field(default_factory=list)  # keys whose bytes fail their sha256

    @property
    def complete(self) -> bool:
        return not (self.missing or self.corrupt)


async def _copy_blob(source: Storage, target: Storage, key: str, sha256: str) -> int:
    chunks = await source.open_read(key)
    writer = await target.open_write(key)
    try:
        async for chunk in chunks:
            await writer.write(chunk)
        blob = await writer.finish(expected_sha256=sha256)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await writer.abort()
        raise
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()
    return blob.size


async def migrate(
    session: AsyncSession, source: Storage, target: Storage, *, concurrency: int = 4
) -> MigrationReport:
    """Copy every file's bytes from `source` to `target` under the same key, each verified
    against the row's sha256 before it appears in the target. Files already in the target with
    the row's size are skipped, so an interrupted run resumes where it stopped, and a second
    run copies the files uploaded meanwhile."""
    result = await session.execute(
        select(StoredFile.storage_key, StoredFile.size, StoredFile.sha256).order_by(
            StoredFile.created_at
        )
    )
    rows = result.all()
    await session.commit()  # no transaction held open through the copy
    present = {blob.key: blob.size async for blob in target.iter_blobs()}
    report = MigrationReport()
    to_copy = []
    for key, size, sha256 in rows:
        if present.get(key) == size:
            report.already_there += 1
        else:
            to_copy.append((key, sha256))
    queue = iter(to_copy)  # shared by the copiers: each takes the next file

    async def copier() -> None:
        for key, sha256 in queue:
            try:
                size = await _copy_blob(source, target, key, sha256)
                report.copied_bytes += size
                report.copied += 1
            except BlobMissing:
                logger.error("file bytes missing from %s (key %s)", source, key)
                report.missing.append(key)
            except BlobCorrupt as exc:
                logger.error("not copied, its bytes fail their sha256: %s", exc)
                report.corrupt.append(key)

    async with anyio.create_task_group() as group:
        for _ in range(max(1, concurrency)):
            group.start_soon(copier)
    return report
