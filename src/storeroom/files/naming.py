"""Files: what a client says about its file (name, type), made safe to store and to echo back
in headers. Nothing here ever becomes a path: bytes live under generated keys."""

import re
import unicodedata
from urllib.parse import quote

MAX_FILENAME_CHARS = 255
MAX_EXTENSION_CHARS = 16
DEFAULT_FILENAME = "file"
OCTET_STREAM = "application/octet-stream"

_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")

# Served with their own type; anything else (HTML, SVG, XML, JavaScript, ...) goes out as
# application/octet-stream, so an upload can never be rendered as active content on our origin.
SAFE_MEDIA_TYPES = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/avif",
        "image/bmp",
        "text/plain",
        "text/csv",
        "application/pdf",
        "application/json",
        "application/zip",
        "application/gzip",
        "audio/mpeg",
        "audio/ogg",
        "audio/wav",
        "video/mp4",
        "video/webm",
        "video/ogg",
    }
)


def sanitize_filename(raw: str | None) -> str:
    """The client's name reduced to one harmless display name: the last path component, no
    control or invisible formatting characters (NUL, CR/LF, bidi overrides), no leading dots,
    at most 255 characters (keeping a short extension), never empty."""
    name = unicodedata.normalize("NFC", raw or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if not unicodedata.category(ch).startswith("C"))
    name = name.strip().lstrip(".").strip()
    if not name:
        return DEFAULT_FILENAME
    if len(name) > MAX_FILENAME_CHARS:
        stem, dot, extension = name.rpartition(".")
        if dot and stem and len(extension) <= MAX_EXTENSION_CHARS:
            name = f"{stem[: MAX_FILENAME_CHARS - len(extension) - 1].rstrip()}.{extension}"
        else:
            name = name[:MAX_FILENAME_CHARS].rstrip()
    return name


def normalize_content_type(raw: str | None) -> str:
    """The media type the client claimed, lower-cased and without parameters, or
    application/octet-stream when it is missing or not a media type."""
    media_type = (raw or "").split(";", 1)[0].strip().lower()
    return media_type if _MEDIA_TYPE.fullmatch(media_type) else OCTET_STREAM


def served_content_type(content_type: str) -> str:
    return content_type if content_type in SAFE_MEDIA_TYPES else OCTET_STREAM


def content_disposition(filename: str) -> str:
    """`attachment` with an ASCII fallback name and, when that lost anything, the exact name as
    RFC 5987 `filename*` (RFC 6266)."""
    fallback = "".join(
        ch if " " <= ch <= "~" and ch not in '"\\' else "_" for ch in filename
    ).strip()
    value = f'attachment; filename="{fallback or DEFAULT_FILENAME}"'
    if fallback != filename:
        value += "; filename*=UTF-8''" + quote(filename, safe="!#$&+-.^_`|~")
    return value
