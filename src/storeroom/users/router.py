"""Users: HTTP endpoints for accounts."""

from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Body, Query, Response, status

from storeroom.auth.dependencies import (
    CurrentSuperuser,
    CurrentUser,
    LoginLimiterDep,
    require_scope,
)
from storeroom.core.db import DbSession
from storeroom.core.dependencies import AppSettings, ClientIp, NoStore, Now
from storeroom.core.errors import error_responses
from storeroom.core.pagination import Page, Pagination, paginate
from storeroom.core.schemas import NulFreeStr
from storeroom.files import service as files_service
from storeroom.files.dependencies import FileStorage
from storeroom.notifications.dependencies import AppMailer
from storeroom.users import service as users_service
from storeroom.users.dependencies import ManagedUser, VisibleUser
from storeroom.users.models import User
from storeroom.users.schemas import UserCreate, UserRead, UserUpdateAdmin, UserUpdateMe

router = APIRouter(prefix="/users", tags=["users"], responses=error_responses(422))

_UPDATE_ME_EXAMPLES: dict[str, Any] = {
    "email": {
        "summary": "Change the email",
        "value": {"email": "alice@example.org", "current_password": "a-long-password"},
    },
    "password": {
        "summary": "Change the password",
        "value": {"password": "a-new-long-password", "current_password": "a-long-password"},
    },
}

_UPDATE_ADMIN_EXAMPLES: dict[str, Any] = {
    "deactivate": {"summary": "Lock the account out", "value": {"is_active": False}},
    "promote": {"summary": "Make a superuser", "value": {"is_superuser": True}},
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=UserRead,
    responses=error_responses(400, 429),
    summary="Register an account",
)
async def register(
    data: UserCreate,
    session: DbSession,
    response: Response,
    mailer: AppMailer,
    limiter: LoginLimiterDep,
    settings: AppSettings,
    client: ClientIp,
    now: Now,
) -> User:
    """Too many registrations from the caller's address answer 429 with Retry-After."""
    user = await users_service.register(session, limiter, data, settings, client_ip=client, now=now)
    response.headers["Location"] = f"/api/v1/users/{user.id}"
    mailer.send_welcome(user.email)
    return user


@router.get(
    "/me",
    response_model=UserRead,
    responses=error_responses(401),
    dependencies=[NoStore],
    summary="The caller's account",
)
async def read_own_account(user: CurrentUser) -> User:
    return user


@router.patch(
    "/me",
    response_model=UserRead,
    responses=error_responses(400, 401, 403, 429),
    dependencies=[require_scope("write"), NoStore],
    summary="Change the caller's email or password (needs current_password)",
)
async def update_own_account(
    changes: Annotated[UserUpdateMe, Body(openapi_examples=_UPDATE_ME_EXAMPLES)],
    user: CurrentUser,
    session: DbSession,
    limiter: LoginLimiterDep,
    client: ClientIp,
    now: Now,
) -> User:
    """Changing the email or password ends every other session: refresh tokens and access
    tokens issued before stop working (API keys stay valid). Too many wrong
    `current_password` tries answer 429, like failed logins."""
    return await users_service.update_me(
        session, user, changes, limiter=limiter, client_ip=client, now=now
    )


@router.delete(
    "/me",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 403),
    dependencies=[require_scope("write")],
    summary="Delete the caller's account",
)
async def delete_own_account(
    user: CurrentUser, session: DbSession, storage: FileStorage, background: BackgroundTasks
) -> None:
    """Deletes the account with everything it owns: items, files, API keys and sessions."""
    storage_keys = await users_service.delete(session, user)
    # Background tasks run after the response, so after the commit: a crash in between leaves
    # bytes without rows (reclaimed by `storeroom files verify`), never rows without bytes.
    background.add_task(files_service.remove_blobs, storage, storage_keys)


@router.get(
    "",
    response_model=Page[UserRead],
    responses=error_responses(401, 403),
    summary="List accounts (superuser)",
)
async def list_users(
    _admin: CurrentSuperuser,
    session: DbSession,
    page: Pagination,
    q: Annotated[
        NulFreeStr | None, Query(max_length=254, description="Email contains this.")
    ] = None,
) -> Page[UserRead]:
    users, total = await users_service.list_users(session, page, email_contains=q)
    return paginate(UserRead, users, total, page)


@router.get(
    "/{user_id}",
    response_model=UserRead,
    responses=error_responses(401, 404),
    summary="One account (superuser, or yourself)",
)
async def read_user(user: VisibleUser) -> User:
    return user


@router.patch(
    "/{user_id}",
    response_model=UserRead,
    responses=error_responses(401, 403, 404),
    dependencies=[require_scope("write")],
    summary="Activate, deactivate, promote or demote an account (superuser)",
)
async def update_user(
    user: ManagedUser,
    changes: Annotated[UserUpdateAdmin, Body(openapi_examples=_UPDATE_ADMIN_EXAMPLES)],
    caller: CurrentUser,
    session: DbSession,
) -> User:
    return await users_service.update_admin(session, user, changes, actor=caller)


@router.delete(
    "/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 403, 404),
    dependencies=[require_scope("write")],
    summary="Delete another account and everything it owns (superuser)",
)
async def delete_user(
    user: ManagedUser,
    caller: CurrentUser,
    session: DbSession,
    storage: FileStorage,
    background: BackgroundTasks,
) -> None:
    """Removes what DELETE /users/me removes. A superuser's own account is refused here (403
    `cannot_delete_self`); they delete it through DELETE /users/me."""
    storage_keys = await users_service.delete_admin(session, user, actor=caller)
    background.add_task(files_service.remove_blobs, storage, storage_keys)
