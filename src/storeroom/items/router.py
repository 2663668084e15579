"""Items: HTTP endpoints for the caller's catalog."""

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request, Response, status

from storeroom.auth.dependencies import CurrentUser, require_scope
from storeroom.core.db import DbReader, DbSession
from storeroom.core.errors import error_responses
from storeroom.core.pagination import Page, Pagination
from storeroom.core.responses import ClosingStreamingResponse
from storeroom.files import service as files_service
from storeroom.idempotency.dependencies import IdempotentRoute, idempotent
from storeroom.items import service as items_service
from storeroom.items.dependencies import Filters, IfMatch, IfNoneMatch, OwnedItem, VisibleItem
from storeroom.items.models import Item
from storeroom.items.schemas import (
    ExportFormat,
    ItemCreate,
    ItemDetail,
    ItemRead,
    ItemSort,
    ItemUpdate,
)

router = APIRouter(
    prefix="/items",
    tags=["items"],
    responses=error_responses(401, 422),
    route_class=IdempotentRoute,
)

ItemPage = Page[ItemRead]

_ETAG_HEADER: dict[str, Any] = {
    "ETag": {
        "description": 'The item\'s version as a weak entity tag, e.g. W/"3".',
        "schema": {"type": "string"},
    }
}

_PATCH_EXAMPLES: dict[str, Any] = {
    "price": {"summary": "Change the price only", "value": {"price": "599.00"}},
    "clear": {
        "summary": "Drop every tag and the description",
        "value": {"tags": [], "description": None},
    },
}

_EXPORT_MEDIA_TYPES = {
    ExportFormat.ndjson: "application/x-ndjson",
    ExportFormat.csv: "text/csv; charset=utf-8",
}


@router.post(
    "",
    dependencies=[require_scope("write"), idempotent()],
    status_code=status.HTTP_201_CREATED,
    response_model=ItemRead,
    responses={201: {"headers": _ETAG_HEADER}, **error_responses(403, 409)},
    summary="Add an item to the caller's catalog",
)
async def create_item(
    data: ItemCreate, user: CurrentUser, session: DbSession, response: Response
) -> Item:
    item = await items_service.create(session, user.id, data)
    response.headers["Location"] = f"/api/v1/items/{item.id}"
    response.headers["ETag"] = item.etag
    return item


@router.get(
    "",
    response_model=ItemPage,
    responses=error_responses(403),
    summary="List the caller's items: search, filter by tags, sort, paginate",
)
async def list_items(
    filters: Filters,
    page: Pagination,
    reader: DbReader,
    sort: Annotated[ItemSort, Query(description="Sort key; `-` for descending.")] = (
        ItemSort.created_at_desc
    ),
) -> Response:
    records, total = await items_service.list_items(reader, filters, page, sort)
    return Response(items_service.page_json(records, total, page), media_type="application/json")


@router.get(
    "/export",
    response_class=ClosingStreamingResponse,
    responses={
        200: {
            "description": "Every matching item, streamed in id order.",
            "content": {
                "application/x-ndjson": {
                    "example": '{"id":1,"owner_id":1,"name":"Espresso machine","description":'
                    'null,"price":"649.90","tax":"20.00","tags":["kitchen"],"version":1,'
                    '"created_at":"2026-11-25T10:00:00Z","updated_at":"2026-11-25T10:00:00Z"}\n'
                },
                "text/csv": {
                    "example": "id,name,description,price,tax,tags,created_at,updated_at\r\n"
                    "1,Espresso machine,,649.90,20.00,kitchen;coffee,2026-11-25T10:00:00Z,"
                    "2026-11-25T10:00:00Z\r\n"
                },
            },
        },
        **error_responses(403, 500),
    },
    summary="Export every matching item as NDJSON or CSV (streamed)",
)
async def export_items(
    request: Request,
    filters: Filters,
    export_format: Annotated[ExportFormat, Query(alias="format")] = ExportFormat.ndjson,
) -> ClosingStreamingResponse:
    chunks = await items_service.open_export(request.app.state.engine, filters, export_format)
    filename = f"items-{datetime.now(UTC):%Y-%m-%d}.{export_format.value}"
    return ClosingStreamingResponse(
        chunks,
        media_type=_EXPORT_MEDIA_TYPES[export_format],
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get(
    "/{item_id:int}",
    response_model=ItemDetail,
    responses={
        200: {"headers": _ETAG_HEADER},
        304: {"description": "Not modified"},
        **error_responses(404),
    },
    summary="One item with its attached files (304 when If-None-Match names its ETag)",
)
async def read_item(
    item: VisibleItem, session: DbSession, response: Response, if_none_match: IfNoneMatch
) -> Any:
    if if_none_match is not None and if_none_match.matches(item.version):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers={"ETag": item.etag})
    response.headers["ETag"] = item.etag
    files, files_total = await files_service.list_for_item(session, item.id)
    return ItemDetail.model_validate(
        {**ItemRead.model_validate(item).__dict__, "files": files, "files_total": files_total}
    )


@router.patch(
    "/{item_id:int}",
    dependencies=[require_scope("write")],
    response_model=ItemRead,
    responses={200: {"headers": _ETAG_HEADER}, **error_responses(403, 404, 412)},
    summary="Change the fields sent (If-Match guards against lost updates)",
)
async def update_item(
    item: OwnedItem,
    changes: Annotated[ItemUpdate, Body(openapi_examples=_PATCH_EXAMPLES)],
    session: DbSession,
    response: Response,
    if_match: IfMatch,
) -> Item:
    item = await items_service.update_item(session, item, changes, expected=if_match)
    response.headers["ETag"] = item.etag
    return item


@router.delete(
    "/{item_id:int}",
    dependencies=[require_scope("write")],
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(403, 404, 412),
    summary="Delete an item",
)
async def delete_item(item: OwnedItem, session: DbSession, if_match: IfMatch) -> None:
    await items_service.delete_item(session, item, expected=if_match)
