"""Auth: HTTP endpoints for logging in."""

from typing import Annotated

from fastapi import APIRouter, Depends, status
from fastapi.security import OAuth2PasswordRequestForm

from storeroom.auth import recovery as auth_recovery
from storeroom.auth import service as auth_service
from storeroom.auth.schemas import (
    Acknowledgement,
    PasswordRecoveryRequest,
    PasswordReset,
    TokenResponse,
)
from storeroom.core.db import DbSession
from storeroom.core.dependencies import AppSettings
from storeroom.core.errors import error_responses
from storeroom.notifications.dependencies import AppMailer

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


RECOVERY_ACCEPTED = Acknowledgement(
    detail="If an active account uses this address, a password reset link is on its way."
)


@router.post(
    "/password-recovery",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Acknowledgement,
    responses=error_responses(422),
    summary="Email a password reset link",
)
async def request_password_recovery(
    data: PasswordRecoveryRequest, session: DbSession, settings: AppSettings, mailer: AppMailer
) -> Acknowledgement:
    """Always 202 with the same body, whether or not the address has an account. An active
    account gets an email, sent after the response, with a single-use link that expires."""
    await auth_recovery.request_reset(session, data.email, settings, mailer)
    return RECOVERY_ACCEPTED


@router.post(
    "/reset-password",
    response_model=Acknowledgement,
    responses=error_responses(400, 422),
    summary="Set a new password with the token from a reset email",
)
async def reset_password(
    data: PasswordReset, session: DbSession, settings: AppSettings
) -> Acknowledgement:
    """A used, expired or altered token is a 400; the password is then unchanged."""
    await auth_recovery.reset_password(session, data.token, data.new_password, settings)
    return Acknowledgement(detail="Password changed. Log in with the new one.")
