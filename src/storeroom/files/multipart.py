"""Files: a multipart/form-data body parsed as it streams in, part by part, without spooling.

Starlette's form parser (behind `UploadFile`) writes every file part to a spooled temp file
before the endpoint runs; here each part's bytes are handed on as they arrive, so the caller can
put them straight into storage.
"""

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from storeroom.files.exceptions import MalformedMultipart, NotMultipart, UploadTooLarge

MAX_PART_HEADERS = 8
MAX_PART_HEADER_BYTES = 8 * 1024


@dataclass(frozen=True, slots=True)
class PartStart:
    name: str
    filename: str | None  # None for a plain form field
    content_type: str | None


class PartEnd:
    """The current part is complete."""


PART_END = PartEnd()

MultipartEvent = PartStart | bytes | PartEnd


class _Invalid(Exception):
    pass


def boundary_of(content_type: str | None) -> bytes:
    media_type, params = parse_options_header(content_type or "")
    if media_type != b"multipart/form-data":
        raise NotMultipart()
    boundary = params.get(b"boundary")
    if not boundary or len(boundary) > 200:
        raise MalformedMultipart("multipart/form-data needs a boundary parameter")
    return boundary


def _decode(raw: bytes) -> str:
    # parse_options_header round-trips the header through latin-1; browsers send UTF-8 names.
    return raw.decode("utf-8", errors="replace")


def iter_parts(
    body: AsyncIterable[bytes], content_type: str | None, *, max_body_bytes: int
) -> AsyncIterator[MultipartEvent]:
    """PartStart, then the part's bytes in the pieces they arrived in, then PART_END, for every
    part in order. Raises NotMultipart right away for another media type; while iterating,
    MalformedMultipart, or UploadTooLarge once more than `max_body_bytes` arrive."""
    return _events(body, boundary_of(content_type), max_body_bytes)


async def _events(
    body: AsyncIterable[bytes], boundary: bytes, max_body_bytes: int
) -> AsyncIterator[MultipartEvent]:
    parser = MultipartParser(
        boundary,
        callbacks={},
        max_header_count=MAX_PART_HEADERS,
        max_header_size=MAX_PART_HEADER_BYTES,
    )
    events: list[MultipartEvent] = []
    headers: dict[bytes, bytes] = {}
    header_field = bytearray()
    header_value = bytearray()
    finished = False

    def on_part_begin() -> None:
        headers.clear()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        headers[bytes(header_field).strip().lower()] = bytes(header_value).strip()
        header_field.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        disposition, params = parse_options_header(headers.get(b"content-disposition"))
        name = params.get(b"name")
        if disposition != b"form-data" or name is None:
            raise _Invalid("every part needs Content-Disposition: form-data with a name")
        filename = params.get(b"filename")
        part_type = headers.get(b"content-type")
        events.append(
            PartStart(
                name=_decode(name),
                filename=None if filename is None else _decode(filename),
                content_type=None if part_type is None else part_type.decode("latin-1"),
            )
        )

    def on_part_data(data: bytes, start: int, end: int) -> None:
        events.append(data[start:end])  # the whole chunk is not copied (bytes[0:len] is bytes)

    def on_part_end() -> None:
        events.append(PART_END)

    def on_end() -> None:
        nonlocal finished
        finished = True

    parser.callbacks = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data,
        "on_part_end": on_part_end,
        "on_end": on_end,
    }

    received = 0
    async for chunk in body:
        received += len(chunk)
        if received > max_body_bytes:
            raise UploadTooLarge()
        try:
            parser.write(chunk)
        except (MultipartParseError, _Invalid) as exc:
            raise MalformedMultipart(f"Malformed multipart body: {exc}") from exc
        if events:
            ready = events.copy()
            events.clear()
            for event in ready:
                yield event
    if not finished:
        raise MalformedMultipart("The multipart body ended before its closing boundary")
