"""Files: the HTTP semantics of a download. Conditional requests (If-None-Match, If-Range),
single byte ranges, and the headers that keep a hostile upload inert in a browser."""

import re
from dataclasses import dataclass, field

from storeroom.files.exceptions import RangeNotSatisfiable
from storeroom.files.models import StoredFile
from storeroom.files.naming import content_disposition, served_content_type

_POSITION = re.compile(r"[0-9]{1,19}")


@dataclass(frozen=True, slots=True)
class DownloadPlan:
    status: int  # 200, 206 or 304
    start: int
    length: int
    headers: dict[str, str] = field(default_factory=dict)


def etag_of(file: StoredFile) -> str:
    return f'"{file.sha256}"'


def _matches_any(header: str, etag: str) -> bool:
    """Weak comparison against an If-None-Match list (RFC 9110 13.1.2)."""
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """The inclusive (first, last) byte positions of a single `bytes=` range, or None to send
    the whole file (another unit, or several ranges, which a server may ignore).
    Raises RangeNotSatisfiable for a malformed or unsatisfiable byte range."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes":
        return None
    if "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    first, last = first.strip(), last.strip()
    if not dash or (first and not _POSITION.fullmatch(first)):
        raise RangeNotSatisfiable(size, "Malformed Range header")
    if last and not _POSITION.fullmatch(last):
        raise RangeNotSatisfiable(size, "Malformed Range header")
    if not first:  # suffix: the last N bytes
        if not last or int(last) == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        return max(0, size - int(last)), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if end < start:
        raise RangeNotSatisfiable(size, "Malformed Range header")
    if start >= size:
        raise RangeNotSatisfiable(size)
    return start, min(end, size - 1)


def plan(
    file: StoredFile,
    *,
    range_header: str | None,
    if_none_match: str | None,
    if_range: str | None,
) -> DownloadPlan:
    etag = etag_of(file)
    headers = {
        "ETag": etag,
        "Cache-Control": "private, no-cache",
        "Accept-Ranges": "bytes",
    }
    if if_none_match is not None and _matches_any(if_none_match, etag):
        return DownloadPlan(status=304, start=0, length=0, headers=headers)
    headers |= {
        "Content-Type": served_content_type(file.content_type),
        "Content-Disposition": content_disposition(file.filename),
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
    }
    byte_range = None
    # If-Range: the range only applies to the representation the client already has part of.
    if range_header is not None and (if_range is None or if_range.strip() == etag):
        byte_range = parse_range(range_header, file.size)
    if byte_range is None:
        headers["Content-Length"] = str(file.size)
        return DownloadPlan(status=200, start=0, length=file.size, headers=headers)
    start, end = byte_range
    headers["Content-Range"] = f"bytes {start}-{end}/{file.size}"
    headers["Content-Length"] = str(end - start + 1)
    return DownloadPlan(status=206, start=start, length=end - start + 1, headers=headers)
