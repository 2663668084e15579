"""Files: the storage, the caller's file in the path, and an upload's raw request body."""

import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Path, Request
from starlette.requests import ClientDisconnect

from storeroom.auth.dependencies import CurrentUser
from storeroom.core.db import DbSession
from storeroom.core.dependencies import AppSettings
from storeroom.core.requests import lift_body_limit
from storeroom.files import service as files_service
from storeroom.files.exceptions import UploadInterrupted
from storeroom.files.models import StoredFile
from storeroom.files.storage import Storage


def get_storage(request: Request) -> Storage:
    storage: Storage = request.app.state.file_storage
    return storage


FileStorage = Annotated[Storage, Depends(get_storage)]


async def owned_file(
    file_id: Annotated[uuid.UUID, Path()], owner: CurrentUser, session: DbSession
) -> StoredFile:
    """The file in the path if the caller owns it; another user's file is reported exactly like
    a missing one."""
    return await files_service.get_owned(session, owner.id, file_id)


OwnedFile = Annotated[StoredFile, Depends(owned_file)]


def upload_limits(settings: AppSettings) -> files_service.UploadLimits:
    return files_service.UploadLimits(
        max_upload_bytes=settings.max_upload_bytes, quota_bytes=settings.user_quota_bytes
    )


UploadLimits = Annotated[files_service.UploadLimits, Depends(upload_limits)]


async def _body(request: Request) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect as exc:
        raise UploadInterrupted() from exc


async def incoming_upload(request: Request) -> files_service.IncomingUpload:
    """The request body as it arrives, unparsed: the service streams it into storage, under
    the upload limits instead of the cap on other bodies."""
    lift_body_limit(request.scope)
    length = request.headers.get("content-length")
    return files_service.IncomingUpload(
        body=_body(request),
        content_type=request.headers.get("content-type"),
        content_length=int(length) if length and length.isdigit() else None,
    )


IncomingUpload = Annotated[files_service.IncomingUpload, Depends(incoming_upload)]
