"""Files: HTTP endpoints to upload, list, read, download and delete files."""

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Header, Query, Response, status
from fastapi.responses import RedirectResponse

from storeroom.auth.dependencies import CurrentUser, require_scope
from storeroom.core.db import DbSession
from storeroom.core.errors import error_responses
from storeroom.core.pagination import Page, Pagination, paginate
from storeroom.core.responses import ClosingStreamingResponse
from storeroom.files import downloads
from storeroom.files import service as files_service
from storeroom.files.dependencies import FileStorage, IncomingUpload, OwnedFile, UploadLimits
from storeroom.files.models import StoredFile
from storeroom.files.schemas import FileRead
from storeroom.idempotency.dependencies import IdempotentRoute, idempotent

router = APIRouter(
    prefix="/files",
    tags=["files"],
    responses=error_responses(401, 422),
    route_class=IdempotentRoute,
)

# The upload handler reads the raw body stream, so FastAPI cannot derive the body from its
# parameters; this documents it, as the component schema UploadForm (a name generated clients
# can use; main.py adds it to the schema).
UPLOAD_FORM: dict[str, Any] = {
    "title": "UploadForm",
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {
            "type": "string",
            "format": "binary",
            "description": "The file. Its name and media type come from the part's "
            "Content-Disposition filename and Content-Type.",
        },
        "item_id": {
            "type": "integer",
            "minimum": 1,
            "description": "Attach the file to this item of yours.",
        },
    },
}

UPLOAD_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"$ref": "#/components/schemas/UploadForm"},
                "example": {"file": "(the bytes of shelf.jpg)", "item_id": 7},
            }
        },
    }
}

DOWNLOAD_OPENAPI: dict[str, Any] = {
    "responses": {
        "200": {
            "description": "The whole file.",
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        },
        "206": {"description": "The requested byte range, with Content-Range."},
        "304": {"description": "Not modified: If-None-Match matched the ETag."},
        "307": {
            "description": "With STOREROOM_STORAGE_DOWNLOADS=redirect: fetch the file from "
            "the short-lived presigned URL in Location (Range works there too)."
        },
    }
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=FileRead,
    responses=error_responses(400, 403, 404, 409, 413, 415),
    dependencies=[
        require_scope("write"),
        # An upload unfinished for as long as its temp file would be swept is abandoned.
        idempotent(
            streamed_body=True,
            abandoned_after=timedelta(seconds=files_service.INCOMPLETE_UPLOAD_MAX_AGE_SECONDS),
        ),
    ],
    openapi_extra=UPLOAD_OPENAPI,
    summary="Upload a file (multipart field `file`)",
)
async def upload_file(
    incoming: IncomingUpload,
    owner: CurrentUser,
    session: DbSession,
    storage: FileStorage,
    limits: UploadLimits,
    response: Response,
) -> StoredFile:
    file = await files_service.upload(session, storage, owner.id, incoming, limits)
    response.headers["Location"] = f"/api/v1/files/{file.id}"
    return file


@router.get("", response_model=Page[FileRead], summary="The caller's files, newest first")
async def list_files(
    owner: CurrentUser,
    session: DbSession,
    page: Pagination,
    item_id: Annotated[
        int | None, Query(ge=1, le=2**31 - 1, description="Only files attached to this item.")
    ] = None,
) -> Page[FileRead]:
    files, total = await files_service.list_owned(session, owner.id, page, item_id=item_id)
    return paginate(FileRead, files, total, page)


@router.get(
    "/{file_id}",
    response_model=FileRead,
    responses=error_responses(404),
    summary="A file's metadata",
)
async def read_file(file: OwnedFile) -> StoredFile:
    return file


@router.get(
    "/{file_id}/content",
    response_class=ClosingStreamingResponse,
    responses=error_responses(404, 416),
    openapi_extra=DOWNLOAD_OPENAPI,
    summary="Download a file (Range and If-None-Match supported)",
)
async def download_file(
    file: OwnedFile,
    storage: FileStorage,
    range_header: Annotated[str | None, Header(alias="Range", include_in_schema=True)] = None,
    if_none_match: Annotated[str | None, Header()] = None,
    if_range: Annotated[str | None, Header()] = None,
) -> Response:
    plan = downloads.plan(
        file, range_header=range_header, if_none_match=if_none_match, if_range=if_range
    )
    if plan.status == status.HTTP_304_NOT_MODIFIED:
        return Response(status_code=plan.status, headers=plan.headers)
    url = await files_service.download_url(storage, file)
    if url is not None:  # STOREROOM_STORAGE_DOWNLOADS=redirect: the store serves the bytes
        return RedirectResponse(
            url,
            status_code=status.HTTP_307_TEMPORARY_REDIRECT,
            headers={"ETag": plan.headers["ETag"], "Cache-Control": "private, no-store"},
        )
    content = await files_service.open_content(storage, file, plan)
    return ClosingStreamingResponse(content, status_code=plan.status, headers=plan.headers)


@router.delete(
    "/{file_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(403, 404),
    dependencies=[require_scope("write")],
    summary="Delete a file and its bytes",
)
async def delete_file(
    file: OwnedFile, session: DbSession, storage: FileStorage, background: BackgroundTasks
) -> None:
    await files_service.delete(session, file)
    # After the response, so after the commit: the bytes go only once the row is gone.
    background.add_task(files_service.remove_blobs, storage, [file.storage_key])
