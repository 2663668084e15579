"""API keys: HTTP endpoints for the caller's personal keys."""

from fastapi import APIRouter, status

from storeroom.auth.api_keys import service as api_keys_service
from storeroom.auth.api_keys.dependencies import OwnedApiKey
from storeroom.auth.api_keys.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyRead
from storeroom.auth.dependencies import CurrentUser, require_scope
from storeroom.core.db import DbSession
from storeroom.core.dependencies import NoStore, Now
from storeroom.core.errors import error_responses
from storeroom.core.pagination import Page, Pagination, paginate
from storeroom.idempotency.dependencies import IdempotentRoute, idempotent

router = APIRouter(
    prefix="/users/me/api-keys",
    tags=["api keys"],
    responses=error_responses(401, 422),
    route_class=IdempotentRoute,
)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ApiKeyCreated,
    responses=error_responses(400, 403, 409),
    dependencies=[require_scope("write"), NoStore, idempotent()],
    summary="Create an API key (the key is shown only in this response)",
)
async def create_api_key(
    data: ApiKeyCreate, user: CurrentUser, session: DbSession, now: Now
) -> ApiKeyCreated:
    api_key, key = await api_keys_service.create(session, user, data, now=now)
    return ApiKeyCreated(key=key, **ApiKeyRead.model_validate(api_key).model_dump())


@router.get("", response_model=Page[ApiKeyRead], summary="The caller's API keys")
async def list_api_keys(
    user: CurrentUser, session: DbSession, page: Pagination
) -> Page[ApiKeyRead]:
    keys, total = await api_keys_service.list_keys(session, user, page)
    return paginate(ApiKeyRead, keys, total, page)


@router.delete(
    "/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(403, 404),
    dependencies=[require_scope("write")],
    summary="Revoke an API key",
)
async def delete_api_key(api_key: OwnedApiKey, session: DbSession) -> None:
    await api_keys_service.delete(session, api_key)
