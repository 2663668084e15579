"""Files: where the bytes live. A small interface (write, ranged read, delete, exists, list,
sweep) and the local-disk backend behind it; the S3-compatible backend (files/s3.py) implements
the same `Storage`, and nothing above this module knows which one it has."""

import hashlib
import logging
import os
import re
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread

from storeroom.core.config import Settings, StorageLocation
from storeroom.core.paths import private_dir

# Bytes handed to a worker thread per write and per read: large enough that the thread hop is
# noise next to the copy, small enough that many concurrent transfers stay far below 64 MiB.
WRITE_BATCH_BYTES = 1024 * 1024
WRITE_BATCH_PIECES = 512  # below IOV_MAX (1024), for bodies that arrive in tiny chunks
READ_CHUNK_BYTES = 1024 * 1024

logger = logging.getLogger("storeroom.files")

_KEY = re.compile(r"[0-9a-f]{32}")
_TEMP_NAME = re.compile(r"\.[0-9a-f]{32}\.part")


class BlobMissing(Exception):
    """The storage has no bytes under this key."""


class BlobCorrupt(Exception):
    """The bytes written do not have the sha256 they were expected to have."""


@dataclass(frozen=True, slots=True)
class StoredBlob:
    key: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class BlobInfo:
    key: str
    size: int
    modified_at: float


class BlobWriter(ABC):
    """One blob being written: bytes go in with `write` (hashed on the way), and only `finish`
    makes them visible under the key. `abort` throws away whatever was written."""

    key: str
    size: int

    @abstractmethod
    async def write(self, data: bytes) -> None: ...

    @abstractmethod
    async def finish(self, expected_sha256: str | None = None) -> StoredBlob:
        """Make the blob visible under its key. With `expected_sha256`, a blob whose bytes hash
        otherwise is thrown away instead (BlobCorrupt), so it never appears under the key."""

    @abstractmethod
    async def abort(self) -> None: ...


def new_key() -> str:
    return uuid.uuid4().hex


def check_key(key: str) -> str:
    if not _KEY.fullmatch(key):  # keys come from our own rows, but never trust a path
        raise ValueError(f"invalid storage key {key!r}")
    return key


