"""Auth: HTTP endpoints for logging in, refreshing tokens and logging out."""

from typing import Annotated

from fastapi import APIRouter, Form, status

from storeroom.auth import service as auth_service
from storeroom.auth.dependencies import LoginLimiterDep
from storeroom.auth.schemas import LoginForm, LogoutRequest, RefreshRequest, TokenResponse
from storeroom.core.db import DbReader, DbSession
from storeroom.core.dependencies import AppSettings, ClientIp, NoStore, Now
from storeroom.core.errors import error_responses

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post(
    "/token",
    response_model=TokenResponse,
    responses=error_responses(401, 422, 429),
    dependencies=[NoStore],
    summary="Log in with email and password (OAuth2 password flow)",
)
async def login(
    form: Annotated[LoginForm, Form()],
    session: DbSession,
    reader: DbReader,
    settings: AppSettings,
    limiter: LoginLimiterDep,
    client: ClientIp,
    now: Now,
) -> TokenResponse:
    """`username` is the account's email. Works with the Authorize button on /docs. Too many
    failed logins for the account or from the caller's address answer 429 with Retry-After."""
    user = await auth_service.login(
        session, reader, limiter, form.username, form.password, client_ip=client, now=now
    )
    return await auth_service.issue_tokens(session, user, settings, now=now)


@router.post(
    "/refresh",
    response_model=TokenResponse,
    responses=error_responses(401, 422),
    dependencies=[NoStore],
    summary="Exchange a refresh token for a new access and refresh token",
)
async def refresh_tokens(
    body: RefreshRequest, session: DbSession, settings: AppSettings, now: Now
) -> TokenResponse:
    """The presented refresh token stops working. Presenting it again revokes every token of
    its login session (someone else has a copy) and answers 401."""
    return await auth_service.refresh(session, body.refresh_token, settings, now=now)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(422),
    summary="Revoke a refresh token (and the login session it belongs to)",
)
async def logout(body: LogoutRequest, session: DbSession, now: Now) -> None:
    await auth_service.logout(session, body.refresh_token, now=now)
