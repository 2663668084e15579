"""API keys: the caller's key named in the path."""

from typing import Annotated

from fastapi import Depends, Path

from storeroom.auth.api_keys import service as api_keys_service
from storeroom.auth.api_keys.models import ApiKey
from storeroom.auth.dependencies import CurrentUser
from storeroom.core.db import DbSession

ApiKeyId = Annotated[int, Path(ge=1, le=2**31 - 1)]


async def owned_api_key(key_id: ApiKeyId, user: CurrentUser, session: DbSession) -> ApiKey:
    return await api_keys_service.get_owned(session, user, key_id)


OwnedApiKey = Annotated[ApiKey, Depends(owned_api_key)]
