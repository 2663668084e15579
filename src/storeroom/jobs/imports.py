"""Jobs: the `import_items` runner, a CSV or NDJSON file of items into its owner's catalog."""

import asyncio
import codecs
import contextlib
import csv
import io
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any

import orjson
from pydantic import ValidationError

from storeroom.files import service as files_service
from storeroom.files.exceptions import FileNotFound
from storeroom.files.models import StoredFile
from storeroom.files.storage import BlobMissing, Storage
from storeroom.items import service as items_service
from storeroom.items.schemas import ItemCreate, item_create_from_csv_row
from storeroom.jobs.context import JobContext
from storeroom.jobs.exceptions import JobCancelled, JobFailed

# Rows read per transaction: their valid items are inserted and the position after them is
# checkpointed in the same commit, so a rerun resumes exactly there.
CHUNK_ROWS = 1000
# How often the first pass (counting, and validating in strict mode) reports in: a progress
# update that also renews the lease and notices a cancel.
SCAN_REPORT_ROWS = 10_000
MAX_REPORTED_ERRORS = 100
# While a chunk is being written, how many rows of the next are parsed between its steps.
PIPELINE_YIELD_ROWS = 50

CSV_HEADER = "name,description,price,tax,tags"
CSV_REQUIRED_COLUMNS = ("name", "price")
CSV_OPTIONAL_COLUMNS = ("description", "tax", "tags")
# What an export adds; the database assigns these anew.
CSV_IGNORED_COLUMNS = ("id", "created_at", "updated_at")
NDJSON_IGNORED_KEYS = frozenset({"id", "owner_id", "version", "created_at", "updated_at"})

_CSV_TYPES = frozenset({"text/csv", "application/csv", "text/comma-separated-values"})
_NDJSON_TYPES = frozenset(
    {
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonlines",
        "application/jsonlines",
    }
)
_CSV_EXTENSIONS = frozenset({".csv"})
_NDJSON_EXTENSIONS = frozenset({".ndjson", ".jsonl"})


class ImportFormat(StrEnum):
    csv = "csv"
    ndjson = "ndjson"


class UnreadableFile(Exception):
    """The file as a whole cannot be imported (binary, not UTF-8, not the expected shape)."""


class _RowError(Exception):
    """One row is not a valid item; it is reported and skipped."""


def detect_format(content_type: str, filename: str) -> ImportFormat | None:
    """CSV or NDJSON by the declared content type, else by the file name's extension (clients
    often send a CSV as text/plain or application/octet-stream)."""
    if content_type in _CSV_TYPES:
        return ImportFormat.csv
    if content_type in _NDJSON_TYPES:
        return ImportFormat.ndjson
    extension = PurePosixPath(filename).suffix.lower()
    if extension in _CSV_EXTENSIONS:
        return ImportFormat.csv
    if extension in _NDJSON_EXTENSIONS:
        return ImportFormat.ndjson
    return None


# --- reading ---------------------------------------------------------------------------------


