"""Auth: the dependencies routers declare to require a caller."""

from typing import Annotated

from fastapi import Depends
from fastapi.security import OAuth2PasswordBearer

from storeroom.auth import service as auth_service
from storeroom.auth.exceptions import NotAuthenticated
from storeroom.core.db import DbReader
from storeroom.core.dependencies import AppSettings
from storeroom.core.errors import PermissionDenied
from storeroom.users.models import User

bearer_scheme = OAuth2PasswordBearer(
    tokenUrl="/api/v1/auth/token",
    auto_error=False,
    description="Access token from POST /api/v1/auth/token.",
)


async def current_user(
    reader: DbReader,
    settings: AppSettings,
    token: Annotated[str | None, Depends(bearer_scheme)],
) -> User:
    if not token:
        raise NotAuthenticated()
    return await auth_service.user_from_access_token(reader, token, settings)


CurrentUser = Annotated[User, Depends(current_user)]


async def current_superuser(user: CurrentUser) -> User:
    if not user.is_superuser:
        raise PermissionDenied("Superuser required")
    return user


CurrentSuperuser = Annotated[User, Depends(current_superuser)]
