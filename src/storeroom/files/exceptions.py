"""Files: the errors this domain raises."""

from storeroom.core.errors import (
    BadRequest,
    DomainError,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    UnsupportedMediaType,
)


class FileNotFound(NotFound):
    detail = "File not found"
    code = "file_not_found"


class FileContentMissing(NotFound):
    detail = "The file's content is missing from storage"
    code = "file_content_missing"


class UploadTooLarge(PayloadTooLarge):
    detail = "The upload is larger than this server accepts"


class QuotaExceeded(PayloadTooLarge):
    detail = "The upload would exceed your storage quota"
    code = "quota_exceeded"


class NotMultipart(UnsupportedMediaType):
    detail = "Upload with Content-Type: multipart/form-data and the file in the field 'file'"


class MalformedMultipart(BadRequest):
    detail = "Malformed multipart body"
    code = "malformed_multipart"


class UploadInterrupted(BadRequest):
    detail = "The client went away before the upload was complete"
    code = "upload_interrupted"


class InvalidUpload(DomainError):
    """A well-formed multipart body whose fields are wrong (the 422 of an upload)."""

    status_code = 422
    code = "validation_error"
    detail = "Invalid upload"


class RangeNotSatisfiable(DomainError):
    status_code = 416
    code = "range_not_satisfiable"
    detail = "The requested range is not satisfiable"

    def __init__(self, size: int, detail: str | None = None):
        super().__init__(detail, headers={"Content-Range": f"bytes */{size}"})


class StorageUnavailable(ServiceUnavailable):
    code = "storage_unavailable"
    detail = "The file storage is unavailable, try again shortly"

    def __init__(self, detail: str | None = None):
        super().__init__(detail, retry_after=5)
