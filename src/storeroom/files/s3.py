"""Files: the S3-compatible storage backend (AWS S3, MinIO, Ceph, R2, B2, ...).

Blobs are objects `<prefix><key>` in one bucket. Writes are multipart uploads of
`s3_part_bytes` parts, hashed in a worker thread and sent while the next part arrives (one part
in flight), so an upload holds a few parts in memory (bench/s3_transfer.py: RSS grows by 46-55
MiB for a 1 GiB upload with 8 MiB parts, the client's copy of the part in flight included) and
never touches local disk;
a blob smaller than one part is a single PUT. Only a completed upload makes an object appear, so
an aborted write leaves nothing to read, and the sweep aborts multipart uploads abandoned by a
crash. Everything is async end to end (aiobotocore on aiohttp): no request blocks the event loop
on the store, and payload signing and checksums, which botocore would compute on the loop, are
off (the sha256 of every blob is computed here anyway, off the loop).
"""

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import anyio
import anyio.to_thread
from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from storeroom.core.config import Settings, StorageLocation
from storeroom.core.responses import BodyInterrupted
from storeroom.files.exceptions import StorageUnavailable
from storeroom.files.storage import (
    _KEY,
    READ_CHUNK_BYTES,
    BlobCorrupt,
    BlobInfo,
    BlobMissing,
    BlobWriter,
    Storage,
    StoredBlob,
    check_key,
    new_key,
)

logger = logging.getLogger("storeroom.files")

_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}