class Storage(ABC):
    @abstractmethod
    async def open_write(self, key: str | None = None) -> BlobWriter:
        """Start a new blob, under a freshly generated key unless one is given (copying a blob
        from another storage keeps its key)."""

    @abstractmethod
    async def open_read(
        self, key: str, *, start: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        """The blob's bytes from `start`, `length` of them (to the end when None), in large
        chunks. Raises BlobMissing before the first chunk when there is no such blob."""

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Remove the blob; a missing blob is not an error."""

    @abstractmethod
    async def exists(self, key: str) -> bool: ...

    @abstractmethod
    def iter_blobs(self) -> AsyncIterator[BlobInfo]:
        """Every complete blob, for integrity checks."""

    @abstractmethod
    async def sweep_incomplete(self, older_than_seconds: float) -> int:
        """Remove writes abandoned longer ago than this (a crash mid-upload); returns how many."""

    async def download_url(
        self, key: str, *, content_type: str, content_disposition: str
    ) -> str | None:
        """A short-lived URL the client can fetch the blob from directly, answered with these
        headers, or None when this storage cannot hand one out (downloads then stream through
        the service)."""
        return None

    async def connect(self) -> None:
        """Get ready to serve (called at startup, so that no request pays for it)."""
        return None

    async def check(self) -> None:
        """Raise if the storage cannot be reached now (for the readiness probe)."""
        return None

    async def close(self) -> None:
        """Release connections; the storage may not be used afterwards."""
        return None


def _write_all(fd: int, pieces: list[bytes]) -> None:
    """Write every piece with one system call where possible, finishing short writes."""
    total = sum(len(piece) for piece in pieces)
    written = os.writev(fd, pieces)
    if written == total:
        return
    rest = memoryview(b"".join(pieces))[written:]
    while rest:
        rest = rest[os.write(fd, rest) :]


class _LocalBlobWriter(BlobWriter):
    def __init__(self, key: str, temp_path: Path, final_path: Path, fd: int, fsync: bool):
        self.key = key
        self.size = 0
        self._temp_path = temp_path
        self._final_path = final_path
        self._fd: int | None = fd
        self._fsync = fsync
        self._hash = hashlib.sha256()
        self._pending: list[bytes] = []
        self._pending_bytes = 0

    def _flush_sync(self, pieces: list[bytes]) -> None:
        assert self._fd is not None
        for piece in pieces:
            self._hash.update(piece)  # releases the GIL for large buffers
        _write_all(self._fd, pieces)

    async def write(self, data: bytes) -> None:
        if self._fd is None:
            raise RuntimeError("blob writer is closed")
        if not data:
            return
        self._pending.append(data)
        self._pending_bytes += len(data)
        self.size += len(data)
        if self._pending_bytes >= WRITE_BATCH_BYTES or len(self._pending) >= WRITE_BATCH_PIECES:
            pieces, self._pending, self._pending_bytes = self._pending, [], 0
            # Not abandoned on cancellation, so the descriptor is never closed under the thread.
            await anyio.to_thread.run_sync(self._flush_sync, pieces)

    def _finish_sync(self, pieces: list[bytes], expected_sha256: str | None) -> None:
        assert self._fd is not None
        if pieces:
            self._flush_sync(pieces)
        if expected_sha256 is not None and self._hash.hexdigest() != expected_sha256:
            self._abort_sync()
            raise BlobCorrupt(f"{self.key}: sha256 {self._hash.hexdigest()}, not {expected_sha256}")
        if self._fsync:
            os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        os.replace(self._temp_path, self._final_path)

    async def finish(self, expected_sha256: str | None = None) -> StoredBlob:
        pieces, self._pending, self._pending_bytes = self._pending, [], 0
        await anyio.to_thread.run_sync(self._finish_sync, pieces, expected_sha256)
        return StoredBlob(key=self.key, size=self.size, sha256=self._hash.hexdigest())

    def _abort_sync(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._temp_path.unlink(missing_ok=True)

    async def abort(self) -> None:
        self._pending = []
        await anyio.to_thread.run_sync(self._abort_sync)


class _FileChunks:
    """A byte range of an open file, read in large chunks off the event loop. The descriptor is
    closed at the end, on `aclose`, or when the iterator is dropped unread."""

    def __init__(self, fd: int, offset: int, remaining: int):
        self._fd: int | None = fd
        self._offset = offset
        self._remaining = remaining

    def __aiter__(self) -> "_FileChunks":
        return self

    async def __anext__(self) -> bytes:
        if self._fd is None or self._remaining <= 0:
            self.close()
            raise StopAsyncIteration
        size = min(READ_CHUNK_BYTES, self._remaining)
        chunk: bytes = await anyio.to_thread.run_sync(os.pread, self._fd, size, self._offset)
        if not chunk:  # shorter than its row says; the server then ends the response short
            self.close()
            raise StopAsyncIteration
        self._offset += len(chunk)
        self._remaining -= len(chunk)
        return chunk

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    async def aclose(self) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


class LocalStorage(Storage):
    """Blobs as files under `root`, sharded by the first two characters of their key
    (`root/ab/ab12...`). A write goes to `.<key>.part` in the same directory and is renamed into
    place when complete, so a reader never sees half a file."""

    def __init__(self, root: Path, *, fsync: bool = True):
        self.root = root
        self.fsync = fsync

    def __str__(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / check_key(key)

    def _open_temp(self, key: str) -> tuple[Path, Path, int]:
        final_path = self._path(key)
        private_dir(final_path.parent)
        temp_path = final_path.with_name(f".{key}.part")
        fd = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        return temp_path, final_path, fd

    async def open_write(self, key: str | None = None) -> BlobWriter:
        key = new_key() if key is None else check_key(key)
        temp_path, final_path, fd = await anyio.to_thread.run_sync(self._open_temp, key)
        return _LocalBlobWriter(key, temp_path, final_path, fd, self.fsync)

    async def open_read(
        self, key: str, *, start: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        path = self._path(key)

        def open_and_measure() -> tuple[int, int]:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            return fd, os.fstat(fd).st_size

        try:
            fd, size = await anyio.to_thread.run_sync(open_and_measure)
        except FileNotFoundError as exc:
            raise BlobMissing(key) from exc
        remaining = max(0, size - start) if length is None else length
        return _FileChunks(fd, start, remaining)

    async def delete(self, key: str) -> None:
        await anyio.to_thread.run_sync(self._path(key).unlink, True)

    async def exists(self, key: str) -> bool:
        return await anyio.to_thread.run_sync(self._path(key).is_file)

    def _shards(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(
            entry for entry in self.root.iterdir() if entry.is_dir() and len(entry.name) == 2
        )

    @staticmethod
    def _scan_shard(shard: Path) -> list[BlobInfo]:
        blobs = []
        with os.scandir(shard) as entries:
            for entry in entries:
                if _KEY.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                    stat = entry.stat(follow_symlinks=False)
                    blobs.append(BlobInfo(entry.name, stat.st_size, stat.st_mtime))
        return sorted(blobs, key=lambda blob: blob.key)

    async def iter_blobs(self) -> AsyncIterator[BlobInfo]:
        for shard in await anyio.to_thread.run_sync(self._shards):
            for blob in await anyio.to_thread.run_sync(self._scan_shard, shard):
                yield blob

    def _sweep_sync(self, older_than_seconds: float) -> int:
        cutoff = time.time() - older_than_seconds
        removed = 0
        for shard in self._shards():
            with os.scandir(shard) as entries:
                for entry in entries:
                    if not _TEMP_NAME.fullmatch(entry.name):
                        continue
                    try:
                        if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                            os.unlink(entry.path)
                            removed += 1
                    except FileNotFoundError:
                        pass  # finished or aborted meanwhile
                    except OSError as exc:
                        logger.warning("cannot sweep %s: %s", entry.path, exc)
        return removed

    async def sweep_incomplete(self, older_than_seconds: float) -> int:
        return await anyio.to_thread.run_sync(self._sweep_sync, older_than_seconds)


class FallbackStorage(Storage):
    """A storage being moved into (`primary`) in front of the one being moved out of: writes go
    to the primary; a blob not there yet is read from, and deleted in, the fallback too."""

    def __init__(self, primary: Storage, fallback: Storage):
        self.primary = primary
        self.fallback = fallback

    def __str__(self) -> str:
        return f"{self.primary} (falling back to {self.fallback})"

    async def open_write(self, key: str | None = None) -> BlobWriter:
        return await self.primary.open_write(key)

    async def open_read(
        self, key: str, *, start: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        try:
            return await self.primary.open_read(key, start=start, length=length)
        except BlobMissing:
            return await self.fallback.open_read(key, start=start, length=length)

    async def delete(self, key: str) -> None:
        await self.primary.delete(key)
        await self.fallback.delete(key)

    async def exists(self, key: str) -> bool:
        return await self.primary.exists(key) or await self.fallback.exists(key)

    async def iter_blobs(self) -> AsyncIterator[BlobInfo]:
        seen = set()
        async for blob in self.primary.iter_blobs():
            seen.add(blob.key)
            yield blob
        async for blob in self.fallback.iter_blobs():
            if blob.key not in seen:
                yield blob

    async def sweep_incomplete(self, older_than_seconds: float) -> int:
        return await self.primary.sweep_incomplete(
            older_than_seconds
        ) + await self.fallback.sweep_incomplete(older_than_seconds)

    async def download_url(
        self, key: str, *, content_type: str, content_disposition: str
    ) -> str | None:
        if not await self.primary.exists(key):
            return None  # streamed from the fallback
        return await self.primary.download_url(
            key, content_type=content_type, content_disposition=content_disposition
        )

    async def connect(self) -> None:
        await self.primary.connect()
        await self.fallback.connect()

    async def check(self) -> None:
        await self.primary.check()
        await self.fallback.check()

    async def close(self) -> None:
        try:
            await self.primary.close()
        finally:
            await self.fallback.close()


def create_storage(settings: Settings, location: StorageLocation | None = None) -> Storage:
    """The storage STOREROOM_STORAGE_URL names, in front of STOREROOM_STORAGE_FALLBACK_URL's
    when that is set; or only the one at `location` (a migration's source or target)."""
    if location is None:
        storage = _create(settings, settings.storage_location)
        fallback = settings.storage_fallback_location
        return (
            storage if fallback is None else FallbackStorage(storage, _create(settings, fallback))
        )
    return _create(settings, location)


def _create(settings: Settings, location: StorageLocation) -> Storage:
    if location.scheme == "s3":
        from storeroom.files.s3 import S3Storage

        return S3Storage.from_settings(settings, location)
    assert location.path is not None
    return LocalStorage(location.path, fsync=settings.file_fsync)