async def _decoded(chunks: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """The file as text, a piece per chunk read: UTF-8 only (a BOM is dropped), no NUL."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")("strict")
    offset = 0
    async for chunk in chunks:
        nul = chunk.find(b"\x00")
        if nul >= 0:
            raise UnreadableFile(f"it looks binary (a NUL byte at offset {offset + nul})")
        try:
            text = decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            raise UnreadableFile(
                f"it is not UTF-8 text (an invalid byte near offset {offset + exc.start})"
            ) from None
        offset += len(chunk)
        if text:
            yield text
    try:
        text = decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise UnreadableFile("it is not UTF-8 text (it ends inside a character)") from None
    if text:
        yield text


async def _csv_records(pieces: AsyncIterator[str]) -> AsyncIterator[list[list[str]]]:
    """The records of CSV text arriving in pieces, a batch per piece. The csv module reads each
    piece from a StringIO (in C, as from a file opened with newline=""); the last record of a
    piece may go on in the next one (a row or a quoted newline split by the read), so it is
    parsed again at the start of the next."""
    carry = ""
    async for piece in pieces:
        records, carry = _complete_records(carry + piece, final=False)
        if records:
            yield records
    if carry:
        records, _rest = _complete_records(carry, final=True)
        yield records


def _complete_records(text: str, *, final: bool) -> tuple[list[list[str]], str]:
    """The records of `text`, and the text of a last record that may be incomplete."""
    source = io.StringIO(text, newline="")
    reader = csv.reader(source)
    records: list[list[str]] = []
    end = len(text)
    while True:
        start = source.tell()
        try:
            record = next(reader)
        except StopIteration:
            return records, ""
        except csv.Error as exc:
            raise UnreadableFile(f"it is not valid CSV ({exc})") from None
        if not final and source.tell() == end:
            return records, text[start:]
        records.append(record)


async def _ndjson_lines(pieces: AsyncIterator[str]) -> AsyncIterator[list[str]]:
    """The lines of NDJSON text arriving in pieces, a batch per piece."""
    partial = ""
    async for piece in pieces:
        lines = (partial + piece).split("\n")
        partial = lines.pop()
        if lines:
            yield lines
    if partial:
        yield [partial]


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"])
        parts.append(f"{where}: {error['msg']}" if where else error["msg"])
    return "; ".join(parts)


class _Rows(ABC):
    """A file's data rows, in batches, and how one row becomes an item. A blank row is None:
    counted (row numbers stay the file's), but neither imported nor an error."""

    @abstractmethod
    def batches(self) -> AsyncIterator[list[Any]]: ...

    @abstractmethod
    def parse(self, row: Any) -> ItemCreate | None: ...


class _CsvRows(_Rows):
    def __init__(self, text: AsyncIterator[str]) -> None:
        self._text = text
        self._columns: list[str] = []

    async def batches(self) -> AsyncIterator[list[Any]]:
        header_seen = False
        async for records in _csv_records(self._text):
            if not header_seen:
                self._columns = _check_header(records[0])
                header_seen = True
                records = records[1:]
            if records:
                yield records
        if not header_seen:
            raise UnreadableFile("it is empty (a CSV file starts with its header row)")

    def parse(self, row: Any) -> ItemCreate | None:
        if not row:
            return None
        if len(row) != len(self._columns):
            raise _RowError(f"expected {len(self._columns)} fields, found {len(row)}")
        try:
            return item_create_from_csv_row(dict(zip(self._columns, row, strict=True)))
        except ValidationError as exc:
            raise _RowError(_describe(exc)) from None


def _check_header(header: list[str]) -> list[str]:
    columns = [name.strip().lower() for name in header]
    known = {*CSV_REQUIRED_COLUMNS, *CSV_OPTIONAL_COLUMNS, *CSV_IGNORED_COLUMNS}
    unknown = [name for name in columns if name not in known]
    missing = [name for name in CSV_REQUIRED_COLUMNS if name not in columns]
    if unknown or missing:
        found = ", ".join(repr(name) for name in (unknown or columns)[:5])
        raise UnreadableFile(
            f"its first row is not the header {CSV_HEADER} "
            f"(description, tax and tags may be left out; an export's id, created_at and "
            f"updated_at are ignored); {'unknown' if unknown else 'found'}: {found}"
        )
    duplicated = sorted({name for name in columns if columns.count(name) > 1})
    if duplicated:
        raise UnreadableFile(f"its header names a column twice: {', '.join(duplicated)}")
    return columns


class _NdjsonRows(_Rows):
    def __init__(self, text: AsyncIterator[str]) -> None:
        self._text = text

    async def batches(self) -> AsyncIterator[list[Any]]:
        async for lines in _ndjson_lines(self._text):
            yield lines

    def parse(self, row: Any) -> ItemCreate | None:
        line: str = row
        if not line.strip():
            return None
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise _RowError(f"not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise _RowError("expected a JSON object (one item a line)")
        for key in NDJSON_IGNORED_KEYS.intersection(value):
            del value[key]
        try:
            return ItemCreate.model_validate(value)
        except ValidationError as exc:
            raise _RowError(_describe(exc)) from None


@contextlib.asynccontextmanager
async def _open_rows(
    storage: Storage, file: StoredFile, file_format: ImportFormat
) -> AsyncIterator[_Rows]:
    try:
        chunks = await storage.open_read(file.storage_key)
    except BlobMissing:
        raise UnreadableFile("its content is missing from storage") from None
    try:
        text = _decoded(chunks)
        yield _CsvRows(text) if file_format is ImportFormat.csv else _NdjsonRows(text)
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()


# --- running ---------------------------------------------------------------------------------


class _Errors:
    """Invalid rows: all counted, the first MAX_REPORTED_ERRORS kept."""

    def __init__(self, count: int = 0, listed: list[dict[str, Any]] | None = None) -> None:
        self.count = count
        self.listed = listed or []

    def add(self, row: int, message: str) -> None:
        self.count += 1
        if len(self.listed) < MAX_REPORTED_ERRORS:
            self.listed.append({"row": row, "message": message})


@dataclass(slots=True)
class _Chunk:
    """The rows read since the last commit, up to (and including) row `rows_done`."""

    rows_done: int = 0
    items: list[ItemCreate] = field(default_factory=list)
    errors: _Errors = field(default_factory=_Errors)


@dataclass(slots=True)
class _Tally:
    """What the committed chunks did; saved with each of them, so a rerun carries on."""

    rows_done: int = 0
    imported: int = 0
    errors: _Errors = field(default_factory=_Errors)

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any]) -> "_Tally":
        return cls(
            rows_done=int(checkpoint.get("rows_done", 0)),
            imported=int(checkpoint.get("imported", 0)),
            errors=_Errors(
                int(checkpoint.get("error_count", 0)), list(checkpoint.get("errors", []))
            ),
        )

    def add(self, chunk: _Chunk, imported: int) -> None:
        self.rows_done = chunk.rows_done
        self.imported += imported
        self.errors.count += chunk.errors.count
        room = MAX_REPORTED_ERRORS - len(self.errors.listed)
        self.errors.listed += chunk.errors.listed[: max(room, 0)]

    def result(self) -> dict[str, Any]:
        return {
            "imported": self.imported,
            "error_count": self.errors.count,
            "errors": list(self.errors.listed),
        }

    def checkpoint(self, total: int) -> dict[str, Any]:
        return {"rows_done": self.rows_done, "total": total, **self.result()}


async def run_import(ctx: JobContext) -> dict[str, Any]:
    """Import the owner's uploaded file: a first pass counts the rows (and in strict mode
    validates them all, so that an invalid row stops the job before anything is written), a
    second inserts the valid rows CHUNK_ROWS at a time, each chunk committed together with the
    position after it. A rerun (a redelivered task) skips the rows already committed."""
    tally = _Tally.from_checkpoint(ctx.checkpoint)
    try:
        return await _import(ctx, tally)
    except JobCancelled as exc:
        raise JobCancelled(exc.result if exc.result is not None else tally.result()) from exc


async def _import(ctx: JobContext, tally: _Tally) -> dict[str, Any]:
    options = ctx.params.get("options") or {}
    strict = bool(options.get("strict", False))
    file = await _load_file(ctx)
    file_format = detect_format(file.content_type, file.filename)
    if file_format is None:
        raise JobFailed(
            f"Cannot import {file.filename!r}: it is neither CSV (text/csv or a .csv name) nor "
            f"NDJSON (application/x-ndjson or a .ndjson or .jsonl name); it is {file.content_type}"
        )
    try:
        total = ctx.checkpoint.get("total")
        if total is None:
            total = await _scan(ctx, file, file_format, strict=strict)
        await _insert(ctx, file, file_format, tally, total)
    except UnreadableFile as exc:
        raise JobFailed(f"Cannot import {file.filename!r}: {exc}", result=tally.result()) from exc
    return tally.result()


async def _load_file(ctx: JobContext) -> StoredFile:
    try:
        file_id = uuid.UUID(str(ctx.params["file_id"]))
    except (KeyError, ValueError):
        raise JobFailed("The job names no file to import") from None
    async with ctx.sessionmaker() as session:
        try:
            return await files_service.get_owned(session, ctx.owner_id, file_id)
        except FileNotFound:
            raise JobFailed("The file to import no longer exists") from None


async def _scan(
    ctx: JobContext, file: StoredFile, file_format: ImportFormat, *, strict: bool
) -> int:
    """Read the whole file once before writing anything: its row count (the progress total)
    and, in strict mode, every row's errors. A file that cannot be read fails here."""
    errors = _Errors()
    rows = 0
    report_at = SCAN_REPORT_ROWS
    async with _open_rows(ctx.storage, file, file_format) as source:
        async for batch in source.batches():
            if not strict:
                rows += len(batch)
            else:
                for row in batch:
                    rows += 1
                    _parse(source.parse, row, rows, errors)
                    if rows % CHUNK_ROWS == 0:
                        await asyncio.sleep(0)  # the worker's other tasks run meanwhile
            if rows >= report_at:
                report_at = rows + SCAN_REPORT_ROWS
                async with ctx.sessionmaker() as session:
                    await ctx.commit_chunk(session, checkpoint=ctx.checkpoint, done=0, total=None)
    if errors.count:
        noun = "row is" if errors.count == 1 else "rows are"
        raise JobFailed(
            f"{errors.count} of {rows} {noun} invalid; strict mode imported nothing",
            result={"imported": 0, "error_count": errors.count, "errors": errors.listed},
        )
    return rows


def _parse(
    parse: Callable[[Any], ItemCreate | None], row: Any, number: int, errors: _Errors
) -> ItemCreate | None:
    try:
        return parse(row)
    except _RowError as exc:
        errors.add(number, str(exc))
        return None


async def _insert(
    ctx: JobContext, file: StoredFile, file_format: ImportFormat, tally: _Tally, total: int
) -> None:
    """Chunks are pipelined: while one is being written and committed, the next one's rows are
    parsed and validated (yielding to it every PIPELINE_YIELD_ROWS rows), so the database's
    work and ours overlap. Commits still happen one after another, in order."""
    resume_after = tally.rows_done
    chunk = _Chunk()
    in_flight: asyncio.Future[None] | None = None
    number = 0
    try:
        async with _open_rows(ctx.storage, file, file_format) as source:
            async for batch in source.batches():
                for row in batch:
                    number += 1
                    if number <= resume_after:
                        continue
                    item = _parse(source.parse, row, number, chunk.errors)
                    if item is not None:
                        chunk.items.append(item)
                    if number % CHUNK_ROWS == 0:
                        if in_flight is not None:
                            await in_flight
                        chunk.rows_done = number
                        in_flight = asyncio.ensure_future(_commit(ctx, tally, chunk, total))
                        chunk = _Chunk()
                    elif number % PIPELINE_YIELD_ROWS == 0 and in_flight is not None:
                        await asyncio.sleep(0)
        if in_flight is not None:
            await in_flight
        if number < resume_after:
            raise UnreadableFile(f"it has {number} rows, but {resume_after} were already imported")
        if number > tally.rows_done or not number:
            chunk.rows_done = number
            await _commit(ctx, tally, chunk, total)
    except BaseException as exc:
        if in_flight is not None and not in_flight.done():
            if isinstance(exc, asyncio.CancelledError):
                in_flight.cancel()
            # Never leave a chunk's transaction running behind the job's back.
            await asyncio.wait([in_flight])
        if in_flight is not None and not in_flight.cancelled():
            in_flight.exception()  # retrieved; the first failure is the one raised
        raise


async def _commit(ctx: JobContext, tally: _Tally, chunk: _Chunk, total: int) -> None:
    """One chunk: its items and the checkpoint after it, in one transaction."""
    async with ctx.sessionmaker() as session:
        inserted = await items_service.insert_many(session, ctx.owner_id, chunk.items)
        # Counted before the commit: a cancel raises from it after committing, and the
        # cancelled job's result must include this chunk.
        tally.add(chunk, inserted)
        await ctx.commit_chunk(
            session, checkpoint=tally.checkpoint(total), done=chunk.rows_done, total=total
        )
