"""Users: the user named in the path, as the caller may see it."""

from typing import Annotated

from fastapi import Depends, Path

from storeroom.auth.dependencies import CurrentUser
from storeroom.core.db import DbSession
from storeroom.core.errors import PermissionDenied
from storeroom.users import service as users_service
from storeroom.users.exceptions import UserNotFound
from storeroom.users.models import User

UserId = Annotated[int, Path(ge=1, le=2**31 - 1)]


async def visible_user(user_id: UserId, caller: CurrentUser, session: DbSession) -> User:
    """A superuser sees everyone; anyone else sees only themselves, and another account is
    reported exactly like a missing one."""
    if not caller.is_superuser and caller.id != user_id:
        raise UserNotFound()
    return await users_service.get(session, user_id)


VisibleUser = Annotated[User, Depends(visible_user)]


async def managed_user(user: VisibleUser, caller: CurrentUser) -> User:
    """The user in the path, for a superuser to change; others get 404 for someone else's
    account (as above) and 403 for their own (no self-promotion)."""
    if not caller.is_superuser:
        raise PermissionDenied("Superuser required")
    return user


ManagedUser = Annotated[User, Depends(managed_user)]
