"""Auth: HTTP endpoints for logging in."""

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.security import OAuth2PasswordRequestForm

from storeroom.auth import service as auth_service
from storeroom.auth.schemas import TokenResponse
from storeroom.core.db import DbSession
from storeroom.core.dependencies import AppSettings
from storeroom.core.errors import error_responses

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post(
    "/token",
    response_model=TokenResponse,
    responses=error_responses(401, 422),
    summary="Log in with email and password (OAuth2 password flow)",
)
async def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: DbSession,
    settings: AppSettings,
) -> TokenResponse:
    """`username` is the account's email. Works with the Authorize button on /docs."""
    user = await auth_service.authenticate(session, form.username, form.password)
    return auth_service.issue_access_token(user, settings)