def _is_missing(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code")) in _MISSING_CODES


@contextlib.contextmanager
def _store_errors(what: str) -> Iterator[None]:
    """The store unreachable or failing answers 503 storage_unavailable, not a bare 500."""
    try:
        yield
    except (TimeoutError, BotoCoreError, ClientError, OSError) as exc:
        logger.error("object storage: %s failed: %s", what, exc)
        raise StorageUnavailable() from exc


def _join_and_hash(
    hasher: "hashlib._Hash", pieces: list[bytes], limit: int | None
) -> tuple[bytes, bytes]:
    """The first `limit` bytes of the pieces (all of them when None), hashed, and the rest."""
    data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
    rest = b""
    if limit is not None and len(data) > limit:
        data, rest = data[:limit], data[limit:]
    hasher.update(data)  # releases the GIL for large buffers
    return data, rest


class _S3BlobWriter(BlobWriter):
    def __init__(self, storage: "S3Storage", key: str):
        self.key = key
        self.size = 0
        self._storage = storage
        self._object_key = storage.object_key(key)
        self._hash = hashlib.sha256()
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._in_flight: asyncio.Task[None] | None = None
        self._closed = False

    async def write(self, data: bytes) -> None:
        if self._closed:
            raise RuntimeError("blob writer is closed")
        if not data:
            return
        self._pending.append(data)
        self._pending_bytes += len(data)
        self.size += len(data)
        while self._pending_bytes >= self._storage.part_bytes:
            await self._send_part(await self._take_part(self._storage.part_bytes))

    async def _take_part(self, limit: int | None = None) -> bytes:
        """The next part: `limit` bytes of what is pending (all of it when None)."""
        pieces, self._pending, self._pending_bytes = self._pending, [], 0
        data, rest = await anyio.to_thread.run_sync(_join_and_hash, self._hash, pieces, limit)
        if rest:
            self._pending, self._pending_bytes = [rest], len(rest)
        return data

    async def _send_part(self, data: bytes) -> None:
        await self._wait_in_flight()  # at most one part on the wire while the next arrives
        client = await self._storage.client()
        if self._upload_id is None:
            with _store_errors("starting a multipart upload"):
                created = await client.create_multipart_upload(
                    Bucket=self._storage.bucket, Key=self._object_key
                )
            self._upload_id = created["UploadId"]
        number = len(self._parts) + 1
        self._parts.append({"PartNumber": number})
        self._in_flight = asyncio.create_task(self._upload_part(client, number, data))

    async def _upload_part(self, client: Any, number: int, data: bytes) -> None:
        with _store_errors(f"uploading part {number}"):
            response = await client.upload_part(
                Bucket=self._storage.bucket,
                Key=self._object_key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=data,
            )
        self._parts[number - 1]["ETag"] = response["ETag"]

    async def _wait_in_flight(self) -> None:
        task, self._in_flight = self._in_flight, None
        if task is not None:
            await task

    def _check(self, expected_sha256: str | None) -> None:
        if expected_sha256 is not None and self._hash.hexdigest() != expected_sha256:
            raise BlobCorrupt(f"{self.key}: sha256 {self._hash.hexdigest()}, not {expected_sha256}")

    async def finish(self, expected_sha256: str | None = None) -> StoredBlob:
        if self._closed:
            raise RuntimeError("blob writer is closed")
        try:
            client = await self._storage.client()
            if self._upload_id is None:  # smaller than one part: a single PUT
                data = await self._take_part() if self._pending else b""
                self._check(expected_sha256)
                with _store_errors("writing an object"):
                    await client.put_object(
                        Bucket=self._storage.bucket, Key=self._object_key, Body=data
                    )
            else:
                if self._pending:
                    await self._send_part(await self._take_part())
                await self._wait_in_flight()
                self._check(expected_sha256)
                with _store_errors("completing a multipart upload"):
                    await client.complete_multipart_upload(
                        Bucket=self._storage.bucket,
                        Key=self._object_key,
                        UploadId=self._upload_id,
                        MultipartUpload={"Parts": self._parts},
                    )
                self._upload_id = None
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.abort()
            raise
        self._closed = True
        return StoredBlob(key=self.key, size=self.size, sha256=self._hash.hexdigest())

    async def abort(self) -> None:
        self._closed = True
        self._pending = []
        task, self._in_flight = self._in_flight, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is None:
            return
        try:
            client = await self._storage.client()
            await client.abort_multipart_upload(
                Bucket=self._storage.bucket, Key=self._object_key, UploadId=upload_id
            )
        except Exception as exc:  # the sweep aborts it later
            logger.warning("could not abort multipart upload of %s: %s", self._object_key, exc)


class _ObjectChunks:
    """An object's body in chunks of about READ_CHUNK_BYTES. A body that ends short of its
    Content-Length, or a store that fails midway, raises: the response it feeds is then cut off
    without a clean end, so the client sees the truncation."""

    def __init__(self, body: Any):
        self._body = body
        self._done = False

    def __aiter__(self) -> "_ObjectChunks":
        return self

    async def __anext__(self) -> bytes:
        if self._done:
            raise StopAsyncIteration
        pieces: list[bytes] = []
        size = 0
        try:
            while size < READ_CHUNK_BYTES:
                piece: bytes = await self._body.read(READ_CHUNK_BYTES - size)
                if not piece:  # the end; read() has checked Content-Length
                    self._done = True
                    break
                pieces.append(piece)
                size += len(piece)
        except Exception as exc:
            self.close()
            raise BodyInterrupted(f"the object store failed midway: {exc!r}") from exc
        except BaseException:
            self.close()
            raise
        if not pieces:
            self.close()
            raise StopAsyncIteration
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def close(self) -> None:
        self._done = True
        self._body.close()

    async def aclose(self) -> None:
        self.close()


class S3Storage(Storage):
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        part_bytes: int = 8 * 1024 * 1024,
        presign_seconds: int = 300,
        redirect_downloads: bool = False,
    ):
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        self.region = region
        self.part_bytes = part_bytes
        self.presign_seconds = presign_seconds
        self.redirect_downloads = redirect_downloads
        self._client: Any = None
        self._exit_stack: contextlib.AsyncExitStack | None = None
        self._lock: anyio.Lock | None = None

    @classmethod
    def from_settings(cls, settings: Settings, location: StorageLocation) -> "S3Storage":
        return cls(
            location.bucket,
            location.prefix,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            part_bytes=settings.s3_part_bytes,
            presign_seconds=settings.s3_presign_seconds,
            redirect_downloads=settings.storage_downloads == "redirect",
        )

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def object_key(self, key: str) -> str:
        return f"{self.prefix}{check_key(key)}"

    async def client(self) -> Any:
        """The client, created on first use in the event loop that uses it."""
        if self._client is not None:
            return self._client
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            if self._client is None:
                config = Config(
                    signature_version="s3v4",  # presigned URLs too (botocore's default: v2)
                    # Path-style URLs work on every S3-compatible server; AWS picks for itself.
                    s3={
                        "addressing_style": "path" if self.endpoint_url else "auto",
                        "payload_signing_enabled": False,
                    },
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                    # A store that is down answers 503 within seconds, not after a minute.
                    retries={"mode": "standard", "total_max_attempts": 3},
                    max_pool_connections=64,
                    connect_timeout=3,
                    read_timeout=60,
                )
                stack = contextlib.AsyncExitStack()
                # Reading credentials and config files is brief, once per process.
                self._client = await stack.enter_async_context(
                    get_session().create_client(
                        "s3", endpoint_url=self.endpoint_url, region_name=self.region, config=config
                    )
                )
                self._exit_stack = stack
        return self._client

    async def connect(self) -> None:
        # Building the client loads botocore's service model: ~0.3 s, once, at startup.
        await self.client()

    async def check(self) -> None:
        client = await self.client()
        await client.head_bucket(Bucket=self.bucket)

    async def close(self) -> None:
        stack, self._exit_stack, self._client = self._exit_stack, None, None
        if stack is not None:
            await stack.aclose()

    async def open_write(self, key: str | None = None) -> BlobWriter:
        return _S3BlobWriter(self, new_key() if key is None else check_key(key))

    async def open_read(
        self, key: str, *, start: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        client = await self.client()
        options: dict[str, Any] = {}
        if length == 0:
            return _EmptyChunks()
        if start or length is not None:
            end = "" if length is None else str(start + length - 1)
            options["Range"] = f"bytes={start}-{end}"
        with _store_errors("reading an object"):
            try:
                response = await client.get_object(
                    Bucket=self.bucket, Key=self.object_key(key), **options
                )
            except ClientError as exc:
                if _is_missing(exc):
                    raise BlobMissing(key) from exc
                raise
        return _ObjectChunks(response["Body"])

    async def delete(self, key: str) -> None:
        client = await self.client()
        with _store_errors("deleting an object"):
            await client.delete_object(Bucket=self.bucket, Key=self.object_key(key))

    async def exists(self, key: str) -> bool:
        client = await self.client()
        with _store_errors("reading an object's metadata"):
            try:
                await client.head_object(Bucket=self.bucket, Key=self.object_key(key))
            except ClientError as exc:
                if _is_missing(exc):
                    return False
                raise
        return True

    async def iter_blobs(self) -> AsyncIterator[BlobInfo]:
        client = await self.client()
        paginator = client.get_paginator("list_objects_v2")
        with _store_errors("listing objects"):
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for entry in page.get("Contents", []):
                    key = entry["Key"][len(self.prefix) :]
                    if _KEY.fullmatch(key):
                        modified: datetime = entry["LastModified"]
                        yield BlobInfo(key, int(entry["Size"]), modified.timestamp())

    async def incomplete_uploads(self) -> list[tuple[str, str, float]]:
        """(object key, upload id, started at) of every multipart upload under the prefix."""
        client = await self.client()
        uploads = []
        paginator = client.get_paginator("list_multipart_uploads")
        with _store_errors("listing multipart uploads"):
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for upload in page.get("Uploads", []):
                    started: datetime = upload["Initiated"]
                    uploads.append((upload["Key"], upload["UploadId"], started.timestamp()))
        return uploads

    async def sweep_incomplete(self, older_than_seconds: float) -> int:
        cutoff = time.time() - older_than_seconds
        client = await self.client()
        removed = 0
        for object_key, upload_id, started in await self.incomplete_uploads():
            if started >= cutoff:
                continue
            try:
                await client.abort_multipart_upload(
                    Bucket=self.bucket, Key=object_key, UploadId=upload_id
                )
                removed += 1
            except ClientError as exc:
                if str(exc.response.get("Error", {}).get("Code")) != "NoSuchUpload":
                    logger.warning("cannot abort multipart upload %s: %s", object_key, exc)
        return removed

    async def download_url(
        self, key: str, *, content_type: str, content_disposition: str
    ) -> str | None:
        if not self.redirect_downloads:
            return None
        client = await self.client()
        url: str = await client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": self.object_key(key),
                "ResponseContentType": content_type,
                "ResponseContentDisposition": content_disposition,
                "ResponseCacheControl": "private, no-cache",
            },
            ExpiresIn=self.presign_seconds,
        )
        return url


class _EmptyChunks:
    def __aiter__(self) -> "_EmptyChunks":
        return self

    async def __anext__(self) -> bytes:
        raise StopAsyncIteration

    async def aclose(self) -> None:
        pass
